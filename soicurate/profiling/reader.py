"""Read a dynamics run directory: check its structure, then yield aligned, validated blocks.

A block holds the same examples for every epoch, as (E, n) arrays; memory is bounded by the
block size, never by the size of the run. Every problem is a LogFormatError that names the
file and the row and/or example id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soicurate.errors import LogFormatError
from soicurate.profiling import kernels
from soicurate.profiling.soi import late_start
from soicurate.profiling.streams import column_stream, next_chunks, parallel_map
from soicurate.recording.manifest import (
    EXAMPLES_NAME,
    REQUIRED_COLUMNS,
    Manifest,
    epoch_filename,
    parse_epoch_filename,
)

DEFAULT_BLOCK_ROWS = 1 << 18
CARRIED_COLUMNS = ("guid",)  # examples.parquet columns a profile keeps besides the group columns

_PROBLEMS = {
    kernels.GOLD_OUT_OF_RANGE: "gold label {gold} out of range (run has {k} labels: 0..{kmax})",
    kernels.PRED_OUT_OF_RANGE: "predicted label {pred} out of range (run has {k} labels: 0..{kmax})",
    kernels.GOLD_CHANGES: "gold label changes between epochs ({gold0} in {first}, {gold} here)",
    kernels.P_NAN: "p_gold is NaN",
    kernels.P_OUT_OF_RANGE: "p_gold {p} is outside [0, 1]",
    kernels.LOSS_NOT_FINITE: "loss is not finite ({loss})",
    kernels.MARGIN_NOT_FINITE: "margin is not finite ({margin})",
}


@dataclass
class Block:
    """Aligned dynamics of examples [row_start, row_start + n) across the selected epochs."""

    row_start: int
    example_id: np.ndarray  # (n,) int64
    gold: np.ndarray  # (n,) int32
    pred: np.ndarray  # (E, n) int32
    p_gold: np.ndarray  # (E, n) float32
    loss: np.ndarray  # (E, n) float32
    margin: np.ndarray | None  # (E, n) float32
    groups: dict[str, np.ndarray]  # group columns and carried columns (guid) of examples.parquet
    # profile_block's statistics when the reader computed them with the validation (the
    # profiling pipeline's fast path): (late_fraction, dict of arrays), else None.
    precomputed: tuple | None = field(default=None, repr=False, compare=False)

    @property
    def n(self) -> int:
        return len(self.example_id)


class RunReader:
    """One dynamics run directory, checked on opening and validated block by block."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.manifest = Manifest.load(self.run_dir)
        self.files = self._locate_epoch_files()
        self.num_examples = self._check_files()
        self.has_margin = all(self._has_column(paths, "margin") for paths in self.files.values())
        self.examples_path = self.run_dir / EXAMPLES_NAME
        self.group_columns = list(self.manifest.group_columns) if self.examples_path.exists() else []
        self.carry_columns = self._check_examples_file() if self.examples_path.exists() else []

    # -- structure -----------------------------------------------------------------------
    @property
    def epochs(self) -> list[int]:
        return list(self.manifest.epochs)

    @property
    def label_names(self) -> list[str]:
        return self.manifest.label_names

    def describe(self, epoch: int) -> str:
        paths = self.files[epoch]
        if len(paths) == 1:
            return str(paths[0])
        return str(self.run_dir / f"epoch_{epoch:04d}-rank_*.parquet")

    def _locate_epoch_files(self) -> dict[int, list[Path]]:
        m = self.manifest
        mpath = self.run_dir / "manifest.json"
        if not m.epochs:
            raise LogFormatError(mpath, "manifest lists no recorded epochs")
        found: dict[int, dict[int | None, Path]] = {}
        for entry in sorted(os.listdir(self.run_dir)):
            parsed = parse_epoch_filename(entry)
            if parsed is None:
                continue
            epoch, rank = parsed
            found.setdefault(epoch, {})[rank] = self.run_dir / entry
        extra = sorted(set(found) - set(m.epochs))
        if extra:
            e = extra[0]
            name = next(iter(found[e].values())).name
            raise LogFormatError(
                self.run_dir / name,
                f"extra epoch file: epoch {e} is not among the manifest's epochs {_span(m.epochs)}",
            )
        files: dict[int, list[Path]] = {}
        for epoch in m.epochs:
            ranks = found.get(epoch)
            if not ranks:
                expected = epoch_filename(epoch, None if m.world_size == 1 else 0)
                raise LogFormatError(
                    self.run_dir / expected,
                    f"missing epoch file: the manifest lists epoch {epoch} but no file holds it",
                )
            if m.world_size == 1:
                if None in ranks and len(ranks) > 1:
                    raise LogFormatError(self.run_dir / epoch_filename(epoch), "both a single-process file and rank files exist for this epoch")
                files[epoch] = [ranks[None]] if None in ranks else [ranks[r] for r in sorted(ranks)]
            else:
                want = set(range(m.world_size))
                have = {r for r in ranks if r is not None}
                if want - have:
                    r = min(want - have)
                    raise LogFormatError(
                        self.run_dir / epoch_filename(epoch, r),
                        f"missing rank file: world_size is {m.world_size} but rank {r} wrote nothing for epoch {epoch}",
                    )
                if None in ranks or have - want:
                    odd = ranks.get(None) or ranks[min(have - want)]
                    raise LogFormatError(odd, f"unexpected file for a run with world_size {m.world_size}")
                files[epoch] = [ranks[r] for r in sorted(want)]
        return files

    def _open(self, path: Path):
        import pyarrow.parquet as pq

        try:
            size = path.stat().st_size
        except OSError as exc:
            raise LogFormatError(path, f"cannot read file ({exc.strerror})") from None
        if size == 0:
            raise LogFormatError(path, "file is empty (0 bytes)")
        try:
            return pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad footer
            raise LogFormatError(path, f"truncated or not a Parquet file ({str(exc).splitlines()[0]})") from None

    def _has_column(self, paths: Sequence[Path], name: str) -> bool:
        return all(name in self._schemas[p] for p in paths)

    def _check_files(self) -> int:
        self._schemas: dict[Path, list[str]] = {}
        expected = self.manifest.num_examples
        first_epoch = None
        for epoch, paths in self.files.items():
            rows = 0
            for path in paths:
                pf = self._open(path)
                names = pf.schema_arrow.names
                self._schemas[path] = names
                for col in REQUIRED_COLUMNS:
                    if col not in names:
                        raise LogFormatError(path, f"missing column {col!r} (has: {', '.join(names)})")
                n = pf.metadata.num_rows
                if n == 0:
                    raise LogFormatError(path, "file has no rows")
                rows += n
            if expected is None:
                expected, first_epoch = rows, epoch
            elif rows != expected:
                source = f"epoch {first_epoch}" if first_epoch is not None else "the manifest's num_examples"
                raise LogFormatError(
                    self.describe(epoch), f"has {rows} rows but {source} has {expected}: examples missing or extra"
                )
        return int(expected)

    def _check_examples_file(self) -> list[str]:
        """Group columns plus `guid` (original string ids) when present: carried to profiles."""
        pf = self._open(self.examples_path)
        names = pf.schema_arrow.names
        for col in ["example_id", *self.group_columns]:
            if col not in names:
                raise LogFormatError(self.examples_path, f"missing column {col!r} named in the manifest's group_columns")
        if pf.metadata.num_rows != self.num_examples:
            raise LogFormatError(
                self.examples_path, f"has {pf.metadata.num_rows} rows but the epochs have {self.num_examples}"
            )
        return [*self.group_columns, *[c for c in CARRIED_COLUMNS if c in names and c not in self.group_columns]]

    # -- blocks ----------------------------------------------------------------------------
    def iter_blocks(self, block_rows: int = DEFAULT_BLOCK_ROWS, epochs: Sequence[int] | None = None) -> Iterator[Block]:
        """Yield validated, aligned blocks of `block_rows` examples for the chosen epochs."""
        return self._blocks(block_rows, epochs)

    def _blocks(
        self,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        epochs: Sequence[int] | None = None,
        *,
        late_fraction: float | None = None,
        arrow_groups: bool = False,
        serial: bool = False,
    ) -> Iterator[Block]:
        """iter_blocks, and for the profiling pipeline: with `late_fraction`, the statistics
        are computed in the same pass over the block as the validation (Block.precomputed);
        with `arrow_groups`, Block.groups holds the examples.parquet columns as Arrow arrays
        (dictionary arrays where the file stores dictionary-encoded strings); with `serial`,
        the kernels run on the calling thread only."""
        epochs = list(self.epochs if epochs is None else epochs)
        for e in epochs:
            if e not in self.files:
                raise LogFormatError(self.run_dir / "manifest.json", f"epoch {e} was not recorded in this run")
        cols = ["example_id", "gold", "pred", "p_gold", "loss"] + (["margin"] if self.has_margin else [])
        streams = [column_stream(self.files[e], cols, block_rows) for e in epochs]
        ex_stream = (
            column_stream([self.examples_path], ["example_id", *self.carry_columns], block_rows,
                          arrow=self.carry_columns if arrow_groups else ())
            if self.carry_columns
            else None
        )  # fmt: skip
        E = len(epochs)
        k = self.manifest.num_labels
        row = 0
        prev_last = None
        while True:
            chunks = next_chunks(streams)
            if chunks[0] is None:
                break
            n = len(chunks[0]["example_id"])
            ids = chunks[0]["example_id"]
            self._check_ids(epochs, chunks, ids, row, prev_last)
            gold = np.empty((E, n), dtype=np.int32)
            pred = np.empty((E, n), dtype=np.int32)
            p_gold = np.empty((E, n), dtype=np.float32)
            loss = np.empty((E, n), dtype=np.float32)
            margin = np.empty((E, n), dtype=np.float32) if self.has_margin else np.empty((0, 0), dtype=np.float32)

            def fill(e: int) -> None:
                ch = chunks[e]
                gold[e] = ch["gold"]
                pred[e] = ch["pred"]
                p_gold[e] = ch["p_gold"]
                loss[e] = ch["loss"]
                if self.has_margin:
                    margin[e] = ch["margin"]
                chunks[e] = {"example_id": ch["example_id"]}  # the decoded batch is no longer needed

            parallel_map(fill, range(E))
            precomputed = None
            if late_fraction is None:
                nbad = kernels.count_invalid(gold, pred, p_gold, loss, margin, self.has_margin, k)
            else:
                stats = _stats_arrays(n)
                kernel = kernels.profile_validated_block_serial if serial else kernels.profile_validated_block
                nbad = kernel(gold, pred, p_gold, loss, margin, self.has_margin, k, late_start(E, late_fraction),
                              *[stats[c] for c in _KERNEL_OUTPUTS], stats["never_learned"],
                              stats["threshold_closeness"], np.empty(n, np.bool_))  # fmt: skip
                stats["epochs_seen"] = np.full(n, E, np.int32)
                precomputed = (late_fraction, stats)
            if nbad:
                codes = np.empty(n, dtype=np.int8)
                where = np.empty(n, dtype=np.int32)
                kernels.validate_block(gold, pred, p_gold, loss, margin, self.has_margin, k, codes, where)
                bad = np.flatnonzero(codes)
                if len(bad):
                    i = int(bad[0])
                    self._raise_problem(epochs, i, int(codes[i]), int(where[i]), row, ids, gold, pred, p_gold, loss, margin)
            groups = {}
            if ex_stream is not None:
                ex = next(ex_stream, None)
                if ex is None or len(ex["example_id"]) != n or not np.array_equal(ex["example_id"], ids):
                    j = 0 if ex is None else _first_mismatch(ex["example_id"], ids)
                    raise LogFormatError(self.examples_path, "example ids differ from the epoch files'", row=row + j)
                groups = {c: ex[c] for c in self.carry_columns}
            prev_last = ids[-1]
            yield Block(row, ids, gold[0].copy(), pred, p_gold, loss, margin if self.has_margin else None, groups,
                        precomputed)  # fmt: skip
            row += n
        for e, s in zip(epochs[1:], streams[1:]):
            if next(s, None) is not None:
                raise LogFormatError(self.describe(e), "has more rows than the first epoch", row=row)

    def _check_ids(self, epochs, chunks, ids, row, prev_last) -> None:
        for e, ch in zip(epochs, chunks):
            other = ch if ch is not None else {"example_id": ids[:0]}
            if ch is None or len(other["example_id"]) != len(ids):
                raise LogFormatError(self.describe(e), "has fewer rows than the first epoch", row=row + len(other["example_id"]))
        own = _order_problem(ids, prev_last)
        if own is not None:
            j, what = own
            raise LogFormatError(self.describe(epochs[0]), what, row=row + j, example_id=int(ids[j]))
        for e, ch in zip(epochs[1:], chunks[1:]):
            other = ch["example_id"]
            if not np.array_equal(other, ids):
                j = _first_mismatch(other, ids)
                own = _order_problem(other, prev_last)
                if own is not None and own[0] <= j:
                    raise LogFormatError(self.describe(e), own[1], row=row + own[0], example_id=int(other[own[0]]))
                raise LogFormatError(
                    self.describe(e),
                    f"example ids differ between epochs: {other[j]} here, {ids[j]} in {self.describe(epochs[0])}",
                    row=row + j,
                )

    def _raise_problem(self, epochs, i, code, e, row, ids, gold, pred, p_gold, loss, margin):
        template = _PROBLEMS[code]
        msg = template.format(
            gold=int(gold[e, i]),
            gold0=int(gold[0, i]),
            first=self.describe(epochs[0]),
            pred=int(pred[e, i]),
            p=float(p_gold[e, i]),
            loss=float(loss[e, i]),
            margin=float(margin[e, i]) if margin.size else float("nan"),
            k=self.manifest.num_labels,
            kmax=self.manifest.num_labels - 1,
        )
        raise LogFormatError(self.describe(epochs[e]), msg, row=row + i, example_id=int(ids[i]))


