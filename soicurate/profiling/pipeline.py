"""Profile one or several dynamics runs into a per-example table (Parquet or polars).

Two streaming passes keep memory bounded by the block size: pass one validates the logs,
runs the kernels and writes per-example statistics to a temporary Parquet file while it
accumulates category counts and confidence/variability histograms; pass two adds the
cartography region (whose quantile thresholds need the whole data) and writes the final file
under a temporary name before renaming it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from soicurate.atomic import atomic_path, temporary_sibling
from soicurate.errors import LogFormatError, UsageError
from soicurate.profiling import kernels
from soicurate.profiling.reader import DEFAULT_BLOCK_ROWS, Block, RunReader
from soicurate.profiling.regions import REGIONS, RegionHistograms, RegionRule, region_codes, thresholds
from soicurate.profiling.soi import CATEGORIES, DEFAULT_LATE_FRACTION, late_start
from soicurate.profiling.summary import ProfileSummary

STAT_COLUMNS = (
    "confidence",
    "variability",
    "correctness",
    "forgetting_events",
    "learning_events",
    "first_learned_epoch",
    "final_correct",
    "never_learned",
    "mean_loss",
    "mean_margin",
    "threshold_closeness",
)
PROFILE_METADATA_KEY = b"soicurate.profile"


def compute_block(block: Block, late_fraction: float = DEFAULT_LATE_FRACTION) -> dict[str, np.ndarray]:
    """Kernel outputs for one block of one run."""
    E, n = block.pred.shape
    if E < 2:
        raise UsageError(f"profiling needs at least 2 recorded epochs, got {E}")
    out = {
        "confidence": np.empty(n, np.float64),
        "variability": np.empty(n, np.float64),
        "correctness": np.empty(n, np.float64),
        "forgetting_events": np.empty(n, np.int32),
        "learning_events": np.empty(n, np.int32),
        "first_learned_epoch": np.empty(n, np.int32),
        "final_correct": np.empty(n, np.bool_),
        "mean_loss": np.empty(n, np.float64),
        "mean_margin": np.empty(n, np.float64),
        "category": np.empty(n, np.int8),
    }
    has_margin = block.margin is not None
    margin = block.margin if has_margin else np.empty((0, 0), np.float32)
    kernels.profile_block(
        block.gold, block.pred, block.p_gold, block.loss, margin, has_margin, late_start(E, late_fraction),
        out["confidence"], out["variability"], out["correctness"], out["forgetting_events"],
        out["learning_events"], out["first_learned_epoch"], out["final_correct"], out["mean_loss"],
        out["mean_margin"], out["category"],
    )  # fmt: skip
    out["never_learned"] = out["first_learned_epoch"] < 0
    out["threshold_closeness"] = out["confidence"] * (1.0 - out["confidence"])
    out["epochs_seen"] = np.full(n, E, np.int32)
    return out


def combine_runs(per_run: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several runs of the same examples: means of the statistics, modal category, agreement."""
    if len(per_run) == 1:
        return per_run[0]
    R = len(per_run)
    stack = lambda k: np.stack([r[k] for r in per_run])  # noqa: E731
    out: dict[str, np.ndarray] = {}
    for k in ("confidence", "variability", "correctness", "mean_loss", "mean_margin",
              "forgetting_events", "learning_events"):  # fmt: skip
        out[k] = stack(k).astype(np.float64).mean(axis=0)
    out["threshold_closeness"] = out["confidence"] * (1.0 - out["confidence"])
    first = stack("first_learned_epoch").astype(np.float64)
    learned = first > 0
    with np.errstate(invalid="ignore"):
        out["first_learned_epoch"] = np.where(learned.any(0), np.where(learned, first, 0).sum(0) / learned.sum(0), -1)
    out["final_correct"] = stack("final_correct").mean(axis=0)
    out["never_learned"] = stack("never_learned").all(axis=0)
    out["epochs_seen"] = stack("epochs_seen").sum(axis=0).astype(np.int32)
    cats = stack("category")
    modal = np.empty(cats.shape[1], np.int8)
    agreement = np.empty(cats.shape[1], np.float64)
    kernels.modal_category(cats, len(CATEGORIES), modal, agreement)
    out["category"] = modal
    out["category_agreement"] = agreement
    out["confidence_std"] = stack("confidence").std(axis=0)
    out["variability_std"] = stack("variability").std(axis=0)
    out["run_categories"] = cats.T
    out["n_runs"] = np.full(cats.shape[1], R, np.int32)
    return out


