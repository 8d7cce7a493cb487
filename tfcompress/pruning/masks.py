"""Mask functions: weights (and a sparsity) in, a 0/1 mask of the same shape out.

Pure TensorFlow and XLA-friendly: thresholds come from `tf.sort` and a gather
(a data-dependent `top_k` made every XLA train step take seconds here). Above
`SORT_LIMIT` entries (an embedding table of a million rows) the threshold comes
from two passes of 65,536-bin histograms instead, O(n) rather than a sort's
O(n log n): 0.1 s instead of 6.5 s for 32 M entries here.
"""

import tensorflow as tf

#: Weights with more entries than this get their threshold from histograms.
SORT_LIMIT = 1 << 22
_BINS = 1 << 16


def _threshold_by_sort(flat, keep):
    return flat >= tf.gather(tf.sort(flat, direction="DESCENDING"), keep - 1)


def _top_bin(counts, need):
    """The highest bin whose count from the top reaches `need`, and the count above it."""
    from_top = tf.cumsum(counts, reverse=True)
    index = tf.reduce_max(tf.where(from_top >= need, tf.range(_BINS), 0))
    return index, from_top[index] - counts[index]


#: The histogram passes run over this many slices of a large weight, so their
#: temporaries are a slice's, not the whole table's.
_SLICES = 16


def _bins(slice_, width, index=None):
    """Coarse bins of `slice_` (magnitudes), or, given the coarse `index`, the fine bins
    within it (and where the slice falls in that coarse bin)."""
    coarse = tf.clip_by_value(tf.cast(tf.floor(slice_ / width), "int32"), 0, _BINS - 1)
    if index is None:
        return coarse
    offset = (slice_ - tf.cast(index, slice_.dtype) * width) / width * _BINS
    fine = tf.clip_by_value(tf.cast(tf.floor(offset), "int32"), 0, _BINS - 1)
    return coarse, fine


def _threshold_by_histogram(slices, keep):
    """`magnitude >= the keep-th largest` over `slices` (functions making 1-D magnitudes),
    the threshold found within 1/2^32 of the largest value (entries closer than that to it
    are kept too, as ties are)."""
    high = tf.reduce_max(tf.stack([tf.reduce_max(part()) for part in slices]))
    width = tf.where(high > 0, high, 1.0) / _BINS
    counts = tf.add_n([tf.math.bincount(_bins(part(), width), minlength=_BINS,
                                        maxlength=_BINS) for part in slices])
    index, above = _top_bin(counts, keep)
    fine_counts = 0
    for part in slices:
        coarse, fine = _bins(part(), width, index)
        fine_counts += tf.math.bincount(fine, weights=tf.cast(tf.equal(coarse, index), "int32"),
                                        minlength=_BINS, maxlength=_BINS, dtype="int32")
    fine_index, _ = _top_bin(fine_counts, keep - above)
    kept = []
    for part in slices:
        coarse, fine = _bins(part(), width, index)
        kept.append(tf.logical_or(coarse > index, tf.logical_and(tf.equal(coarse, index),
                                                                  fine >= fine_index)))
    return tf.concat(kept, axis=0)


def magnitude(weights, sparsity, kept=None, dtype=None):
    """Keeps the `round(n * (1 - sparsity))` largest-magnitude entries (at least 1).

    `kept`: a 0/1 mask of the entries still in (others count as zero, and
    stay out), so a caller need not make `weights * kept` (a second
    table-sized tensor). `dtype`: the mask's (default the weights').

    Example:

    ```python
    import tensorflow as tf
    from tfcompress.pruning import masks
    masks.magnitude(tf.constant([0.1, -3.0, 2.0, 0.5]), 0.5)  # [0, 1, 1, 0]
    ```
    """
    size = weights.shape.num_elements()
    keep = tf.maximum(tf.cast(tf.round(tf.cast(tf.size(weights), "float32") * (1.0 - sparsity)),
                              "int32"), 1)
    flat = tf.reshape(weights, [-1])
    flat_kept = None if kept is None else tf.reshape(kept, [-1])

    def magnitudes(start=0, stop=None):
        part = tf.abs(flat[start:stop])
        return part if flat_kept is None else part * tf.cast(flat_kept[start:stop], part.dtype)

    if size is not None and size > SORT_LIMIT:
        bounds = [size * i // _SLICES for i in range(_SLICES + 1)]
        slices = [lambda a=a, b=b: magnitudes(a, b) for a, b in zip(bounds, bounds[1:])]
        result = _threshold_by_histogram(slices, keep)
    else:
        result = _threshold_by_sort(magnitudes(), keep)
    if flat_kept is not None:
        result = tf.logical_and(result, tf.cast(flat_kept, "bool"))
    return tf.cast(tf.reshape(result, tf.shape(weights)), dtype or weights.dtype)


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
