"""Tables with the Embedding call contract: the base, quotient-remainder, hashed, mixed-dim."""

import math

import keras
import numpy as np

from tfcompress.embeddings import rowcodes

OPERATIONS = ("mult", "add", "concat")


class Table(keras.layers.Layer):
    """Base of this folder's tables: ids in (any int dtype, `mask_zero`), vectors out, a config.

    A subclass makes its row tables with `add_table` and reads them with
    `gather`; with `bits=8` or `4` the same layer stores every row table as
    int8 values (int4: two a byte) and one int8 scale code per row
    (`rowcodes`), dequantized after the lookup. `RowwiseQuantize` trains a
    float table for that, and `tfcompress.strip` calls `stored_as`.

    Example:

    ```python
    import keras
    from tfcompress.embeddings.tables import Table

    class Plain(Table):
        def build(self, input_shape=None):
            self.add_table("embeddings", self.input_dim, self.output_dim)

        def call(self, inputs):
            return self.gather("embeddings", self._ids(inputs))

    vectors = Plain(10, 4)(keras.ops.array([1, 2]))             # shape (2, 4)
    small = Plain(10, 4, bits=4)(keras.ops.array([1, 2]))        # tables stored int4
    ```
    """

    def __init__(self, input_dim, output_dim, mask_zero=False,
                 embeddings_initializer="uniform", bits=None, **kwargs):
        super().__init__(**kwargs)
        if input_dim < 1 or output_dim < 1:
            raise ValueError(f"input_dim and output_dim must be >= 1, got {input_dim}, "
                             f"{output_dim}.")
        if bits not in (None, 4, 8):
            raise ValueError(f"bits must be None (float32), 8 or 4, got {bits!r}.")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.bits = bits
        self._table_widths = {}

    def add_table(self, name, rows, width, initializer=None):
        """A `(rows, width)` row table: a float32 weight, or its int8 codes when `bits` is set."""
        self._table_widths[name] = width
        if self.bits is None:
            setattr(self, name, self.add_weight(
                name=name, shape=(rows, width),
                initializer=initializer or self.embeddings_initializer))
            return
        setattr(self, f"{name}_values", self.add_weight(
            name=f"{name}_values", shape=(rows, rowcodes.columns(self.bits, width)),
            dtype="int8", initializer="zeros", trainable=False))
        setattr(self, f"{name}_scales", self.add_weight(
            name=f"{name}_scales", shape=(rows,), dtype="int8", initializer="zeros",
            trainable=False))

    def gather(self, name, ids):
        """float32 rows `ids` of row table `name`."""
        if self.bits is None:
            return keras.ops.take(getattr(self, name), ids, axis=0)
        return rowcodes.dequantize(keras.ops.take(getattr(self, f"{name}_values"), ids, axis=0),
                                   keras.ops.take(getattr(self, f"{name}_scales"), ids, axis=0),
                                   self.bits, self._table_widths[name])

    def row_tables(self):
        """The float32 row tables (what row-wise quantization rounds); none once stored int8."""
        return [] if self.bits is not None else [getattr(self, n) for n in self._table_widths]

    def stored_as(self, bits, weights):
        """A copy of this float layer, its row tables stored with `bits` (int8 codes).

        `weights`: the values of `self.weights`, in order (a wrapper's baked values).
        """
        new = type(self).from_config({**self.get_config(), "bits": bits})
        new.build()
        tables = {id(getattr(self, n)): n for n in self._table_widths}
        stored = {id(getattr(new, f"{n}{part}")) for n in self._table_widths
                  for part in ("_values", "_scales")}
        rest = iter([w for w in new.weights if id(w) not in stored])
        for variable, value in zip(self.weights, weights):
            if id(variable) not in tables:
                next(rest).assign(value)
                continue
            values, codes = rowcodes.quantize_rows(value, bits)
            name = tables[id(variable)]
            getattr(new, f"{name}_values").assign(
                rowcodes.pack_int4(values) if bits == 4 else values)
            getattr(new, f"{name}_scales").assign(codes)
        return new

    def compute_mask(self, inputs, mask=None):
        return keras.ops.not_equal(inputs, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def _ids(self, inputs):
        return keras.ops.cast(inputs, "int32")

    def get_config(self):
        config = {**super().get_config(), "input_dim": self.input_dim,
                  "output_dim": self.output_dim, "mask_zero": self.mask_zero,
                  "embeddings_initializer": keras.initializers.serialize(
                      self.embeddings_initializer)}
        if self.bits is not None:
            config["bits"] = self.bits
        return config


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
        self.add_table("quotient", math.ceil(self.input_dim / self.num_buckets), width,
                       quotient_init)
        self.add_table("remainder", self.num_buckets, width)
        self.built = True

    def call(self, inputs):
        ids = self._ids(inputs)
        quotient = self.gather("quotient", keras.ops.floor_divide(ids, self.num_buckets))
        remainder = self.gather("remainder", keras.ops.mod(ids, self.num_buckets))
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
        self.add_table("embeddings", self.num_buckets, self.output_dim)
        self.built = True

    def buckets(self, ids):
        """The `num_hashes` rows each id reads, stacked on a last axis."""
        folded = keras.ops.mod(self._ids(ids), self.PRIME)
        return keras.ops.stack([keras.ops.mod(keras.ops.mod(folded * a + b, self.PRIME),
                                              self.num_buckets)
                                for a, b in zip(self._a, self._b)], axis=-1)

    def call(self, inputs):
        return keras.ops.sum(self.gather("embeddings", self.buckets(inputs)), axis=-2)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets,
                "num_hashes": self.num_hashes, "seed": self.seed}


