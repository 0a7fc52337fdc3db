"""Slow, obvious pure-Python reference implementations for the property tests.

Everything here works on plain Python lists with plain loops, written straight from the
definitions in DESIGN.md ("The six Subsets of Interest", Dataset Cartography, example
forgetting) and the docstrings of soicurate.profiling.regions / kernels.modal_category. It
deliberately shares no code with soicurate, so a test comparing the two can fail.
"""

from __future__ import annotations

import math

CATEGORY_NAMES = (
    "always_correct",
    "learned_early",
    "learned_late",
    "forgettable",
    "forgotten",
    "unlearned",
)
REGION_NAMES = ("easy_to_learn", "ambiguous", "hard_to_learn")

# Products such as 0.1 * 30 are 3.0000000000000004 in floating point; the late window treats
# anything within this tolerance of an integer as that integer (see soi.late_window_size).
LATE_TOLERANCE = 1e-9


# -- the late window --------------------------------------------------------------------------
def late_window_size(num_epochs: int, late_fraction: float) -> int:
    """Smallest whole number of epochs w >= 1 with w >= late_fraction * num_epochs."""
    target = late_fraction * num_epochs
    w = 1
    while w < target - LATE_TOLERANCE:
        w += 1
    return w


def late_window_start(num_epochs: int, late_fraction: float) -> int:
    """1-based first epoch of the late window (the last late_window_size epochs)."""
    return num_epochs - late_window_size(num_epochs, late_fraction) + 1


# -- one example ------------------------------------------------------------------------------
def mean(values):
    total = 0.0
    for v in values:
        total += float(v)
    return total / len(values)


def population_std(values):
    mu = mean(values)
    total = 0.0
    for v in values:
        total += (float(v) - mu) ** 2
    return math.sqrt(total / len(values))


def forgetting_events(correct):
    """Number of correct -> incorrect changes between consecutive epochs."""
    count = 0
    for e in range(1, len(correct)):
        if correct[e - 1] and not correct[e]:
            count += 1
    return count


def learning_events(correct):
    """Number of incorrect -> correct changes between consecutive epochs."""
    count = 0
    for e in range(1, len(correct)):
        if not correct[e - 1] and correct[e]:
            count += 1
    return count


def first_learned_epoch(correct):
    """1-based first epoch predicted correctly, None if never."""
    for e in range(len(correct)):
        if correct[e]:
            return e + 1
    return None


def soi_predicates(correct, late_fraction):
    """Each rule of DESIGN.md's table, evaluated on its own: {category name: bool}."""
    E = len(correct)
    start = late_window_start(E, late_fraction)
    ever = any(correct)
    never_forgotten = forgetting_events(correct) == 0
    first = first_learned_epoch(correct)
    return {
        "always_correct": all(correct),
        "learned_early": never_forgotten and not correct[0] and ever and first < start,
        "learned_late": never_forgotten and ever and first >= start,
        "forgettable": forgetting_events(correct) >= 1 and bool(correct[-1]),
        "forgotten": forgetting_events(correct) >= 1 and not correct[-1],
        "unlearned": not ever,
    }


def soi_category(correct, late_fraction):
    """Name of the example's Subset of Interest.

    Where the late window covers every epoch (late_fraction close to 1), an example correct at
    every epoch satisfies both always_correct and learned_late literally; always_correct wins.
    """
    holds = soi_predicates(correct, late_fraction)
    for name in CATEGORY_NAMES:
        if holds[name]:
            return name
    raise AssertionError(f"no category for {correct}")


def example_stats(gold, preds, p_gold, loss, margin=None, late_fraction=0.25):
    """All per-example statistics of one example from its per-epoch lists."""
    correct = [int(p) == int(gold) for p in preds]
    conf = mean(p_gold)
    first = first_learned_epoch(correct)
    n_correct = 0
    for c in correct:
        if c:
            n_correct += 1
    return {
        "confidence": conf,
        "variability": population_std(p_gold),
        "correctness": n_correct / len(correct),
        "forgetting_events": forgetting_events(correct),
        "learning_events": learning_events(correct),
        "first_learned_epoch": first,
        "final_correct": bool(correct[-1]),
        "never_learned": first is None,
        "mean_loss": mean(loss),
        "mean_margin": None if margin is None else mean(margin),
        "threshold_closeness": conf * (1.0 - conf),
        "category": soi_category(correct, late_fraction),
        "epochs_seen": len(correct),
    }


