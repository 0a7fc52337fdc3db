"""Two-stage fine-tuning with the baselines that make a gain mean something.

Stage one fine-tunes on the full training set and records dynamics; the profile picks a
subset by Subsets of Interest (for example forgettable + forgotten + ambiguous). Stage two
continues from the stage-one model, and the experiment compares, on every evaluation set
(in-distribution and out-of-distribution):

- ``stage_one``: the stage-one model as it is;
- ``soi``: stage two on the SOI subset;
- ``random``: stage two on a random subset of the same size;
- ``full``: stage two on the full training set for the same number of optimizer steps.

Several seeds give the mean and spread of each condition (stage two's seed sets both the
head-free continuation's data order and the random subset).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soicurate.atomic import write_text_atomic
from soicurate.errors import UsageError
from soicurate.training.config import TrainConfig

CONDITIONS = ("stage_one", "soi", "random", "full")


@dataclass
class TwoStageConfig:
    """Stage one (a TrainConfig), the SOI selection, and stage two's schedule and seeds."""

    stage_one: TrainConfig
    categories: list[str] = field(default_factory=lambda: ["forgettable", "forgotten"])
    regions: list[str] = field(default_factory=lambda: ["ambiguous"])
    where: str | None = None
    stage_two_epochs: int = 2
    stage_two_learning_rate: float = 2e-5
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    output_dir: str = "runs/two-stage"

    def validate(self) -> "TwoStageConfig":
        self.stage_one.validate()
        if self.stage_one.record == "none":
            raise UsageError("stage one must record dynamics (record: train or eval)")
        if not self.stage_one.eval:
            raise UsageError("two-stage needs at least one evaluation set (eval: {name: data})")
        if self.stage_two_epochs < 1 or not self.seeds:
            raise UsageError("stage two needs at least one epoch and one seed")
        return self


def _subset_file(ds, ids: np.ndarray, path: Path) -> str:
    """Write the training rows whose example_id is in `ids` (Parquet) and return the path."""
    keep = set(int(i) for i in ids)
    sub = ds.filter(lambda row: row["example_id"] in keep)
    path.parent.mkdir(parents=True, exist_ok=True)
    sub.to_parquet(str(path))
    return str(path)


def _final(metrics: dict) -> dict:
    return metrics.get("final", {})


def _stage_two(cfg: TwoStageConfig, stage_one_model: str, train: str, out: Path, seed: int, max_steps=None, progress=False):
    """One stage-two run; a run already completed in `out` (its metrics.json) is reused."""
    from soicurate.training.trainer import METRICS_NAME
    from soicurate.training.trainer import train as run_training

    if (out / METRICS_NAME).exists():
        return json.loads((out / METRICS_NAME).read_text())

    base = cfg.stage_one
    config = dataclasses.replace(
        base,
        model=stage_one_model,
        train=train,
        output_dir=str(out),
        epochs=cfg.stage_two_epochs,
        learning_rate=cfg.stage_two_learning_rate,
        seed=seed,
        data_seed=seed,
        record="none",
        evaluate="end",
        max_steps=max_steps,
        max_train_examples=None,
        id_column="example_id",
        label_names=None,
        resume=False,
    )
    config.label_names = _label_names_of_model(stage_one_model)
    return run_training(config, progress=progress)


def _label_names_of_model(model_dir: str) -> list[str]:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    id2label = cfg.get("id2label") or {}
    return [id2label[k] for k in sorted(id2label, key=int)]


