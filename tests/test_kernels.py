"""Property tests: the numba kernels (and the pipeline code around them) against the slow,
obvious reference implementations in tests/reference.py."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from soicurate.profiling import kernels
from soicurate.profiling.pipeline import combine_runs, compute_block
from soicurate.profiling.reader import Block
from soicurate.profiling.regions import (
    CONFIDENCE_RANGE,
    HIST_BINS,
    REGIONS,
    VARIABILITY_RANGE,
    RegionHistograms,
    RegionRule,
    region_codes,
    thresholds,
)
from soicurate.profiling.soi import CATEGORIES, late_start, late_window_size

try:
    import reference as ref
except ImportError:  # tests/ imported as a package
    from tests import reference as ref

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODE = {name: i for i, name in enumerate(CATEGORIES)}


def test_names_agree_with_reference():
    assert tuple(CATEGORIES) == ref.CATEGORY_NAMES
    assert tuple(REGIONS) == ref.REGION_NAMES
    for name, code in ref.VALIDATION_CODES.items():
        assert getattr(kernels, name.upper() if name != "ok" else "OK") == code


# -- strategies --------------------------------------------------------------------------------
late_fractions = st.one_of(
    st.sampled_from([0.25, 0.1, 1 / 3, 0.5, 0.75, 1.0]),
    st.floats(min_value=1e-6, max_value=1.0, exclude_min=True, allow_nan=False),
)


@st.composite
def dynamics(draw, min_epochs=2, max_epochs=12, max_examples=50, margin=None):
    """A clean block of dynamics: (gold (n,), pred/p_gold/loss/margin (E, n), num_labels)."""
    E = draw(st.integers(min_epochs, max_epochs))
    n = draw(st.one_of(st.just(1), st.integers(1, max_examples)))
    k = draw(st.integers(2, 5))
    gold = draw(arrays(np.int32, n, elements=st.integers(0, k - 1)))
    correct = draw(arrays(np.bool_, (E, n)))
    offset = draw(arrays(np.int32, (E, n), elements=st.integers(0, k - 2)))
    pred = np.where(correct, gold[None, :], (gold[None, :] + 1 + offset) % k).astype(np.int32)
    p_gold = draw(arrays(np.float32, (E, n), elements=st.floats(0.0, 1.0, width=32)))
    loss = draw(arrays(np.float32, (E, n), elements=st.floats(0.0, 1e4, width=32)))
    has_margin = draw(st.booleans()) if margin is None else margin
    mg = draw(arrays(np.float32, (E, n), elements=st.floats(-1e3, 1e3, width=32))) if has_margin else None
    return gold, pred, p_gold, loss, mg, k


def make_block(gold, pred, p_gold, loss, margin) -> Block:
    n = len(gold)
    return Block(0, np.arange(n, dtype=np.int64), gold, pred, p_gold, loss, margin, {})


def reference_stats(gold, pred, p_gold, loss, margin, late_fraction):
    return ref.profile_examples(
        gold.tolist(), pred.tolist(), p_gold.tolist(), loss.tolist(),
        None if margin is None else margin.tolist(), late_fraction,
    )  # fmt: skip


def close(a, b, tol=1e-9):
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


def assert_matches_reference(out, expected):
    n = len(expected)
    for key in ("confidence", "variability", "correctness", "mean_loss", "threshold_closeness",
                "forgetting_events", "learning_events", "final_correct", "never_learned", "epochs_seen",
                "first_learned_epoch", "mean_margin", "category"):  # fmt: skip
        assert len(out[key]) == n, key
    for i, exp in enumerate(expected):
        for key in ("confidence", "variability", "correctness", "mean_loss", "threshold_closeness"):
            assert close(out[key][i], exp[key]), (i, key, out[key][i], exp[key])
        for key in ("forgetting_events", "learning_events", "epochs_seen"):
            assert int(out[key][i]) == exp[key], (i, key)
        assert bool(out["final_correct"][i]) == exp["final_correct"], i
        assert bool(out["never_learned"][i]) == exp["never_learned"], i
        first = int(out["first_learned_epoch"][i])
        assert (None if first < 0 else first) == exp["first_learned_epoch"], i
        if exp["mean_margin"] is None:
            assert np.isnan(out["mean_margin"][i]), i
        else:
            assert close(out["mean_margin"][i], exp["mean_margin"]), (i, out["mean_margin"][i], exp["mean_margin"])
        assert CATEGORIES[out["category"][i]] == exp["category"], (i, CATEGORIES[out["category"][i]], exp["category"])


# -- the late window ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "E, fraction, size",
    [(2, 0.25, 1), (4, 0.25, 1), (5, 0.25, 2), (8, 0.25, 2), (9, 0.25, 3), (30, 0.1, 3), (10, 0.3, 3),
     (3, 1 / 3, 1), (7, 1.0, 7), (12, 1e-6, 1), (2, 0.5, 1), (2, 0.51, 2),
     # 0.07 * 100 == 7.000000000000001 and 0.28 * 25 == 7.000000000000001 in floating point:
     # the window is still 7 epochs, not 8
     (100, 0.07, 7), (25, 0.28, 7), (50, 0.56, 28)],
)  # fmt: skip
def test_late_window_size_examples(E, fraction, size):
    assert late_window_size(E, fraction) == size
    assert ref.late_window_size(E, fraction) == size
    assert late_start(E, fraction) == E - size + 1


@SETTINGS
@given(st.integers(1, 200), late_fractions)
def test_late_window_matches_reference(E, fraction):
    size = late_window_size(E, fraction)
    assert 1 <= size <= E
    assert size == ref.late_window_size(E, fraction)
    assert late_start(E, fraction) == ref.late_window_start(E, fraction)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.0000001, float("nan")])
def test_late_fraction_out_of_range_rejected(fraction):
    with pytest.raises(ValueError):
        late_window_size(8, fraction)


# -- profile_block / compute_block against the reference -----------------------------------------
@SETTINGS
@given(dynamics(), late_fractions)
def test_compute_block_matches_reference(data, late_fraction):
    gold, pred, p_gold, loss, margin, _ = data
    out = compute_block(make_block(gold, pred, p_gold, loss, margin), late_fraction)
    assert_matches_reference(out, reference_stats(gold, pred, p_gold, loss, margin, late_fraction))


@SETTINGS
@given(dynamics(min_epochs=2, max_epochs=2), late_fractions)
def test_two_epochs(data, late_fraction):
    gold, pred, p_gold, loss, margin, _ = data
    out = compute_block(make_block(gold, pred, p_gold, loss, margin), late_fraction)
    assert_matches_reference(out, reference_stats(gold, pred, p_gold, loss, margin, late_fraction))
    # With two epochs nothing is learned early: (0, 1) is learned_late whatever the window.
    assert not np.any(out["category"] == CODE["learned_early"])


@SETTINGS
@given(dynamics(max_examples=1), late_fractions)
def test_single_example(data, late_fraction):
    gold, pred, p_gold, loss, margin, _ = data
    out = compute_block(make_block(gold, pred, p_gold, loss, margin), late_fraction)
    assert_matches_reference(out, reference_stats(gold, pred, p_gold, loss, margin, late_fraction))


@SETTINGS
@given(dynamics(margin=True), st.integers(1, 12))
def test_profile_block_kernel_direct(data, start):
    """The raw kernel, any late_start, output arrays reused across calls (as the docstring allows)."""
    gold, pred, p_gold, loss, margin, _ = data
    E, n = pred.shape
    start = min(start, E)
    outs = [np.full(n, 99, dt) for dt in (np.float64, np.float64, np.float64, np.int32, np.int32, np.int32,
                                          np.bool_, np.float64, np.float64, np.int8)]  # fmt: skip
    for _ in range(2):
        kernels.profile_block(gold, pred, p_gold, loss, margin, True, start, *outs)
    fraction = (E - start + 1) / E  # a late window of exactly E - start + 1 epochs
    expected = reference_stats(gold, pred, p_gold, loss, margin, fraction)
    for i, exp in enumerate(expected):
        assert close(outs[0][i], exp["confidence"]) and close(outs[1][i], exp["variability"])
        assert int(outs[9][i]) == CODE[exp["category"]], (i, pred[:, i] == gold[i], start)


def test_compute_block_needs_two_epochs():
    from soicurate.errors import UsageError

    one = np.zeros((1, 3), np.int32)
    with pytest.raises(UsageError):
        compute_block(make_block(np.zeros(3, np.int32), one, one.astype(np.float32), one.astype(np.float32), None))


def test_known_values():
    """A hand-checked example so that the reference itself is anchored."""
    gold = np.array([1], np.int32)
    pred = np.array([[0], [1], [1], [0], [1]], np.int32)  # correctness 0 1 1 0 1
    p = np.array([[0.2], [0.6], [0.8], [0.4], [1.0]], np.float32)
    loss = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], np.float32)
    out = compute_block(make_block(gold, pred, p, loss, None), 0.25)
    assert out["forgetting_events"][0] == 1 and out["learning_events"][0] == 2
    assert out["first_learned_epoch"][0] == 2 and out["final_correct"][0]
    assert math.isclose(out["confidence"][0], 0.6, rel_tol=1e-6)
    assert math.isclose(out["variability"][0], math.sqrt(0.08), rel_tol=1e-6)
    assert math.isclose(out["correctness"][0], 0.6) and math.isclose(out["mean_loss"][0], 3.0)
    assert math.isclose(out["threshold_closeness"][0], 0.24, rel_tol=1e-6)
    assert CATEGORIES[out["category"][0]] == "forgettable"
    ex = ref.example_stats(1, [0, 1, 1, 0, 1], [0.2, 0.6, 0.8, 0.4, 1.0], [1, 2, 3, 4, 5])
    assert ex["category"] == "forgettable" and ex["forgetting_events"] == 1 and ex["learning_events"] == 2


# -- the six categories are exhaustive and mutually exclusive ------------------------------------
def _all_sequences(E):
    return [list(bits) for bits in itertools.product([False, True], repeat=E)]


def _design_rules(c, window):
    """DESIGN.md's table, each rule written on its own from the sequence and window size."""
    E = len(c)
    late = set(range(E - window, E))  # 0-based epochs in the late window
    forgets = sum(1 for e in range(1, E) if c[e - 1] and not c[e])
    first = next((e for e in range(E) if c[e]), None)
    return {
        "always_correct": all(c),
        "learned_early": forgets == 0 and not c[0] and first is not None and first not in late,
        "learned_late": forgets == 0 and first is not None and first in late,
        "forgettable": forgets > 0 and c[-1],
        "forgotten": forgets > 0 and not c[-1],
        "unlearned": not any(c),
    }


