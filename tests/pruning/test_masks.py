import numpy as np
import pytest
import tensorflow as tf

from tfcompress.pruning import masks


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.99])
def test_magnitude_keeps_the_largest(sparsity, rng):
    w = rng.normal(size=(37, 11)).astype("float32")
    mask = masks.magnitude(tf.constant(w), sparsity).numpy()
    keep = max(int(np.round(w.size * (1 - sparsity))), 1)
    assert mask.sum() == keep
    threshold = np.sort(np.abs(w).ravel())[::-1][keep - 1]
    np.testing.assert_array_equal(mask, (np.abs(w) >= threshold).astype("float32"))


def test_magnitude_is_jit_compatible(rng):
    w = tf.constant(rng.normal(size=(64, 32)).astype("float32"))
    jitted = tf.function(masks.magnitude, jit_compile=True)
    np.testing.assert_array_equal(jitted(w, tf.constant(0.7)), masks.magnitude(w, 0.7))


@pytest.mark.parametrize("pooling", ["AVG", "MAX"])
def test_block_masks_whole_blocks(pooling, rng):
    w = rng.normal(size=(9, 10)).astype("float32")  # not multiples of the block
    mask = masks.block(tf.constant(w), 0.5, (2, 3), pooling).numpy()
    assert mask.shape == w.shape
    # every block is uniform
    for i in range(0, 9, 2):
        for j in range(0, 10, 3):
            blk = mask[i:i + 2, j:j + 3]
            assert blk.min() == blk.max()
    # block magnitudes of kept blocks are >= those of pruned blocks
    pool = np.mean if pooling == "AVG" else np.max
    scores = {(i, j): (pool(np.abs(w[i:i + 2, j:j + 3])), mask[i, j])
              for i in range(0, 9, 2) for j in range(0, 10, 3)}
    kept = [s for s, m in scores.values() if m == 1]
    pruned = [s for s, m in scores.values() if m == 0]
    assert min(kept) >= max(pruned)
    assert len(kept) == round(len(scores) * 0.5)


@pytest.mark.parametrize("shape", [(8, 5), (3, 3, 12, 4), (6, 3)])
def test_m_by_n_zeros_m_in_every_n_input_channels(shape, rng):
    w = rng.normal(size=shape).astype("float32")
    mask = masks.m_by_n(tf.constant(w), 2, 4).numpy()
    # input channels are axis -2; move them last and check every run of 4
    moved = np.moveaxis(mask, -2, -1).reshape(-1, shape[-2])
    moved_w = np.moveaxis(np.abs(w), -2, -1).reshape(-1, shape[-2])
    for row, wrow in zip(moved, moved_w):
        for start in range(0, len(row), 4):
            group, wgroup = row[start:start + 4], wrow[start:start + 4]
            n_keep = min(2, len(group))
            assert group.sum() == n_keep
            assert set(np.argsort(-wgroup)[:n_keep]) == set(np.nonzero(group)[0])


def _by_sort(weights, sparsity, kept):
    magnitudes = np.where(kept, np.abs(weights), 0).ravel()
    keep = max(int(np.round(weights.size * (1 - sparsity))), 1)
    threshold = np.sort(magnitudes)[::-1][keep - 1]
    return (np.where(kept, np.abs(weights), -1) >= threshold).astype("float32")


@pytest.mark.parametrize("shape, sparsity, pruned", [
    ((3000, 700), 0.7, 0.2), ((100_000, 24), 0.95, 0.5), ((2_500_000,), 0.5, 0.0),
    ((50_000, 50), 0.3, 0.8),  # asks for fewer zeros than pruned already: all kept stay
])
def test_large_weights_match_the_sort_exactly(shape, sparsity, pruned, rng):
    weights = rng.normal(size=shape).astype("float32")
    kept = rng.random(shape) >= pruned
    expected = _by_sort(weights, sparsity, kept)
    assert weights.size > masks.SORT_LIMIT // 2
    for limit in (masks.SORT_LIMIT, 1000):  # the bracket path, at this size and smaller
        masks_limit = masks.SORT_LIMIT
        masks.SORT_LIMIT = limit
        try:
            got = masks.magnitude(tf.Variable(weights), sparsity, tf.Variable(kept))
        finally:
            masks.SORT_LIMIT = masks_limit
        np.testing.assert_array_equal(got, expected)


def test_large_weights_settle_in_the_bracket_without_the_fallback(monkeypatch, rng):
    # the fast path itself answers (the fallback is exact too, but several times slower)
    def fallback(*args):
        raise AssertionError("the sample's bracket missed")

    monkeypatch.setattr(masks, "_magnitude_by_bits", fallback)
    for shape, sparsity in (((300_000, 16), 0.6), ((150_000, 50), 0.95), ((5, 1_000_000), 0.5)):
        weights = rng.normal(size=shape).astype("float32")
        kept = rng.random(shape) >= 0.3
        got = masks.magnitude(tf.Variable(weights), sparsity, tf.Variable(kept))
        np.testing.assert_array_equal(got, _by_sort(weights, sparsity, kept))


def test_large_weights_fall_back_to_histograms_when_the_sample_misses(monkeypatch, rng):
    weights = np.round(rng.normal(size=(400, 300)), 1).astype("float32")  # many ties
    kept = rng.random(weights.shape) >= 0.3
    monkeypatch.setattr(masks, "SORT_LIMIT", 1000)
    monkeypatch.setattr(masks, "_MARGIN", -50.0)  # a bracket that cannot hold the threshold
    monkeypatch.setattr(masks, "CHUNK", 7 * 300)  # chunks that do not divide the rows
    np.testing.assert_array_equal(masks.magnitude(tf.constant(weights), 0.6, kept),
                                  _by_sort(weights, 0.6, kept))


def test_large_weights_under_xla_take_the_sort(monkeypatch, rng):
    weights = tf.constant(rng.normal(size=(200, 30)).astype("float32"))
    monkeypatch.setattr(masks, "SORT_LIMIT", 1000)
    jitted = tf.function(masks.magnitude, jit_compile=True)
    np.testing.assert_array_equal(jitted(weights, tf.constant(0.7)),
                                  _by_sort(weights.numpy(), 0.7, True))
