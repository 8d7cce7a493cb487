"""Smaller tables with the Embedding call contract: quotient-remainder and hashed lookups."""

import math

import keras
import numpy as np

OPERATIONS = ("mult", "add", "concat")


class Table(keras.layers.Layer):
    """Base of this folder's tables: ids in (any int dtype, `mask_zero`), vectors out, a config.

    Example:

    ```python
    import keras
    from tfcompress.embeddings.tables import Table

    class Zeros(Table):
        def call(self, inputs):
            return keras.ops.zeros((*inputs.shape, self.output_dim))

    vectors = Zeros(10, 4)(keras.ops.array([1, 2]))   # shape (2, 4)
    ```
    """

    def __init__(self, input_dim, output_dim, mask_zero=False,
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        if input_dim < 1 or output_dim < 1:
            raise ValueError(f"input_dim and output_dim must be >= 1, got {input_dim}, "
                             f"{output_dim}.")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def _ids(self, inputs):
        return keras.ops.cast(inputs, "int32")

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim,
                "output_dim": self.output_dim, "mask_zero": self.mask_zero,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer)}


@keras.saving.register_keras_serializable("tfcompress")
class QREmbedding(Table):
    """Quotient-remainder compositional embedding (Shi et al. 2020).

    Id `i` reads row `i // num_buckets` of a quotient table and row
    `i % num_buckets` of a remainder table and combines them
    (`operation`: `"mult"` elementwise product, `"add"`, or `"concat"` of
    two half-width rows), so `input_dim` ids need `ceil(input_dim / m) + m`
    rows instead of `input_dim`: at `m = sqrt(input_dim)`, 2·sqrt rows. Every
    id keeps a distinct vector. For `"mult"` the quotient table starts at
    ones, so the layer starts as its remainder table.

    Args:
        input_dim, output_dim, mask_zero: as `keras.layers.Embedding`.
        num_buckets: rows of the remainder table (default `ceil(sqrt(input_dim))`).
        operation: `"mult"`, `"add"` or `"concat"`.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    layer = tfc.embeddings.QREmbedding(10_000, 16)   # 100 + 100 rows
    vectors = layer(keras.ops.array([[1, 9_999]]))   # shape (1, 2, 16)
    ```
    """

    def __init__(self, input_dim, output_dim, num_buckets=None, operation="mult", **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {OPERATIONS}, got {operation!r}.")
        if operation == "concat" and output_dim % 2:
            raise ValueError(f"operation='concat' needs an even output_dim, got {output_dim}.")
        self.num_buckets = int(num_buckets or math.ceil(math.sqrt(input_dim)))
        self.operation = operation

    def build(self, input_shape=None):
        width = self.output_dim // 2 if self.operation == "concat" else self.output_dim
        quotient_init = "ones" if self.operation == "mult" else (
            "zeros" if self.operation == "add" else self.embeddings_initializer)
        self.quotient = self.add_weight(
            name="quotient", shape=(math.ceil(self.input_dim / self.num_buckets), width),
            initializer=quotient_init)
        self.remainder = self.add_weight(name="remainder", shape=(self.num_buckets, width),
                                         initializer=self.embeddings_initializer)
        self.built = True

    def call(self, inputs):
        ids = self._ids(inputs)
        quotient = keras.ops.take(self.quotient, keras.ops.floor_divide(ids, self.num_buckets),
                                  axis=0)
        remainder = keras.ops.take(self.remainder, keras.ops.mod(ids, self.num_buckets), axis=0)
        if self.operation == "mult":
            return quotient * remainder
        if self.operation == "add":
            return quotient + remainder
        return keras.ops.concatenate([quotient, remainder], axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets,
                "operation": self.operation}


@keras.saving.register_keras_serializable("tfcompress")
class HashedEmbedding(Table):
    """The hashing trick with `num_hashes` hash functions into one table of `num_buckets` rows.

    Id `i` sums rows `h_k(i) = (a_k * (i mod P) + b_k) mod P mod num_buckets`
    for fixed odd multipliers (`seed`), so two ids share a whole vector
    only if every hash collides. The arithmetic is int32 and stays below
    2^31 (P = 46,337), so `num_buckets` is at most P; TFLite runs it with
    builtins.

    Example:

    ```python
    import keras
    import tfcompress as tfc
    layer = tfc.embeddings.HashedEmbedding(1_000_000, 16, num_buckets=20_000)
    vectors = layer(keras.ops.array([3, 999_999]))
    ```
    """

    PRIME = 46337

    def __init__(self, input_dim, output_dim, num_buckets, num_hashes=2, seed=0, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        if not 1 <= num_buckets <= self.PRIME:
            raise ValueError(f"num_buckets must be in [1, {self.PRIME}], got {num_buckets}.")
        if num_hashes < 1:
            raise ValueError(f"num_hashes must be >= 1, got {num_hashes}.")
        self.num_buckets, self.num_hashes, self.seed = int(num_buckets), int(num_hashes), int(seed)
        rng = np.random.default_rng(seed)
        self._a = (rng.integers(1, self.PRIME // 2, num_hashes) * 2 + 1).tolist()
        self._b = rng.integers(0, self.PRIME, num_hashes).tolist()

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(name="embeddings",
                                          shape=(self.num_buckets, self.output_dim),
                                          initializer=self.embeddings_initializer)
        self.built = True

    def buckets(self, ids):
        """The `num_hashes` rows each id reads, stacked on a last axis."""
        folded = keras.ops.mod(self._ids(ids), self.PRIME)
        return keras.ops.stack([keras.ops.mod(keras.ops.mod(folded * a + b, self.PRIME),
                                              self.num_buckets)
                                for a, b in zip(self._a, self._b)], axis=-1)

    def call(self, inputs):
        rows = keras.ops.take(self.embeddings, self.buckets(inputs), axis=0)
        return keras.ops.sum(rows, axis=-2)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets,
                "num_hashes": self.num_hashes, "seed": self.seed}