@pytest.mark.parametrize("E", range(2, 9))
def test_categories_exhaustive_and_exclusive(E):
    seqs = _all_sequences(E)
    n = len(seqs)
    gold = np.zeros(n, np.int32)
    pred = np.array([[0 if s[e] else 1 for s in seqs] for e in range(E)], np.int32)
    p = np.full((E, n), 0.5, np.float32)
    seen = set()
    for window in range(1, E + 1):
        fraction = window / E
        assert late_window_size(E, fraction) == window
        out = compute_block(make_block(gold, pred, p, p, None), fraction)
        for i, s in enumerate(seqs):
            rules = _design_rules(s, window)
            holding = [name for name, ok in rules.items() if ok]
            if window == E and all(s):
                # Late window = every epoch: the all-correct sequence also satisfies
                # learned_late's wording; always_correct takes precedence.
                assert holding == ["always_correct", "learned_late"]
                assert CATEGORIES[out["category"][i]] == "always_correct"
                continue
            assert len(holding) == 1, (s, window, holding)
            assert CATEGORIES[out["category"][i]] == holding[0], (s, window)
            assert ref.soi_category(s, fraction) == holding[0]
            seen.add(holding[0])
    if E >= 3:  # with 3+ epochs and a 1-epoch window every category occurs
        assert seen == set(CATEGORIES)