def _arrow_table(ids, labels, label_names, groups, stats, schema):
    import pyarrow as pa

    cols = {
        "example_id": pa.array(ids, pa.int64()),
        "label": pa.array(labels, pa.int32()),
        "label_name": _names(label_names, labels),
    }
    for g, values in groups.items():
        cols[g] = pa.array(values.astype(str) if values.dtype.kind not in "OUS" else values, pa.string())
    for k in ("epochs_seen", *STAT_COLUMNS):
        v = stats[k]
        if k == "first_learned_epoch":
            cols[k] = pa.array(v, schema.field(k).type, mask=v < 0)
        elif k == "mean_margin":
            cols[k] = pa.array(v, pa.float64(), mask=np.isnan(v))
        else:
            cols[k] = pa.array(v, schema.field(k).type)
    cols["category"] = _names(CATEGORIES, stats["category"])
    if "category_agreement" in stats:
        cols["category_agreement"] = pa.array(stats["category_agreement"], pa.float64())
        cols["confidence_std"] = pa.array(stats["confidence_std"], pa.float64())
        cols["variability_std"] = pa.array(stats["variability_std"], pa.float64())
        cols["n_runs"] = pa.array(stats["n_runs"], pa.int32())
        rc = stats["run_categories"]
        flat = _names(CATEGORIES, rc.reshape(-1))
        cols["run_categories"] = pa.FixedSizeListArray.from_arrays(flat, rc.shape[1])
    return pa.table(cols, schema=schema)


def _names(names: Sequence[str], codes: np.ndarray):
    """A string array of names[codes], built in Arrow (no per-row Python strings)."""
    import pyarrow as pa

    return pa.array(list(names), pa.string()).take(pa.array(codes))


def _dictionary_columns(schema) -> list[str]:
    """Parquet column paths worth a dictionary: strings (labels, groups, categories) and the
    int32 counts (at most E + 1 distinct values).

    By default Parquet tries a dictionary for every column and falls back for high-cardinality
    ones, which doubled the time spent writing the float statistics.
    """
    import pyarrow as pa

    paths = []
    for f in schema:
        if pa.types.is_string(f.type) or pa.types.is_int32(f.type):
            paths.append(f.name)
        elif pa.types.is_fixed_size_list(f.type):
            paths.append(f"{f.name}.list.element")
    return paths


