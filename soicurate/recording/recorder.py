"""Record training dynamics from any PyTorch training loop (and, through it, from transformers).

`DynamicsRecorder` turns each batch's logits into per-example rows (gold, pred, p_gold, loss,
margin and optionally the probability vector) and writes one epoch file per epoch and rank
through `DynamicsWriter`::

    recorder = DynamicsRecorder("runs/seed0", label_names=["neg", "pos"], seed=0)
    for epoch in range(3):
        with recorder.epoch():                    # writes the epoch on success,
            for batch in loader:                  # drops the partial epoch on an exception
                out = model(**batch["inputs"])
                recorder.log_batch(batch["example_id"], out.logits, batch["labels"])
                ...

Cost per batch: the statistics are computed with a handful of small tensor operations on the
logits' own device (float32), then packed into one int64 tensor and copied to the host once
(asynchronously on CUDA, so the training loop never waits for it). The host keeps one small
chunk per batch; nothing grows by copying.

Distributed training (torch.distributed initialised, any backend): each rank writes its own
epoch file (epoch_NNNN-rank_RR.parquet). `end_epoch` is a collective call:

1. each rank keeps the first row of an example id it saw more than once in the epoch
   (a DistributedSampler pads the last batches by repeating examples);
2. the ranks exchange their id sets; an example seen by several ranks is kept by the lowest
   rank that saw it, so every example appears exactly once per epoch across the rank files;
3. every rank writes its file; after all have written (an all-gather of their status, which is
   also the barrier), rank 0 lists the epoch in the manifest, so the manifest never lists an
   epoch whose rank files are not all there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soicurate.atomic import atomic_path
from soicurate.errors import UsageError
from soicurate.recording.manifest import EXAMPLES_NAME, MANIFEST_NAME, parse_epoch_filename
from soicurate.recording.writer import DynamicsWriter

logger = logging.getLogger("soicurate")

PARTIAL_PREFIX = "soicurate-dynamics-partial"
_DRAIN_EVERY = 64  # CUDA: settle finished host copies every this many batches


def partial_filename(rank: int) -> str:
    """File (inside a checkpoint folder) holding one rank's rows of a partly trained epoch."""
    return f"{PARTIAL_PREFIX}-rank_{rank:02d}.npz"


def _dist():
    """torch.distributed if it is importable, available and initialised, else None."""
    try:
        import torch.distributed as dist
    except Exception:  # pragma: no cover - torch missing or built without distributed
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist


class _Pending:
    """One batch whose statistics are still on the accelerator (or in flight to the host)."""

    __slots__ = ("host", "event", "ids")

    def __init__(self, host, event, ids):
        self.host = host  # (n, columns) int64: [id,] gold, pred, float32 bit patterns
        self.event = event
        self.ids = ids  # host ids when they did not travel in the pack


