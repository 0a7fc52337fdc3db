"""Record training dynamics while a transformers `Trainer` fine-tunes a classifier.

Two modes, written into the manifest's `recorded_by`:

* ``"train"``: rows come from the training forward pass itself (no extra compute). The example
  ids must travel with each batch, so this mode needs `DynamicsTrainer` (a drop-in `Trainer`
  subclass) or `DynamicsTrainerMixin` on your own Trainer subclass::

      trainer = DynamicsTrainer(model=model, args=args, train_dataset=train, processing_class=tok,
                                dynamics_dir="runs/seed0")           # mode "train" by default
      trainer.train()

* ``"eval"``: at the end of every epoch, an extra inference pass (model.eval(), no gradient)
  over the whole training set. Works with an unmodified `Trainer`::

      trainer = Trainer(..., callbacks=[DynamicsCallback(train, mode="eval", run_dir="runs/seed0")])

The training set needs an integer `example_id` column (`id_column=` names another). With
`remove_unused_columns=True` (the default) `DynamicsTrainer` keeps that column through the
column removal and the data collator, and takes it out of the batch before the model's forward.
The run directory defaults to ``<output_dir>/dynamics``.

Resuming (`trainer.train(resume_from_checkpoint=...)`) never duplicates or drops rows:

* Epoch files are written whole, atomically, at the end of each completed epoch; an epoch cut
  short (max_steps, a stop) is not written.
* On resume, every recorded epoch from the checkpoint's epoch on is dropped (they belong to
  the abandoned trajectory, if any) and recorded again.
* "eval" mode needs nothing more: the resumed epoch's inference pass covers the whole set.
* "train" mode: the batches trained before a mid-epoch checkpoint are not seen again after
  resuming, so at every checkpoint (`on_save`) each rank stores its buffered rows of the
  current epoch in the checkpoint folder (soicurate-dynamics-partial-rank_RR.npz). On resume
  they are reloaded, the remaining batches are added, and the epoch is written at its end
  (one row per example id: the first one recorded). A mid-epoch checkpoint without that file
  is refused with a clear error rather than silently writing an incomplete epoch.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from soicurate.errors import UsageError
from soicurate.recording.recorder import DynamicsRecorder
from soicurate.recording.writer import GROUP_COLUMN_NAMES

logger = logging.getLogger("soicurate")

MODES = ("train", "eval")
DEFAULT_ID_COLUMN = "example_id"
DYNAMICS_SUBDIR = "dynamics"
_LABEL_KEYS = ("labels", "label", "label_ids")
_EPS = 1e-6


class ExampleIdCollator:
    """Wrap a data collator so that the example id column survives it.

    The id is taken out of every feature before the inner collator runs (padding collators
    need not know about it) and put back into the batch as a LongTensor under the same key.
    Features without the column pass through untouched.
    """

    def __init__(self, data_collator, id_column: str = DEFAULT_ID_COLUMN):
        self.data_collator = data_collator
        self.id_column = id_column

    def __call__(self, features):
        if not features or not isinstance(features[0], Mapping) or self.id_column not in features[0]:
            return self.data_collator(features)
        ids = _as_id_array([f[self.id_column] for f in features], self.id_column)
        stripped = [{k: v for k, v in f.items() if k != self.id_column} for f in features]
        batch = self.data_collator(stripped)
        batch[self.id_column] = torch.from_numpy(ids)
        return batch


def _as_id_array(values, id_column: str) -> np.ndarray:
    try:
        ids = np.asarray([int(v) for v in values], dtype=np.int64)
    except (TypeError, ValueError):
        raise UsageError(
            f"column {id_column!r} must hold integer example ids (got {type(values[0]).__name__}); "
            "see soicurate.recording.ids.stable_ids to hash string ids"
        ) from None
    return ids


def _logits_of(outputs, with_loss: bool):
    if isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    elif isinstance(outputs, (tuple, list)):
        logits = outputs[1 if with_loss and len(outputs) > 1 else 0]
    else:
        logits = outputs
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UsageError(
            "soicurate records sequence classification: the model's logits must have shape "
            f"(batch, num_labels), got {shape}"
        )
    return logits


def _current_epoch(state) -> int:
    """1-based number of the epoch that is (or is about to be) trained, from state.epoch."""
    return int(math.floor((state.epoch or 0.0) + _EPS)) + 1


def _at_epoch_boundary(state) -> bool:
    e = state.epoch or 0.0
    return abs(e - round(e)) < _EPS


class DynamicsCallback(TrainerCallback):
    """Records per-example dynamics of a Trainer run into a soicurate run directory.

    Args:
        train_dataset: the training set (a `datasets.Dataset` or any map-style dataset of
            dicts) with an integer `id_column`. Needed in "eval" mode; in "train" mode it
            only supplies the example count, label names and group columns (DynamicsTrainer
            passes its own).
        mode: "eval" (an inference pass over `train_dataset` at every epoch end) or "train"
            (rows from the training forward pass; needs DynamicsTrainer / DynamicsTrainerMixin).
        run_dir: where the dynamics go; default `<args.output_dir>/dynamics`.
        label_names: default: the dataset's ClassLabel names, else the model's id2label.
        label_column: the gold label column for the eval pass (default: labels/label/label_ids).
        batch_size: eval-pass batch size (default `args.per_device_eval_batch_size`).
        data_collator: eval-pass collator (default: the trainer's when attached, else padding
            with the processing class, else transformers' default_data_collator).
        store_margin, store_probs: optional columns of the epoch files.
        overwrite: replace an earlier run in `run_dir` when training starts from scratch.
        group_columns: dataset columns written to examples.parquet for breakdowns (default:
            source/task/language/split/domain when present).
    """

    def __init__(
        self,
        train_dataset=None,
        mode: str = "eval",
        run_dir: str | Path | None = None,
        *,
        label_names: Sequence[str] | None = None,
        id_column: str = DEFAULT_ID_COLUMN,
        label_column: str | None = None,
        batch_size: int | None = None,
        data_collator=None,
        store_margin: bool = True,
        store_probs: bool = False,
        overwrite: bool = False,
        group_columns: Sequence[str] | None = None,
    ):
        if mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
        self.train_dataset = train_dataset
        self.mode = mode
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.label_names = list(label_names) if label_names is not None else None
        self.id_column = id_column
        self.label_column = label_column
        self.batch_size = batch_size
        self.data_collator = data_collator
        self.store_margin = store_margin
        self.store_probs = store_probs
        self.overwrite = overwrite
        self.group_columns = list(group_columns) if group_columns is not None else None
        self.recorder: DynamicsRecorder | None = None
        self._trainer = None
        self._model = None
        self._processing_class = None
        self._epoch = 1
        self._restored_epoch = None
        self._rows = None
        self._resume_checkpoint: str | None = None

    # -- wiring ----------------------------------------------------------------------------
    def attach(self, trainer) -> None:
        """Called by DynamicsTrainerMixin: the callback then gets batches from compute_loss."""
        self._trainer = trainer

    @property
    def records_training_batches(self) -> bool:
        """True while training-pass rows are wanted (mode "train", recorder open)."""
        return self.mode == "train" and self.recorder is not None

    def log_training_batch(self, example_ids, logits, labels) -> None:
        if self.recorder is not None:
            self.recorder.log_batch(example_ids, logits, labels)

    # -- events ----------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        trainer = self._trainer
        self._model = trainer.model if trainer is not None else model
        if processing_class is None:
            processing_class = getattr(trainer, "processing_class", None)
        self._processing_class = processing_class
        if self.mode == "train" and trainer is None:
            raise UsageError(
                "DynamicsCallback(mode='train') needs the example ids of each training batch: use "
                "soicurate.recording.hf.DynamicsTrainer (or DynamicsTrainerMixin) instead of Trainer, "
                "or mode='eval' with a plain Trainer"
            )
        if self.mode == "train" and args.dataloader_drop_last:
            raise UsageError(
                "dataloader_drop_last=True drops different examples every epoch: mode='train' needs every "
                "example once per epoch (use mode='eval', or drop_last=False)"
            )
        dataset = self.train_dataset if self.train_dataset is not None else getattr(trainer, "train_dataset", None)
        if dataset is None:
            raise UsageError("DynamicsCallback needs the training dataset (train_dataset=...)")
        self._dataset = dataset
        columns = _column_names(dataset)
        if columns is not None and self.id_column not in columns:
            raise UsageError(
                f"the training dataset has no {self.id_column!r} column (columns: {', '.join(columns)}); add one, e.g. "
                f"ds = ds.add_column({self.id_column!r}, list(range(len(ds))))"
            )
        label_names = self.label_names or _label_names(dataset, self._label_column(columns), self._model)
        run_dir = self.run_dir or Path(args.output_dir) / DYNAMICS_SUBDIR
        resuming = state.global_step > 0
        num_examples = len(dataset) if hasattr(dataset, "__len__") else None
        self.recorder = DynamicsRecorder(
            run_dir,
            label_names,
            num_examples=num_examples,
            recorded_by=self.mode,
            seed=args.seed,
            model=_model_name(self._model),
            dataset=_dataset_name(dataset),
            dataset_fingerprint=getattr(dataset, "_fingerprint", None),
            store_margin=self.store_margin,
            store_probs=self.store_probs,
            resume=resuming,
            overwrite=self.overwrite,
            extra={"recorder": "soicurate.recording.hf", "id_column": self.id_column},
        )
        self._epoch = _current_epoch(state)
        self._restored_epoch = None
        if resuming:
            self.recorder.rewind(self._epoch - 1)
            if self.mode == "train" and not args.ignore_data_skip:
                if not _at_epoch_boundary(state):
                    self._restore_partial(args, state)
                elif self._epoch > 1 and self._epoch - 1 not in self.recorder.epochs:
                    self._finish_saved_epoch(args, state)
        else:
            self._write_examples(dataset, columns)
        if self.mode == "eval":
            self._rows = self._eval_rows(dataset, columns)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch = _current_epoch(state)
        rec = self.recorder
        if rec is not None and rec.pending_rows and self._epoch != self._restored_epoch:
            logger.warning("soicurate: dropping %d rows of an unfinished epoch", rec.pending_rows)
            rec.discard_epoch()
        self._restored_epoch = None

    def on_epoch_end(self, args, state, control, **kwargs):
        rec = self.recorder
        if rec is None:
            return
        complete = _at_epoch_boundary(state) and int(round(state.epoch)) == self._epoch
        if not complete:
            return  # an epoch cut short is not written (its rows stay for on_save)
        if self.mode == "eval":
            self._eval_pass(args)
        elif not rec.pending_rows and rec.world_size == 1:
            raise UsageError(
                f"epoch {self._epoch}: no training batch carried example ids ({self.id_column!r}); is the trainer a "
                "DynamicsTrainer, and does the data collator keep the column?"
            )
        rec.end_epoch(self._epoch)

    def on_save(self, args, state, control, **kwargs):
        rec = self.recorder
        if rec is None or self.mode != "train":
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        written = self._epoch in rec.epochs and _at_epoch_boundary(state)
        rec.save_partial(folder, self._epoch + 1 if written else self._epoch)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
        self._rows = None

    # -- resume ----------------------------------------------------------------------------
    def _restore_partial(self, args, state) -> None:
        folder = self._resume_checkpoint or str(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        loaded = self.recorder.load_partial(folder, self._epoch)
        if loaded is None:
            raise UsageError(
                f"{folder}: no soicurate partial-epoch file: training resumes inside epoch {self._epoch}, and the "
                "rows of the batches trained before this checkpoint cannot be restored in mode='train'. Resume from "
                "a checkpoint saved while recording, or from an epoch boundary, or record with mode='eval'"
            )
        self._restored_epoch = self._epoch
        logger.info("soicurate: restored %d rows of epoch %d from %s", loaded, self._epoch, folder)

    def _finish_saved_epoch(self, args, state) -> None:
        """The checkpoint closes an epoch that was never written (a stop or crash between the
        checkpoint and the epoch's end): its rows are all in the checkpoint, write them now."""
        folder = self._resume_checkpoint or str(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        loaded = self.recorder.load_partial(folder, self._epoch - 1, strict=False)
        if loaded is not None:
            self.recorder.end_epoch(self._epoch - 1)

    # -- examples file -----------------------------------------------------------------------
    def _write_examples(self, dataset, columns) -> None:
        if columns is None or not self.recorder.is_main:
            return
        groups = self.group_columns
        if groups is None:
            groups = [c for c in columns if c in GROUP_COLUMN_NAMES]
        if not groups:
            return
        missing = [g for g in groups if g not in columns]
        if missing:
            raise UsageError(f"group column(s) {', '.join(missing)} not in the training dataset")
        table = dataset.select_columns([self.id_column, *groups]).to_dict()
        ids = _as_id_array(table.pop(self.id_column), self.id_column)
        self.recorder.write_examples(ids, table, groups)

    # -- eval pass -------------------------------------------------------------------------
    def _label_column(self, columns) -> str | None:
        if self.label_column is not None:
            return self.label_column
        if columns is None:
            return None
        return next((c for c in _LABEL_KEYS if c in columns), None)

    def _eval_rows(self, dataset, columns):
        """The dataset reduced to what the eval pass needs: model inputs, id and gold label."""
        label_col = self._label_column(columns if columns is not None else _column_names_of_row(dataset))
        if label_col is None:
            raise UsageError("mode='eval' needs the gold label column of the training set (label_column=...)")
        self._eval_label = label_col
        self._eval_inputs = _forward_params(self._model) - set(_LABEL_KEYS) - {label_col, self.id_column}
        if columns is not None and hasattr(dataset, "select_columns"):
            keep = [c for c in columns if c in self._eval_inputs or c in (self.id_column, label_col)]
            return dataset.select_columns(keep)
        return dataset

    def _features(self, positions: list[int]) -> list[dict]:
        rows = self._rows
        if hasattr(rows, "select_columns"):  # datasets.Dataset: one batched read
            batch = rows[positions]
            keys = list(batch)
            return [dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys))]
        return [dict(rows[i]) for i in positions]

    def _collator(self):
        if self.data_collator is not None:
            return self.data_collator
        if self._trainer is not None and self._trainer.data_collator is not None:
            return self._trainer.data_collator
        from transformers import DataCollatorWithPadding, default_data_collator

        pc = self._processing_class
        if pc is not None and hasattr(pc, "pad"):
            return DataCollatorWithPadding(pc)
        return default_data_collator

    def _eval_pass(self, args) -> None:
        rec = self.recorder
        model = self._trainer.model if self._trainer is not None else self._model
        collate = self._collator()
        batch_size = self.batch_size or args.per_device_eval_batch_size
        positions = list(range(rec.rank, len(self._rows), rec.world_size))  # each example on one rank
        device = _model_device(model, args.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(positions), batch_size):
                    feats = self._features(positions[start : start + batch_size])
                    ids = _as_id_array([f.pop(self.id_column) for f in feats], self.id_column)
                    gold = np.asarray([int(f.pop(self._eval_label)) for f in feats], dtype=np.int64)
                    inputs = [{k: v for k, v in f.items() if k in self._eval_inputs} for f in feats]
                    batch = collate(inputs)
                    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                    batch.pop(self.id_column, None)
                    outputs = model(**batch)
                    rec.log_batch(ids, _logits_of(outputs, with_loss=False), gold)
        finally:
            model.train(was_training)


class DynamicsTrainerMixin:
    """Adds dynamics recording to a Trainer (sub)class: ``class MyTrainer(DynamicsTrainerMixin, Trainer)``.

    Keyword arguments (all optional): `dynamics` (a configured DynamicsCallback), or
    `dynamics_dir` / `dynamics_mode` ("train" by default) / `dynamics_options` (a dict of
    further DynamicsCallback arguments). A DynamicsCallback already in `callbacks` is used.
    `trainer.dynamics` is the callback; `trainer.dynamics.recorder.run_dir` the run directory.
    """

    def __init__(
        self,
        *args,
        dynamics: DynamicsCallback | None = None,
        dynamics_dir: str | Path | None = None,
        dynamics_mode: str = "train",
        dynamics_options: dict | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if dynamics is None:
            dynamics = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, DynamicsCallback)), None)
        if dynamics is None:
            dynamics = DynamicsCallback(
                self.train_dataset, mode=dynamics_mode, run_dir=dynamics_dir, **(dynamics_options or {})
            )
        if dynamics not in self.callback_handler.callbacks:
            self.add_callback(dynamics)
        dynamics.attach(self)
        self.dynamics = dynamics
        if not isinstance(self.data_collator, ExampleIdCollator):
            self.data_collator = ExampleIdCollator(self.data_collator, dynamics.id_column)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and self.dynamics.id_column not in self._signature_columns:
            self._signature_columns.append(self.dynamics.id_column)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            from transformers.trainer_utils import get_last_checkpoint

            checkpoint = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
        self.dynamics._resume_checkpoint = checkpoint if isinstance(checkpoint, (str, os.PathLike)) else None
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs.pop(self.dynamics.id_column, None) if isinstance(inputs, Mapping) else None
        if ids is None or not model.training or not self.dynamics.records_training_batches:
            return super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        label_key = next((k for k in (*self.label_names, *_LABEL_KEYS) if k in inputs), None)
        labels = inputs.get(label_key) if label_key is not None else None
        if labels is None:
            raise UsageError("mode='train' needs the gold labels in each training batch (a 'labels' column)")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        self.dynamics.log_training_batch(ids, _logits_of(outputs, with_loss=True), labels)
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        if isinstance(inputs, Mapping):
            inputs.pop(self.dynamics.id_column, None)
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)