def _schema(carry_columns: Sequence[str], n_runs: int):
    import pyarrow as pa

    multi = n_runs > 1
    fields = [
        ("example_id", pa.int64()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        *[(g, pa.string()) for g in carry_columns],
        ("epochs_seen", pa.int32()),
        ("confidence", pa.float64()),
        ("variability", pa.float64()),
        ("correctness", pa.float64()),
        ("forgetting_events", pa.float64() if multi else pa.int32()),
        ("learning_events", pa.float64() if multi else pa.int32()),
        ("first_learned_epoch", pa.float64() if multi else pa.int32()),
        ("final_correct", pa.float64() if multi else pa.bool_()),
        ("never_learned", pa.bool_()),
        ("mean_loss", pa.float64()),
        ("mean_margin", pa.float64()),
        ("threshold_closeness", pa.float64()),
        ("category", pa.string()),
    ]
    if multi:
        fields += [
            ("category_agreement", pa.float64()),
            ("confidence_std", pa.float64()),
            ("variability_std", pa.float64()),
            ("n_runs", pa.int32()),
            ("run_categories", pa.list_(pa.string(), n_runs)),
        ]
    return pa.schema(fields)


def _open_readers(runs, mapping=None) -> list[RunReader]:
    from soicurate.profiling.sources import open_run

    if isinstance(runs, (str, os.PathLike, RunReader)):
        runs = [runs]
    runs = list(runs)
    if not runs:
        raise UsageError("no run directories given")
    return [r if isinstance(r, RunReader) else open_run(r, mapping) for r in runs]


def _check_compatible(readers: list[RunReader]) -> None:
    first = readers[0]
    for r in readers[1:]:
        if r.label_names != first.label_names:
            raise UsageError(f"{r.run_dir}: label names {r.label_names} differ from {first.run_dir}'s {first.label_names}")
        if r.num_examples != first.num_examples:
            raise UsageError(
                f"{r.run_dir}: has {r.num_examples} examples, {first.run_dir} has {first.num_examples}; "
                "runs profiled together must cover the same examples"
            )


def write_profile(
    runs,
    output: str | Path,
    *,
    late_fraction: float = DEFAULT_LATE_FRACTION,
    regions: RegionRule | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: bool = False,
    mapping=None,
) -> ProfileSummary:
    """Profile `runs` (one or several run directories of the same examples) into `output`.

    Returns the summary (counts per category, label, group and region). Memory is bounded by
    `block_rows`; the output appears only when complete. `mapping` (a TableMapping) is
    needed only for long tables.
    """
    import pyarrow as pa

    regions = regions or RegionRule()
    readers = _open_readers(runs, mapping)
    _check_compatible(readers)
    first = readers[0]
    groups = first.group_columns
    schema = _schema(first.carry_columns, len(readers))
    summary = ProfileSummary(label_names=first.label_names, group_columns=groups, late_fraction=late_fraction)
    summary.runs = [
        {"run_dir": str(r.run_dir.resolve()), "run_id": r.manifest.run_id, "seed": r.manifest.seed, "model": r.manifest.model,
         "epochs": r.epochs, "recorded_by": r.manifest.recorded_by}
        for r in readers
    ]  # fmt: skip
    hist = RegionHistograms()
    output = Path(output)
    stage1 = temporary_sibling(output, ".stage1")
    bar = _progress(progress, first.num_examples * len(readers), "profiling")
    try:
        # Stage one is an uncompressed Arrow IPC file (one record batch per block): writing and
        # reading it back is a copy, where a Parquet stage cost a second encode and decode.
        with pa.OSFile(str(stage1), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            iters = [r.iter_blocks(block_rows) for r in readers]
            while True:
                blocks = [next(it, None) for it in iters]
                if blocks[0] is None:
                    break
                _check_same_examples(readers, blocks)
                b0 = blocks[0]
                stats = combine_runs([compute_block(b, late_fraction) for b in blocks])
                hist.add(stats["confidence"], stats["variability"])
                summary.add(stats["category"], b0.gold, {g: b0.groups[g] for g in groups})
                writer.write_table(_arrow_table(b0.example_id, b0.gold, first.label_names, b0.groups, stats, schema))
                bar.update(b0.n * len(readers))
        bar.close()
        v_thr, c_thr = thresholds(regions, hist) if hist.count else (math.nan, math.nan)
        summary.thresholds = {"mode": regions.mode, "fraction": regions.fraction if regions.mode == "quantile" else None,
                              "variability": v_thr, "confidence": c_thr}  # fmt: skip
        summary.output = str(output)
        _add_regions(stage1, output, v_thr, c_thr, summary)
    finally:
        bar.close()
        stage1.unlink(missing_ok=True)
    return summary


def _add_regions(stage1: Path, output: Path, v_thr: float, c_thr: float, summary: ProfileSummary) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"late_fraction": summary.late_fraction, "region_thresholds": summary.thresholds, "runs": summary.runs,
            "label_names": summary.label_names, "group_columns": summary.group_columns}  # fmt: skip
    with pa.OSFile(str(stage1), "rb") as source, atomic_path(output) as tmp:
        reader = pa.ipc.open_file(source)
        schema = reader.schema.append(pa.field("region", pa.string()))
        schema = schema.with_metadata({PROFILE_METADATA_KEY: json.dumps(meta).encode()})
        with pq.ParquetWriter(tmp, schema, use_dictionary=_dictionary_columns(schema)) as writer:
            for table in _regrouped(reader, DEFAULT_BLOCK_ROWS):
                conf = table.column("confidence").to_numpy()
                var = table.column("variability").to_numpy()
                codes = region_codes(conf, var, v_thr, c_thr)
                summary.region_counts += np.bincount(codes, minlength=len(REGIONS))
                table = table.append_column("region", _names(REGIONS, codes))
                writer.write_table(table.replace_schema_metadata(schema.metadata))


def _regrouped(reader, rows: int):
    """Tables of exactly `rows` rows (the last may be shorter) from an Arrow IPC file reader,
    one batch in memory at a time, so the profile's row groups do not depend on block_rows."""
    import pyarrow as pa

    pending: list = []
    count = 0
    for i in range(reader.num_record_batches):
        batch = reader.get_batch(i)
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending, schema=reader.schema)
            yield table.slice(0, rows)
            count -= rows
            pending = table.slice(rows).to_batches() if count else []
    if count:
        yield pa.Table.from_batches(pending, schema=reader.schema)


