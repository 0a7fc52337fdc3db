"""numba kernels: validate a block of dynamics and compute per-example statistics.

Arrays per block have shape (E, n): one row per recorded epoch, one column per example, so
that each epoch's Parquet column is copied in with one contiguous write. Kernels run in
parallel over examples (a `_serial` variant on the calling thread only, for the profiling
pipeline's worker threads) and are compiled with cache=True so that a second process does not
pay the compile. The profiling pipeline validates and profiles a block in one pass
(profile_validated_block); validate_block, which says which problem and where, runs only on a
block that has one.
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


# Examples are processed in chunks of CHUNK: for each epoch row, a tight loop over the chunk's
# examples updates per-example accumulators that stay in L1 cache. The loops have no
# data-dependent branches, so they vectorise; every example's sums are still added in epoch
# order, so the results are bit-for-bit those of a plain per-example loop.
CHUNK = 512


@njit(cache=True, nogil=True, inline="always")
def _flag_epoch(flag, e, lo, hi, g0, gold, pred, p_gold, loss, margin, has_margin, num_labels):
    """flag[j] |= example lo + j has any of validate_block's problems in epoch row e (the
    branch-free check shared by the fused kernel and count_invalid)."""
    ge = gold[e, lo:hi]
    pe = pred[e, lo:hi]
    qe = p_gold[e, lo:hi]
    le = loss[e, lo:hi]
    for j in range(hi - lo):
        g = ge[j]
        r = pe[j]
        q = qe[j]
        flag[j] |= ((g != g0[j]) | (g < 0) | (g >= num_labels) | (r < 0) | (r >= num_labels)
                    | ~((q >= 0.0) & (q <= 1.0)) | ~(np.abs(le[j]) < np.inf))  # fmt: skip
    if has_margin:
        me = margin[e, lo:hi]
        for j in range(hi - lo):
            flag[j] |= ~(np.abs(me[j]) < np.inf)


@njit(cache=True, nogil=True)
def _profile_chunk(
    lo, hi, reference, gold, pred, p_gold, loss, margin, has_margin, validate, num_labels, late_start,
    confidence, variability, correctness, forgetting, learning, first_learned, final_correct,
    mean_loss, mean_margin, category, extras, never_learned, closeness, bad,
):  # fmt: skip
    """Statistics of examples [lo, hi) with gold labels `reference` (n,).

    With validate, `gold` holds the (E, n) per-epoch labels (row 0 being `reference`), bad[i]
    flags an example with any of validate_block's problems and the number flagged is returned;
    with extras, never_learned and threshold_closeness are written too."""
    E = pred.shape[0]
    m = hi - lo
    inv_e = 1.0 / E
    g0 = reference[lo:hi]
    s = np.zeros(m, np.float64)
    ls = np.zeros(m, np.float64)
    ms = np.zeros(m, np.float64)
    ss = np.zeros(m, np.float64)
    n_correct = np.zeros(m, np.int32)
    forgets = np.zeros(m, np.int32)
    learns = np.zeros(m, np.int32)
    first = np.full(m, -1, np.int32)
    prev = np.zeros(m, np.bool_)
    flag = np.zeros(m, np.bool_)
    for e in range(E):
        pe = pred[e, lo:hi]
        qe = p_gold[e, lo:hi]
        le = loss[e, lo:hi]
        epoch = np.int32(e + 1)
        if e == 0:
            for j in range(m):
                c = pe[j] == g0[j]
                s[j] += qe[j]
                ls[j] += le[j]
                n_correct[j] += c
                first[j] = epoch if c else first[j]
                prev[j] = c
        else:
            for j in range(m):
                c = pe[j] == g0[j]
                was = prev[j]
                s[j] += qe[j]
                ls[j] += le[j]
                n_correct[j] += c
                learns[j] += c & ~was
                forgets[j] += ~c & was
                first[j] = epoch if (first[j] < 0) & c else first[j]
                prev[j] = c
        if has_margin:
            me = margin[e, lo:hi]
            for j in range(m):
                ms[j] += me[j]
        if validate:
            _flag_epoch(flag, e, lo, hi, g0, gold, pred, p_gold, loss, margin, has_margin, num_labels)
    for j in range(m):
        s[j] = s[j] * inv_e
    for e in range(E):
        qe = p_gold[e, lo:hi]
        for j in range(m):
            d = qe[j] - s[j]
            ss[j] += d * d
    nbad = 0
    for j in range(m):
        i = lo + j
        mu = s[j]
        nc = n_correct[j]
        f = first[j]
        last = prev[j]
        confidence[i] = mu
        variability[i] = np.sqrt(ss[j] * inv_e)
        correctness[i] = nc * inv_e
        forgetting[i] = forgets[j]
        learning[i] = learns[j]
        first_learned[i] = f
        final_correct[i] = last
        mean_loss[i] = ls[j] * inv_e
        mean_margin[i] = ms[j] * inv_e if has_margin else np.nan
        if nc == E:
            category[i] = ALWAYS_CORRECT
        elif nc == 0:
            category[i] = UNLEARNED
        elif forgets[j] > 0:
            category[i] = FORGETTABLE if last else FORGOTTEN
        elif f >= late_start:
            category[i] = LEARNED_LATE
        else:
            category[i] = LEARNED_EARLY
        if extras:
            never_learned[i] = f < 0
            closeness[i] = mu * (1.0 - mu)
        if validate:
            bad[i] = flag[j]
            nbad += flag[j]
    return nbad


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
    nb = np.empty(0, np.bool_)
    nf = np.empty(0, np.float64)
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        _profile_chunk(
            lo, min(n, lo + CHUNK), gold, pred, pred, p_gold, loss, margin, has_margin, False, 0, late_start,
            confidence, variability, correctness, forgetting, learning, first_learned, final_correct,
            mean_loss, mean_margin, category, False, nb, nf, nb,
        )  # fmt: skip


@njit(cache=True, parallel=True)
def profile_validated_block(
    gold, pred, p_gold, loss, margin, has_margin, num_labels, late_start,
    confidence, variability, correctness, forgetting, learning, first_learned, final_correct,
    mean_loss, mean_margin, category, never_learned, closeness, bad,
):  # fmt: skip
    """profile_block and a validity check in one pass over the block.

    gold is (E, n) per epoch, as for validate_block. Writes the statistics plus never_learned
    and threshold_closeness, flags in bad[i] the examples that validate_block would report
    (without saying which problem: run validate_block on a block with any) and returns how
    many there are. Statistics of flagged examples are meaningless.
    """
    E, n = pred.shape
    nbad = 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        nbad += _profile_chunk(
            lo, min(n, lo + CHUNK), gold[0], gold, pred, p_gold, loss, margin, has_margin, True, num_labels, late_start,
            confidence, variability, correctness, forgetting, learning, first_learned, final_correct,
            mean_loss, mean_margin, category, True, never_learned, closeness, bad,
        )  # fmt: skip
    return nbad


@njit(cache=True, nogil=True)
def profile_validated_block_serial(
    gold, pred, p_gold, loss, margin, has_margin, num_labels, late_start,
    confidence, variability, correctness, forgetting, learning, first_learned, final_correct,
    mean_loss, mean_margin, category, never_learned, closeness, bad,
):  # fmt: skip
    """profile_validated_block on the calling thread only (for worker threads of a pipeline
    that already keeps the cores busy; no numba threading layer involved)."""
    E, n = pred.shape
    nbad = 0
    for lo in range(0, n, CHUNK):
        nbad += _profile_chunk(
            lo, min(n, lo + CHUNK), gold[0], gold, pred, p_gold, loss, margin, has_margin, True, num_labels, late_start,
            confidence, variability, correctness, forgetting, learning, first_learned, final_correct,
            mean_loss, mean_margin, category, True, never_learned, closeness, bad,
        )  # fmt: skip
    return nbad


@njit(cache=True, nogil=True)
def _invalid_chunk(lo, hi, gold, pred, p_gold, loss, margin, has_margin, num_labels):
    E = pred.shape[0]
    m = hi - lo
    g0 = gold[0, lo:hi]
    flag = np.zeros(m, np.bool_)
    for e in range(E):
        _flag_epoch(flag, e, lo, hi, g0, gold, pred, p_gold, loss, margin, has_margin, num_labels)
    nbad = 0
    for j in range(m):
        nbad += flag[j]
    return nbad


@njit(cache=True, parallel=True)
def count_invalid(gold, pred, p_gold, loss, margin, has_margin, num_labels):
    """How many examples validate_block would report a problem for (a fast, branch-free check:
    only a block with problems needs validate_block to find which and where)."""
    E, n = pred.shape
    nbad = 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        lo = c * CHUNK
        nbad += _invalid_chunk(lo, min(n, lo + CHUNK), gold, pred, p_gold, loss, margin, has_margin, num_labels)
    return nbad


@njit(cache=True, nogil=True)
def confidence_variability(p_gold, confidence, variability):
    """Confidence and variability alone, bit-for-bit as profile_block computes them (for the
    region thresholds, which need every example's values before the profile is written)."""
    E, n = p_gold.shape
    inv_e = 1.0 / E
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        m = hi - lo
        s = np.zeros(m, np.float64)
        ss = np.zeros(m, np.float64)
        for e in range(E):
            qe = p_gold[e, lo:hi]
            for j in range(m):
                s[j] += qe[j]
        for j in range(m):
            s[j] = s[j] * inv_e
        for e in range(E):
            qe = p_gold[e, lo:hi]
            for j in range(m):
                d = qe[j] - s[j]
                ss[j] += d * d
        for j in range(m):
            confidence[lo + j] = s[j]
            variability[lo + j] = np.sqrt(ss[j] * inv_e)


@njit(cache=True, nogil=True)
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
