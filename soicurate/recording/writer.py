"""Write a dynamics run directory: buffer batches in memory, write each epoch atomically.

Appending a batch stores references to small arrays (no growing-array copies); `end_epoch`
concatenates once, sorts by example id, and writes the epoch's Parquet file under a temporary
name before renaming it. Re-recording an epoch (after resuming from a checkpoint) replaces
that epoch's file, so rows are never duplicated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from soicurate.atomic import atomic_path
from soicurate.errors import UsageError
from soicurate.recording.manifest import (
    EXAMPLES_NAME,
    MANIFEST_NAME,
    Manifest,
    epoch_filename,
)

ROW_GROUP_ROWS = 1 << 17
GROUP_COLUMN_NAMES = ("source", "task", "language", "split", "domain")

# How epoch files are encoded, chosen for reading speed (profiling reads every value of every
# epoch; the files are written once): no column has nulls, so none is declared nullable (no
# definition levels to decode); the float columns are random to the last bit, so they are
# stored PLAIN and uncompressed (compressing them saved almost nothing, and a dictionary was
# attempted on every column); the sorted example ids are delta-encoded (a few bits per row);
# gold and pred take a dictionary (a few bits per row). Decoding an epoch is about 4 times
# faster than with pyarrow's defaults and the files are about half the size. Readers accept
# any Parquet file with the columns, however it is encoded.
EPOCH_PARQUET_OPTIONS = {
    "row_group_size": ROW_GROUP_ROWS,
    "compression": "none",
    "use_dictionary": ["gold", "pred"],
    "column_encoding": {"example_id": "DELTA_BINARY_PACKED", "p_gold": "PLAIN", "loss": "PLAIN", "margin": "PLAIN"},
    "write_statistics": ["example_id"],
}


def examples_encoding(schema) -> dict:
    """examples.parquet: pyarrow's defaults (snappy, a dictionary for every column), except
    that the sorted example ids are delta-encoded. Only for flat columns: a nested column's
    Parquet path is not its name, so with one the defaults are kept throughout."""
    import pyarrow as pa

    if any(pa.types.is_nested(f.type) for f in schema):
        return {}
    return {
        "use_dictionary": [f.name for f in schema if f.name != "example_id"],
        "column_encoding": {"example_id": "DELTA_BINARY_PACKED"},
    }


def epoch_schema(columns: Mapping):
    """The Arrow schema of an epoch file: the columns' types, none of them nullable."""
    import pyarrow as pa

    return pa.schema([pa.field(name, col.type, nullable=False) for name, col in columns.items()])


