"""Initial centroids of one kernel (numpy: they are computed once, when a layer is wrapped)."""

import numpy as np

from tfcompress.clustering.config import CentroidInitialization

#: Values k-means++ seeding reads at most (a random sample of a larger kernel).
SAMPLE = 100_000
#: Lloyd iterations after k-means++ seeding, when refined.
KMEANS_ITERATIONS = 10


def initial(values, number, init, preserve_sparsity=False, seed=9, refine=False):
    """`number` sorted centroids for the values of `values`.

    `KMEANS_PLUS_PLUS` is TFMOT's greedy k-means++ seeding alone, or with
    `refine` k-means++ seeding followed by Lloyd iterations. The wrapper refines
    per channel and with `preserve_sparsity`: few values per centroid, where
    TFMOT's seeding alone made the CQAT and PCQAT guides' checks fail in some
    runs here; a whole kernel keeps TFMOT's seeding, whose uneven clusters gzip
    smaller than Lloyd's evened-out ones.

    With `preserve_sparsity`, one centroid is exactly zero and the others are
    shared between the negative and the positive weights in proportion to
    their counts, each group initialised on its own (the zeros are left out).

    Example:

    ```python
    import numpy as np
    from tfcompress.clustering import centroids, CentroidInitialization
    c = centroids.initial(np.linspace(-1, 1, 101), 3, CentroidInitialization.LINEAR)
    assert np.allclose(c, [-1, 0, 1])
    ```
    """
    values = np.asarray(values, np.float64).ravel()
    if not preserve_sparsity:
        return _pad(_interval(values, number, init, seed, refine), number, values)
    negative, positive = values[values < 0], values[values > 0]
    nonzero = len(negative) + len(positive)
    if nonzero == 0:
        return np.zeros(number, np.float32)
    n_negative = int(round((number - 1) * len(negative) / nonzero))
    parts = [_interval(negative, n_negative, init, seed, refine), [0.0],
             _interval(positive, number - 1 - n_negative, init, seed, refine)]
    return _pad(np.concatenate(parts), number, values)


def _interval(values, number, init, seed, refine):
    if number <= 0 or values.size == 0:
        return np.zeros(0)
    low, high = values.min(), values.max()
    if init is CentroidInitialization.LINEAR:
        return np.linspace(low, high, number)
    if init is CentroidInitialization.RANDOM:
        return np.random.default_rng(seed).uniform(low, high, number)
    if init is CentroidInitialization.DENSITY_BASED:
        return np.quantile(values, np.linspace(0.0, 1.0, number))
    return _kmeans(values, number, seed) if refine else _greedy(values, number, seed)


def _greedy(values, number, seed):
    """TFMOT's KMEANS_PLUS_PLUS (TF's `kmeans_plus_plus_initialization` with its
    default retries): each centroid is the best of `3 + int(ln(number))`
    candidates, the one leaving the smallest total squared distance from the
    values to their nearest centroid; the first candidates drawn uniformly, the
    later ones with probability proportional to that distance."""
    rng = np.random.default_rng(seed)
    sample = values if values.size <= SAMPLE else rng.choice(values, SAMPLE, replace=False)
    tries = 3 + int(np.log(number))
    distance = np.full(sample.size, np.inf)
    centers = []
    for _ in range(number):
        if centers:
            total = distance.sum()
            if total <= 0:
                break  # fewer distinct values than centroids
            picks = rng.choice(sample.size, tries, p=distance / total)
        else:
            picks = rng.integers(sample.size, size=tries)
        after = np.minimum(distance, (sample - sample[picks][:, None]) ** 2)
        best = int(np.argmin(after.sum(axis=1)))
        centers.append(sample[picks[best]])
        distance = after[best]
    return np.sort(np.asarray(centers))


def _kmeans(values, number, seed):
    """k-means++ seeding, then Lloyd iterations (1-D: assignment by sorted midpoints)."""
    rng = np.random.default_rng(seed)
    sample = values if values.size <= SAMPLE else rng.choice(values, SAMPLE, replace=False)
    centers = [sample[rng.integers(sample.size)]]
    distance = (sample - centers[0]) ** 2
    for _ in range(1, number):
        total = distance.sum()
        if total <= 0:
            break  # fewer distinct values than centroids
        centers.append(sample[rng.choice(sample.size, p=distance / total)])
        distance = np.minimum(distance, (sample - centers[-1]) ** 2)
    centers = np.sort(np.asarray(centers))
    for _ in range(KMEANS_ITERATIONS):
        assigned = np.searchsorted((centers[1:] + centers[:-1]) / 2, sample)
        counts = np.bincount(assigned, minlength=centers.size)
        sums = np.bincount(assigned, weights=sample, minlength=centers.size)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
        if np.allclose(moved, centers):
            break
        centers = np.sort(moved)
    return centers


def _pad(found, number, values):
    """Exactly `number` centroids, sorted: fewer distinct values than asked repeat the last."""
    found = np.sort(np.asarray(found, np.float64))
    if found.size < number:
        fill = found[-1] if found.size else (values.max() if values.size else 0.0)
        found = np.concatenate([found, np.full(number - found.size, fill)])
    return found.astype(np.float32)
