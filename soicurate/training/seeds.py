"""Fine-tuning seed sweeps (Dodge et al., 2020).

`run_sweep` trains one run per (init seed, data seed) pair, optionally with Dodge et al.'s
early stopping (start t runs, evaluate after a fraction f, continue the best p);
`summarize_sweep` adds expected-max tables and the variance split; `write_sweep` profiles
the completed runs together, measures cross-seed SOI agreement and writes sweep.json and
the expected-max plot. The statistics live in `seed_stats` and `profiling.agreement`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np

from soicurate.errors import UsageError
from soicurate.training.seed_stats import expected_max_curve, expected_max_std, variance_decomposition


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


def _score(metrics: dict, eval_set: str, metric: str) -> float | None:
    """A run's final score, or None when its metrics lack it (kept as null in sweep.json)."""
    try:
        return float(metrics["final"][eval_set][metric])
    except (KeyError, TypeError, ValueError):
        return None


def run_sweep(base_config, init_seeds, data_seeds, output_dir, early_stop=None, *, eval_set: str | None = None,
              metric: str = "accuracy", train_fn=None, progress: bool = False, paired: bool = False,
              keep_checkpoints: bool = False, resume: bool = False) -> dict:
    """Train one run per (init seed, data seed) pair into output_dir/run-i{I}-d{D}/.

    The pairs are the full grid init_seeds x data_seeds, or with `paired=True` the pairs
    zip(init_seeds, data_seeds) (N runs that each change both seeds, as `train --seeds N`).

    `early_stop` = (t, f, p): only the first t pairs (grid order: init seeds outer) are
    started; they stop after ceil(f * epochs) epochs (inside the full run's learning-rate
    schedule), the best p by `metric` on `eval_set` are resumed from their checkpoint to the
    full number of epochs, the rest stop there.
    `train_fn(config) -> metrics dict` defaults to soicurate's trainer. Returns the sweep
    bookkeeping (runs, scores, early stopping, epochs run vs a full sweep).

    Unless `keep_checkpoints`, a run's checkpoints/ (kept by the trainer for resuming, with
    optimizer state: about 3x the model each) are deleted once the sweep is done with the run
    (finished, or stopped by early stopping); model/, dynamics/ and metrics.json stay.

    With `resume`, an interrupted sweep continues in the same directory: a run whose
    metrics.json shows it trained far enough is reused, one with a checkpoint resumes from
    it, one that died before its first checkpoint starts over; a run trained with another
    configuration is an error.
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
    if paired:
        if len(init_seeds) != len(data_seeds):
            raise UsageError(f"paired seeds need as many init seeds ({len(init_seeds)}) as data seeds ({len(data_seeds)})")
        pairs = list(zip(init_seeds, data_seeds))
    else:
        pairs = [(i, d) for i in init_seeds for d in data_seeds]

    # Every run trains on the same examples: a max_train_examples subset is drawn once (by the
    # config's subset seed, else its data seed), not once per data-order seed, so that runs
    # differ only in the seeds under study and their profiles cover the same ids.
    subset_seed = base_config.effective_subset_seed

    def config_for(i, d, **changes):
        # a fresh run unless `changes` say resume: the sweep's own --resume is `resume`, not the
        # base config's flag
        changes = {"resume": False, **changes}
        return dataclasses.replace(base_config, seed=i, data_seed=d, subset_seed=subset_seed,
                                   output_dir=str(out / run_dir_name(i, d)), **changes)  # fmt: skip

    def record(i, d, trained, completed, metrics):
        runs.append({"init_seed": i, "data_seed": d, "run_dir": str(out / run_dir_name(i, d)), "epochs": trained,
                     "completed": completed, "metrics": metrics})  # fmt: skip

    def done_with(i, d):
        if not keep_checkpoints:
            drop_checkpoints(out / run_dir_name(i, d))

    def run(i, d, target, **changes):
        """Train pair (i, d) to `target` epochs; with `resume`, reuse or continue what is there."""
        config = config_for(i, d, **changes)
        if not resume:
            return train_fn(config)
        return resume_run(config, target, train_fn)

    if early_stop is not None:
        t, f, p = check_early_stop(early_stop)
        if t > len(pairs):
            raise UsageError(f"early stopping starts t={t} runs but the grid has only {len(pairs)} pairs")
        cut = math.ceil(f * epochs)
        if cut >= epochs:
            raise UsageError(f"early stopping after ceil({f} * {epochs}) = {cut} epochs saves nothing: lower f")
        if base_config.record != "none" and cut < 2:
            raise UsageError(f"early stopping after {cut} epoch(s): recording dynamics needs at least 2 epochs "
                             "before the cut (raise f or epochs, or record: none)")  # fmt: skip
    # no mkdir here: the trainer creates each run's directory once it has loaded everything,
    # so bad settings and a model or data that will not load leave nothing behind
    runs = []
    early = None
    if early_stop is None:
        for i, d in pairs:
            m = run(i, d, epochs)
            done_with(i, d)
            record(i, d, epochs, True, m)
        epochs_run = len(pairs) * epochs
    else:
        started = pairs[:t]
        # The ranking at the cut is written down before any run continues (a continued run's
        # metrics.json is overwritten at the end), so a resumed sweep ranks exactly as before.
        cut_file = out / CUT_FILE
        settings = {"t": t, "f": f, "cut_epoch": cut, "eval_set": eval_set, "metric": metric,
                    "started": [list(k) for k in started]}  # fmt: skip
        recorded = read_cut_file(cut_file, settings) if resume else None
        first = {}
        if recorded is None:
            for i, d in started:
                first[(i, d)] = run(i, d, cut, stop_after_epoch=cut)
            partial = {k: _score(m, eval_set, metric) for k, m in first.items()}
            if all(v is None for v in partial.values()):
                raise UsageError(f"early stopping: no run reported {metric} on {eval_set!r} after epoch {cut}, so "
                                 "runs cannot be ranked (does that evaluation set load and have labels?)")  # fmt: skip
            from soicurate.atomic import write_text_atomic

            scores = [[i, d, partial[(i, d)]] for i, d in started]
            cut_file.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(cut_file, json.dumps({**settings, "scores_at_cut": scores}, indent=2) + "\n")
        else:
            partial = {(i, d): score for i, d, score in recorded}
        order = sorted(started, key=lambda k: (-(partial[k] if partial[k] is not None else -math.inf),
                                               started.index(k)))  # fmt: skip
        keep = set(order[:p])
        for i, d in started:  # the stopped runs are done with: their checkpoints go before anyone continues
            if (i, d) not in keep:
                if (i, d) not in first:  # resumed after the cut: the stopped run as it was
                    first[(i, d)] = resume_run(config_for(i, d, stop_after_epoch=cut), cut, train_fn)
                done_with(i, d)
        for i, d in started:
            if (i, d) in keep:
                m = run(i, d, epochs, resume=True)
                done_with(i, d)
                record(i, d, epochs, True, m)
            else:
                record(i, d, cut, False, first[(i, d)])
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
        "design": "paired" if paired else "grid",
        "init_seeds": init_seeds,
        "data_seeds": data_seeds,
        "epochs": epochs,
        "eval_sets": eval_names,
        "eval_set": eval_set,
        "metric": metric,
        "runs": runs,
        "early_stopping": early,
        "checkpoints_kept": bool(keep_checkpoints),
        "resumed": bool(resume),
        "compute": {"epochs_run": epochs_run, "epochs_full_sweep": full_epochs,
                    "epochs_saved": full_epochs - epochs_run,
                    "fraction_saved": (full_epochs - epochs_run) / full_epochs if full_epochs else 0.0},  # fmt: skip
    }


CUT_FILE = "early_stopping_cut.json"


def read_cut_file(path: Path, settings: dict):
    """The [init seed, data seed, score] rows of an earlier try's ranking at the cut, or None
    when there is none; an error when that try used other early-stopping settings."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        rows = [(int(i), int(d), None if v is None else float(v)) for i, d, v in data["scores_at_cut"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: unreadable ({exc}); delete it to rerun the first phase") from None
    for k, v in settings.items():
        if data.get(k) != v:
            raise UsageError(f"{path}: the interrupted sweep used {k}={data.get(k)!r}, now {v!r}; resume with the "
                             "same --early-stop, --eval-set and --metric, or use another --output-dir")  # fmt: skip
    return rows