class DynamicsTrainer(DynamicsTrainerMixin, Trainer):
    """`transformers.Trainer` that records training dynamics (see DynamicsTrainerMixin).

    ::

        trainer = DynamicsTrainer(model=model, args=args, train_dataset=train,
                                  processing_class=tokenizer, dynamics_dir="runs/seed0")
        trainer.train()
    """


# -- helpers -------------------------------------------------------------------------------
def _column_names(dataset) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    return list(names) if isinstance(names, (list, tuple)) else None


def _column_names_of_row(dataset) -> list[str]:
    try:
        row = dataset[0]
    except Exception:  # noqa: BLE001
        return []
    return list(row) if isinstance(row, Mapping) else []


def _label_names(dataset, label_column: str | None, model) -> list[str]:
    features = getattr(dataset, "features", None)
    if features is not None and label_column is not None and label_column in features:
        names = getattr(features[label_column], "names", None)
        if names:
            return list(names)
    config = getattr(model, "config", None)
    id2label = getattr(config, "id2label", None)
    if id2label:
        return [str(id2label[i]) for i in sorted(id2label, key=int)]
    raise UsageError("cannot tell the label names: pass label_names=[...]")


def _model_name(model) -> str | None:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    if name:
        return str(name)
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or (type(model).__name__ if model is not None else None)


def _dataset_name(dataset) -> str | None:
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    split = getattr(dataset, "split", None)
    if name and split:
        return f"{name}:{split}"
    return name


def _forward_params(model) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return set(inspect.signature(base.forward).parameters)


def _model_device(model, default):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return default


__all__ = [
    "DynamicsCallback",
    "DynamicsTrainer",
    "DynamicsTrainerMixin",
    "ExampleIdCollator",
    "MODES",
]