def _check_same_examples(readers: list[RunReader], blocks: list[Block | None]) -> None:
    b0 = blocks[0]
    for r, b in zip(readers[1:], blocks[1:]):
        if b is None or b.n != b0.n or not np.array_equal(b.example_id, b0.example_id):
            j = 0 if b is None else int(np.flatnonzero(b.example_id != b0.example_id)[0]) if b.n == b0.n else 0
            raise LogFormatError(r.run_dir, f"example ids differ from {readers[0].run_dir}'s", row=b0.row_start + j)
        if not np.array_equal(b.gold, b0.gold):
            j = int(np.flatnonzero(b.gold != b0.gold)[0])
            raise LogFormatError(
                r.run_dir, f"gold label differs from {readers[0].run_dir}'s", row=b0.row_start + j, example_id=int(b0.example_id[j])
            )


def _progress(enabled: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=" ex-run", unit_scale=True, disable=not enabled, leave=False)


def read_profile(path: str | Path):
    """Read a profile Parquet file as polars, with category and region as Enum columns."""
    import polars as pl

    path = Path(path)
    if not path.exists():
        raise LogFormatError(path, "profile file does not exist")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise LogFormatError(path, f"cannot read profile ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("example_id", "category", "region", "confidence", "variability") if c not in df.columns]
    if missing:
        raise LogFormatError(path, f"not a soicurate profile: missing column(s) {', '.join(missing)}")
    casts = [pl.col("category").cast(pl.Enum(CATEGORIES)), pl.col("region").cast(pl.Enum(REGIONS))]
    if "run_categories" in df.columns:
        casts.append(pl.col("run_categories").cast(pl.Array(pl.Enum(CATEGORIES), df.schema["run_categories"].size)))
    return df.with_columns(casts)


def profile(
    runs,
    *,
    late_fraction: float = DEFAULT_LATE_FRACTION,
    regions: RegionRule | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    progress: bool = False,
    mapping=None,
):
    """Profile one or several runs and return the per-example table as a polars DataFrame.

    `runs` is a run directory, a RunReader, a Cartography directory or a long table (with
    `mapping`), or a list of them for several seeds of the same data. See write_profile for
    a bounded-memory file.
    """
    with tempfile.TemporaryDirectory(prefix="soicurate-profile-") as tmp:
        path = Path(tmp) / "profile.parquet"
        write_profile(runs, path, late_fraction=late_fraction, regions=regions, block_rows=block_rows, progress=progress,
                      mapping=mapping)
        return read_profile(path)
