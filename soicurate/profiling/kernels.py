"""numba kernels: validate a block of dynamics and compute per-example statistics.

Arrays per block have shape (E, n): one row per recorded epoch, one column per example, so
that each epoch's Parquet column is copied in with one contiguous write. Kernels run in
parallel over examples and are compiled with cache=True so that a second process does not
pay the compile.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Validation problem codes (0 = fine); messages live in soicurate.profiling.validate.
OK = 0
GOLD_OUT_OF_RANGE = 1
PRED_OUT_OF_RANGE = 2
GOLD_CHANGES = 3
P_NAN = 4
P_OUT_OF_RANGE = 5
LOSS_NOT_FINITE = 6
MARGIN_NOT_FINITE = 7

# Subset-of-Interest codes, in the order of soicurate.profiling.soi.CATEGORIES.
ALWAYS_CORRECT = 0
LEARNED_EARLY = 1
LEARNED_LATE = 2
FORGETTABLE = 3
FORGOTTEN = 4
UNLEARNED = 5


@njit(cache=True, parallel=True)
def validate_block(gold, pred, p_gold, loss, margin, has_margin, num_labels, codes, where):
    """Per example: the first problem found (codes[i]) and the epoch row it is in (where[i])."""
    E, n = pred.shape
    for i in prange(n):
        code = OK
        at = 0
        g0 = gold[0, i]
        for e in range(E):
            g = gold[e, i]
            p = p_gold[e, i]
            if g < 0 or g >= num_labels:
                code = GOLD_OUT_OF_RANGE
            elif g != g0:
                code = GOLD_CHANGES
            elif pred[e, i] < 0 or pred[e, i] >= num_labels:
                code = PRED_OUT_OF_RANGE
            elif p != p:
                code = P_NAN
            elif p < 0.0 or p > 1.0:
                code = P_OUT_OF_RANGE
            elif not np.isfinite(loss[e, i]):
                code = LOSS_NOT_FINITE
            elif has_margin and not np.isfinite(margin[e, i]):
                code = MARGIN_NOT_FINITE
            if code != OK:
                at = e
                break
        codes[i] = code
        where[i] = at


@njit(cache=True, parallel=True)
def profile_block(
    gold,
    pred,
    p_gold,
    loss,
    margin,
    has_margin,
    late_start,
    confidence,
    variability,
    correctness,
    forgetting,
    learning,
    first_learned,
    final_correct,
    mean_loss,
    mean_margin,
    category,
):
    """Per-example training-dynamics statistics and the SOI category.

    late_start is the 1-based first epoch of the late window. Outputs are written into the
    arrays passed in (length n), so a caller can reuse them across blocks.
    """
    E, n = pred.shape
    inv_e = 1.0 / E
    for i in prange(n):
        g = gold[i]
        s = 0.0
        for e in range(E):
            s += p_gold[e, i]
        mu = s * inv_e
        ss = 0.0
        for e in range(E):
            d = p_gold[e, i] - mu
            ss += d * d
        n_correct = 0
        forgets = 0
        learns = 0
        first = -1
        prev = False
        ls = 0.0
        ms = 0.0
        for e in range(E):
            c = pred[e, i] == g
            if c:
                n_correct += 1
                if first < 0:
                    first = e + 1
                if e > 0 and not prev:
                    learns += 1
            elif e > 0 and prev:
                forgets += 1
            prev = c
            ls += loss[e, i]
            if has_margin:
                ms += margin[e, i]
        confidence[i] = mu
        variability[i] = np.sqrt(ss * inv_e)
        correctness[i] = n_correct * inv_e
        forgetting[i] = forgets
        learning[i] = learns
        first_learned[i] = first
        final_correct[i] = prev
        mean_loss[i] = ls * inv_e
        mean_margin[i] = ms * inv_e if has_margin else np.nan
        if n_correct == E:
            category[i] = ALWAYS_CORRECT
        elif n_correct == 0:
            category[i] = UNLEARNED
        elif forgets > 0:
            category[i] = FORGETTABLE if prev else FORGOTTEN
        elif first >= late_start:
            category[i] = LEARNED_LATE
        else:
            category[i] = LEARNED_EARLY


@njit(cache=True)
def histogram_add(values, lo, hi, counts):
    """Add values to a fixed-width histogram over [lo, hi] (clamped), for streaming quantiles."""
    nbins = counts.shape[0]
    scale = nbins / (hi - lo)
    for i in range(values.shape[0]):
        b = int((values[i] - lo) * scale)
        if b < 0:
            b = 0
        elif b >= nbins:
            b = nbins - 1
        counts[b] += 1


@njit(cache=True, parallel=True)
def modal_category(categories, num_categories, modal, agreement):
    """Most frequent category per example across runs (ties: the lower code) and its share."""
    R, n = categories.shape
    for i in prange(n):
        counts = np.zeros(num_categories, dtype=np.int32)
        for r in range(R):
            counts[categories[r, i]] += 1
        best = 0
        for k in range(1, num_categories):
            if counts[k] > counts[best]:
                best = k
        modal[i] = best
        agreement[i] = counts[best] / R
