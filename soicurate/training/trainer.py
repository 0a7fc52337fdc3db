"""The bundled trainer (stage one): fine-tune a sequence classifier with transformers' Trainer
and record its training dynamics.

It is a thin layer on `transformers.Trainer` on purpose, so that it is as fast as a plain
Trainer run (dynamic padding per batch, optional length grouping) and behaves as users expect
(checkpoints, resume, mixed precision, distributed launchers). Separate seeds govern the
classification head's initialisation (`seed`) and the data order (`data_seed`), as Dodge et
al. (2020) separate them.

Output directory::

    OUTPUT_DIR/model/          the final model and tokenizer (save_pretrained)
    OUTPUT_DIR/dynamics/       the dynamics run directory (unless record = none)
    OUTPUT_DIR/checkpoints/    Trainer checkpoints (for resume)
    OUTPUT_DIR/metrics.json    per-epoch evaluation metrics, timings, the resolved config
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from soicurate.atomic import write_text_atomic
from soicurate.errors import UsageError
from soicurate.training.config import TrainConfig
from soicurate.training.data import DataSpec, encode_labels, label_names_of, load_split, tokenize, with_example_ids

MODEL_SUBDIR = "model"
DYNAMICS_SUBDIR = "dynamics"
CHECKPOINT_SUBDIR = "checkpoints"
METRICS_NAME = "metrics.json"


def silence_libraries() -> None:
    """Turn off transformers' and datasets' info logs and progress bars (for --quiet runs and
    the demo, whose own output should stay readable)."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def model_location(name: str) -> str:
    """A Hub name as given, a local path with ~ expanded; a path that does not exist is an
    error that says so (rather than the Hub's repo-id rules)."""
    if name.startswith("~"):
        name = os.path.expanduser(name)
    looks_like_path = name.startswith((".", "/")) or name.count("/") > 1 or "\\" in name
    if looks_like_path and not Path(name).exists():
        raise UsageError(f"{name}: no such model directory (give a local directory or a Hub name like org/model)")
    return name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    name = model_location(name)
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:
        raise UsageError(f"{name}: cannot load tokenizer ({str(exc).splitlines()[0]})") from None


def load_classifier(name: str, label_names: list[str], seed: int):
    """A sequence classifier with a fresh head of len(label_names) outputs, seeded by `seed`."""
    from transformers import AutoModelForSequenceClassification, set_seed

    name = model_location(name)
    set_seed(seed)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)},
            ignore_mismatched_sizes=True,
        )
    except Exception as exc:
        raise UsageError(f"{name}: cannot load model ({str(exc).splitlines()[0]})") from None


def prepare_split(spec_text: str, tokenizer, config: TrainConfig, label_names, *, limit=None, seed=0, id_column=None):
    """Load a data spec, add ids and labels, optionally subsample, tokenize.

    `id_column` (the config's, for the training set) names the id column; evaluation sets
    find theirs (example_id/id/idx/guid) or get stable row hashes."""
    spec = DataSpec.parse(spec_text)
    ds = load_split(spec)
    ds = with_example_ids(ds, spec.name, spec.split, id_column)
    ds = encode_labels(ds, config.label_column, label_names, spec.path)
    if limit is not None and limit < len(ds):
        ds = ds.shuffle(seed=seed).select(range(limit)).sort("example_id")
    return tokenize(ds, tokenizer, config.text_column, config.text_pair_column, config.max_length, spec.path)


def _compute_metrics(eval_pred):
    from soicurate.training.metrics import classification_metrics

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    return classification_metrics(logits, eval_pred.label_ids)


def _trainer_classes():
    """Trainer and DynamicsTrainer with the data order governed by the data seed alone."""
    from transformers import Trainer

    from soicurate.recording.hf import DynamicsTrainer
    from soicurate.training.sampler import EpochSeededSamplerMixin

    return (type("SeededTrainer", (EpochSeededSamplerMixin, Trainer), {}),
            type("SeededDynamicsTrainer", (EpochSeededSamplerMixin, DynamicsTrainer), {}))  # fmt: skip


