"""Mask functions: weights (and a sparsity) in, a 0/1 mask of the same shape out.

Pure TensorFlow and XLA-friendly: thresholds come from `tf.sort` and a gather
(a data-dependent `top_k` made every XLA train step take seconds here). Above
`SORT_LIMIT` entries (an embedding table of a million rows) the threshold is
found exactly without sorting the weights: a sample of rows brackets it, one
compiled pass counts each row's entries at a few levels inside the bracket,
and only the entries at the level holding the threshold are sorted; a second
compiled pass writes the mask. XLA reads a variable in place (TF's own dense
read copies a table that sparse updates touched), so the extra memory is the
new mask and one int64 per row: ~70 ms for 32 M entries on 2 cores, where
chunked TF ops took ~200 ms. If the sample's bracket misses (rare), bit-pattern
histograms (a float32 magnitude's bits, read as an integer, order as the
magnitudes do), read a chunk of rows at a time, answer instead.
"""

import tensorflow as tf

#: Weights with more entries than this get their threshold without a sort of all of them.
SORT_LIMIT = 1 << 22
#: Entries read at a time by the fallback's histogram passes (whole rows of the weight).
CHUNK = 1 << 20
_HIGH, _LOW = 1 << 15, 1 << 16  # bins of a magnitude's high (sign cleared) and low 16 bits


def _threshold_by_sort(flat, keep):
    return flat >= tf.gather(tf.sort(flat, direction="DESCENDING"), keep - 1)


def _count(values, bins, weights=None):
    """`bincount` with a constant size (XLA needs it)."""
    if weights is None:
        weights = tf.zeros([0], "int32")
    return tf.raw_ops.DenseBincount(input=values, size=bins, weights=weights)


def _top_bin(counts, need):
    """The highest bin whose count from the top reaches `need`, and the count above it."""
    from_top = tf.cumsum(counts, reverse=True)
    bins = counts.shape[0]
    index = tf.reduce_max(tf.where(from_top >= need, tf.range(bins), 0))
    return index, from_top[index] - counts[index]


def _magnitudes(values, kept):
    """|values| as a [rows, entries per row] float32 matrix, -1 where not `kept`."""
    values = tf.abs(tf.cast(values, "float32"))
    values = tf.reshape(values, [tf.shape(values)[0], -1])
    if kept is None:
        return values
    return tf.where(tf.reshape(tf.cast(kept, "bool"), tf.shape(values)), values, -1.0)


def _bits(weights, kept, rows):
    """`_magnitudes` of `rows` of `weights` as int32 bit patterns (which order as the
    magnitudes do), flat; negative (counted in no bin, kept by no threshold) where not
    `kept` or where `rows` is past the last row."""
    valid = rows < weights.shape[0]
    rows = tf.minimum(rows, weights.shape[0] - 1)
    magnitudes = _magnitudes(tf.gather(weights, rows),
                             None if kept is None else tf.gather(kept, rows))
    magnitudes = tf.where(valid[:, None], magnitudes, -1.0)
    return tf.reshape(tf.bitcast(magnitudes, "int32"), [-1])