def run_two_stage(cfg: TwoStageConfig, *, progress: bool = False, log=print) -> dict:
    """Run stage one (reused when already done), profile, select, run stage two per condition
    and seed, and write results.json; returns the results (rows of the comparison table)."""
    from soicurate.curation.selection import SelectionRule, select
    from soicurate.profiling.pipeline import read_profile, write_profile
    from soicurate.training.data import DataSpec, load_split, with_example_ids
    from soicurate.training.trainer import METRICS_NAME, MODEL_SUBDIR
    from soicurate.training.trainer import train as run_training

    cfg.validate()
    out = Path(cfg.output_dir)
    s1_dir = out / "stage_one"
    if (s1_dir / METRICS_NAME).exists():
        log(f"stage one: reusing {s1_dir}")
        s1_metrics = json.loads((s1_dir / METRICS_NAME).read_text())
    else:
        log(f"stage one: fine-tuning {cfg.stage_one.model} ({cfg.stage_one.epochs} epochs)")
        s1_metrics = run_training(dataclasses.replace(cfg.stage_one, output_dir=str(s1_dir)), progress=progress)
    model_dir = str(s1_dir / MODEL_SUBDIR)
    profile_path = out / "profile.parquet"
    summary = write_profile(s1_dir / "dynamics", profile_path)
    profile = read_profile(profile_path)
    rule = SelectionRule(categories=cfg.categories, regions=cfg.regions, where=cfg.where)
    chosen = select(profile, rule)
    n = len(chosen)
    if n == 0:
        raise UsageError(f"the selection {rule.describe()} is empty: nothing to train stage two on")
    log(f"selection {rule.describe()}: {n} of {profile.height} examples")

    spec = DataSpec.parse(cfg.stage_one.train)
    source = load_split(spec)
    source = with_example_ids(source, spec.name, spec.split, cfg.stage_one.id_column)
    all_ids = profile["example_id"].to_numpy()  # the examples stage one trained on
    data_dir = out / "subsets"
    soi_file = _subset_file(source, chosen.ids, data_dir / "soi.parquet")
    full_file = _subset_file(source, all_ids, data_dir / "full.parquet")
    batch = cfg.stage_one.batch_size * cfg.stage_one.gradient_accumulation_steps
    steps = cfg.stage_two_epochs * math.ceil(n / batch)

    rows = []
    for name, values in _final(s1_metrics).items():
        rows.append({"condition": "stage_one", "seed": cfg.stage_one.seed, "eval": name, **values})
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        random_ids = np.sort(rng.choice(all_ids, size=n, replace=False))
        random_file = _subset_file(source, random_ids, data_dir / f"random-s{seed}.parquet")
        runs = {"soi": (soi_file, None), "random": (random_file, None), "full": (full_file, steps)}
        for condition, (train_file, max_steps) in runs.items():
            log(f"stage two: {condition}, seed {seed}" + (f", {max_steps} steps" if max_steps else ""))
            metrics = _stage_two(cfg, model_dir, train_file, out / "stage_two" / f"{condition}-s{seed}", seed,
                                 max_steps=max_steps, progress=progress)  # fmt: skip
            for name, values in _final(metrics).items():
                rows.append({"condition": condition, "seed": seed, "eval": name, **values})
    table = aggregate(rows)
    result = {
        "selection": {"rule": rule.describe(), "size": n, "of": profile.height,
                      "categories": {k: v["count"] for k, v in summary.to_dict()["categories"].items()}},  # fmt: skip
        "stage_two": {"epochs": cfg.stage_two_epochs, "learning_rate": cfg.stage_two_learning_rate,
                      "steps_soi": steps, "seeds": cfg.seeds},  # fmt: skip
        "runs": rows,
        "table": table,
        "profile": str(profile_path),
        "stage_one_dir": str(s1_dir),
    }
    write_text_atomic(out / "results.json", json.dumps(result, indent=2) + "\n")
    return result


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and population std over seeds of accuracy and macro-F1, per condition and eval set."""
    table = []
    evals = sorted({r["eval"] for r in rows})
    for condition in CONDITIONS:
        for name in evals:
            got = [r for r in rows if r["condition"] == condition and r["eval"] == name]
            if not got:
                continue
            acc = np.array([r["accuracy"] for r in got], float)
            f1 = np.array([r["macro_f1"] for r in got], float)
            table.append({"condition": condition, "eval": name, "seeds": len(got),
                          "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
                          "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std())})  # fmt: skip
    return table


def format_table(table: list[dict]) -> str:
    """The comparison as a Markdown table (one row per condition, columns per eval set)."""
    evals = sorted({r["eval"] for r in table})
    header = "| condition | " + " | ".join(f"{e} accuracy | {e} macro-F1" for e in evals) + " | seeds |"
    lines = [header, "|---|" + "---:|---:|" * len(evals) + "---:|"]
    for condition in CONDITIONS:
        cells, seeds = [], 0
        for e in evals:
            r = next((x for x in table if x["condition"] == condition and x["eval"] == e), None)
            if r is None:
                cells += ["", ""]
                continue
            seeds = r["seeds"]
            cells += [f"{r['accuracy_mean']:.4f} ± {r['accuracy_std']:.4f}", f"{r['macro_f1_mean']:.4f} ± {r['macro_f1_std']:.4f}"]
        if seeds:
            lines.append(f"| {condition} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines)


def load_two_stage_config(path, *, output_dir=None, seeds=None) -> TwoStageConfig:
    """A TwoStageConfig from a YAML/TOML file: stage-one settings plus a `two_stage` section."""
    from soicurate.training.config import load_config_file

    data = load_config_file(path)
    section = data.pop("two_stage", {}) or {}
    if not isinstance(section, dict):
        raise UsageError(f"{path}: two_stage must be a mapping")
    known = {f.name for f in dataclasses.fields(TwoStageConfig)} - {"stage_one"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise UsageError(f"{path}: unknown two_stage setting(s) {', '.join(unknown)}")
    stage_one_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - stage_one_fields)
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    try:
        stage_one = TrainConfig(**data)
        cfg = TwoStageConfig(stage_one=stage_one, **section)
    except TypeError as exc:
        raise UsageError(f"{path}: {exc}") from None
    if output_dir is not None:
        cfg.output_dir = str(output_dir)
    elif "output_dir" not in section and data.get("output_dir"):
        cfg.output_dir = data["output_dir"]
    if seeds is not None:
        try:
            cfg.seeds = [int(s) for s in str(seeds).split(",") if s.strip()]
        except ValueError:
            raise UsageError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    return cfg.validate()