class DynamicsRecorder:
    """Per-example training dynamics from a training loop, one epoch at a time.

    Arguments are those of `DynamicsWriter` (label names, manifest fields, `store_margin`,
    `store_probs`, `resume`). `recorded_by` is "train" (rows come from the training forward
    pass) or "eval" (from a separate inference pass). `overwrite=True` removes an earlier run in
    `run_dir` (manifest, epoch files, examples file) instead of refusing to start.

    Rank and world size come from torch.distributed when it is initialised (`group` picks a
    process group); then the constructor, `end_epoch` and `rewind` are collective calls that
    every rank must make. On one process nothing needs torch.distributed.
    """

    _pack_on_cpu = False  # tests: exercise the accelerator path (packed host copy) on the CPU

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
        store_margin: bool = True,
        store_probs: bool = False,
        resume: bool = False,
        overwrite: bool = False,
        extra: dict | None = None,
        group=None,
    ):
        self.run_dir = Path(run_dir)
        self._group = group
        dist = _dist()
        if dist is not None:
            self.rank = dist.get_rank(group)
            self.world_size = dist.get_world_size(group)
        else:
            self.rank, self.world_size = 0, 1
        self.store_margin = store_margin
        self.store_probs = store_probs
        self._chunks: list[dict[str, np.ndarray]] = []
        self._pending: list[_Pending] = []
        self._batches = 0
        self._closed = False
        kwargs = dict(
            num_examples=num_examples,
            recorded_by=recorded_by,
            run_id=run_id,
            seed=seed,
            model=model,
            dataset=dataset,
            dataset_fingerprint=dataset_fingerprint,
            store_margin=store_margin,
            store_probs=store_probs,
            extra=extra,
            rank=self.rank,
            world_size=self.world_size,
        )

        def create_main():
            if overwrite and not resume:
                clear_run_dir(self.run_dir)
            elif not resume and (self.run_dir / MANIFEST_NAME).exists():
                raise UsageError(
                    f"{self.run_dir}: already holds a dynamics run; choose another directory, "
                    "pass overwrite=True to replace it, or resume=True to continue it"
                )
            self._writer = DynamicsWriter(self.run_dir, label_names, resume=resume, **kwargs)
            m = self._writer.manifest
            if resume and m.epochs:
                if m.world_size != self.world_size:
                    raise UsageError(
                        f"{self.run_dir / MANIFEST_NAME}: the run was recorded with {m.world_size} process(es), "
                        f"this one has {self.world_size}; resume with the same number of processes"
                    )
                if m.recorded_by != recorded_by:
                    raise UsageError(
                        f"{self.run_dir / MANIFEST_NAME}: the run was recorded by {m.recorded_by!r}, "
                        f"not {recorded_by!r}; resume it in the same mode"
                    )
            elif resume and not m.epochs and m.world_size != self.world_size:
                m.world_size = self.world_size
                m.save(self.run_dir)

        def create_other():
            # rank 0 has written (or checked) the manifest; read it so that every rank agrees
            self._writer = DynamicsWriter(self.run_dir, label_names, resume=True, **kwargs)

        self._on_rank0_then_others(create_main, create_other)
        m = self._writer.manifest
        if resume and m.epochs:  # a resumed run keeps its columns, whatever was asked now
            self.store_margin = self._writer.store_margin = bool(m.has_margin)
            self.store_probs = self._writer.store_probs = bool(m.has_probs)
        self.label_names = list(self._writer.manifest.label_names)
        self.num_labels = len(self.label_names)
        self._epochs = list(self._writer.manifest.epochs)

    # -- state -----------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def manifest(self):
        """The run's manifest (authoritative on rank 0)."""
        return self._writer.manifest

    @property
    def epochs(self) -> list[int]:
        """Epochs written so far (the same on every rank)."""
        return list(self._epochs)

    @property
    def next_epoch(self) -> int:
        """The number `end_epoch()` gives the epoch being recorded when none is passed."""
        return self._epochs[-1] + 1 if self._epochs else 1

    @property
    def pending_rows(self) -> int:
        """Rows this rank has buffered for the current (unfinished) epoch."""
        return sum(len(c["example_id"]) for c in self._chunks) + sum(p.host.shape[0] for p in self._pending)

    # -- logging ---------------------------------------------------------------------------
    def log_batch(self, example_ids, logits, labels) -> None:
        """Buffer one batch: `logits` (batch, num_labels) and gold `labels` (batch,).

        Tensors (any device, any float dtype) or numpy arrays. The statistics are computed in
        float32 on the logits' device; the result reaches the host in one copy per batch.
        """
        if self._closed:
            raise UsageError("this recorder is closed")
        try:
            import torch
        except ImportError:  # pragma: no cover - numpy-only installs
            torch = None
        if torch is None or not (isinstance(logits, torch.Tensor) or isinstance(labels, torch.Tensor)):
            self._log_numpy(example_ids, logits, labels)
            return
        self._log_torch(torch, example_ids, logits, labels)

    def _log_numpy(self, example_ids, logits, labels) -> None:
        x = np.asarray(logits, dtype=np.float32)
        y = np.asarray(labels).astype(np.int64, copy=False).reshape(-1)
        ids = np.array(example_ids, dtype=np.int64, copy=True).reshape(-1)
        self._check_shapes(x.shape, len(y), len(ids))
        k = x.shape[1]
        yc = np.clip(y, 0, k - 1)
        rows = np.arange(len(y))
        m = x.max(axis=1, keepdims=True)
        log_z = (np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]).astype(np.float32)
        gold_logit = x[rows, yc]
        loss = log_z - gold_logit
        chunk = {
            "example_id": ids,
            "gold": y.astype(np.int32),
            "pred": x.argmax(axis=1).astype(np.int32),
            "p_gold": np.exp(-loss).astype(np.float32),
            "loss": loss.astype(np.float32),
        }
        if self.store_margin:
            others = x.copy()
            others[rows, yc] = -np.inf
            chunk["margin"] = (gold_logit - others.max(axis=1)).astype(np.float32)
        if self.store_probs:
            chunk["probs"] = np.exp(x - log_z[:, None]).astype(np.float32)
        self._add_chunk(chunk)

    def _check_shapes(self, shape, n_labels, n_ids) -> None:
        if len(shape) != 2:
            raise ValueError(f"logits must have shape (batch, num_labels), got {tuple(shape)}")
        if shape[1] != self.num_labels:
            raise ValueError(f"logits have {shape[1]} columns but the run has {self.num_labels} labels")
        if n_labels != shape[0] or n_ids != shape[0]:
            raise ValueError(f"batch of {shape[0]} logits rows has {n_labels} labels and {n_ids} example ids")

    def _log_torch(self, torch, example_ids, logits, labels) -> None:
        if isinstance(logits, np.ndarray):
            logits = np.ascontiguousarray(logits)
        if isinstance(labels, np.ndarray):
            labels = np.ascontiguousarray(labels)
        with torch.no_grad():
            x = logits.detach() if isinstance(logits, torch.Tensor) else torch.as_tensor(logits)
            device = x.device
            y = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(labels)
            y = y.reshape(-1)
            if y.device != device or y.dtype != torch.long:
                y = y.to(device=device, dtype=torch.long, non_blocking=True)
            pack = device.type != "cpu" or self._pack_on_cpu
            if pack and isinstance(example_ids, torch.Tensor) and example_ids.device == device:
                ids_t, ids_np = example_ids.reshape(-1).to(torch.long), None
                n_ids = ids_t.numel()
            else:
                if isinstance(example_ids, torch.Tensor):
                    ids_np = example_ids.detach().reshape(-1).cpu().numpy().astype(np.int64, copy=True)
                else:
                    ids_np = np.array(example_ids, dtype=np.int64, copy=True).reshape(-1)
                n_ids = len(ids_np)
            self._check_shapes(tuple(x.shape), y.numel(), n_ids)
            k = x.shape[1]
            # float32 statistics from one log-softmax: p_gold, loss, margin (gold minus best other)
            lp = torch.log_softmax(x.float(), dim=1)
            yc = y.clamp(0, k - 1).unsqueeze(1)  # out-of-range labels are reported on the host
            lp_gold = lp.gather(1, yc)
            parts = [lp_gold.exp(), lp_gold.neg()]
            if self.store_margin:
                parts.append(lp_gold - lp.scatter(1, yc, float("-inf")).amax(dim=1, keepdim=True))
            if self.store_probs:
                parts.append(lp.exp())
            fl = torch.cat(parts, dim=1)  # (n, columns)
            pred = lp.argmax(dim=1)
            if not pack:
                chunk = {
                    "example_id": ids_np,
                    "gold": y.numpy().astype(np.int32),
                    "pred": pred.numpy().astype(np.int32),
                }
                self._add_chunk(self._split_floats(chunk, fl.numpy()))
                return
            ints = torch.stack([y, pred] if ids_np is not None else [ids_t, y, pred], dim=1)
            # one int64 tensor per batch: the float32 statistics travel as their bit patterns
            packed = torch.cat([ints, fl.view(torch.int32).to(torch.long)], dim=1)
            event = None
            if device.type == "cuda":
                host = packed.to("cpu", non_blocking=True)  # lands in pinned memory, asynchronously
                event = torch.cuda.Event()
                event.record()
            else:
                host = packed.cpu()
            self._pending.append(_Pending(host, event, ids_np))
        self._batches += 1
        if event is None:
            self._drain(block=True)
        elif self._batches % _DRAIN_EVERY == 0:
            self._drain(block=False)

    def _split_floats(self, chunk: dict, fl: np.ndarray) -> dict:
        """Columns of the (n, columns) float32 statistics into the chunk."""
        chunk["p_gold"] = fl[:, 0]
        chunk["loss"] = fl[:, 1]
        i = 2
        if self.store_margin:
            chunk["margin"] = fl[:, 2]
            i = 3
        if self.store_probs:
            chunk["probs"] = fl[:, i:]
        return chunk

    def _drain(self, block: bool) -> None:
        """Move finished host copies into numpy chunks (all of them if `block`)."""
        while self._pending:
            p = self._pending[0]
            if p.event is not None:
                if block:
                    p.event.synchronize()
                elif not p.event.query():
                    return
            self._pending.pop(0)
            arr = p.host.numpy()
            j = 0 if p.ids is not None else 1
            ids = p.ids if p.ids is not None else arr[:, 0].copy()
            chunk = {"example_id": ids, "gold": arr[:, j].astype(np.int32), "pred": arr[:, j + 1].astype(np.int32)}
            fl = arr[:, j + 2 :].astype(np.int32).view(np.float32)
            self._add_chunk(self._split_floats(chunk, fl))

    def _add_chunk(self, chunk: dict) -> None:
        gold = chunk["gold"]
        if len(gold) and (gold.min() < 0 or gold.max() >= self.num_labels):
            i = int(np.flatnonzero((gold < 0) | (gold >= self.num_labels))[0])
            raise ValueError(
                f"example_id {int(chunk['example_id'][i])}: label {int(gold[i])} is out of range "
                f"(the run has {self.num_labels} labels: 0..{self.num_labels - 1})"
            )
        self._chunks.append(chunk)

    # -- epochs ----------------------------------------------------------------------------
    def discard_epoch(self) -> None:
        """Drop the rows buffered since the last end_epoch (an interrupted epoch)."""
        self._pending = []
        self._chunks = []
        self._writer.discard_epoch()

    @contextlib.contextmanager
    def epoch(self, epoch: int | None = None):
        """`with recorder.epoch(): ...` ends the epoch on success and discards it on an exception.

        Rows buffered before the block (for example reloaded with `load_partial`) belong to it.
        """
        try:
            yield self
        except BaseException:
            self.discard_epoch()
            raise
        self.end_epoch(epoch)

    def _collect(self) -> dict[str, np.ndarray]:
        """This rank's rows of the epoch, one per example id (the first logged), sorted by id."""
        self._drain(block=True)
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return {}
        data = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        ids, first = np.unique(data["example_id"], return_index=True)
        if len(first) != len(data["example_id"]):
            data = {k: v[first] for k, v in data.items()}
        else:
            order = np.argsort(data["example_id"], kind="stable")
            data = {k: v[order] for k, v in data.items()}
        return data

    def end_epoch(self, epoch: int | None = None) -> Path | None:
        """Write the epoch's rows (atomically) and list the epoch in the manifest.

        Collective in distributed training (see the module doc for how duplicates are
        resolved). Returns this rank's epoch file. A rank left without rows is an error on
        every rank: the reader needs every rank's file of an epoch.
        """
        if self._closed:
            raise UsageError("this recorder is closed")
        if epoch is None:
            epoch = self.next_epoch
        data = self._collect()
        total = len(data.get("example_id", ()))
        if self.world_size > 1:
            data, total = self._dedupe_across_ranks(data)
        path = None

        def write():
            nonlocal path
            if not data or not len(data["example_id"]):
                raise ValueError(f"epoch {epoch}: rank {self.rank} logged no rows")
            rows = dict(data)
            self._writer.log(rows.pop("example_id"), **rows)
            path = self._writer.end_epoch(epoch, update_manifest=self.world_size == 1)

        self._all_ranks(write)
        if self.world_size > 1:
            if self.is_main:
                m = self._writer.manifest
                if epoch not in m.epochs:
                    m.epochs = sorted([*m.epochs, epoch])
                if m.num_examples is None:
                    m.num_examples = int(total)
                m.save(self.run_dir)
            self._barrier()
        if epoch not in self._epochs:
            self._epochs = sorted([*self._epochs, epoch])
        expected = self._writer.manifest.num_examples
        if self.is_main and expected is not None and total != expected:
            warnings.warn(
                f"{self.run_dir}: epoch {epoch} has {total} examples but the run has {expected}; "
                "the reader will refuse it (examples missing or extra)",
                stacklevel=2,
            )
        return path

    def _dedupe_across_ranks(self, data: dict) -> tuple[dict, int]:
        ids = data.get("example_id", np.empty(0, np.int64))
        gathered = self._gather(ids)
        total = len(np.unique(np.concatenate(gathered))) if gathered else len(ids)
        lower = [g for g in gathered[: self.rank] if len(g)]
        if lower and len(ids):
            keep = ~np.isin(ids, np.concatenate(lower))
            if not keep.all():
                data = {k: v[keep] for k, v in data.items()}
        return data, total

    def rewind(self, last_epoch: int) -> list[int]:
        """Forget every epoch after `last_epoch` (manifest entry and files); return those dropped.

        Used when training resumes from a checkpoint older than the last recorded epoch: the
        epochs of the abandoned trajectory are recorded again. Collective in distributed training.
        """
        dropped = [e for e in self._epochs if e > last_epoch]
        if dropped:

            def drop():
                m = self._writer.manifest
                m.epochs = [e for e in m.epochs if e <= last_epoch]
                m.save(self.run_dir)  # the manifest first: a listed epoch always has its files
                for entry in os.listdir(self.run_dir):
                    parsed = parse_epoch_filename(entry)
                    if parsed is not None and parsed[0] > last_epoch:
                        with contextlib.suppress(FileNotFoundError):
                            (self.run_dir / entry).unlink()

            self._on_rank0_then_others(drop, None)
            if self.is_main:
                logger.warning(
                    "soicurate: %s: training resumes in epoch %d: dropped recorded epoch(s) %s, "
                    "which are recorded again",
                    self.run_dir,
                    last_epoch + 1,
                    ", ".join(map(str, dropped)),
                )
        self._epochs = [e for e in self._epochs if e <= last_epoch]
        self._writer.manifest.epochs = [e for e in self._writer.manifest.epochs if e <= last_epoch]
        return dropped

    # -- partial epochs (checkpoints) ------------------------------------------------------
    def save_partial(self, directory: str | Path, epoch: int | None = None) -> Path:
        """Write this rank's buffered rows of the current epoch into `directory` (a checkpoint).

        The rows stay buffered; `load_partial` puts them back after a restart. Not collective.
        """
        epoch = self.next_epoch if epoch is None else epoch
        data = self._collect()
        if data:
            self._chunks = [data]
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / partial_filename(self.rank)
        payload = {k: v for k, v in data.items()}
        payload["epoch"] = np.array(epoch, dtype=np.int64)
        payload["world_size"] = np.array(self.world_size, dtype=np.int64)
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **payload)
        return path

    def load_partial(self, directory: str | Path, epoch: int | None = None, *, strict: bool = True) -> int | None:
        """Buffer the rows that `save_partial` stored in `directory` for `epoch`.

        With the same number of processes each rank loads its own file; otherwise rank 0 loads
        every file (the exchange at `end_epoch` then gives each example to one rank). Returns
        the rows loaded on this rank, or None when `directory` holds no partial file for
        `epoch` (nothing can be restored). A file of another epoch is an error if `strict`,
        else ignored. Every rank returns None or a number alike.
        """
        epoch = self.next_epoch if epoch is None else epoch
        directory = Path(directory)
        files = sorted(directory.glob(f"{PARTIAL_PREFIX}-rank_*.npz"))
        if not files:
            return None
        headers = []
        for path in files:
            with np.load(path) as z:
                headers.append((path, int(z["epoch"]), int(z["world_size"])))
        for path, saved_epoch, _ in headers:
            if saved_epoch != epoch:
                if strict:
                    raise UsageError(
                        f"{path}: holds rows of epoch {saved_epoch}, but training resumes inside epoch {epoch}"
                    )
                return None
        same_world = all(ws == self.world_size for _, _, ws in headers) and len(headers) == self.world_size
        if same_world:
            mine = [p for p in files if p.name == partial_filename(self.rank)]
        else:
            mine = files if self.is_main else []
        loaded = 0
        restored = []
        for path in mine:
            with np.load(path) as z:
                if "example_id" not in z.files:
                    continue
                chunk = {k: z[k] for k in z.files if k not in ("epoch", "world_size")}
            if bool(self.store_margin) != ("margin" in chunk) or bool(self.store_probs) != ("probs" in chunk):
                raise UsageError(f"{path}: was saved with other margin/probs settings than this recorder's")
            restored.append(chunk)
            loaded += len(chunk["example_id"])
        self._chunks = restored + self._chunks  # restored rows come first: they win duplicates
        return loaded

    # -- examples and closing --------------------------------------------------------------
    def write_examples(self, example_ids, columns, groups=None) -> Path | None:
        """examples.parquet (rank 0 only; a no-op elsewhere). See DynamicsWriter.write_examples."""
        if not self.is_main:
            return None
        return self._writer.write_examples(example_ids, columns, groups)

    def close(self) -> None:
        """Drop any unfinished epoch and refuse further logging."""
        if self.pending_rows:
            logger.info("soicurate: %s: dropping %d rows of an unfinished epoch", self.run_dir, self.pending_rows)
        self.discard_epoch()
        self._closed = True

    # -- collectives -----------------------------------------------------------------------
    def _gather(self, obj) -> list:
        dist = _dist()
        if dist is None or self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self._group)
        return out

    def _barrier(self) -> None:
        dist = _dist()
        if dist is not None and self.world_size > 1:
            self._gather(None)  # an all-gather works with every backend (and device) a barrier does

    def _all_ranks(self, fn) -> None:
        """Run fn on every rank; if it fails anywhere, raise on every rank (no rank hangs)."""
        error = None
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
        if self.world_size == 1:
            if error is not None:
                raise error
            return
        messages = self._gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        for r, msg in enumerate(messages):
            if msg is not None:
                raise UsageError(f"rank {r} failed: {msg}")

    def _on_rank0_then_others(self, main_fn, other_fn) -> None:
        """main_fn on rank 0, then (after rank 0 is done) other_fn on the other ranks."""
        if self.world_size == 1:
            main_fn()
            return
        error = None
        if self.is_main:
            try:
                main_fn()
            except Exception as exc:  # noqa: BLE001
                error = exc
        messages = self._gather(None if error is None else f"{type(error).__name__}: {error}")
        if error is not None:
            raise error
        if messages[0] is not None:
            raise UsageError(f"rank 0 failed: {messages[0]}")
        if other_fn is not None:
            self._all_ranks(other_fn if not self.is_main else (lambda: None))


def clear_run_dir(run_dir: str | Path) -> None:
    """Remove a dynamics run's files (manifest, epoch files, examples file) from `run_dir`."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in os.listdir(run_dir):
        if entry in (MANIFEST_NAME, EXAMPLES_NAME) or parse_epoch_filename(entry) is not None:
            with contextlib.suppress(FileNotFoundError):
                (run_dir / entry).unlink()


__all__ = ["DynamicsRecorder", "clear_run_dir", "partial_filename", "PARTIAL_PREFIX"]