def _chunked(weights, kept, body, initial):
    """Folds `body(state, bits, start)` over chunks of rows of `weights` (a tensor or a
    variable): `bits` from `_bits`, `start` the flat index of the chunk's first entry."""
    rows = weights.shape[0]
    per_row = max(weights.shape.num_elements() // max(rows, 1), 1)
    chunk = max(CHUNK // per_row, 1)

    def step(i, state):
        bits = _bits(weights, kept, i * chunk + tf.range(chunk))
        return i + 1, body(state, bits, i * chunk * per_row)

    _, state = tf.while_loop(lambda i, _: i < -(-rows // chunk), step,
                             (tf.constant(0), initial), parallel_iterations=1)
    return state


def _stacked(parts, size):
    """The flat concatenation of a TensorArray of equal chunks, cut to `size`."""
    return tf.reshape(parts.stack(), [-1])[:size]


def _magnitude_by_bits(weights, kept, keep):
    """`magnitude >= the keep-th largest` (bool, flat), by chunks."""
    high = _chunked(
        weights, kept, lambda counts, bits, _: counts + _count(
            tf.bitwise.right_shift(tf.maximum(bits, 0), 16), _HIGH),  # -1s in bin 0: harmless
        tf.zeros([_HIGH], "int32"))
    index, above = _top_bin(high, keep)
    low = _chunked(
        weights, kept, lambda counts, bits, _: counts + _count(
            tf.bitwise.bitwise_and(bits, 0xFFFF), _LOW,
            tf.cast(tf.equal(tf.bitwise.right_shift(bits, 16), index), "int32")),
        tf.zeros([_LOW], "int32"))
    low_index, _ = _top_bin(low, keep - above)
    threshold = tf.bitwise.bitwise_or(tf.bitwise.left_shift(index, 16), low_index)
    parts = _chunked(
        weights, kept, lambda parts, bits, _: parts.write(parts.size(), bits >= threshold),
        tf.TensorArray("bool", size=0, dynamic_size=True))
    return _stacked(parts, weights.shape.num_elements())


#: Entries the bracketing sample reads; its margin, in standard deviations of a sample rank.
SAMPLE, _MARGIN = 1 << 17, 5.0


# Whole-table passes, compiled: XLA reads a variable without copying it (TF's dense read
# copies a table that sparse updates touched) and fuses a pass into one sweep, where TF's
# ops write a table-sized tensor each.
@tf.function(jit_compile=True)
def _levels(weights, kept, edges, bits):
    """Per row, how many of its entries are at each level: level j (1 <= j <= len(edges))
    holds the magnitudes in [edges[j-1], edges[j]) (edges ascending; the last level: at
    or above the last edge). Packed: level j's count in bits [bits·(j-1), bits·j) of an
    int64 (one reduction: XLA runs one far faster than several)."""
    magnitudes = _magnitudes(weights, kept)
    level = tf.zeros_like(magnitudes, "int64")
    for j in range(edges.shape[0]):
        level += tf.cast(magnitudes >= edges[j], "int64")
    packed = tf.where(level > 0, tf.bitwise.left_shift(tf.constant(1, "int64"),
                                                      bits * (level - 1)), 0)
    return tf.reduce_sum(packed, axis=1)


def _unpack(packed, level, bits):
    """Each row's count at `level` (counted from 0 here) out of `_levels`' packed int64s."""
    return tf.bitwise.bitwise_and(tf.bitwise.right_shift(packed, tf.cast(bits * level, "int64")),
                                  (1 << bits) - 1)


@tf.function(jit_compile=True)
def _totals(packed, fields, bits):
    """Entries at each level, all rows together."""
    return tf.reduce_sum(_unpack(packed[:, None], tf.range(fields, dtype="int64"), bits), axis=0)


@tf.function(jit_compile=True)
def _at_least(weights, kept, threshold):
    return tf.reshape(_magnitudes(weights, kept) >= threshold, [-1])


def _magnitude_by_bracket(weights, kept, keep):
    """`magnitude >= the keep-th largest` (bool, flat) in two passes over `weights`.

    A sample of evenly spaced rows brackets the threshold and splits the
    bracket into levels. One pass counts, per row, the entries at each level
    (and above the bracket), which names the level holding the threshold; the
    entries at that level (from the few rows holding any) are sorted to
    settle it exactly; a second pass writes the mask. Where the sample's
    bracket misses (rare), `_magnitude_by_bits` answers.
    """
    size, rows = weights.shape.num_elements(), weights.shape[0]
    per_row = size // rows
    bits = per_row.bit_length()  # a row's count at one level fits
    fields = min(64 // bits, 16)  # levels: the bracket's parts, and the one above it
    ids = tf.range(0, rows, max(rows * per_row // SAMPLE, 1))
    sample = _magnitudes(tf.gather(weights, ids),
                         None if kept is None else tf.gather(kept, ids))
    sample = tf.sort(tf.reshape(sample, [-1]))
    count = tf.cast(tf.size(sample), "float32")
    share = tf.cast(keep, "float32") / size
    rank, margin = (1 - share) * count, _MARGIN * tf.sqrt(count * share * (1 - share)) + 8
    low_rank = tf.clip_by_value(tf.cast(tf.floor(rank - margin), "int32"), 0, tf.size(sample) - 1)
    high_rank = tf.clip_by_value(tf.cast(tf.math.ceil(rank + margin), "int32"), 0,
                                 tf.size(sample) - 1)
    steps = tf.cast(tf.linspace(tf.cast(low_rank, "float32"), tf.cast(high_rank, "float32"),
                                fields), "int32")
    edges = tf.maximum(tf.gather(sample, steps), 0.0)  # ascending; entries not kept: below
    edges = tf.concat([edges[:-1], [tf.experimental.numpy.nextafter(edges[-1], float("inf"))]], 0)
    packed = _levels(weights, kept, edges, bits)
    totals = _totals(packed, fields, bits)  # entries per level, bottom (1) to top (above)
    from_top = tf.cumsum(totals, reverse=True)
    keep64 = tf.cast(keep, "int64")
    level = tf.reduce_max(tf.where(from_top >= keep64, tf.range(fields), -1))
    # the threshold is at a level inside the bracket (a negative margin makes none)
    settled = tf.logical_and(low_rank < high_rank,
                             tf.logical_and(level >= 0, level < fields - 1))

    def exact():
        some = tf.where(_unpack(packed, level, bits) > 0)[:, 0]  # the few rows with any there
        magnitudes = tf.reshape(_magnitudes(
            tf.gather(weights, some), None if kept is None else tf.gather(kept, some)), [-1])
        bottom = edges[level]
        top = tf.concat([edges, [float("inf")]], 0)[level + 1]
        there = tf.boolean_mask(magnitudes, tf.logical_and(magnitudes >= bottom, magnitudes < top))
        higher = from_top[level] - totals[level]
        threshold = tf.gather(tf.sort(there, direction="DESCENDING"),
                              tf.cast(keep64 - higher - 1, "int32"))
        return _at_least(weights, kept, threshold)

    return tf.cond(settled, exact, lambda: _magnitude_by_bits(weights, kept, keep))


def _in_xla():
    """Whether the graph being built is compiled by XLA (whose loops cannot collect a
    data-dependent number of entries, and whose scatter-based bincount crawls on CPU)."""
    from tensorflow.python.ops import control_flow_util  # no public equivalent

    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def magnitude(weights, sparsity, kept=None, dtype=None):
    """Keeps the `round(n * (1 - sparsity))` largest-magnitude entries (at least 1).

    `weights` may be a variable: above `SORT_LIMIT` entries compiled passes
    read it in place, never a copy of it. `kept`: a 0/1 mask (tensor or variable) of the
    entries still in (others count as zero, and stay out), so a caller need
    not make `weights * kept` (a second table-sized tensor). `dtype`: the
    mask's (default the weights').

    Example:

    ```python
    import tensorflow as tf
    from tfcompress.pruning import masks
    masks.magnitude(tf.constant([0.1, -3.0, 2.0, 0.5]), 0.5)  # [0, 1, 1, 0]
    ```
    """
    size = weights.shape.num_elements()
    keep = tf.maximum(tf.cast(tf.round(size * (1.0 - tf.cast(sparsity, "float32"))),
                              "int32"), 1)
    if size > SORT_LIMIT and not _in_xla():
        every = lambda: tf.ones([size], "bool") if kept is None else tf.cast(  # noqa: E731
            tf.reshape(tf.convert_to_tensor(kept), [-1]), "bool")
        result = tf.cond(keep >= size, every, lambda: _magnitude_by_bracket(weights, kept, keep))
        return tf.cast(tf.reshape(result, weights.shape), dtype or weights.dtype)
    flat = tf.abs(tf.reshape(tf.convert_to_tensor(weights), [-1]))
    if kept is not None:
        kept = tf.cast(tf.reshape(tf.convert_to_tensor(kept), [-1]), "bool")
        flat = tf.where(kept, flat, tf.zeros_like(flat))
    result = _threshold_by_sort(flat, keep)
    if kept is not None:
        result = tf.logical_and(result, kept)
    result = tf.reshape(result, weights.shape)
    return tf.cast(result, dtype or weights.dtype)


def block(weights, sparsity, block_size, pooling="AVG"):
    """Magnitude mask over `block_size` blocks of a 2-D weight.

    Each block's magnitude is the mean (`"AVG"`) or max (`"MAX"`) of its
    entries' magnitudes (edge blocks: over the entries they hold); whole
    blocks are kept or pruned.

    Example:

    ```python
    import tensorflow as tf
    from tfcompress.pruning import masks
    m = masks.block(tf.random.normal([8, 8]), 0.5, (2, 2))
    ```
    """
    rows, cols = weights.shape
    bh, bw = block_size
    pad = [[0, -rows % bh], [0, -cols % bw]]
    magnitudes = tf.pad(tf.abs(weights), pad)
    counts = tf.pad(tf.ones_like(weights), pad)
    shape = [(rows + pad[0][1]) // bh, bh, (cols + pad[1][1]) // bw, bw]
    if pooling == "MAX":
        pooled = tf.reduce_max(tf.reshape(magnitudes, shape), axis=[1, 3])
    else:
        pooled = tf.reduce_sum(tf.reshape(magnitudes, shape), axis=[1, 3]) / (
            tf.reduce_sum(tf.reshape(counts, shape), axis=[1, 3])
        )
    block_mask = magnitude(pooled, sparsity)
    full = tf.repeat(tf.repeat(block_mask, bh, axis=0), bw, axis=1)
    return full[:rows, :cols]


def m_by_n(weights, m, n):
    """Zeros the `m` smallest-magnitude entries in each run of `n` input channels.

    Runs go along the input-channel axis (axis -2: `[in, out]` for Dense,
    `[h, w, in, out]` for Conv2D), the layout sparse tensor cores and
    TFLite's sparse kernels read. `m_by_n(w, 2, 4)` is 2:4 sparsity.

    Example:

    ```python
    import tensorflow as tf
    from tfcompress.pruning import masks
    m = masks.m_by_n(tf.random.normal([8, 3]), 2, 4)  # 2 zeros in every 4
    ```
    """
    rank = len(weights.shape)
    perm = [rank - 1] + list(range(rank - 2)) + [rank - 2]
    moved = tf.transpose(weights, perm)
    moved_shape = moved.shape
    channels = moved_shape[-1]
    rows = tf.reshape(tf.abs(moved), [-1, channels])
    padding = -channels % n
    groups = tf.reshape(tf.pad(rows, [[0, 0], [0, padding]]), [-1, n])
    order = tf.argsort(groups, axis=-1, direction="DESCENDING", stable=True)
    ranks = tf.argsort(order, axis=-1, stable=True)
    keep = tf.cast(ranks < n - m, weights.dtype)
    keep = tf.reshape(keep, [-1, channels + padding])[:, :channels]
    keep = tf.reshape(keep, moved_shape)
    return tf.transpose(keep, tf.math.invert_permutation(perm))