# -- validate_block --------------------------------------------------------------------------
PROBLEMS = ["gold_out_of_range", "pred_out_of_range", "gold_changes", "p_nan", "p_out_of_range",
            "loss_not_finite", "margin_not_finite"]  # fmt: skip


def _corrupt(kind, gold, pred, p_gold, loss, margin, i, e, k, variant):
    if kind == "gold_out_of_range":
        gold[e, i] = [k, -1, k + 7, np.iinfo(np.int32).max][variant % 4]
    elif kind == "pred_out_of_range":
        pred[e, i] = [k, -1, k + 3, np.iinfo(np.int32).min][variant % 4]
    elif kind == "gold_changes":
        gold[e, i] = (int(gold[e, i]) + 1 + variant % (k - 1)) % k
    elif kind == "p_nan":
        p_gold[e, i] = np.nan
    elif kind == "p_out_of_range":
        p_gold[e, i] = [-1e-3, 1.0001, np.inf, -np.inf, -0.0 - 1.0][variant % 5]
    elif kind == "loss_not_finite":
        loss[e, i] = [np.nan, np.inf, -np.inf][variant % 3]
    elif kind == "margin_not_finite":
        margin[e, i] = [np.nan, np.inf, -np.inf][variant % 3]


def _run_validate(gold2d, pred, p_gold, loss, margin, has_margin, k):
    n = pred.shape[1]
    codes = np.full(n, -1, np.int8)
    where = np.full(n, -1, np.int32)
    mg = margin if margin is not None else np.empty((0, 0), np.float32)
    kernels.validate_block(gold2d, pred, p_gold, loss, mg, has_margin, k, codes, where)
    return codes, where