def mixed_dim_blocks(frequencies, output_dim, num_blocks=4, alpha=0.3, min_dim=1):
    """`(block_rows, block_dims)` for `MixedDimEmbedding` from how often each id is read.

    Ids ranked by frequency fill blocks whose sizes grow tenfold (the last
    block holds the rarest 90 %); block `i` gets
    `output_dim * (mean frequency of block i / of block 0) ** alpha`
    dimensions (Ginart et al. 2019's power rule), at least `min_dim`.

    Example:

    ```python
    import numpy as np
    from tfcompress.embeddings.tables import mixed_dim_blocks
    counts = 1e6 / np.arange(1, 10_001) ** 1.05            # Zipf
    rows, dims = mixed_dim_blocks(counts, 32)               # (10, 90, 900, 9000), (32, 15, 7, 4)
    ```
    """
    counts = np.sort(np.asarray(frequencies, "float64"))[::-1]
    rows = len(counts)
    if num_blocks < 1 or not 0 <= alpha <= 1:
        raise ValueError(f"num_blocks must be >= 1 and alpha in [0, 1]; got {num_blocks}, "
                         f"{alpha}.")
    edges = sorted({0, rows, *(int(round(rows / 10 ** k)) for k in range(1, num_blocks))})
    edges = [e for e in edges if 0 <= e <= rows]
    means = [max(counts[a:b].mean(), 1e-12) for a, b in zip(edges, edges[1:])]
    dims = [max(min_dim, min(output_dim, int(round(output_dim * (m / means[0]) ** alpha))))
            for m in means]
    return tuple(b - a for a, b in zip(edges, edges[1:])), tuple(dims)


@keras.saving.register_keras_serializable("tfcompress")
class MixedDimEmbedding(Table):
    """Mixed-dimension embedding (Ginart et al. 2019): frequent ids wide, rare ids narrow.

    Ids are ranked by how often they are read (an int32 `ranks` map, from the
    frequencies the user passes; `ranks=None`: ids already ranked, id 0 the
    most frequent) and cut into row blocks; block `i` is a
    `(block_rows[i], block_dims[i])` table projected to `output_dim` by its
    own `(block_dims[i], output_dim)` matrix (none where the block is
    `output_dim` wide). Each lookup reads one row of each block, so the
    work follows the batch.

    Args:
        input_dim, output_dim, mask_zero: as `keras.layers.Embedding`.
        block_rows: rows of each block, summing to `input_dim`.
        block_dims: each block's dimension (`mixed_dim_blocks` picks both).
        ranked: True when the ids are already ranked (no `ranks` map).

    Example:

    ```python
    import numpy as np
    import tfcompress as tfc
    counts = np.random.default_rng(0).zipf(1.2, 100_000) % 10_000
    layer = tfc.embeddings.MixedDimEmbedding.from_frequencies(
        np.bincount(counts, minlength=10_000), 16)
    vectors = layer(np.array([[3, 9_999]]))   # shape (1, 2, 16)
    ```
    """

    def __init__(self, input_dim, output_dim, block_rows, block_dims, ranked=False, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        block_rows, block_dims = tuple(map(int, block_rows)), tuple(map(int, block_dims))
        if sum(block_rows) != input_dim or len(block_rows) != len(block_dims) or min(
                block_rows + block_dims) < 1:
            raise ValueError(f"block_rows must be positive and sum to input_dim ({input_dim}), "
                             f"one positive dim per block; got block_rows={block_rows}, "
                             f"block_dims={block_dims}.")
        self.block_rows, self.block_dims, self.ranked = block_rows, block_dims, bool(ranked)

    @classmethod
    def from_frequencies(cls, frequencies, output_dim, num_blocks=4, alpha=0.3, min_dim=1,
                         **kwargs):
        """A built layer whose ids are ranked by `frequencies` (reads per id, e.g. `np.bincount`)."""
        frequencies = np.asarray(frequencies)
        block_rows, block_dims = mixed_dim_blocks(frequencies, output_dim, num_blocks, alpha,
                                                  min_dim)
        layer = cls(len(frequencies), output_dim, block_rows, block_dims, **kwargs)
        layer.build()
        order = np.argsort(-frequencies, kind="stable")
        ranks = np.empty(len(order), "int32")
        ranks[order] = np.arange(len(order), dtype="int32")
        layer.ranks.assign(ranks)
        return layer

    def build(self, input_shape=None):
        for i, (rows, dim) in enumerate(zip(self.block_rows, self.block_dims)):
            self.add_table(f"block_{i}", rows, dim)
            if dim != self.output_dim:
                setattr(self, f"projection_{i}", self.add_weight(
                    name=f"projection_{i}", shape=(dim, self.output_dim),
                    initializer="glorot_uniform"))
        if not self.ranked:
            self.ranks = self.add_weight(name="ranks", shape=(self.input_dim,), dtype="int32",
                                         initializer="zeros", trainable=False)
        self.built = True

    def call(self, inputs):
        ops = keras.ops
        ids = self._ids(inputs)
        rank = ids if self.ranked else ops.take(self.ranks, ids, axis=0)
        out, start = 0.0, 0
        for i, (rows, dim) in enumerate(zip(self.block_rows, self.block_dims)):
            local = rank - start
            inside = ops.logical_and(local >= 0, local < rows)
            vectors = self.gather(f"block_{i}", ops.where(inside, local, 0))
            if dim != self.output_dim:
                vectors = ops.matmul(vectors, getattr(self, f"projection_{i}"))
            out = out + vectors * ops.expand_dims(ops.cast(inside, vectors.dtype), -1)
            start += rows
        return out

    def get_config(self):
        return {**super().get_config(), "block_rows": list(self.block_rows),
                "block_dims": list(self.block_dims), "ranked": self.ranked}