# settings that may differ between a run's recorded config and the sweep's without making it
# another run: where it is written and how far this call trains it
_RUN_LOCAL = ("output_dir", "resume", "stop_after_epoch")


def resume_run(config, target: int, train_fn) -> dict:
    """One run of an interrupted sweep: reuse it when its metrics.json shows at least `target`
    epochs, else resume it from its last checkpoint, else (no checkpoint: it died in its first
    epoch) start it over. Refuses a run whose recorded config differs from `config`."""
    from soicurate.training.trainer import CHECKPOINT_SUBDIR, METRICS_NAME

    run_dir = Path(config.output_dir)
    metrics_path = run_dir / METRICS_NAME
    if metrics_path.exists():
        try:
            metrics = json.loads(metrics_path.read_text())
            recorded = dict(metrics["config"])
            epochs_run = int(metrics["epochs_run"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{metrics_path}: unreadable run metrics ({exc}); move the run away to retrain it"
                             ) from None  # fmt: skip
        wanted = json.loads(json.dumps(config.to_dict()))  # as metrics.json stores it
        changed = sorted(k for k in wanted if k not in _RUN_LOCAL and recorded.get(k) != wanted[k])
        if changed:
            k = changed[0]
            raise UsageError(f"{run_dir}: trained with {k}={recorded.get(k)!r}, the sweep now says {wanted[k]!r}; "
                             "resume with the same config, or use another --output-dir")  # fmt: skip
        if epochs_run >= target:
            return metrics
    has_checkpoint = any((run_dir / CHECKPOINT_SUBDIR).glob("checkpoint-*"))
    if has_checkpoint:
        return train_fn(dataclasses.replace(config, resume=True))
    if metrics_path.exists():
        raise UsageError(f"{run_dir}: trained {epochs_run} of {target} epochs and its checkpoints are gone, so it "
                         "cannot continue (sweeps that change t or p need --keep-checkpoints)")  # fmt: skip
    if run_dir.exists():  # died before its first checkpoint: nothing to continue
        shutil.rmtree(run_dir)
    return train_fn(dataclasses.replace(config, resume=False))


def drop_checkpoints(run_dir) -> None:
    """Delete run_dir/checkpoints/ (the trainer's resumable state), if there."""
    from soicurate.training.trainer import CHECKPOINT_SUBDIR

    path = Path(run_dir) / CHECKPOINT_SUBDIR
    if path.is_dir():
        shutil.rmtree(path)


def _or_nan(value) -> float:
    return math.nan if value is None else float(value)


def summarize_sweep(sweep: dict) -> dict:
    """Expected-max tables (completed runs) per eval set and metric, and the variance
    decomposition of `metric` per eval set when every grid cell completed."""
    completed = [r for r in sweep["runs"] if r["completed"]]
    table = {}
    for name in sweep["eval_sets"]:
        table[name] = {}
        for metric in {sweep["metric"], "accuracy"}:
            scores = [r["scores"][name].get(metric) for r in completed]
            scores = [s for s in scores if s is not None]
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
    if sweep.get("design", "grid") == "grid" and len(completed) == I * D and I > 1 and D > 1:
        decomposition = {}
        pos = {(r["init_seed"], r["data_seed"]): r for r in completed}
        for name in sweep["eval_sets"]:
            grid = [[_or_nan(pos[(i, d)]["scores"][name].get(sweep["metric"])) for d in sweep["data_seeds"]]
                    for i in sweep["init_seeds"]]  # fmt: skip
            if np.all(np.isfinite(np.asarray(grid, dtype=np.float64))):
                decomposition[name] = variance_decomposition(grid)
    return {"expected_max": table, "variance_decomposition": decomposition}


def write_sweep(sweep: dict, output_dir) -> dict:
    """Finish a sweep in output_dir: expected-max tables and plot, variance split, one
    profile of all completed runs (profile.parquet) with cross-seed SOI agreement, and
    sweep.json (written last, atomically). Returns the sweep as written."""
    from soicurate.atomic import write_text_atomic
    from soicurate.reporting.expected_max import plot_expected_max

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for r in sweep["runs"]:
        r.pop("metrics", None)  # each run's own metrics.json holds them
    sweep.update(summarize_sweep(sweep))
    plot_expected_max(sweep["expected_max"], sweep["metric"], out / "expected_max.png")
    sweep["plot"] = str(out / "expected_max.png")
    dyn = [r["dynamics_dir"] for r in sweep["runs"] if r["completed"] and r["dynamics_dir"]]
    sweep["profile"] = None
    sweep["agreement"] = None
    if dyn:
        from soicurate.profiling.pipeline import read_profile, write_profile

        write_profile(dyn, out / "profile.parquet")
        sweep["profile"] = str(out / "profile.parquet")
        if len(dyn) > 1:
            from soicurate.profiling.agreement import agreement_stats

            sweep["agreement"] = agreement_stats(read_profile(out / "profile.parquet")["run_categories"])
            sweep["agreement"]["runs"] = dyn
    write_text_atomic(out / "sweep.json", json.dumps(sweep, indent=2, allow_nan=False) + "\n")
    return sweep


def check_sweep_dir(output_dir) -> Path:
    """The sweep directory, refusing one that already holds a finished sweep."""
    out = Path(output_dir)
    if (out / "sweep.json").exists():
        raise UsageError(f"{out}: already holds a seed sweep (use another --output-dir)")
    return out
