"""Row-wise quantized embedding tables: one scale per row, int8 (or int4 values) stored."""

import keras
import tensorflow as tf

from tfcompress.core import WeightWrapper
from tfcompress.embeddings import rowcodes
from tfcompress.embeddings.tables import Table


def _fake_quant_rows(rows, bits):
    """Rows on their own int grid, straight-through gradient (rows: [..., dim])."""
    levels = float(rowcodes.levels(bits))
    scale = tf.stop_gradient(rowcodes.scales_of(tf.reduce_max(tf.abs(rows), axis=-1, keepdims=True), bits))
    rounded = tf.clip_by_value(tf.round(rows / scale), -levels, levels) * scale
    return rows + tf.stop_gradient(rounded - rows)


@keras.saving.register_keras_serializable("tfcompress")
class RowwiseQuantize(WeightWrapper):
    """Quantization-aware training of an Embedding table, one symmetric scale per row.

    Each row the batch reads is rounded to `bits` bits on its own scale
    (max |value| of the row over 127, or 7 for int4; the scale as its int8
    code stores it, see `STEPS_PER_OCTAVE`), with a straight-through
    gradient, so the model learns around the rounding; only the gathered rows
    are touched (`core.rows`). `tfcompress.strip` turns it into an
    `Int8RowsEmbedding`: int8 values (int4 packed two per byte) and one int8
    scale code per row, which TFLite stores as they are and dequantizes
    after the GATHER.

    It also wraps this folder's float tables (`QREmbedding`,
    `HashedEmbedding`, `MixedDimEmbedding`): each of their row tables is
    rounded whole (they are small), and strip stores them the same way
    (`Table.stored_as`), so QR or mixed-dim tables compose with int8 rows.

    Args:
        layer: a `keras.layers.Embedding`, or a float `Table` of this folder.
        bits: 8 or 4.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    layer = tfc.embeddings.RowwiseQuantize(keras.layers.Embedding(1000, 16), bits=4)
    vectors = layer(keras.ops.zeros((2, 3), "int32"))
    ```
    """

    order = 30

    def __init__(self, layer, bits=8, **kwargs):
        if type(layer) is not keras.layers.Embedding and not (
                isinstance(layer, Table) and layer.bits is None):
            raise ValueError(f"RowwiseQuantize wraps a keras.layers.Embedding or a float "
                             f"tfcompress.embeddings table; got {type(layer).__name__} "
                             f"'{layer.name}'.")
        if bits not in (4, 8):
            raise ValueError(f"bits must be 8 or 4, got {bits!r}.")
        super().__init__(layer, **kwargs)
        self.bits = int(bits)

    def target_weights(self):
        layer = self.computing_layer()
        return layer.row_tables() if isinstance(layer, Table) else [layer._embeddings]

    def transform_weights(self, values, training):
        return [_fake_quant_rows(tf.convert_to_tensor(v), self.bits) for v in values]

    def transform_rows(self, rows, ids, training):
        return _fake_quant_rows(rows, self.bits)

    def strip(self):
        layer = self.computing_layer()
        weights = self.baked_weights(keep=lambda w: w is not self)
        if isinstance(layer, Table):
            return layer.stored_as(self.bits, weights)
        return Int8RowsEmbedding.from_embedding(layer, weights[0], self.bits)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable("tfcompress")
class Int8RowsEmbedding(Table):
    """An Embedding stored as int8 values (or int4, two per byte), one int8 scale code per row.

    Looks up the rows, unpacks int4 if need be, and multiplies by their
    scales (`rowcodes.decode_scales`): the `.keras` file and the TFLite
    flatbuffer hold the table as int8 (a quarter of float32; int4: an
    eighth) plus one byte per row (`embeddings_values`, `embeddings_scales`).
    Made by stripping `RowwiseQuantize`; `mask_zero` as Embedding.

    Example:

    ```python
    import numpy as np
    import tfcompress as tfc
    layer = tfc.embeddings.Int8RowsEmbedding(2, 2)
    layer.build()
    layer.set_weights([np.array([[1, -2], [3, 4]], "int8"),
                       np.array([80, 64], "int8")])  # scales 2^-1, 2^-2
    assert np.allclose(layer(np.array([1])), [[0.75, 1.0]])
    ```
    """

    def __init__(self, input_dim, output_dim, bits=8, **kwargs):
        super().__init__(input_dim, output_dim, bits=bits, **kwargs)

    def build(self, input_shape=None):
        self.add_table("embeddings", self.input_dim, self.output_dim)
        self.built = True

    @classmethod
    def from_embedding(cls, embedding, table, bits):
        """The layer storing `table` (the values of `embedding`'s table) with `bits`."""
        layer = cls(embedding.input_dim, embedding.output_dim, mask_zero=embedding.mask_zero,
                    bits=bits, name=embedding.name)
        layer.build()
        values, codes = rowcodes.quantize_rows(table, bits)
        layer.set_weights([rowcodes.pack_int4(values) if bits == 4 else values, codes])
        return layer

    def call(self, inputs):
        return self.gather("embeddings", self._ids(inputs))
