"""Multi-setting stage one: train single-setting and multi-setting variants of the same data,
profile each, and compare their Subsets of Interest (single -> multi transitions).

Kinds of setting:

- ``source``: several datasets of one task; the multi-setting variant trains on all of them
  with a ``source`` column naming each example's dataset.
- ``language``: the same, with a ``language`` column.
- ``task``: several tasks with their own label spaces: a shared encoder with one
  classification head per task (see `MultiTaskModel`); one dynamics run per task.

Example ids: every dataset gets the ids of `soicurate.training.data.with_example_ids` with the
dataset's *name* (the key in ``datasets``) as source and split ``train``. They are therefore
identical to the ids a single-setting ``soicurate train --train data/NAME.csv`` run gets (its
source is the file stem), so profiles of every variant join on ``example_id``.

Output directory::

    OUTPUT_DIR/data/NAME.parquet            each dataset with example_id and the setting column
    OUTPUT_DIR/data/multi.parquet           all of them (source / language kinds)
    OUTPUT_DIR/single/NAME/                 a `soicurate train` run per dataset (dynamics/, model/, metrics.json)
    OUTPUT_DIR/multi/                       the multi-setting run (task kind: multi/dynamics/TASK/)
    OUTPUT_DIR/profiles/single-NAME.parquet, multi[-TASK].parquet
    OUTPUT_DIR/transitions/NAME.json/.txt   SOI transitions single -> multi on NAME's examples
    OUTPUT_DIR/summary.json
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from soicurate.atomic import write_text_atomic
from soicurate.errors import UsageError
from soicurate.training.config import TrainConfig, load_config_file

KINDS = ("source", "language", "task")
SPLIT = "train"


@dataclass
class DatasetEntry:
    """One dataset of a multi-setting experiment (per-dataset column overrides are optional)."""

    name: str
    data: str
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    label_names: list[str] | None = None
    id_column: str | None = None


@dataclass
class MultiSettingConfig:
    """`base` holds the shared training settings (its `train` is ignored)."""

    base: TrainConfig
    kind: str = "source"
    datasets: list[DatasetEntry] = field(default_factory=list)
    output_dir: str = "runs/multi"

    def validate(self) -> "MultiSettingConfig":
        if self.kind not in KINDS:
            raise UsageError(f"settings.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if len(self.datasets) < 2:
            raise UsageError("settings.datasets needs at least two datasets (name: data)")
        if self.base.record == "none":
            raise UsageError("multi-setting runs must record dynamics (record: train or eval)")
        if self.kind == "task" and self.base.record != "train":
            raise UsageError("the multi-task trainer records from the training pass only (record: train)")
        if self.kind == "task" and self.base.eval:
            raise UsageError("kind task does not evaluate eval sets yet; remove eval from the config")
        self.base.train = self.base.train or "<multi-setting>"
        self.base.validate()
        return self


def load_multi_config(path, *, output_dir: str | None = None) -> MultiSettingConfig:
    """A YAML/TOML file: `soicurate train` settings plus a `settings` section."""
    data = load_config_file(path)
    settings = data.pop("settings", None)
    if not isinstance(settings, dict):
        raise UsageError(f"{path}: needs a settings section (settings: {{kind: source, datasets: {{name: data}}}})")
    out = output_dir or data.pop("output_dir", None) or "runs/multi"
    data.pop("train", None)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    base = TrainConfig(**data)
    raw = settings.get("datasets")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: settings.datasets must map names to data (a path or a mapping with data:)")
    entries = []
    allowed = {f.name for f in dataclasses.fields(DatasetEntry)} - {"name"}
    for name, spec in raw.items():
        if isinstance(spec, str):
            spec = {"data": spec}
        if not isinstance(spec, dict) or "data" not in spec or set(spec) - allowed:
            raise UsageError(f"{path}: settings.datasets.{name}: give a path or a mapping with keys {', '.join(sorted(allowed))}")
        entries.append(DatasetEntry(name=str(name), **spec))
    unknown = sorted(set(settings) - {"kind", "datasets"})
    if unknown:
        raise UsageError(f"{path}: unknown settings key(s) {', '.join(unknown)}")
    return MultiSettingConfig(base=base, kind=settings.get("kind", "source"), datasets=entries,
                              output_dir=str(out)).validate()  # fmt: skip


# -- data ------------------------------------------------------------------------------------
def _col(entry: DatasetEntry, base: TrainConfig, name: str):
    value = getattr(entry, name)
    return getattr(base, name) if value is None else value


def load_with_ids(entry: DatasetEntry, base: TrainConfig):
    """The dataset with example_id: the ids a single-setting run on it alone gets."""
    from soicurate.training.data import DataSpec, load_split, with_example_ids

    spec = DataSpec.parse(entry.data)
    ds = load_split(spec)
    ds = with_example_ids(ds, entry.name, SPLIT, _col(entry, base, "id_column"))
    return ds


def setting_frame(entry: DatasetEntry, base: TrainConfig, kind: str, label_names=None):
    """A polars frame: example_id, text[, text_pair], label (as strings), and the setting column."""
    import polars as pl

    from soicurate.training.data import label_names_of

    ds = load_with_ids(entry, base)
    text_col, pair_col, label_col = (_col(entry, base, c) for c in ("text_column", "text_pair_column", "label_column"))
    for col in (text_col, pair_col, label_col):
        if col is not None and col not in ds.column_names:
            raise UsageError(f"{entry.name}: no column {col!r} (columns: {', '.join(ds.column_names)})")
    names = label_names_of(ds, label_col, entry.label_names or label_names)
    from datasets import ClassLabel

    raw = ds[label_col]
    if isinstance(ds.features[label_col], ClassLabel):
        raw = [ds.features[label_col].names[v] for v in raw]
    cols = {"example_id": pl.Series(ds["example_id"], dtype=pl.Int64), "text": [str(t) for t in ds[text_col]]}
    if pair_col:
        cols["text_pair"] = [str(t) for t in ds[pair_col]]
    cols["label"] = [str(v) for v in raw]
    cols[kind] = [entry.name] * len(ds)
    return pl.DataFrame(cols), names


def build_frames(cfg: MultiSettingConfig):
    """{name: frame} and the shared label names (source/language kinds: the union, in order)."""
    frames, label_names = {}, []
    for entry in cfg.datasets:
        frame, names = setting_frame(entry, cfg.base, cfg.kind, cfg.base.label_names)
        frames[entry.name] = frame
        label_names += [n for n in names if n not in label_names]
    if cfg.base.label_names is None:  # the sorted union: what `soicurate train` gives string labels
        label_names = sorted(label_names)
    seen: dict[int, str] = {}
    for name, frame in frames.items():
        for i in frame["example_id"].to_list():
            other = seen.setdefault(i, name)
            if other != name:
                raise UsageError(
                    f"example id {i} occurs in both {other} and {name}: their integer id columns overlap; "
                    "rename the id column (string ids are hashed with the dataset name) or renumber one dataset"
                )
    return frames, label_names


# -- runs ------------------------------------------------------------------------------------
def _train_run(cfg: MultiSettingConfig, data: Path, out: Path, label_names, progress: bool) -> dict:
    from soicurate.training.trainer import METRICS_NAME, train

    if (out / METRICS_NAME).exists():  # a finished run is reused (re-running the experiment resumes it)
        return json.loads((out / METRICS_NAME).read_text())
    config = dataclasses.replace(
        cfg.base, train=str(data), output_dir=str(out), text_column="text",
        text_pair_column="text_pair" if cfg.base.text_pair_column else None, label_column="label",
        label_names=list(label_names), id_column="example_id", resume=False,
    )  # fmt: skip
    return train(config, progress=progress)


def _profile(run_dir: Path, path: Path) -> Path:
    from soicurate.profiling.pipeline import write_profile

    path.parent.mkdir(parents=True, exist_ok=True)
    write_profile(run_dir, path)
    return path


def _transitions(single: Path, multi: Path, name: str, column: str, out: Path) -> dict:
    from soicurate.reporting.transitions import compare_profiles

    result = compare_profiles(single, multi, filters={column: [name]}, name_a=f"single:{name}", name_b=f"multi:{name}")
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / f"{name}.json", json.dumps(result.to_dict(), indent=2) + "\n")
    write_text_atomic(out / f"{name}.txt", result.format() + "\n")
    return {"joined": result.n_joined, "unchanged_share": result.to_dict()["unchanged_share"],
            "label_mismatches": result.label_mismatches}  # fmt: skip


def run_multisetting(cfg: MultiSettingConfig, *, progress: bool = False, log: Callable[[str], None] = lambda m: None) -> dict:
    """Train, profile and compare every variant; writes OUTPUT_DIR/summary.json and returns it."""
    import polars as pl

    cfg.validate()
    out = Path(cfg.output_dir)
    if cfg.kind == "task":
        return run_multitask(cfg, progress=progress, log=log)
    frames, label_names = build_frames(cfg)
    (out / "data").mkdir(parents=True, exist_ok=True)
    summary = {"kind": cfg.kind, "label_names": label_names, "datasets": {}, "output_dir": str(out)}
    for name, frame in frames.items():
        frame.write_parquet(out / "data" / f"{name}.parquet")
    combined = pl.concat(list(frames.values()), how="vertical").sort("example_id")
    combined.write_parquet(out / "data" / "multi.parquet")
    log(f"multi-setting: {combined.height} examples from {len(frames)} datasets")
    multi_metrics = _train_run(cfg, out / "data" / "multi.parquet", out / "multi", label_names, progress)
    multi_profile = _profile(out / "multi" / "dynamics", out / "profiles" / "multi.parquet")
    summary["multi"] = {"examples": combined.height, "final": multi_metrics.get("final", {}), "profile": str(multi_profile)}
    for name, frame in frames.items():
        log(f"single-setting {name}: {frame.height} examples")
        metrics = _train_run(cfg, out / "data" / f"{name}.parquet", out / "single" / name, label_names, progress)
        profile = _profile(out / "single" / name / "dynamics", out / "profiles" / f"single-{name}.parquet")
        summary["datasets"][name] = {
            "examples": frame.height,
            "final": metrics.get("final", {}),
            "profile": str(profile),
            "transitions": _transitions(profile, multi_profile, name, cfg.kind, out / "transitions"),
        }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


# -- multi-task ------------------------------------------------------------------------------
def multitask_model_class():
    """MultiTaskModel (built lazily so that importing this module does not import torch)."""
    import torch
    from torch import nn

    class MultiTaskModel(nn.Module):
        """A shared encoder (AutoModel) with one linear classification head per task.

        forward(input_ids, attention_mask, task_ids, labels=None) returns (loss, logits):
        logits are (batch, max label count) and -inf outside each row's own task labels, so
        argmax and softmax stay inside the task's label space; the loss is the mean over rows
        of each row's cross-entropy over its own task's logits.
        """

        def __init__(self, model_name: str, tasks: dict[str, list[str]], seed: int = 42):
            super().__init__()
            from transformers import AutoModel, set_seed

            set_seed(seed)
            try:
                self.encoder = AutoModel.from_pretrained(model_name)
            except Exception as exc:
                raise UsageError(f"{model_name}: cannot load model ({str(exc).splitlines()[0]})") from None
            hidden = self.encoder.config.hidden_size
            self.task_names = list(tasks)
            self.label_names = {t: list(names) for t, names in tasks.items()}
            self.heads = nn.ModuleDict({t: nn.Linear(hidden, len(names)) for t, names in tasks.items()})
            self.max_labels = max(len(n) for n in tasks.values())

        def forward(self, input_ids, attention_mask, task_ids, labels=None):
            pooled = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
            logits = pooled.new_full((pooled.shape[0], self.max_labels), float("-inf"))
            loss = pooled.new_zeros(())
            for t, task in enumerate(self.task_names):
                rows = task_ids == t
                if not bool(rows.any()):
                    continue
                task_logits = self.heads[task](pooled[rows])
                logits[rows, : task_logits.shape[1]] = task_logits.to(logits.dtype)
                if labels is not None:
                    loss = loss + torch.nn.functional.cross_entropy(task_logits, labels[rows], reduction="sum")
            if labels is not None:
                loss = loss / pooled.shape[0]
            return loss, logits

    return MultiTaskModel


def _task_batches(frames: dict, tasks: list[str], tokenizer, batch_size: int, max_length: int, rng):
    """Shuffled mixed-task batches: (example_ids, task_ids, labels, encoding) each."""
    import torch

    rows = [(t, i) for t, name in enumerate(tasks) for i in range(frames[name]["frame"].height)]
    order = rng.permutation(len(rows))
    for start in range(0, len(order), batch_size):
        chosen = [rows[j] for j in order[start : start + batch_size]]
        texts, pairs, ids, task_ids, labels = [], [], [], [], []
        for t, i in chosen:
            info = frames[tasks[t]]
            texts.append(info["text"][i])
            if info["pair"] is not None:
                pairs.append(info["pair"][i])
            ids.append(info["ids"][i])
            task_ids.append(t)
            labels.append(info["labels"][i])
        enc = tokenizer(texts, pairs if len(pairs) == len(texts) else None, truncation=True, max_length=max_length,
                        padding=True, return_tensors="pt")  # fmt: skip
        yield np.asarray(ids, np.int64), torch.tensor(task_ids), torch.tensor(labels), enc


def train_multitask(cfg: MultiSettingConfig, frames: dict, tasks: list[str], out: Path, tokenizer, progress=False) -> dict:
    """Train the shared encoder + heads on `tasks` and record one dynamics run per task under
    OUT/dynamics/TASK. Returns {task: final training accuracy}."""
    import torch

    from soicurate.recording.recorder import DynamicsRecorder

    base = cfg.base
    Model = multitask_model_class()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Model(base.model, {t: frames[t]["label_names"] for t in tasks}, seed=base.seed).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=base.learning_rate, weight_decay=base.weight_decay)
    recorders = {
        t: DynamicsRecorder(out / "dynamics" / t, frames[t]["label_names"], num_examples=frames[t]["frame"].height,
                            seed=base.seed, model=base.model, dataset=t, overwrite=True,
                            extra={"recorder": "soicurate.training.multisetting", "task": t, "tasks": tasks})  # fmt: skip
        for t in tasks
    }
    for t, rec in recorders.items():
        rec.write_examples(frames[t]["ids"], {"task": [t] * len(frames[t]["ids"])}, ["task"])
    rng = np.random.default_rng(base.effective_data_seed)
    correct = {t: [0, 0] for t in tasks}
    model.train()
    for epoch in range(1, base.epochs + 1):
        correct = {t: [0, 0] for t in tasks}
        for ids, task_ids, labels, enc in _task_batches(frames, tasks, tokenizer, base.batch_size, base.max_length, rng):
            task_ids, labels = task_ids.to(device), labels.to(device)
            loss, logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device), task_ids, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for t, task in enumerate(tasks):
                    rows = (task_ids == t).cpu().numpy()
                    if rows.any():
                        k = len(frames[task]["label_names"])
                        sel = torch.from_numpy(rows).to(device)
                        own = logits.detach()[sel, :k]
                        recorders[task].log_batch(ids[rows], own, labels[sel])
                        correct[task][0] += int((own.argmax(-1) == labels[sel]).sum())
                        correct[task][1] += int(rows.sum())
        for rec in recorders.values():
            rec.end_epoch(epoch)
    for rec in recorders.values():
        rec.close()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "multitask_model.pt")
    return {t: c / max(n, 1) for t, (c, n) in correct.items()}


def run_multitask(cfg: MultiSettingConfig, *, progress: bool = False, log: Callable[[str], None] = lambda m: None) -> dict:
    """Single-task runs (one per task) and the multi-task run (all tasks, shared encoder), one
    dynamics run and profile per task and variant, and the transitions single -> multi per task."""
    from soicurate.training.trainer import load_tokenizer

    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.base.model)
    frames: dict[str, dict] = {}
    (out / "data").mkdir(parents=True, exist_ok=True)
    seen: dict[int, str] = {}
    for entry in cfg.datasets:
        frame, names = setting_frame(entry, cfg.base, "task", None)
        names = [str(n) for n in (entry.label_names or names)]
        index = {n: i for i, n in enumerate(names)}
        bad = [v for v in frame["label"].to_list() if v not in index]
        if bad:
            raise UsageError(f"{entry.name}: label {bad[0]!r} is not one of {', '.join(names)}")
        for i in frame["example_id"].to_list():
            if seen.setdefault(i, entry.name) != entry.name:
                raise UsageError(f"example id {i} occurs in both {seen[i]} and {entry.name}")
        frame.write_parquet(out / "data" / f"{entry.name}.parquet")
        frames[entry.name] = {
            "frame": frame, "label_names": names, "ids": frame["example_id"].to_numpy(),
            "text": frame["text"].to_list(), "pair": frame["text_pair"].to_list() if "text_pair" in frame.columns else None,
            "labels": [index[v] for v in frame["label"].to_list()],
        }  # fmt: skip
    tasks = list(frames)
    summary = {"kind": "task", "tasks": {t: frames[t]["label_names"] for t in tasks}, "datasets": {}, "output_dir": str(out)}
    log(f"multi-task: {len(tasks)} tasks, shared encoder")
    multi_acc = train_multitask(cfg, frames, tasks, out / "multi", tokenizer, progress)
    for task in tasks:
        log(f"single-task {task}")
        single_acc = train_multitask(cfg, frames, [task], out / "single" / task, tokenizer, progress)
        single = _profile(out / "single" / task / "dynamics" / task, out / "profiles" / f"single-{task}.parquet")
        multi = _profile(out / "multi" / "dynamics" / task, out / "profiles" / f"multi-{task}.parquet")
        summary["datasets"][task] = {
            "examples": frames[task]["frame"].height,
            "label_names": frames[task]["label_names"],
            "train_accuracy_last_epoch": {"single": single_acc[task], "multi": multi_acc[task]},
            "profile": str(single),
            "multi_profile": str(multi),
            "transitions": _transitions(single, multi, task, "task", out / "transitions"),
        }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