def profile_examples(gold, pred, p_gold, loss, margin=None, late_fraction=0.25):
    """Stats for every example; pred/p_gold/loss/margin are lists of per-epoch lists [e][i]."""
    out = []
    E = len(pred)
    for i in range(len(gold)):
        column = lambda arr: [arr[e][i] for e in range(E)]  # noqa: E731
        out.append(
            example_stats(
                gold[i],
                column(pred),
                column(p_gold),
                column(loss),
                None if margin is None else column(margin),
                late_fraction,
            )
        )
    return out


# -- validation -------------------------------------------------------------------------------
VALIDATION_CODES = {
    "ok": 0,
    "gold_out_of_range": 1,
    "pred_out_of_range": 2,
    "gold_changes": 3,
    "p_nan": 4,
    "p_out_of_range": 5,
    "loss_not_finite": 6,
    "margin_not_finite": 7,
}


def validate_example(gold, pred, p_gold, loss, margin, num_labels):
    """(problem code, epoch index) of the first problem in epoch order; per epoch the checks
    run in the order gold range, gold change, pred range, NaN p, p range, loss, margin."""
    C = VALIDATION_CODES
    for e in range(len(pred)):
        g = int(gold[e])
        p = float(p_gold[e])
        if g < 0 or g >= num_labels:
            return C["gold_out_of_range"], e
        if g != int(gold[0]):
            return C["gold_changes"], e
        if int(pred[e]) < 0 or int(pred[e]) >= num_labels:
            return C["pred_out_of_range"], e
        if math.isnan(p):
            return C["p_nan"], e
        if p < 0.0 or p > 1.0:
            return C["p_out_of_range"], e
        if not math.isfinite(float(loss[e])):
            return C["loss_not_finite"], e
        if margin is not None and not math.isfinite(float(margin[e])):
            return C["margin_not_finite"], e
    return C["ok"], 0


# -- cartography regions ----------------------------------------------------------------------
def region(confidence, variability, variability_threshold, confidence_threshold):
    """regions.py's rule: ambiguous if variability >= v_thr, else hard_to_learn if
    confidence < c_thr, else easy_to_learn."""
    if variability >= variability_threshold:
        return "ambiguous"
    if confidence < confidence_threshold:
        return "hard_to_learn"
    return "easy_to_learn"


def kth_largest(values, k):
    """The k-th largest value (1-based k)."""
    return sorted(values, reverse=True)[k - 1]


def kth_smallest(values, k):
    return sorted(values)[k - 1]


# -- several runs -----------------------------------------------------------------------------
def modal_category(codes):
    """(most frequent code, its share); ties go to the lower code."""
    counts = {}
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    best = None
    for c in sorted(counts):
        if best is None or counts[c] > counts[best]:
            best = c
    return best, counts[best] / len(codes)


def combine_example(per_run):
    """One example's statistics across runs (a list of example_stats-like dicts with integer
    category codes): means, mean first-learned epoch over the runs that learned it, modal
    category and its agreement, population std of confidence and variability."""
    R = len(per_run)
    out = {}
    for k in ("confidence", "variability", "correctness", "mean_loss",
              "forgetting_events", "learning_events"):  # fmt: skip
        out[k] = mean([r[k] for r in per_run])
    out["threshold_closeness"] = out["confidence"] * (1.0 - out["confidence"])  # of the row's confidence
    margins = [r["mean_margin"] for r in per_run]
    out["mean_margin"] = None if any(m is None for m in margins) else mean(margins)
    learned = [r["first_learned_epoch"] for r in per_run if r["first_learned_epoch"] is not None]
    out["first_learned_epoch"] = mean(learned) if learned else None
    out["final_correct"] = mean([1.0 if r["final_correct"] else 0.0 for r in per_run])
    out["never_learned"] = all(r["never_learned"] for r in per_run)
    out["epochs_seen"] = sum(r["epochs_seen"] for r in per_run)
    out["category"], out["category_agreement"] = modal_category([r["category"] for r in per_run])
    out["confidence_std"] = population_std([r["confidence"] for r in per_run])
    out["variability_std"] = population_std([r["variability"] for r in per_run])
    out["run_categories"] = [r["category"] for r in per_run]
    out["n_runs"] = R
    return out
