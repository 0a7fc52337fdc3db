"""Fine-tuning seed sweeps (Dodge et al., 2020).

* `expected_max` / `expected_max_curve`: expected best validation score of n runs drawn
  (with replacement) from N observed runs,
  E[max of n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n) over the sorted scores v_(1..N).
* `variance_decomposition`: how much of the final-score variance over a full grid of
  weight-init seeds x data-order seeds is due to each factor (main-effect sums of squares).
* `agreement_stats`: how consistently runs put each example in the same Subset of Interest.
* `run_sweep`: one training run per (init seed, data seed) pair, optionally with Dodge et
  al.'s early stopping (start t runs, evaluate after a fraction f, continue the best p).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

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


# --------------------------------------------------------------------------- agreement
def agreement_stats(run_categories, categories=None) -> dict:
    """Cross-run agreement of SOI categories from a profile's run_categories column.

    `run_categories`: one row per example, one category name per run (a list of lists, a
    2-D array, or a polars Series of lists/arrays). Returns

    * mean_agreement: mean over examples of the share of runs in the modal category (as the
      profile's category_agreement),
    * share_full_agreement: share of examples where every run agrees,
    * matrix: matrix[a][b] = over all ordered pairs of distinct runs and all examples where
      the first run says a, the share where the second says b (rows sum to 1); the diagonal
      is how often category a is reproduced by another seed,
    * pair_counts: the number of such (example, ordered pair) cases per row category.
    """
    if hasattr(run_categories, "to_list"):
        run_categories = run_categories.to_list()
    rows = [list(r) for r in run_categories]
    if not rows:
        raise UsageError("no examples to compute agreement on")
    R = len(rows[0])
    if R < 2 or any(len(r) != R for r in rows):
        raise UsageError("agreement needs at least 2 runs, the same number for every example")
    if categories is None:
        from soicurate.profiling.soi import CATEGORIES

        categories = list(CATEGORIES)
        extra = sorted({c for r in rows for c in r} - set(categories))
        categories += extra
    index = {c: k for k, c in enumerate(categories)}
    codes = np.array([[index[c] for c in r] for r in rows], dtype=np.int64)  # (n, R)
    K = len(categories)
    counts = np.zeros((len(rows), K), np.int64)
    np.add.at(counts, (np.repeat(np.arange(len(rows)), R), codes.ravel()), 1)
    agreement = counts.max(axis=1) / R
    # ordered pairs (a != b): for an example with count vector c, pairs (k, l) number
    # c_k * c_l for k != l and c_k * (c_k - 1) for k == l.
    pairs = counts.T @ counts - np.diag(counts.sum(axis=0))
    row_tot = pairs.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(row_tot[:, None] > 0, pairs / np.maximum(row_tot[:, None], 1), np.nan)
    return {
        "n_examples": len(rows),
        "n_runs": R,
        "mean_agreement": float(agreement.mean()),
        "share_full_agreement": float((counts.max(axis=1) == R).mean()),
        "categories": list(categories),
        "matrix": {a: {b: (None if math.isnan(share[i, j]) else float(share[i, j])) for j, b in enumerate(categories)}
                   for i, a in enumerate(categories)},  # fmt: skip
        "pair_counts": {a: int(row_tot[i]) for i, a in enumerate(categories)},
    }


# --------------------------------------------------------------------------- sweep
def run_dir_name(init_seed: int, data_seed: int) -> str:
    return f"run-i{init_seed}-d{data_seed}"


def parse_early_stop(text: str) -> tuple[int, float, int]:
    """'t,f,p' -> (t runs started, fraction f of training before the cut, p runs continued)."""
    try:
        t, f, p = text.split(",")
        t, f, p = int(t), float(f), int(p)
    except ValueError:
        raise UsageError(f"early stopping {text!r}: expected t,f,p (for example 8,0.5,2)") from None
    return check_early_stop((t, f, p))


def check_early_stop(early_stop) -> tuple[int, float, int]:
    t, f, p = early_stop
    if not (t >= 1 and 1 <= p <= t and 0 < f < 1):
        raise UsageError(f"early stopping t={t}, f={f}, p={p}: need t >= 1, 1 <= p <= t and 0 < f < 1")
    return int(t), float(f), int(p)


def _score(metrics: dict, eval_set: str, metric: str) -> float:
    try:
        return float(metrics["final"][eval_set][metric])
    except (KeyError, TypeError, ValueError):
        return math.nan


def run_sweep(base_config, init_seeds, data_seeds, output_dir, early_stop=None, *, eval_set: str | None = None,
              metric: str = "accuracy", train_fn=None, progress: bool = False) -> dict:
    """Train one run per (init seed, data seed) pair into output_dir/run-i{I}-d{D}/.

    `early_stop` = (t, f, p): only the first t pairs (grid order: init seeds outer) are
    started; they train ceil(f * epochs) epochs, the best p by `metric` on `eval_set` are
    resumed from their checkpoint to the full number of epochs, the rest stop there.
    `train_fn(config) -> metrics dict` defaults to soicurate's trainer. Returns the sweep
    bookkeeping (runs, scores, early stopping, epochs run vs a full sweep).
    """
    if train_fn is None:
        from soicurate.training.trainer import train as real_train

        def train_fn(config):
            return real_train(config, progress=progress)

    init_seeds, data_seeds = [int(s) for s in init_seeds], [int(s) for s in data_seeds]
    if not init_seeds or not data_seeds:
        raise UsageError("a sweep needs at least one init seed and one data seed")
    if len(set(init_seeds)) != len(init_seeds) or len(set(data_seeds)) != len(data_seeds):
        raise UsageError("seeds must not repeat")
    if not base_config.eval:
        raise UsageError("a seed sweep needs at least one evaluation set (eval) to score runs")
    eval_names = list(base_config.eval)
    eval_set = eval_set or eval_names[0]
    if eval_set not in base_config.eval:
        raise UsageError(f"no evaluation set {eval_set!r} (have: {', '.join(eval_names)})")
    epochs = base_config.epochs
    out = Path(output_dir)
    pairs = [(i, d) for i in init_seeds for d in data_seeds]

    def config_for(i, d, **changes):
        return dataclasses.replace(base_config, seed=i, data_seed=d, output_dir=str(out / run_dir_name(i, d)), **changes)

    runs = []
    early = None
    if early_stop is None:
        for i, d in pairs:
            m = train_fn(config_for(i, d))
            runs.append({"init_seed": i, "data_seed": d, "run_dir": str(out / run_dir_name(i, d)), "epochs": epochs,
                         "completed": True, "metrics": m})  # fmt: skip
        epochs_run = len(pairs) * epochs
    else:
        t, f, p = check_early_stop(early_stop)
        if t > len(pairs):
            raise UsageError(f"early stopping starts t={t} runs but the grid has only {len(pairs)} pairs")
        cut = math.ceil(f * epochs)
        if cut >= epochs:
            raise UsageError(f"early stopping after ceil({f} * {epochs}) = {cut} epochs saves nothing: lower f")
        if base_config.record != "none" and cut < 2:
            raise UsageError(f"early stopping after {cut} epoch(s): recording dynamics needs at least 2 epochs "
                             "before the cut (raise f or epochs, or record: none)")  # fmt: skip
        started = pairs[:t]
        first = {}
        for i, d in started:
            first[(i, d)] = train_fn(config_for(i, d, epochs=cut))
        partial = {k: _score(m, eval_set, metric) for k, m in first.items()}
        order = sorted(started, key=lambda k: (-(partial[k] if not math.isnan(partial[k]) else -math.inf),
                                               started.index(k)))  # fmt: skip
        keep = set(order[:p])
        for i, d in started:
            if (i, d) in keep:
                m = train_fn(config_for(i, d, epochs=epochs, resume=True))
                runs.append({"init_seed": i, "data_seed": d, "run_dir": str(out / run_dir_name(i, d)), "epochs": epochs,
                             "completed": True, "metrics": m})  # fmt: skip
            else:
                runs.append({"init_seed": i, "data_seed": d, "run_dir": str(out / run_dir_name(i, d)), "epochs": cut,
                             "completed": False, "metrics": first[(i, d)]})  # fmt: skip
        epochs_run = t * cut + p * (epochs - cut)
        early = {
            "t": t, "f": f, "p": p, "cut_epoch": cut, "eval_set": eval_set, "metric": metric,
            "started": [list(k) for k in started],
            "scores_at_cut": [{"init_seed": i, "data_seed": d, "score": partial[(i, d)]} for i, d in started],
            "continued": [list(k) for k in started if k in keep],
            "stopped": [list(k) for k in started if k not in keep],
        }  # fmt: skip
    full_epochs = (len(pairs) if early_stop is None else early["t"]) * epochs
    for r in runs:
        r["scores"] = {name: {k: _score(r["metrics"], name, k) for k in ("accuracy", "macro_f1")} for name in eval_names}
        if metric not in ("accuracy", "macro_f1"):
            for name in eval_names:
                r["scores"][name][metric] = _score(r["metrics"], name, metric)
        r["dynamics_dir"] = r["metrics"].get("dynamics_dir") if isinstance(r["metrics"], dict) else None
    return {
        "init_seeds": init_seeds,
        "data_seeds": data_seeds,
        "epochs": epochs,
        "eval_sets": eval_names,
        "eval_set": eval_set,
        "metric": metric,
        "runs": runs,
        "early_stopping": early,
        "compute": {"epochs_run": epochs_run, "epochs_full_sweep": full_epochs,
                    "epochs_saved": full_epochs - epochs_run,
                    "fraction_saved": (full_epochs - epochs_run) / full_epochs if full_epochs else 0.0},  # fmt: skip
    }


def summarize_sweep(sweep: dict) -> dict:
    """Expected-max tables (completed runs) per eval set and metric, and the variance
    decomposition of `metric` per eval set when every grid cell completed."""
    completed = [r for r in sweep["runs"] if r["completed"]]
    table = {}
    for name in sweep["eval_sets"]:
        table[name] = {}
        for metric in {sweep["metric"], "accuracy"}:
            scores = [r["scores"][name].get(metric, math.nan) for r in completed]
            scores = [s for s in scores if not math.isnan(s)]
            if not scores:
                continue
            table[name][metric] = {
                "n": list(range(1, len(scores) + 1)),
                "expected_max": expected_max_curve(scores).tolist(),
                "std": expected_max_std(scores).tolist(),
                "scores": scores,
            }
    decomposition = None
    I, D = len(sweep["init_seeds"]), len(sweep["data_seeds"])
    if len(completed) == I * D and I > 1 and D > 1:
        decomposition = {}
        pos = {(r["init_seed"], r["data_seed"]): r for r in completed}
        for name in sweep["eval_sets"]:
            grid = [[pos[(i, d)]["scores"][name].get(sweep["metric"], math.nan) for d in sweep["data_seeds"]]
                    for i in sweep["init_seeds"]]  # fmt: skip
            if np.all(np.isfinite(np.asarray(grid, dtype=np.float64))):
                decomposition[name] = variance_decomposition(grid)
    return {"expected_max": table, "variance_decomposition": decomposition}


def plot_expected_max(expected: dict, metric: str, path) -> None:
    """E[max of n] against n, one line per eval set, with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per_metric in expected.items():
        row = per_metric.get(metric)
        if not row:
            continue
        n, mean, std = np.array(row["n"]), np.array(row["expected_max"]), np.array(row["std"])
        ax.plot(n, mean, marker="o", label=name)
        ax.fill_between(n, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("number of fine-tuning runs n")
    ax.set_ylabel(f"expected best {metric}")
    ax.set_title("Expected validation performance (Dodge et al., 2020)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
