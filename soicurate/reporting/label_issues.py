"""Likely label problems, found from the training dynamics alone (no held-out model needed).

An example whose given label is wrong tends to be predicted, epoch after epoch, as one and
the same *other* label, with confidence: the model learns the pattern that the label
contradicts. An example that is merely hard flips between labels near the decision boundary.
Per example, over the T recorded epochs of all runs:

    m                    the other label (not the given one) predicted most often; none
                         when the given label was predicted at every epoch
    predicted_share      share of the T epochs that predicted m (how stable the prediction is)
    p_t(m)               probability of m at epoch t. Two labels: 1 - p_gold, exact. More
                         labels: at an epoch that predicted m, p_gold * exp(-margin) when
                         margins were recorded (exact: m was the top logit), else the lower
                         bound max(p_gold, (1 - p_gold) / (K - 1)); at other epochs 0 (a lower
                         bound: the log keeps p_gold and the top label only)
    predicted_confidence mean p_t(m) over the epochs that predicted m
    issue_score          (1/T) * sum over all epochs of p_t(m): the mean probability of that one
                         other label, in [0, 1]. For two labels it is 1 - confidence (the
                         Cartography confidence, cleanlab's self-confidence averaged over
                         training); for more labels it rewards a consistent alternative over
                         confusion spread across many labels.
    label_score          1 - issue_score (cleanlab's convention: low = likely a label issue)
    is_label_issue       predicted_share >= min_share (0.5) and issue_score >= threshold (0.5):
                         the model predicted the same other label in at least half of the
                         epochs and gave it, on average, at least half the probability.

Examples are ranked by issue_score (ties: the more stable prediction first). On a tiny BERT
trained on a task with 10% deliberately flipped labels (tests/test_audit.py), the top k
(k = the number flipped) are flipped ones about 9 times in 10, against 1 in 10 by chance.
Reading is block-wise (RunReader.iter_blocks): memory is bounded by the block size plus the
per-example output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

from soicurate.errors import UsageError

DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SHARE = 0.5


@njit(cache=True, nogil=True)
def _score_block(pred, p_gold, margin, has_margin, gold, num_labels, out_label, out_share, out_conf, out_score):
    T, n = pred.shape
    counts = np.zeros(num_labels, np.int64)
    for i in range(n):
        for k in range(num_labels):
            counts[k] = 0
        g = gold[i]
        for t in range(T):
            p = pred[t, i]
            if p != g:
                counts[p] += 1
        best = -1
        best_count = 0
        for k in range(num_labels):
            if counts[k] > best_count:
                best = k
                best_count = counts[k]
        out_label[i] = best
        if best < 0:
            out_share[i] = 0.0
            out_conf[i] = np.nan
            # two labels: the other label's probability is known even when never predicted
            total = 0.0
            if num_labels == 2:
                for t in range(T):
                    total += 1.0 - p_gold[t, i]
            out_score[i] = total / T
            continue
        total = 0.0
        when_predicted = 0.0
        for t in range(T):
            pg = p_gold[t, i]
            if num_labels == 2:
                pp = 1.0 - pg
            elif pred[t, i] != best:
                pp = 0.0
            elif has_margin:
                pp = pg * math.exp(-margin[t, i])
            else:
                pp = max(pg, (1.0 - pg) / (num_labels - 1))
            pp = min(max(pp, 0.0), 1.0)
            total += pp
            if pred[t, i] == best:
                when_predicted += pp
        out_share[i] = best_count / T
        out_conf[i] = when_predicted / best_count
        out_score[i] = total / T


def score_runs(runs, *, block_rows: int = 1 << 18, progress: bool = False):
    """Per-example label-issue statistics of one or several runs of the same examples.

    A polars DataFrame: example_id, label, predicted_label_id (-1: the given label was always
    predicted), predicted_share, predicted_confidence, issue_score; sorted by example_id.
    """
    import polars as pl

    from soicurate.profiling.pipeline import _check_compatible, _open_readers, _progress, aligned_blocks

    readers = _open_readers(runs)
    _check_compatible(readers)
    K = len(readers[0].label_names)
    has_margin = all(r.has_margin for r in readers)
    parts = []
    bar = _progress(progress, readers[0].num_examples * len(readers), "scoring labels")
    try:
        iters = [r.iter_blocks(block_rows) for r in readers]
        for blocks in aligned_blocks(readers, iters):
            b0 = blocks[0]
            if len(blocks) == 1:
                pred, p_gold = b0.pred, b0.p_gold
                margin = b0.margin if has_margin else None
            else:
                pred = np.concatenate([b.pred for b in blocks])
                p_gold = np.concatenate([b.p_gold for b in blocks])
                margin = np.concatenate([b.margin for b in blocks]) if has_margin else None
            n = b0.n
            label = np.empty(n, np.int32)
            share = np.empty(n, np.float64)
            conf = np.empty(n, np.float64)
            score = np.empty(n, np.float64)
            m = np.ascontiguousarray(margin, dtype=np.float32) if margin is not None else np.empty((0, 0), np.float32)
            _score_block(np.ascontiguousarray(pred, dtype=np.int32), np.ascontiguousarray(p_gold, dtype=np.float32), m,
                         margin is not None, b0.gold.astype(np.int32), K, label, share, conf, score)  # fmt: skip
            parts.append(pl.DataFrame({
                "example_id": b0.example_id.astype(np.int64),
                "label": b0.gold.astype(np.int32),
                "predicted_label_id": label,
                "predicted_share": share,
                "predicted_confidence": pl.Series(conf, nan_to_null=True),
                "issue_score": score,
            }))  # fmt: skip
            bar.update(n * len(readers))
    finally:
        bar.close()
    if not parts:
        raise UsageError(f"{readers[0].run_dir}: run has no examples")
    return pl.concat(parts, rechunk=True), {"num_labels": K, "exact_probability": K == 2,
                                            "epochs": sum(len(r.epochs) for r in readers)}  # fmt: skip


@dataclass
class LabelIssues:
    """Every example's label score and flag, ranked (most likely label problem first)."""

    scores: object  # polars DataFrame, one row per example, ranked
    threshold: float
    label_names: list[str]
    exact_probability: bool  # issue_score exact (two labels) or a lower bound (more labels)
    epochs: int  # recorded epochs summed over runs
    missing: int = 0  # profile examples that the runs do not hold (scores null)
    min_share: float = DEFAULT_MIN_SHARE

    @property
    def issues(self):
        """The flagged examples (is_label_issue), ranked."""
        import polars as pl

        return self.scores.filter(pl.col("is_label_issue"))

    @property
    def num_issues(self) -> int:
        return int(self.scores["is_label_issue"].sum())

    def precision_at(self, truth_ids: Sequence[int], k: int | None = None) -> float:
        """Share of the top k ranked examples whose id is in `truth_ids` (k: len(truth_ids))."""
        truth = set(int(i) for i in truth_ids)
        k = len(truth) if k is None else k
        top = self.scores["example_id"].head(k).to_list()
        return sum(i in truth for i in top) / max(k, 1)

    def to_dict(self, top: int = 20) -> dict:
        n = self.scores.height
        cols = [c for c in ("rank", "example_id", "given_label", "predicted_label", "label_score", "predicted_share",
                            "predicted_confidence", "category", "text") if c in self.scores.columns]  # fmt: skip
        return {
            "examples": n,
            "flagged": self.num_issues,
            "flagged_share": self.num_issues / n if n else math.nan,
            "threshold": self.threshold,
            "min_share": self.min_share,
            "exact_probability": self.exact_probability,
            "epochs": self.epochs,
            "missing_from_runs": self.missing,
            "top": self.issues.head(top).select(cols).to_dicts(),
        }