# The outputs of kernels.profile_block, in its argument order, and their types.
_KERNEL_OUTPUTS = {
    "confidence": np.float64,
    "variability": np.float64,
    "correctness": np.float64,
    "forgetting_events": np.int32,
    "learning_events": np.int32,
    "first_learned_epoch": np.int32,
    "final_correct": np.bool_,
    "mean_loss": np.float64,
    "mean_margin": np.float64,
    "category": np.int8,
}


def _stats_arrays(n: int) -> dict[str, np.ndarray]:
    out = {name: np.empty(n, dtype) for name, dtype in _KERNEL_OUTPUTS.items()}
    out["never_learned"] = np.empty(n, np.bool_)
    out["threshold_closeness"] = np.empty(n, np.float64)
    return out


def _order_problem(ids: np.ndarray, prev_last) -> tuple[int, str] | None:
    """(index, message) of the first duplicate or out-of-order id, or None."""
    if prev_last is not None and len(ids) and ids[0] <= prev_last:
        return 0, ("duplicate example_id" if ids[0] == prev_last else "rows are not sorted by example_id")
    d = np.diff(ids)
    bad = np.flatnonzero(d <= 0)
    if len(bad):
        j = int(bad[0]) + 1
        return j, ("duplicate example_id" if d[bad[0]] == 0 else "rows are not sorted by example_id")
    return None