def softmax_stats(logits: np.ndarray, gold: np.ndarray):
    """p_gold, pred, loss (cross entropy), margin and the probability vector from logits."""
    logits = np.asarray(logits, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.int64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (batch, num_labels>=2), got {logits.shape}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    log_probs = shifted - log_z[:, None]
    rows = np.arange(len(gold))
    gold_logit = logits[rows, gold]
    others = logits.copy()
    others[rows, gold] = -np.inf
    margin = gold_logit - others.max(axis=1)
    probs = np.exp(log_probs)
    return {
        "p_gold": probs[rows, gold],
        "pred": logits.argmax(axis=1),
        "loss": -log_probs[rows, gold],
        "margin": margin,
        "probs": probs,
    }


class DynamicsWriter:
    """Writes one run (or one rank of a distributed run) in soicurate's dynamics format.

    Example::

        writer = DynamicsWriter("runs/seed0", label_names=["neg", "pos"], seed=0)
        for epoch in range(3):
            for ids, logits, labels in batches:
                writer.log_logits(ids, logits, labels)
            writer.end_epoch()
    """

    def __init__(
        self,
        run_dir: str | Path,
        label_names: Sequence[str] | None = None,
        *,
        num_examples: int | None = None,
        recorded_by: str = "train",
        run_id: str | None = None,
        seed: int | None = None,
        model: str | None = None,
        dataset: str | None = None,
        dataset_fingerprint: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        store_margin: bool = True,
        store_probs: bool = False,
        resume: bool = False,
        extra: dict | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.rank = rank
        self.world_size = world_size
        self.store_margin = store_margin
        self.store_probs = store_probs
        self._chunks: list[dict[str, np.ndarray]] = []
        manifest_path = self.run_dir / MANIFEST_NAME
        # Only the main rank owns the manifest: in distributed training rank 0 may already have
        # written it when another rank starts, which is not a clash (that rank never saves it).
        if manifest_path.exists() and (resume or self.is_main):
            if not resume:
                raise UsageError(
                    f"{self.run_dir}: already holds a dynamics run; resume it or choose another directory"
                )
            self.manifest = Manifest.load(self.run_dir)
            if label_names is not None and list(map(str, label_names)) != self.manifest.label_names:
                raise UsageError(f"{manifest_path}: label names differ from the run being resumed")
        else:
            if label_names is None:
                raise UsageError("label_names are required to start a new run")
            self.manifest = Manifest(
                label_names=[str(x) for x in label_names],
                num_examples=num_examples,
                recorded_by=recorded_by,
                seed=seed,
                model=model,
                dataset=dataset,
                dataset_fingerprint=dataset_fingerprint,
                world_size=world_size,
                has_margin=store_margin,
                has_probs=store_probs,
                extra=dict(extra or {}),
            )
            if run_id is not None:
                self.manifest.run_id = run_id
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.is_main:
                self.manifest.save(self.run_dir)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def epochs(self) -> list[int]:
        return list(self.manifest.epochs)

    @property
    def pending_rows(self) -> int:
        return sum(len(c["example_id"]) for c in self._chunks)

    def log(self, example_ids, gold, pred, p_gold, loss, margin=None, probs=None) -> None:
        """Buffer one batch of already-computed per-example values."""
        chunk = {
            "example_id": np.array(example_ids, dtype=np.int64, copy=True).reshape(-1),
            "gold": np.array(gold, dtype=np.int32, copy=True).reshape(-1),
            "pred": np.array(pred, dtype=np.int32, copy=True).reshape(-1),
            "p_gold": np.array(p_gold, dtype=np.float32, copy=True).reshape(-1),
            "loss": np.array(loss, dtype=np.float32, copy=True).reshape(-1),
        }
        if self.store_margin:
            if margin is None:
                raise ValueError("this run stores margins: pass margin (or use log_logits)")
            chunk["margin"] = np.array(margin, dtype=np.float32, copy=True).reshape(-1)
        if self.store_probs:
            if probs is None:
                raise ValueError("this run stores probability vectors: pass probs (or use log_logits)")
            chunk["probs"] = np.array(probs, dtype=np.float32, copy=True)
        n = len(chunk["example_id"])
        for name, values in chunk.items():
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} rows, example_ids has {n}")
        self._chunks.append(chunk)

    def log_logits(self, example_ids, logits, gold) -> None:
        """Buffer one batch from raw logits: p_gold, pred, loss and margin are derived here."""
        stats = softmax_stats(logits, gold)
        self.log(example_ids, gold, stats["pred"], stats["p_gold"], stats["loss"], stats["margin"], stats["probs"])

    def discard_epoch(self) -> None:
        """Drop the rows buffered since the last end_epoch (an interrupted epoch)."""
        self._chunks = []

    def end_epoch(self, epoch: int | None = None, *, update_manifest: bool = True) -> Path:
        """Write the buffered rows as one epoch file (atomically) and record it in the manifest.

        `update_manifest=False` writes the file only: in distributed training the recorder has
        rank 0 list the epoch in the manifest after every rank has written its file.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        if epoch is None:
            epoch = (self.manifest.epochs[-1] + 1) if self.manifest.epochs else 1
        if not self._chunks:
            raise ValueError(f"epoch {epoch}: no rows were logged")
        data = {k: np.concatenate([c[k] for c in self._chunks]) for k in self._chunks[0]}
        self._chunks = []
        order = np.argsort(data["example_id"], kind="stable")
        data = {k: v[order] for k, v in data.items()}
        ids = data["example_id"]
        dup = np.flatnonzero(ids[1:] == ids[:-1])
        if len(dup):
            raise ValueError(f"epoch {epoch}: example_id {ids[dup[0]]} was logged more than once")
        columns = {k: pa.array(v) for k, v in data.items() if k != "probs"}
        if "probs" in data:
            probs = data["probs"]
            columns["probs"] = pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), probs.shape[1])
        table = pa.table(columns, schema=epoch_schema(columns))
        rank = self.rank if self.world_size > 1 else None
        path = self.run_dir / epoch_filename(epoch, rank)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, **EPOCH_PARQUET_OPTIONS)
        if self.is_main and update_manifest:
            if epoch not in self.manifest.epochs:
                self.manifest.epochs = sorted([*self.manifest.epochs, epoch])
            if self.manifest.num_examples is None and self.world_size == 1:
                self.manifest.num_examples = len(ids)
            self.manifest.save(self.run_dir)
        elif not self.is_main and epoch not in self.manifest.epochs:
            # other ranks never save the manifest, but number their epochs for end_epoch()
            self.manifest.epochs = sorted([*self.manifest.epochs, epoch])
        return path

    def write_examples(self, example_ids, columns: Mapping[str, Sequence], groups: Sequence[str] | None = None) -> Path:
        """Store per-example attributes (source, task, language, text, ...) in examples.parquet.

        `groups` names the columns that summaries break down by; by default the ones called
        source, task, language, split or domain.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        ids = np.asarray(example_ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        table = {"example_id": pa.array(ids[order])}
        for name, values in columns.items():
            arr = pa.array(list(values) if not isinstance(values, np.ndarray) else values)
            if len(arr) != len(ids):
                raise ValueError(f"column {name} has {len(arr)} rows, example_ids has {len(ids)}")
            table[name] = arr.take(pa.array(order))
        path = self.run_dir / EXAMPLES_NAME
        table = pa.table(table)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, **examples_encoding(table.schema))
        if groups is None:
            groups = [c for c in columns if c in GROUP_COLUMN_NAMES]
        if self.is_main:
            self.manifest.group_columns = list(groups)
            self.manifest.save(self.run_dir)
        return path
