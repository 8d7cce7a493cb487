"""Truncated SVD of a weight matrix and the rank it keeps (pure numpy).

A kernel `W` (m×n) is replaced by two factors `A = U_r·sqrt(S_r)` (m×r) and
`B = sqrt(S_r)·V_rᵀ` (r×n), so `A·B` is the best rank-r approximation of `W`
(Eckart–Young) and the pair holds `r·(m + n)` values instead of `m·n`. The
rank comes from one of three rules:

- `rank`: given (clipped to `min(m, n)`);
- `energy`: the smallest `r` whose singular values keep at least that
  fraction of `Σ s_i²` (the squared Frobenius norm of `W`);
- `ratio`: the largest `r` with `r·(m + n) <= ratio·m·n` (a parameter budget).
"""

import numpy as np


def singular_values(matrix):
    """The singular values of a 2-D array, largest first (float64).

    Example:

    ```python
    import numpy as np
    from tfcompress.factorization import svd
    assert np.allclose(svd.singular_values(np.diag([3.0, 1.0])), [3.0, 1.0])
    ```
    """
    return np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)


def kept_energy(s, r):
    """The fraction of `Σ s_i²` the first `r` singular values `s` hold (1.0 for a zero matrix).

    Example:

    ```python
    from tfcompress.factorization import svd
    assert svd.kept_energy([2.0, 1.0], 1) == 0.8
    ```
    """
    s2 = np.square(np.asarray(s, np.float64))
    total = float(s2.sum())
    return 1.0 if total == 0.0 else float(s2[:r].sum() / total)


def energy_rank(s, energy):
    """The smallest rank whose singular values keep `energy` of `Σ s_i²` (at least 1).

    Example:

    ```python
    from tfcompress.factorization import svd
    assert svd.energy_rank([3.0, 2.0, 1.0], 0.9) == 2   # (9 + 4) / 14 = 0.93
    ```
    """
    s2 = np.square(np.asarray(s, np.float64))
    total = float(s2.sum())
    if total == 0.0:
        return 1
    kept = np.cumsum(s2) / total
    # a relative tolerance so that energy=1.0 is reached despite rounding
    return int(min(np.searchsorted(kept, energy * (1.0 - 1e-12)) + 1, len(s2)))


def ratio_rank(m, n, ratio):
    """The largest rank `r` with `r·(m + n) <= ratio·m·n` (0 when none fits).

    Example:

    ```python
    from tfcompress.factorization import svd
    assert svd.ratio_rank(64, 64, 0.25) == 8   # 8·128 = 1024 = 0.25·4096
    ```
    """
    return int(min(np.floor(ratio * m * n / (m + n) + 1e-9), min(m, n)))


def saves(m, n, r):
    """True when a rank-`r` pair of an m×n matrix has fewer values than the matrix.

    Example:

    ```python
    from tfcompress.factorization import svd
    assert svd.saves(64, 64, 31) and not svd.saves(64, 64, 32)
    ```
    """
    return 0 < r and r * (m + n) < m * n


def choose_rank(s, m, n, rank=None, energy=None, ratio=None):
    """The rank for an m×n matrix with singular values `s`, or None to leave it as is.

    Exactly one of `rank`, `energy`, `ratio` is given. An explicit `rank`
    always factorizes (clipped to `min(m, n)`), even where the pair holds
    more values than the matrix (at `min(m, n)` it reproduces the matrix);
    `energy` and `ratio` give None where the pair would not save parameters.

    Example:

    ```python
    import numpy as np
    from tfcompress.factorization import svd
    w = np.random.default_rng(0).normal(size=(64, 32))
    s = svd.singular_values(w)
    assert svd.choose_rank(s, 64, 32, rank=100) == 32
    assert svd.choose_rank(s, 64, 32, ratio=0.25) == 5
    assert svd.choose_rank(s, 64, 32, energy=1.0) is None   # full rank saves nothing
    ```
    """
    if sum(v is not None for v in (rank, energy, ratio)) != 1:
        raise ValueError("choose_rank takes exactly one of rank, energy, ratio.")
    if rank is not None:
        return int(min(rank, m, n))
    r = energy_rank(s, energy) if energy is not None else ratio_rank(m, n, ratio)
    return r if saves(m, n, r) else None


def factors(matrix, r):
    """`(A, B)`, m×r and r×n, with `A @ B` the best rank-`r` approximation of `matrix`.

    The singular values are split evenly, `A = U_r·sqrt(S_r)` and
    `B = sqrt(S_r)·V_rᵀ`, so both factors have the same scale (good for
    training them and for quantizing each). Returned in `matrix`'s dtype.

    Example:

    ```python
    import numpy as np
    from tfcompress.factorization import svd
    w = np.random.default_rng(0).normal(size=(6, 4)).astype("float32")
    a, b = svd.factors(w, 4)
    assert a.shape == (6, 4) and b.shape == (4, 4) and np.allclose(a @ b, w, atol=1e-5)
    ```
    """
    matrix = np.asarray(matrix)
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    root = np.sqrt(s[:r])
    a = u[:, :r] * root[None, :]
    b = root[:, None] * vt[:r]
    dtype = matrix.dtype if np.issubdtype(matrix.dtype, np.floating) else np.float32
    return a.astype(dtype), b.astype(dtype)