def _first_mismatch(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


def _span(epochs: Sequence[int]) -> str:
    if epochs == list(range(epochs[0], epochs[-1] + 1)):
        return f"{epochs[0]}..{epochs[-1]}"
    return ", ".join(map(str, epochs))


def read_dynamics(run_dir: str | Path, epochs: Sequence[int] | None = None, example_ids: tuple[int, int] | None = None):
    """A long polars DataFrame (epoch, example_id, gold, pred, p_gold, loss, ...) for a slice.

    `example_ids=(lo, hi)` keeps lo <= example_id < hi; Parquet row-group statistics let the
    scan skip the rest, so any slice of a large run reads only what it returns.
    """
    import polars as pl

    reader = RunReader(run_dir)
    epochs = list(reader.epochs if epochs is None else epochs)
    frames = []
    for e in epochs:
        if e not in reader.files:
            raise LogFormatError(reader.run_dir / "manifest.json", f"epoch {e} was not recorded in this run")
        lf = pl.scan_parquet([str(p) for p in reader.files[e]])
        if example_ids is not None:
            lo, hi = example_ids
            lf = lf.filter((pl.col("example_id") >= lo) & (pl.col("example_id") < hi))
        frames.append(lf.with_columns(pl.lit(e, dtype=pl.Int32).alias("epoch")))
    df = pl.concat(frames, how="diagonal_relaxed").collect()
    return df.select("epoch", *[c for c in df.columns if c != "epoch"]).sort("epoch", "example_id")
