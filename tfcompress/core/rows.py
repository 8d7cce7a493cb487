"""Embedding lookups transformed row by row: the work grows with the rows a batch reads.

A wrapper that substitutes a whole transformed table (`table * mask`) makes
every training step touch every row: the multiply, a table-sized gradient,
and a dense optimizer update of the table. For a plain `keras.layers.Embedding`
whose wrappers all implement `transform_rows(rows, ids, training)` (and,
where they define it, say yes to `rows_supported()`),
`WeightWrapper` instead gathers the rows the batch asks for and lets each
wrapper transform only those, in training: the table's gradient stays
`IndexedSlices` (the rows read) and the per-step cost follows the batch, not
the table. Inference and export keep the whole-table graph, whose transformed
table is a constant the TFLite converter folds (an int8 table for QAT).

Example:

```python
import keras
import tfcompress as tfc
from tfcompress.core import rows
layer = tfc.pruning.PruneLowMagnitude(keras.layers.Embedding(1000, 8))
layer(keras.ops.zeros((2,), "int32"))
assert rows.applies(layer)
```
"""

import keras
import tensorflow as tf


def applies(wrapper):
    """True when `wrapper`'s lookups can be done row by row (see the module docstring)."""
    layer = wrapper.computing_layer()
    if type(layer) is not keras.layers.Embedding:  # subclasses may compute differently
        return False
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        return False
    table = layer._embeddings
    return all(getattr(w, "transform_rows", None) is not None
               and [id(t) for t in w.targets] == [id(table)]
               and getattr(w, "rows_supported", lambda: True)() for w in wrapper.chain())


def lookup(wrapper, ids, training):
    """The wrapped Embedding's output, each wrapper transforming the gathered rows (innermost first)."""
    layer = wrapper.computing_layer()
    if ids.dtype != "int32" and ids.dtype != "int64":
        ids = keras.ops.cast(ids, "int32")
    rows = keras.ops.take(layer._embeddings, ids, axis=0)
    for inner in reversed(wrapper.chain()):
        rows = inner.transform_rows(rows, ids, training)
    return keras.ops.cast(rows, layer.compute_dtype)


@tf.function(jit_compile=True)
def _extremes(table, mask):
    values = table if mask is None else table * tf.cast(mask, table.dtype)
    return tf.stack([tf.reduce_min(values), tf.reduce_max(values)])


def extremes(table, mask=None):
    """`[min, max]` of a table variable (times `mask`, a variable too), read in place.

    A whole-table statistic (a per-tensor quantization range) costs one read of
    the table: TF's dense read of a variable that sparse updates touched
    copies it first, and `table * mask` would be a second table; XLA reduces
    the variables where they are.

    Example:

    ```python
    import tensorflow as tf
    from tfcompress.core import rows
    rows.extremes(tf.Variable([[1.0, -2.0], [3.0, 0.5]]))  # [-2.0, 3.0]
    ```
    """
    return _extremes(table, mask)