@settings(max_examples=60, deadline=None)
@given(dynamics(margin=True), st.sampled_from(PROBLEMS), st.data())
def test_validate_detects_each_problem_at_its_place(data, kind, draw):
    gold, pred, p_gold, loss, margin, k = data
    E, n = pred.shape
    gold2d = np.repeat(gold[None, :], E, axis=0)
    codes, where = _run_validate(gold2d, pred, p_gold, loss, margin, True, k)
    assert not codes.any() and not where.any()  # clean data passes
    i = draw.draw(st.integers(0, n - 1))
    e = draw.draw(st.integers(1 if kind == "gold_changes" else 0, E - 1))
    _corrupt(kind, gold2d, pred, p_gold, loss, margin, i, e, k, draw.draw(st.integers(0, 9)))
    codes, where = _run_validate(gold2d, pred, p_gold, loss, margin, True, k)
    assert codes[i] == ref.VALIDATION_CODES[kind], (kind, codes[i])
    assert where[i] == e
    others = np.arange(n) != i
    assert not codes[others].any()


@SETTINGS
@given(
    dynamics(),
    st.lists(st.tuples(st.sampled_from(PROBLEMS), st.integers(0, 10**6), st.integers(0, 11), st.integers(0, 9)),
             max_size=12),
)  # fmt: skip
def test_validate_matches_reference(data, corruptions):
    """Several problems, possibly in one example: the kernel reports the first, as the reference."""
    gold, pred, p_gold, loss, margin, k = data
    E, n = pred.shape
    gold2d = np.repeat(gold[None, :], E, axis=0)
    has_margin = margin is not None
    if margin is None:  # an unused margin full of NaN must be ignored
        margin = np.full((E, n), np.nan, np.float32)
    for kind, i, e, variant in corruptions:
        _corrupt(kind, gold2d, pred, p_gold, loss, margin, i % n, e % E, k, variant)
    codes, where = _run_validate(gold2d, pred, p_gold, loss, margin, has_margin, k)
    for i in range(n):
        col = lambda a: a[:, i].tolist()  # noqa: E731
        expected = ref.validate_example(col(gold2d), col(pred), col(p_gold), col(loss),
                                        col(margin) if has_margin else None, k)  # fmt: skip
        assert (int(codes[i]), int(where[i])) == expected, (i, corruptions)


