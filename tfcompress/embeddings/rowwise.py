"""Row-wise quantized embedding tables: one scale per row, int8 (or int4 values) stored."""

import keras
import numpy as np
import tensorflow as tf

from tfcompress.core import WeightWrapper
from tfcompress.embeddings.tables import Table


def _levels(bits):
    return 2 ** (bits - 1) - 1  # symmetric, narrow: int8 [-127, 127], int4 [-7, 7]


#: A row's scale is stored as one int8 code e: scale = 2 ** (e / STEPS_PER_OCTAVE + OFFSET),
#: 2^(1/16) apart (at most 4.4 % of resolution lost), from 2^-14 to 2^1.94 (rows up to
#: ~490 in int8, ~27 in int4). TFLite's GATHER reads no float16, so a byte it is.
STEPS_PER_OCTAVE, OFFSET = 16.0, -6.0


def _scale_codes(max_abs, bits):
    """int8 codes of the smallest representable scales >= max |row| / levels."""
    scale = tf.maximum(tf.cast(max_abs, "float32") / _levels(bits), 1e-30)
    code = tf.math.ceil((tf.math.log(scale) / np.log(2.0) - OFFSET) * STEPS_PER_OCTAVE - 1e-4)
    return tf.cast(tf.clip_by_value(code, -128, 127), "int8")


def decode_scales(codes):
    """float32 scales of int8 codes (CAST, MUL, ADD, EXP: TFLite builtins)."""
    code = keras.ops.cast(codes, "float32")
    return keras.ops.exp((code / STEPS_PER_OCTAVE + OFFSET) * float(np.log(2.0)))


def _scales(max_abs, bits):
    """Per-row scales exactly as stored (through their int8 codes)."""
    return decode_scales(_scale_codes(max_abs, bits))


def quantize_rows(table, bits):
    """`(values int8, scale codes int8)`: each row symmetric over its own max |value|.

    Example:

    ```python
    import numpy as np
    from tfcompress.embeddings import rowwise
    q, s = rowwise.quantize_rows(np.array([[0.5, -1.0], [2.0, 0.0]], "float32"), 8)
    scales = np.asarray(rowwise.decode_scales(s))
    assert q.dtype == np.int8 and np.allclose(q * scales[:, None], [[0.5, -1.0], [2.0, 0.0]],
                                              atol=1e-2)
    ```
    """
    table = np.asarray(table, "float32")
    codes = np.asarray(_scale_codes(np.abs(table).max(axis=1), bits))
    scales = np.asarray(decode_scales(codes))
    values = np.clip(np.round(table / scales[:, None]), -_levels(bits), _levels(bits))
    return values.astype("int8"), codes


def pack_int4(values):
    """int4 values in [-7, 7], two per byte (even column low), as int8 `(rows, ceil(dim / 2))`.

    Example:

    ```python
    import numpy as np
    from tfcompress.embeddings import rowwise
    packed = rowwise.pack_int4(np.array([[1, -7, 3]], "int8"))
    assert packed.shape == (1, 2)
    ```
    """
    values = np.asarray(values, "int32")
    if values.shape[1] % 2:
        values = np.pad(values, [(0, 0), (0, 1)])
    low, high = values[:, 0::2] + 8, values[:, 1::2] + 8
    return (high * 16 + low - 128).astype("int8")


def unpack_int4(packed, dim):
    """The inverse of `pack_int4` in graph ops TFLite has as builtins (CAST, FLOOR_DIV, SUB)."""
    ops = keras.ops
    byte = ops.cast(packed, "int32") + 128
    high = ops.floor_divide(byte, 16)
    low = byte - high * 16
    pairs = ops.stack([low - 8, high - 8], axis=-1)
    shape = ops.shape(packed)
    values = ops.reshape(pairs, (*shape[:-1], 2 * packed.shape[-1]))
    return values[..., :dim]


def _fake_quant_rows(rows, bits):
    """Rows on their own int grid, straight-through gradient (rows: [..., dim])."""
    levels = float(_levels(bits))
    scale = tf.stop_gradient(_scales(tf.reduce_max(tf.abs(rows), axis=-1, keepdims=True), bits))
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
class Int8RowsEmbedding(Table):
    """An Embedding stored as int8 values (or int4, two per byte), one int8 scale code per row.

    Looks up the rows, unpacks int4 if need be, and multiplies by their
    scales (`rowwise.decode_scales`): the `.keras` file and the TFLite
    flatbuffer hold the table as int8 (a quarter of float32; int4: an
    eighth) plus one byte per row.
    Made by stripping `RowwiseQuantize`; `mask_zero` as Embedding.

    Example:

    ```python
    import numpy as np
    import tfcompress as tfc
    values = np.array([[1, -2], [3, 4]], "int8")
    layer = tfc.embeddings.Int8RowsEmbedding(2, 2)
    layer.build()
    layer.set_weights([values, np.array([80, 64], "int8")])  # scales 2^-1, 2^-2
    assert np.allclose(layer(np.array([1])), [[0.75, 1.0]])
    ```
    """

    def __init__(self, input_dim, output_dim, mask_zero=False, bits=8, **kwargs):
        super().__init__(input_dim, output_dim, mask_zero=mask_zero, **kwargs)
        self.bits = int(bits)

    def build(self, input_shape=None):
        columns = (self.output_dim + 1) // 2 if self.bits == 4 else self.output_dim
        self.values = self.add_weight(name="values", shape=(self.input_dim, columns),
                                      dtype="int8", initializer="zeros", trainable=False)
        self.scales = self.add_weight(name="scale_codes", shape=(self.input_dim,), dtype="int8",
                                      initializer="zeros", trainable=False)
        self.built = True

    @classmethod
    def from_quantized(cls, embedding, values, scales, bits):
        layer = cls(embedding.input_dim, embedding.output_dim, mask_zero=embedding.mask_zero,
                    bits=bits, name=embedding.name)
        layer.build()
        layer.set_weights([pack_int4(values) if bits == 4 else values, scales])
        return layer

    def call(self, inputs):
        ids = self._ids(inputs)
        rows = keras.ops.take(self.values, ids, axis=0)
        if self.bits == 4:
            rows = unpack_int4(rows, self.output_dim)
        scales = decode_scales(keras.ops.take(self.scales, ids, axis=0))
        return keras.ops.cast(rows, "float32") * keras.ops.expand_dims(scales, -1)

    def get_config(self):
        return {**super().get_config(), "bits": self.bits}
