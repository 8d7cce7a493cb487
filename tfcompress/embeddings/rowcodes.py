"""How a table is stored row by row: int8 (or int4 packed) values and one int8 scale code a row.

```python
import numpy as np
from tfcompress.embeddings import rowcodes
values, codes = rowcodes.quantize_rows(np.ones((3, 4), "float32"), bits=4)
rows = rowcodes.dequantize(rowcodes.pack_int4(values), codes, bits=4, width=4)  # ~ones
```
"""

import keras
import numpy as np
import tensorflow as tf


def levels(bits):
    """The largest stored magnitude: 127 for int8, 7 for int4 (symmetric, narrow)."""
    return 2 ** (bits - 1) - 1


#: A row's scale is stored as one int8 code e: scale = 2 ** (e / STEPS_PER_OCTAVE + OFFSET),
#: 2^(1/16) apart (at most 4.4 % of resolution lost), from 2^-14 to 2^1.94 (rows up to
#: ~490 in int8, ~27 in int4). TFLite's GATHER reads no float16, so a byte it is.
STEPS_PER_OCTAVE, OFFSET = 16.0, -6.0


def _scale_codes(max_abs, bits):
    """int8 codes of the smallest representable scales >= max |row| / levels."""
    scale = tf.maximum(tf.cast(max_abs, "float32") / levels(bits), 1e-30)
    code = tf.math.ceil((tf.math.log(scale) / np.log(2.0) - OFFSET) * STEPS_PER_OCTAVE - 1e-4)
    return tf.cast(tf.clip_by_value(code, -128, 127), "int8")


def decode_scales(codes):
    """float32 scales of int8 codes (CAST, MUL, ADD, EXP: TFLite builtins)."""
    code = keras.ops.cast(codes, "float32")
    return keras.ops.exp((code / STEPS_PER_OCTAVE + OFFSET) * float(np.log(2.0)))


def scales_of(max_abs, bits):
    """Per-row scales exactly as stored (through their int8 codes)."""
    return decode_scales(_scale_codes(max_abs, bits))


def quantize_rows(table, bits):
    """`(values int8, scale codes int8)`: each row symmetric over its own max |value|.

    Example:

    ```python
    import numpy as np
    from tfcompress.embeddings import rowcodes
    q, s = rowcodes.quantize_rows(np.array([[0.5, -1.0], [2.0, 0.0]], "float32"), 8)
    scales = np.asarray(rowcodes.decode_scales(s))
    assert q.dtype == np.int8 and np.allclose(q * scales[:, None], [[0.5, -1.0], [2.0, 0.0]],
                                              atol=1e-2)
    ```
    """
    table = np.asarray(table, "float32")
    codes = np.asarray(_scale_codes(np.abs(table).max(axis=1), bits))
    scales = np.asarray(decode_scales(codes))
    values = np.clip(np.round(table / scales[:, None]), -levels(bits), levels(bits))
    return values.astype("int8"), codes


def pack_int4(values):
    """int4 values in [-7, 7], two per byte (even column low), as int8 `(rows, ceil(dim / 2))`.

    Example:

    ```python
    import numpy as np
    from tfcompress.embeddings import rowcodes
    packed = rowcodes.pack_int4(np.array([[1, -7, 3]], "int8"))
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


def dequantize(values, codes, bits, width):
    """float32 rows from stored values (int4: packed) and their scale codes (graph ops)."""
    if bits == 4:
        values = unpack_int4(values, width)
    scales = decode_scales(codes)
    return keras.ops.cast(values, "float32") * keras.ops.expand_dims(scales, -1)


def columns(bits, width):
    """Stored columns of a `width`-wide row: int4 packs two a byte."""
    return (width + 1) // 2 if bits == 4 else width