# -- regions ---------------------------------------------------------------------------------
V_WIDTH = (VARIABILITY_RANGE[1] - VARIABILITY_RANGE[0]) / HIST_BINS
C_WIDTH = (CONFIDENCE_RANGE[1] - CONFIDENCE_RANGE[0]) / HIST_BINS


@st.composite
def cartography_values(draw):
    n = draw(st.integers(1, 400))
    mode = draw(st.sampled_from(["any", "clustered", "discrete"]))
    if mode == "any":
        conf = draw(arrays(np.float64, n, elements=st.floats(0.0, 1.0)))
        var = draw(arrays(np.float64, n, elements=st.floats(0.0, 0.5)))
    else:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        if mode == "clustered":  # values closer together than one bin: ties inside bins
            conf = np.clip(0.7 + rng.normal(0, 3e-5, n), 0, 1)
            var = np.clip(0.1 + rng.normal(0, 3e-6, n), 0, 0.5)
        else:  # few distinct values: many exact ties
            conf = rng.choice([0.0, 0.25, 0.5, 1.0], n)
            var = rng.choice([0.0, 0.1, 0.5], n)
    return conf, var


@SETTINGS
@given(cartography_values(), st.floats(0.001, 0.999), st.integers(1, 5))
def test_quantile_thresholds_within_one_bin(values, q, n_chunks):
    conf, var = values
    n = len(conf)
    hist = RegionHistograms()
    for part in np.array_split(np.arange(n), n_chunks):  # accumulated block by block
        hist.add(conf[part], var[part])
    assert hist.count == n
    v_thr, c_thr = thresholds(RegionRule(mode="quantile", fraction=q), hist)

    m = math.ceil(q * n)  # "the q most variable examples", "the lowest q of confidence"
    v_exact = -np.quantile(-var, q, method="inverted_cdf")  # m-th largest variability
    c_exact = np.quantile(conf, q, method="inverted_cdf")  # m-th smallest confidence
    assert v_exact == ref.kth_largest(var.tolist(), m)
    assert c_exact == ref.kth_smallest(conf.tolist(), m)
    assert abs(v_thr - v_exact) <= V_WIDTH
    assert abs(c_thr - c_exact) <= C_WIDTH
    # Direction: the threshold is a bin edge on the inclusive side, so at least the q share of
    # examples is ambiguous (variability >= v_thr) and hard-to-learn candidates (confidence < c_thr).
    assert v_thr <= v_exact
    assert int(np.sum(var >= v_thr)) >= m
    if c_exact < CONFIDENCE_RANGE[1]:
        assert c_exact < c_thr
        assert int(np.sum(conf < c_thr)) >= m


def test_thresholds_absolute_and_errors():
    rule = RegionRule(mode="absolute", variability_threshold=0.2, confidence_threshold=0.4)
    assert thresholds(rule, None) == (0.2, 0.4)
    with pytest.raises(ValueError):
        thresholds(RegionRule(), RegionHistograms())
    for bad in (dict(mode="x"), dict(fraction=0.0), dict(fraction=1.0), dict(mode="absolute", confidence_threshold=0.1)):
        with pytest.raises(ValueError):
            RegionRule(**bad)


@SETTINGS
@given(st.data())
def test_region_codes_match_reference(data):
    n = data.draw(st.integers(1, 60))
    conf = data.draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]) | st.floats(0, 1)))
    var = data.draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 0.1, 0.2, 0.5]) | st.floats(0, 0.5)))
    # thresholds drawn from the data itself, so that ties with a threshold occur
    v_thr = data.draw(st.sampled_from(var.tolist()) | st.floats(0, 0.5))
    c_thr = data.draw(st.sampled_from(conf.tolist()) | st.floats(0, 1))
    codes = region_codes(conf, var, v_thr, c_thr)
    assert codes.shape == (n,)
    for i in range(n):
        assert REGIONS[codes[i]] == ref.region(conf[i], var[i], v_thr, c_thr), (conf[i], var[i], v_thr, c_thr)


