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

import math

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
def _by_row(table, mask):
    """Each row's `[-min, max]` (one max over both gives the table's)."""
    values = table if mask is None else table * tf.cast(mask, table.dtype)
    return tf.stack([-tf.reduce_min(values, axis=-1), tf.reduce_max(values, axis=-1)], axis=-1)


def global_batch(*tensors):
    """`tensors` as every replica's batch has them under `tf.distribute`, joined on
    their first axis (the global batch's), so that each replica and worker keeps the
    same per-row state; with one replica, `tensors` themselves."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return tensors
    return tuple(context.all_gather(t, axis=0) for t in tensors)


class RowExtremes:
    """A table's `[min, max]`, kept from the rows training reads: each row's min and
    max as a batch last read it (8 bytes a row, stored as `[-min, max]`), refreshed
    for the rows each step reads. The first training step fills it from the whole
    table, once.

    A per-tensor quantization range then costs the rows a batch reads, not a read
    of the whole table: the rows are kept in blocks of `ceil(sqrt(rows / 256))`
    with each block's extremes beside them, so a step reduces only the blocks it
    read and then the blocks' extremes (at 10^7 rows, blocks of 198). Zero is always
    inside the range, as in a quantization range. Like a last-value range over a
    whole kernel, it trails the table by the last update of each row: a row's
    value after its latest optimizer update counts from the next batch that reads
    it. Under `tf.distribute`, each replica refreshes the rows of every replica's
    batch, so all keep the same extremes.

    Example:

    ```python
    import keras
    import numpy as np
    from tfcompress.core import rows
    layer = keras.layers.Embedding(100, 4)
    layer.build()
    kept = rows.RowExtremes(keras.layers.Layer(), "embeddings", layer.embeddings)
    ids = np.array([3, 7])
    low, high = kept.update(layer.embeddings, None, layer(ids), ids)
    assert low == np.min(layer.embeddings) and high == np.max(layer.embeddings)
    ```
    """

    def __init__(self, owner, name, table):
        """`owner`: the layer that keeps the variables (one still building)."""
        self.rows = int(table.shape[0])
        # a batch of ~256 ids then reads about as many rows in its blocks as there are blocks
        self.block = math.ceil(math.sqrt(self.rows / 256))
        blocks = -(-self.rows // self.block)

        def kept(suffix, shape):
            return owner.add_weight(name=f"{name}_{suffix}", shape=shape, initializer="zeros",
                                    trainable=False, aggregation="none")

        self.values = kept("row_extremes", (blocks * self.block, 2))  # [-min, max] of each row
        self.blocks = kept("block_extremes", (blocks, 2))
        self.filled = kept("row_extremes_filled", ())

    def _fill(self, table, mask):
        by_row = _by_row(table.value, None if mask is None else mask.value)
        values = tf.pad(by_row, [[0, self.values.shape[0] - self.rows], [0, 0]])
        self.values.assign(values)
        self.blocks.assign(tf.reduce_max(tf.reshape(values, [-1, self.block, 2]), axis=1))
        self.filled.assign(1.0)
        return tf.constant(True)

    def update(self, table, mask, rows, ids):
        """Refreshes the rows read (`rows`: `table`'s rows at `ids`, times `mask`'s) and
        returns the table's `[min, max]` (a float32 tensor of 2)."""
        tf.cond(self.filled.value > 0.0, lambda: tf.constant(False),
                lambda: self._fill(table, mask))
        rows = tf.cast(rows, "float32")
        read = tf.stack([-tf.reduce_min(rows, axis=-1), tf.reduce_max(rows, axis=-1)], axis=-1)
        ids, read = global_batch(tf.reshape(tf.cast(ids, "int32"), [-1]), tf.reshape(read, [-1, 2]))
        self.values.value.scatter_update(tf.IndexedSlices(read, ids))
        # the blocks read, reduced again (a block read twice, twice: no tf.unique, XLA-safe)
        block = ids // self.block
        in_blocks = tf.reshape(block[:, None] * self.block + tf.range(self.block)[None], [-1])
        reduced = tf.reduce_max(tf.reshape(tf.gather(self.values.value, in_blocks),
                                           [-1, self.block, 2]), axis=1)
        self.blocks.value.scatter_update(tf.IndexedSlices(reduced, block))
        negated_min, largest = tf.unstack(tf.maximum(tf.reduce_max(self.blocks.value, axis=0), 0.0))
        return tf.stack([-negated_min, largest])
