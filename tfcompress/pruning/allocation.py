"""How a model's sparsity is shared out among its layers.

`prune_low_magnitude(model, allocation=...)`:

- `"uniform"` (TFMOT's way): every weight is pruned to the schedule's sparsity.
- `"erk"`: the Erdős–Rényi-kernel allocation of sparse training (Evci et al.,
  "Rigging the lottery", 2020): a weight of shape `(d1, ..., dk)` keeps a
  fraction proportional to `(d1 + ... + dk) / (d1 * ... * dk)`, so small
  layers (the first convolution, the classifier) stay denser than wide ones.
  Weights that would keep more than all of themselves stay dense and the rest
  share the difference. Worked out once from the shapes, for the schedule's
  final sparsity; at every step each weight's sparsity is the schedule's times
  its fixed share, so the model's sparsity is the schedule's throughout.
- `"global"`: one ranking over every pruned weight of the model, so the
  threshold is the model's, not each layer's. Each weight first keeps its own
  top `MIN_KEPT` fraction (a layer is never pruned away), the rest of the
  model's budget goes to the highest scores anywhere.

Both reach the schedule's sparsity over the pruned weights exactly (ties
aside: entries equal to the threshold are kept together).

Example:

```python
import numpy as np
from tfcompress.pruning import allocation
shares = allocation.erk_sparsities([(3, 3, 1, 16), (3, 3, 16, 32), (4608, 64), (64, 10)], 0.9)
sizes = [144, 4608, 294912, 640]
assert abs(np.dot(shares, sizes) / sum(sizes) - 0.9) < 1e-6
```
"""

import math

import numpy as np
import tensorflow as tf

from tfcompress.pruning import masks

ALLOCATIONS = ("uniform", "global", "erk")
#: Under `"global"`, the fraction of each weight kept whatever its scores.
MIN_KEPT = 0.02


def check(allocation):
    """`allocation`, or a ValueError naming the choices.

    Example:

    ```python
    from tfcompress.pruning import allocation
    allocation.check("erk")
    ```
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(map(repr, ALLOCATIONS))}; "
                         f"got {allocation!r}.")
    return allocation


def erk_sparsities(shapes, sparsity):
    """Per-weight sparsities of the ERK allocation whose size-weighted mean is `sparsity`.

    Example:

    ```python
    from tfcompress.pruning import allocation
    allocation.erk_sparsities([(3, 3, 1, 16), (512, 64)], 0.9)  # the conv far denser
    ```
    """
    sizes = np.array([math.prod(shape) for shape in shapes], "float64")
    raw = np.array([sum(shape) / math.prod(shape) for shape in shapes], "float64")
    budget = (1.0 - sparsity) * sizes.sum()
    dense = np.zeros(len(shapes), bool)
    while True:
        scale = (budget - sizes[dense].sum()) / (sizes[~dense] * raw[~dense]).sum()
        density = np.where(dense, 1.0, scale * raw)
        if not (density > 1.0).any():
            return [float(1.0 - d) for d in density]
        dense |= density > 1.0


def global_masks(scores, kept, sparsity, min_kept=MIN_KEPT):
    """Bool masks (one per weight) keeping the model's top `1 - sparsity` of `scores`.

    `scores`: non-negative tensors (magnitudes, or Fisher scores); `kept`: their
    current masks (entries out stay out). Every weight keeps at least its own
    top `min_kept` fraction of its entries still in.

    Example:

    ```python
    import tensorflow as tf
    from tfcompress.pruning import allocation
    a, b = tf.constant([4.0, 3.0, 2.0, 1.0]), tf.constant([0.5, 0.1])
    ones = [tf.ones(4, "bool"), tf.ones(2, "bool")]
    allocation.global_masks([a, b], ones, 0.5, min_kept=0.5)
    # [[True, True, False, False], [True, False]]
    ```
    """
    kept = [tf.cast(k, "bool") for k in kept]
    forced = [masks.magnitude(s, 1.0 - min_kept, k, dtype="bool") for s, k in zip(scores, kept)]
    pooled = tf.concat([
        tf.reshape(tf.where(f, np.inf, tf.where(k, tf.cast(s, "float32"), 0.0)), [-1])
        for s, k, f in zip(scores, kept, forced)], axis=0)
    chosen = tf.split(masks.magnitude(pooled, sparsity, dtype="bool"),
                      [s.shape.num_elements() for s in scores])
    return [tf.logical_and(tf.reshape(c, s.shape), k) for c, s, k in zip(chosen, scores, kept)]