def profile_runs(profile_path: str | Path) -> list[str]:
    """The run directories a profile was made from (its metadata), checked to exist.

    A relative run path (as it was typed when profiling) is tried from the working directory,
    then from the profile's own directory.
    """
    from soicurate.reporting.datamap import profile_metadata

    profile_path = Path(profile_path)
    meta = profile_metadata(profile_path)
    runs = [r.get("run_dir") for r in meta.get("runs") or [] if r.get("run_dir")]
    if not runs:
        raise UsageError(f"{profile_path}: the profile's metadata names no run directory; pass the run(s) with --run")
    found = []
    for r in runs:
        candidates = [Path(r)] if Path(r).is_absolute() else [Path(r), profile_path.parent / r]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise UsageError(
                f"{profile_path}: its run directory {r} no longer exists (label scores need the per-epoch "
                "predictions); pass the run(s) with --run"
            )
        found.append(str(path))
    return found


def find_label_issues(
    profile,
    runs=None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_share: float = DEFAULT_MIN_SHARE,
    label_names: Sequence[str] | None = None,
    block_rows: int = 1 << 18,
    progress: bool = False,
):
    """Score every example of `profile` (a path or a DataFrame) for a likely label problem.

    `runs` defaults to the run directories stored in the profile's metadata (needs a path).
    Returns LabelIssues whose `scores` hold, ranked by issue_score (ties: lower confidence
    first): rank, example_id, label, given_label, predicted_label_id, predicted_label,
    label_score, issue_score, is_label_issue, predicted_share, predicted_confidence and the
    profile's category, confidence, variability, correctness and group columns.
    """
    import polars as pl

    from soicurate.reporting.transitions import load_profile

    if not 0 < threshold <= 1:
        raise UsageError(f"label-issue threshold must be in (0, 1], got {threshold}")
    if not 0 <= min_share <= 1:
        raise UsageError(f"min_share must be in [0, 1], got {min_share}")
    if runs is None:
        if isinstance(profile, pl.DataFrame):
            raise UsageError("find_label_issues on a DataFrame needs runs=...")
        runs = profile_runs(profile)
    df, _ = load_profile(profile)
    if label_names is None and not isinstance(profile, pl.DataFrame):
        from soicurate.reporting.datamap import profile_metadata

        label_names = profile_metadata(profile).get("label_names")
    scores, info = score_runs(runs, block_rows=block_rows, progress=progress)
    if label_names is None:
        from soicurate.profiling.pipeline import _open_readers

        label_names = _open_readers(runs)[0].label_names
    label_names = list(label_names)
    mapping = dict(enumerate(label_names))
    keep = [c for c in df.columns if c in ("example_id", "label_name", "category", "region", "confidence", "variability",
                                            "correctness", "forgetting_events", "source", "task", "language", "guid")]  # fmt: skip
    joined = df.select(keep).join(scores, on="example_id", how="left")
    missing = int(joined["issue_score"].null_count())
    out = joined.with_columns(
        pl.col("issue_score").fill_null(0.0),
        given_label=pl.col("label").replace_strict(mapping, default=None, return_dtype=pl.String),
        predicted_label=pl.col("predicted_label_id").replace_strict(mapping, default=None, return_dtype=pl.String),
    ).with_columns(
        label_score=1.0 - pl.col("issue_score"),
        is_label_issue=(pl.col("issue_score") >= threshold) & (pl.col("predicted_share").fill_null(0.0) >= min_share),
    )
    # ranked by issue_score, then the more stable prediction, then id (numpy's lexsort: 3x faster
    # than a three-key polars sort on 10^6 rows)
    order = np.lexsort((out["example_id"].to_numpy(), -out["predicted_share"].fill_null(0.0).to_numpy(),
                        -out["issue_score"].to_numpy()))  # fmt: skip
    out = out[order]
    out = out.with_row_index("rank", offset=1).with_columns(pl.col("rank").cast(pl.Int64))
    first = ["rank", "example_id", "label", "given_label", "predicted_label_id", "predicted_label", "label_score",
             "issue_score", "is_label_issue", "predicted_share", "predicted_confidence"]  # fmt: skip
    rest = [c for c in out.columns if c not in first and c != "label_name"]
    return LabelIssues(
        out.select(*first, *rest), threshold, label_names, info["exact_probability"], info["epochs"], missing, min_share
    )
