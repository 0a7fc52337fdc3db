"""Seed statistics of fine-tuning runs (Dodge et al., 2020).

* `expected_max` / `expected_max_curve` / `expected_max_std`: expected best validation score
  of n runs drawn (with replacement) from N observed runs,
  E[max of n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n) over the sorted scores v_(1..N).
* `variance_decomposition`: how much of the final-score variance over a full grid of
  weight-init seeds x data-order seeds is due to each factor (main-effect sums of squares).
"""

from __future__ import annotations

import numpy as np

from soicurate.errors import UsageError


# --------------------------------------------------------------------------- expected max
def _max_weights(N: int, ns: np.ndarray) -> np.ndarray:
    """(len(ns), N) weights w[n, i] = (i/N)^n - ((i-1)/N)^n, i = 1..N."""
    i = np.arange(1, N + 1, dtype=np.float64)
    n = np.asarray(ns, dtype=np.float64)[:, None]
    return (i / N) ** n - ((i - 1) / N) ** n


def _sorted_scores(scores) -> np.ndarray:
    v = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if v.size == 0:
        raise UsageError("expected max needs at least one score")
    if not np.all(np.isfinite(v)):
        raise UsageError("expected max needs finite scores")
    return v


def expected_max(scores, n: int) -> float:
    """Expected maximum of n scores drawn with replacement from `scores`."""
    if int(n) < 1:
        raise UsageError(f"n must be >= 1, got {n}")
    v = _sorted_scores(scores)
    return float((_max_weights(v.size, np.array([int(n)])) @ v)[0])


def expected_max_curve(scores, max_n: int | None = None) -> np.ndarray:
    """E[max of n] for n = 1..max_n (default N = len(scores))."""
    v = _sorted_scores(scores)
    ns = np.arange(1, (max_n or v.size) + 1)
    return _max_weights(v.size, ns) @ v


def expected_max_std(scores, max_n: int | None = None) -> np.ndarray:
    """Standard deviation of the max of n draws, n = 1..max_n: sqrt(E[max^2] - E[max]^2)."""
    v = _sorted_scores(scores)
    w = _max_weights(v.size, np.arange(1, (max_n or v.size) + 1))
    mean = w @ v
    return np.sqrt(np.maximum(w @ (v * v) - mean * mean, 0.0))


# --------------------------------------------------------------------------- variance
def variance_decomposition(table) -> dict:
    """Split the variance of a full grid of final scores (rows: init seeds, columns:
    data-order seeds) into init, data-order and residual (interaction + noise) parts.

    Main-effect sums of squares of a two-way layout with one observation per cell:
    SS_init = D * sum_r (row mean - grand)^2, SS_data = I * sum_c (col mean - grand)^2,
    SS_residual = SS_total - SS_init - SS_data. `share_*` are fractions of SS_total.
    """
    x = np.asarray(table, dtype=np.float64)
    if x.ndim != 2 or x.size == 0:
        raise UsageError("variance decomposition needs a 2-D grid (init seeds x data seeds)")
    if not np.all(np.isfinite(x)):
        raise UsageError("variance decomposition needs a full grid (a score in every cell)")
    I, D = x.shape
    grand = x.mean()
    ss_total = float(((x - grand) ** 2).sum())
    ss_init = float(D * ((x.mean(axis=1) - grand) ** 2).sum())
    ss_data = float(I * ((x.mean(axis=0) - grand) ** 2).sum())
    ss_resid = max(ss_total - ss_init - ss_data, 0.0)
    share = (lambda s: s / ss_total) if ss_total > 0 else (lambda s: 0.0)
    return {
        "n_init_seeds": I,
        "n_data_seeds": D,
        "grand_mean": float(grand),
        "ss_total": ss_total,
        "ss_init": ss_init,
        "ss_data": ss_data,
        "ss_residual": ss_resid,
        "share_init": share(ss_init),
        "share_data": share(ss_data),
        "share_residual": share(ss_resid),
        "variance_total": ss_total / x.size,
    }
