"""Distillation for click-through (binary, sigmoid-output) models."""

import keras

from tfcompress.distillation import base

_EPSILON = 1e-7


@keras.saving.register_keras_serializable("tfcompress")
class BinaryDistillation(base.OutputDistillation):
    """Cross-entropy against the teacher's click probabilities.

    For a click-through model the teacher's output is a probability `p`;
    the student is trained towards it with the binary cross-entropy
    `-(p log q + (1 - p) log(1 - q))`, averaged over all outputs, where `q`
    is the student's probability. With `temperature` `T != 1` both logits
    are divided by `T` first and the loss is multiplied by `T**2`. The
    minimum of the loss is the teacher's own entropy, not zero.

    Args:
        temperature: `T > 0` (default 1: the teacher's probabilities as they are).
        from_logits: False (default, like `keras.losses.BinaryCrossentropy`)
            when the models end in a sigmoid; True when they output logits.
        name: metric suffix (default `binary`).

    Example:

    ```python
    import numpy as np
    from tfcompress.distillation import BinaryDistillation

    loss = BinaryDistillation()
    teacher = np.array([[0.9], [0.2]], "float32")  # click probabilities
    student = np.array([[0.6], [0.3]], "float32")
    float(loss.compute_loss(teacher, student))
    ```
    """

    default_name = "binary"

    def __init__(self, temperature=1.0, from_logits=False, name=None):
        super().__init__(temperature, from_logits, name=name)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        ops = keras.ops
        teacher = ops.cast(base.single_tensor(teacher_outputs, "teacher", self), "float32")
        student = ops.cast(base.single_tensor(student_outputs, "student", self), "float32")
        if not self.from_logits:
            teacher, student = _logit(teacher), _logit(student)
        t = self.temperature
        target = ops.stop_gradient(ops.sigmoid(teacher / t))
        z = student / t
        # -(p log sigmoid(z) + (1 - p) log(1 - sigmoid(z))) = softplus(z) - p z
        return ops.mean(ops.softplus(z) - target * z) * (t ** 2)



def _logit(p):
    p = keras.ops.clip(p, _EPSILON, 1.0 - _EPSILON)
    return keras.ops.log(p) - keras.ops.log1p(-p)
