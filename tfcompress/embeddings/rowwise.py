"""Row-wise quantized embedding tables: one scale per row, int8 (or int4 values) stored."""

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import WeightWrapper


def _levels(bits):
    return 2 ** (bits - 1) - 1  # symmetric, narrow: int8 [-127, 127], int4 [-7, 7]


def quantize_rows(table, bits):
    """`(values int8, scales float32)`: each row symmetric over its own max |value|.

    Example:

    ```python
    import numpy as np
    from tfcompress.embeddings import rowwise
    q, s = rowwise.quantize_rows(np.array([[0.5, -1.0], [2.0, 0.0]], "float32"), 8)
    assert q.dtype == np.int8 and np.allclose(q * s[:, None], [[0.5, -1.0], [2.0, 0.0]], atol=1e-2)
    ```
    """
    table = np.asarray(table, "float32")
    scales = np.abs(table).max(axis=1) / _levels(bits)
    scales = np.where(scales > 0, scales, 1.0).astype("float32")
    values = np.clip(np.round(table / scales[:, None]), -_levels(bits), _levels(bits))
    return values.astype("int8"), scales


def _fake_quant_rows(rows, bits):
    """Rows on their own int grid, straight-through gradient (rows: [..., dim])."""
    levels = float(_levels(bits))
    scale = tf.stop_gradient(tf.reduce_max(tf.abs(rows), axis=-1, keepdims=True) / levels)
    scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    rounded = tf.clip_by_value(tf.round(rows / scale), -levels, levels) * scale
    return rows + tf.stop_gradient(rounded - rows)


@keras.saving.register_keras_serializable("tfcompress")
class RowwiseQuantize(WeightWrapper):
    """Quantization-aware training of an Embedding table, one symmetric scale per row.

    Each row the batch reads is rounded to `bits` bits on its own scale
    (max |value| of the row over 127, or 7 for int4), with a straight-through
    gradient, so the model learns around the rounding; only the gathered rows
    are touched (`core.rows`). `tfcompress.strip` turns it into an
    `Int8RowsEmbedding`: int8 values and one float32 scale per row, which
    TFLite stores as an int8 tensor and dequantizes after the GATHER. int4
    values are stored in int8 (LiteRT's GATHER reads no packed int4 table).

    Args:
        layer: a `keras.layers.Embedding`.
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
        if type(layer) is not keras.layers.Embedding:
            raise ValueError(f"RowwiseQuantize wraps a keras.layers.Embedding; got "
                             f"{type(layer).__name__} '{layer.name}'.")
        if bits not in (4, 8):
            raise ValueError(f"bits must be 8 or 4, got {bits!r}.")
        super().__init__(layer, **kwargs)
        self.bits = int(bits)

    def target_weights(self):
        return [self.computing_layer()._embeddings]

    def transform_weights(self, values, training):
        return [_fake_quant_rows(tf.convert_to_tensor(values[0]), self.bits)]

    def transform_rows(self, rows, ids, training):
        return _fake_quant_rows(rows, self.bits)

    def strip(self):
        layer = self.computing_layer()
        table = self.baked_weights(keep=lambda w: w is not self)[0]
        values, scales = quantize_rows(table, self.bits)
        return Int8RowsEmbedding.from_quantized(layer, values, scales, self.bits)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}


@keras.saving.register_keras_serializable("tfcompress")
class Int8RowsEmbedding(keras.layers.Layer):
    """An Embedding stored as int8 values with one float32 scale per row.

    Looks up the int8 rows, then multiplies by their scales: the `.keras`
    file and the TFLite flatbuffer hold the table as int8 (a quarter of
    float32). Made by stripping `RowwiseQuantize`; `mask_zero` as Embedding.

    Example:

    ```python
    import numpy as np
    import tfcompress as tfc
    values = np.array([[1, -2], [3, 4]], "int8")
    layer = tfc.embeddings.Int8RowsEmbedding(2, 2)
    layer.build()
    layer.set_weights([values, np.array([0.5, 0.25], "float32")])
    assert np.allclose(layer(np.array([1])), [[0.75, 1.0]])
    ```
    """

    def __init__(self, input_dim, output_dim, mask_zero=False, bits=8, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mask_zero, self.bits = bool(mask_zero), int(bits)
        self.supports_masking = self.mask_zero

    def build(self, input_shape=None):
        self.values = self.add_weight(name="values", shape=(self.input_dim, self.output_dim),
                                      dtype="int8", initializer="zeros", trainable=False)
        self.scales = self.add_weight(name="scales", shape=(self.input_dim,), initializer="ones",
                                      trainable=False)
        self.built = True

    @classmethod
    def from_quantized(cls, embedding, values, scales, bits):
        layer = cls(embedding.input_dim, embedding.output_dim, mask_zero=embedding.mask_zero,
                    bits=bits, name=embedding.name)
        layer.build()
        layer.set_weights([values, scales])
        return layer

    def call(self, inputs):
        ids = keras.ops.cast(inputs, "int32")
        rows = keras.ops.cast(keras.ops.take(self.values, ids, axis=0), "float32")
        return rows * keras.ops.expand_dims(keras.ops.take(self.scales, ids, axis=0), -1)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim,
                "output_dim": self.output_dim, "mask_zero": self.mask_zero, "bits": self.bits}
