"""Distillation for search re-ranking models fed lists of candidates.

A ranking model scores each candidate of a query's list: inputs of shape
`(queries, list_size, features)`, scores of shape `(queries, list_size)` or
`(queries, list_size, 1)`. What the student should learn from the teacher is
the order (and confidence) of each list, not the absolute scores.
"""

import keras

from tfcompress.distillation import base
from tfcompress.distillation.logits import softened_kl


def _scores(outputs, who, loss):
    scores = keras.ops.cast(base.single_tensor(outputs, who, loss), "float32")
    if len(scores.shape) == 3 and scores.shape[-1] == 1:
        scores = keras.ops.squeeze(scores, axis=-1)
    if len(scores.shape) != 2:
        raise ValueError(
            f"{type(loss).__name__} expects list scores of shape (queries, "
            f"list_size) or (queries, list_size, 1); the {who} returned shape "
            f"{tuple(scores.shape)}.")
    return scores


@keras.saving.register_keras_serializable("tfcompress")
class ListwiseDistillation(base.DistillationLoss):
    """KL between the teacher's and the student's distribution over each list.

    Each query's scores are divided by the temperature `T` and turned into a
    distribution over its candidates with a softmax (ListNet's top-one
    probability); the loss is the KL divergence from the teacher's to the
    student's distribution, averaged over queries and multiplied by `T**2`.
    Shifting all of a list's scores by a constant changes nothing.

    Args:
        temperature: `T > 0` (default 1).
        name: metric suffix (default `listwise`).

    Example:

    ```python
    import numpy as np
    from tfcompress.distillation import ListwiseDistillation

    teacher = np.array([[2.0, 0.5, -1.0, 0.0]], "float32")  # 1 query, 4 candidates
    student = np.array([[0.1, 0.3, -0.2, 0.0]], "float32")
    float(ListwiseDistillation().compute_loss(teacher, student))
    ```
    """

    default_name = "listwise"

    def __init__(self, temperature=1.0, name=None):
        super().__init__(name=name)
        self.temperature = base.check_temperature(temperature, type(self).__name__)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        teacher = _scores(teacher_outputs, "teacher", self)
        student = _scores(student_outputs, "student", self)
        return softened_kl(teacher, student, self.temperature)

    def get_config(self):
        return {"temperature": self.temperature, "name": self.name}


@keras.saving.register_keras_serializable("tfcompress")
class PairwiseDistillation(base.DistillationLoss):
    """RankNet loss on the pairs the teacher orders.

    For every pair of candidates `(i, j)` of the same list with teacher scores
    `t_i - t_j > margin`, the student pays `log(1 + exp(-(s_i - s_j)))`, the
    logistic loss of ranking `i` above `j`. The loss is the mean over all such
    pairs of the batch (0 when there are none).

    Args:
        margin: teacher score gap a pair needs to count (default 0: every
            pair the teacher does not tie).
        name: metric suffix (default `pairwise`).

    Example:

    ```python
    import numpy as np
    from tfcompress.distillation import PairwiseDistillation

    teacher = np.array([[2.0, 0.5, -1.0]], "float32")
    student = np.array([[0.1, 0.3, -0.2]], "float32")
    float(PairwiseDistillation().compute_loss(teacher, student))  # 3 pairs
    ```
    """

    default_name = "pairwise"

    def __init__(self, margin=0.0, name=None):
        super().__init__(name=name)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or margin < 0:
            raise ValueError(f"PairwiseDistillation: margin must be a number >= 0, got {margin!r}.")
        self.margin = float(margin)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        ops = keras.ops
        teacher = ops.stop_gradient(_scores(teacher_outputs, "teacher", self))
        student = _scores(student_outputs, "student", self)
        teacher_gap = teacher[:, :, None] - teacher[:, None, :]
        student_gap = student[:, :, None] - student[:, None, :]
        pairs = ops.cast(teacher_gap > self.margin, "float32")
        total = ops.sum(pairs * ops.softplus(-student_gap))
        return total / ops.maximum(ops.sum(pairs), 1.0)

    def get_config(self):
        return {"margin": self.margin, "name": self.name}
