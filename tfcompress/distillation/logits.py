"""Hinton's soft-target loss for classifiers."""

import keras

from tfcompress.distillation import base

_EPSILON = 1e-7


@keras.saving.register_keras_serializable("tfcompress")
class LogitsDistillation(base.OutputDistillation):
    """Soft-target distillation (Hinton et al., 2015) for classification.

    The teacher's and the student's class scores are divided by the
    temperature `T` and turned into distributions with a softmax; the loss is
    the KL divergence from the teacher's to the student's distribution,
    summed over classes, averaged over the batch, and multiplied by `T**2`
    so that its gradients keep the same size as the label loss whatever `T`
    is. The `Distiller` mixes it with the label loss:
    `student_loss_weight * labels + (1 - student_loss_weight) * this`.

    Args:
        temperature: `T > 0`. 1 compares the plain distributions; 2-5
            exposes the teacher's ranking of the wrong classes.
        from_logits: True (default) when both models output logits. False
            when they output probabilities (a final softmax): the loss then
            uses log-probabilities as logits instead of applying a second
            softmax. A mismatch with the models' final activation is an error.
        name: metric suffix; the metric is `distillation_loss_<name>`
            (default `logits`).

    Example:

    ```python
    import numpy as np
    from tfcompress.distillation import LogitsDistillation

    loss = LogitsDistillation(temperature=4.0)
    teacher = np.array([[3.0, 1.0, -2.0]], "float32")
    student = np.array([[1.0, 1.0, 0.0]], "float32")
    float(loss.compute_loss(teacher, student))  # KL(p_T || q_T) * 16
    ```
    """

    default_name = "logits"

    def __init__(self, temperature=3.0, from_logits=True, name=None):
        super().__init__(temperature, from_logits, name=name)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        teacher = base.single_tensor(teacher_outputs, "teacher", self)
        student = base.single_tensor(student_outputs, "student", self)
        if not self.from_logits:
            teacher, student = _log(teacher), _log(student)
        return softened_kl(teacher, student, self.temperature)



def softened_kl(teacher_logits, student_logits, temperature, axis=-1):
    """mean over rows of KL(softmax(t/T) || softmax(s/T)) along `axis`, times T²."""
    ops = keras.ops
    teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
    student_logits = ops.cast(student_logits, "float32")
    log_p = ops.log_softmax(teacher_logits / temperature, axis=axis)
    log_q = ops.log_softmax(student_logits / temperature, axis=axis)
    kl = ops.sum(ops.exp(log_p) * (log_p - log_q), axis=axis)
    return ops.mean(kl) * (temperature ** 2)


def _log(probabilities):
    return keras.ops.log(keras.ops.clip(
        keras.ops.cast(probabilities, "float32"), _EPSILON, 1.0))
