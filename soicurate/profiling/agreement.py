"""Cross-run agreement of Subset-of-Interest categories: how much of a profile is the seed.

`agreement_stats` reads a multi-run profile's `run_categories` column (one category per run
and example) and returns how often another seed reproduces each category and which examples
every seed agrees on (the seed-stable curation candidates); `soicurate seeds` and the audit
report show it. Everything is vectorised, so a 10^6-example profile takes well under a second.
"""

from __future__ import annotations

import math

import numpy as np

from soicurate.errors import UsageError


def category_codes(run_categories, categories=None) -> tuple[np.ndarray, list[str]]:
    """(n, R) int64 category codes and the category names they index.

    `run_categories`: one row per example, one category name per run: a polars Series of
    arrays or lists (as in a profile), a list of lists or a 2-D array. Names outside
    `categories` (default: the six SOI categories) are appended in sorted order."""
    import polars as pl

    if isinstance(run_categories, pl.Series):
        s = run_categories
    else:
        rows = [list(map(str, r)) for r in run_categories]
        s = pl.Series("run_categories", rows, dtype=pl.List(pl.String))
    if s.len() == 0:
        raise UsageError("no examples to compute agreement on")
    if isinstance(s.dtype, pl.Array):
        R = s.dtype.size
        flat = s.arr.explode()
    elif isinstance(s.dtype, pl.List):
        lengths = s.list.len()
        R = int(lengths[0])
        if lengths.n_unique() != 1:
            R = -1
        flat = s.list.explode()
    else:
        raise UsageError(f"run categories must be lists or arrays, got {s.dtype}")
    if R < 2:
        raise UsageError("agreement needs at least 2 runs, the same number for every example")
    flat = flat.cast(pl.String)
    if categories is None:
        from soicurate.profiling.soi import CATEGORIES

        categories = list(CATEGORIES)
        categories += sorted(set(flat.unique().drop_nulls().to_list()) - set(categories))
    categories = list(categories)
    index = {c: k for k, c in enumerate(categories)}
    try:
        codes = flat.replace_strict(index, return_dtype=pl.Int64).to_numpy()
    except pl.exceptions.InvalidOperationError:
        unknown = sorted(set(flat.drop_nulls().to_list()) - set(categories))
        raise UsageError(f"unknown or missing categories in run categories: {unknown[:5] or 'null'}") from None
    return codes.reshape(s.len(), R), categories


def category_counts(codes: np.ndarray, K: int) -> np.ndarray:
    """(n, K) how many runs put each example in each category."""
    n, R = codes.shape
    flat = (np.arange(n, dtype=np.int64)[:, None] * K + codes).ravel()
    return np.bincount(flat, minlength=n * K).reshape(n, K)


def pair_counts(counts: np.ndarray) -> np.ndarray:
    """(K, K) ordered pairs of distinct runs over all examples: [a, b] = how often one run
    says a and another says b. Per example with count vector c that is c_a * c_b for a != b
    and c_a * (c_a - 1) for a == b."""
    c = counts.astype(np.int64)
    return c.T @ c - np.diag(c.sum(axis=0))


def agreement_stats(run_categories, categories=None) -> dict:
    """Cross-run agreement of SOI categories from a profile's run_categories column.

    Returns

    * mean_agreement: mean over examples of the share of runs in the modal category (as the
      profile's category_agreement),
    * share_full_agreement: share of examples where every run agrees,
    * matrix: matrix[a][b] = over all ordered pairs of distinct runs and all examples where
      the first run says a, the share where the second says b (rows sum to 1); the diagonal
      is how often another seed reproduces category a (None when no run said a),
    * pair_counts: the number of such (example, ordered pair) cases per row category,
    * per_category: per category, the examples every run puts there (seed-stable curation
      candidates, `unanimous`) and those at least one run puts there (`any_run`).
    """
    codes, categories = category_codes(run_categories, categories)
    n, R = codes.shape
    K = len(categories)
    counts = category_counts(codes, K)
    top = counts.max(axis=1)
    pairs = pair_counts(counts)
    row_tot = pairs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row_tot[:, None] > 0, pairs / np.maximum(row_tot[:, None], 1), np.nan)
    unanimous = (counts == R).sum(axis=0)
    any_run = (counts > 0).sum(axis=0)
    return {
        "n_examples": n,
        "n_runs": R,
        "mean_agreement": float((top / R).mean()),
        "share_full_agreement": float((top == R).mean()),
        "categories": categories,
        "matrix": {a: {b: (None if math.isnan(share[i, j]) else float(share[i, j])) for j, b in enumerate(categories)}
                   for i, a in enumerate(categories)},  # fmt: skip
        "pair_counts": {a: int(row_tot[i]) for i, a in enumerate(categories)},
        "per_category": {a: {"unanimous": int(unanimous[i]), "any_run": int(any_run[i]),
                             "reproduced": None if math.isnan(share[i, i]) else float(share[i, i])}
                         for i, a in enumerate(categories)},  # fmt: skip
    }