# -- several runs ----------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 8), st.integers(1, 40), st.data())
def test_modal_category_matches_reference(R, n, data):
    cats = data.draw(arrays(np.int8, (R, n), elements=st.integers(0, len(CATEGORIES) - 1)))
    modal = np.full(n, -1, np.int8)
    agreement = np.full(n, -1.0)
    kernels.modal_category(cats, len(CATEGORIES), modal, agreement)
    for i in range(n):
        code, share = ref.modal_category(cats[:, i].tolist())
        assert int(modal[i]) == code, cats[:, i]
        assert math.isclose(agreement[i], share)


def test_modal_category_ties_go_to_lower_code():
    cats = np.array([[4, 5, 0], [2, 3, 5]], np.int8)  # every example a 1-1 tie
    modal = np.empty(3, np.int8)
    agreement = np.empty(3)
    kernels.modal_category(cats, len(CATEGORIES), modal, agreement)
    assert modal.tolist() == [2, 3, 0] and agreement.tolist() == [0.5, 0.5, 0.5]


@st.composite
def several_runs(draw):
    R = draw(st.integers(2, 5))
    n = draw(st.integers(1, 30))
    k = draw(st.integers(2, 4))
    gold = draw(arrays(np.int32, n, elements=st.integers(0, k - 1)))
    runs = []
    for _ in range(R):
        E = draw(st.integers(2, 8))  # runs may record different numbers of epochs
        correct = draw(arrays(np.bool_, (E, n)))
        pred = np.where(correct, gold[None, :], (gold[None, :] + 1) % k).astype(np.int32)
        p = draw(arrays(np.float32, (E, n), elements=st.floats(0, 1, width=32)))
        loss = draw(arrays(np.float32, (E, n), elements=st.floats(0, 100, width=32)))
        mg = draw(arrays(np.float32, (E, n), elements=st.floats(-50, 50, width=32)) | st.none())
        runs.append((gold, pred, p, loss, mg))
    return runs


@SETTINGS
@given(several_runs(), late_fractions)
def test_combine_runs_matches_reference(runs, late_fraction):
    per_run = [compute_block(make_block(*r), late_fraction) for r in runs]
    out = combine_runs(per_run)
    ref_runs = [reference_stats(*r, late_fraction) for r in runs]
    n = len(runs[0][0])
    R = len(runs)
    assert out["run_categories"].shape == (n, R)
    for i in range(n):
        per_example = [dict(rs[i], category=CODE[rs[i]["category"]]) for rs in ref_runs]
        exp = ref.combine_example(per_example)
        for key in ("confidence", "variability", "correctness", "mean_loss", "threshold_closeness",
                    "forgetting_events", "learning_events", "final_correct", "confidence_std",
                    "variability_std", "category_agreement"):  # fmt: skip
            assert close(out[key][i], exp[key]), (i, key, out[key][i], exp[key])
        first = float(out["first_learned_epoch"][i])
        if exp["first_learned_epoch"] is None:
            assert first == -1
        else:
            assert close(first, exp["first_learned_epoch"])
        if exp["mean_margin"] is None:
            assert np.isnan(out["mean_margin"][i])
        else:
            assert close(out["mean_margin"][i], exp["mean_margin"])
        assert bool(out["never_learned"][i]) == exp["never_learned"]
        assert int(out["epochs_seen"][i]) == exp["epochs_seen"]
        assert int(out["category"][i]) == exp["category"]
        assert out["run_categories"][i].tolist() == exp["run_categories"]
        assert int(out["n_runs"][i]) == R


def test_combine_single_run_is_identity():
    gold = np.array([0, 1], np.int32)
    pred = np.array([[0, 0], [0, 1]], np.int32)
    p = np.array([[0.9, 0.2], [0.8, 0.7]], np.float32)
    one = compute_block(make_block(gold, pred, p, p, None))
    assert combine_runs([one]) is one