def StopAfterEpoch(epoch: int):
    """A callback that ends training after `epoch` epochs while the learning-rate schedule
    stays that of the full run, so a later resume continues the same schedule (Dodge et
    al.'s early stopping ranks runs that are part-way through their real schedule, not
    shorter runs whose learning rate already decayed to zero). Epoch-end evaluation and the
    checkpoint still happen, because the Trainer saves after the epoch-end callbacks."""
    from transformers import TrainerCallback

    class _StopAfterEpoch(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if state.epoch is not None and state.epoch >= epoch - 1e-6:
                control.should_training_stop = True
                control.should_save = True
            return control

    return _StopAfterEpoch()


def build_trainer(config: TrainConfig, *, progress: bool = True, model=None, tokenizer=None):
    """A configured (Dynamics)Trainer and what it was built from; nothing is trained yet."""
    import torch
    from transformers import DataCollatorWithPadding, TrainingArguments

    config.validate()
    SeededTrainer, SeededDynamicsTrainer = _trainer_classes()
    out = Path(config.output_dir)
    tokenizer = tokenizer or load_tokenizer(config.model)
    raw_train = load_split(DataSpec.parse(config.train))
    label_names = label_names_of(raw_train, config.label_column, config.label_names)
    del raw_train
    train_ds = prepare_split(config.train, tokenizer, config, label_names, limit=config.max_train_examples,
                             seed=config.effective_subset_seed, id_column=config.id_column)  # fmt: skip
    eval_sets = {name: prepare_split(spec, tokenizer, config, label_names) for name, spec in config.eval.items()}
    model = model or load_classifier(config.model, label_names, config.seed)
    args = TrainingArguments(
        output_dir=str(out / CHECKPOINT_SUBDIR),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps else -1,
        learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        warmup_steps=config.warmup,
        weight_decay=config.weight_decay,
        eval_strategy="epoch" if eval_sets and config.evaluate == "epoch" else "no",
        save_strategy="epoch",
        save_total_limit=2,
        logging_strategy="epoch",
        seed=config.seed,
        data_seed=config.effective_data_seed,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        fp16=config.fp16,
        bf16=config.bf16,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    common = dict(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_sets or None,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=_compute_metrics,
    )
    if config.stop_after_epoch is not None:
        common["callbacks"] = [StopAfterEpoch(config.stop_after_epoch)]
    if config.record == "none":
        trainer = SeededTrainer(**common)
    else:
        trainer = SeededDynamicsTrainer(
            **common,
            dynamics_dir=out / DYNAMICS_SUBDIR,
            dynamics_mode=config.record,
            dynamics_options={"label_names": label_names, "overwrite": not config.resume},
        )
    if not progress:
        from transformers import PrinterCallback

        # without progress bars the Trainer prints every log dict to stdout instead, which
        # would break --json output and --quiet
        trainer.remove_callback(PrinterCallback)
    return trainer, train_ds, eval_sets, label_names


def train(config: TrainConfig, *, progress: bool = True) -> dict:
    """Fine-tune, record dynamics, save the model and write metrics.json; returns the metrics."""
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(config.output_dir)
    checkpoint_dir = out / CHECKPOINT_SUBDIR
    resume_from = None
    if config.resume:
        resume_from = get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None
        if resume_from is None:
            raise UsageError(f"{checkpoint_dir}: no checkpoint to resume from")
    elif (out / METRICS_NAME).exists() or (out / DYNAMICS_SUBDIR / "manifest.json").exists():
        raise UsageError(f"{out}: already holds a training run (use another --output-dir, or --resume)")
    trainer, train_ds, eval_sets, label_names = build_trainer(config, progress=progress)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    if eval_sets and config.evaluate == "end":
        trainer.evaluate()  # logs eval_<name>_* once, at the final epoch
    trainer.save_model(str(out / MODEL_SUBDIR))
    metrics = summarize(config, trainer.state.log_history, seconds, len(train_ds), label_names, eval_sets,
                        result.metrics, trainer, checkpoint_epoch(resume_from))  # fmt: skip
    write_text_atomic(out / METRICS_NAME, json.dumps(metrics, indent=2) + "\n")
    return metrics


def checkpoint_epoch(checkpoint) -> float:
    """The epoch a Trainer checkpoint was saved at (0 for a fresh run)."""
    if checkpoint is None:
        return 0.0
    try:
        return float(json.loads((Path(checkpoint) / "trainer_state.json").read_text())["epoch"] or 0.0)
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def summarize(config, log_history, seconds, num_train, label_names, eval_sets, train_metrics, trainer,
              start_epoch: float = 0.0) -> dict:
    """Per-epoch evaluation metrics per evaluation set, timings (per epoch trained in this
    call, which started at `start_epoch` when resumed) and the resolved config."""
    epochs: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        e = int(round(entry["epoch"]))
        row = epochs.setdefault(e, {"epoch": e})
        for key, value in entry.items():
            for name in eval_sets:
                for metric in ("accuracy", "macro_f1", "loss"):
                    if key == f"eval_{name}_{metric}" or (len(eval_sets) == 1 and key == f"eval_{metric}"):
                        row.setdefault(name, {})[metric] = value
            if key == "loss":
                row["train_loss"] = value
    per_epoch = [epochs[e] for e in sorted(epochs)]
    final = {name: per_epoch[-1].get(name, {}) for name in eval_sets} if per_epoch else {}
    dynamics = getattr(getattr(trainer, "dynamics", None), "recorder", None)
    epochs_run = int(round(trainer.state.epoch or 0))
    first_epoch = int(round(start_epoch))
    return {
        "model": config.model,
        "train": config.train,
        "num_train_examples": num_train,
        "label_names": label_names,
        "seed": config.seed,
        "data_seed": config.effective_data_seed,
        "epochs": config.epochs,
        "epochs_run": epochs_run,
        "stopped_early": epochs_run < config.epochs,
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / max(epochs_run - first_epoch, 1),
        "train_samples_per_second": train_metrics.get("train_samples_per_second"),
        "per_epoch": per_epoch,
        "final": final,
        "dynamics_dir": str(Path(config.output_dir) / DYNAMICS_SUBDIR) if dynamics is not None or config.record != "none" else None,
        "model_dir": str(Path(config.output_dir) / MODEL_SUBDIR),
        "config": config.to_dict(),
    }
