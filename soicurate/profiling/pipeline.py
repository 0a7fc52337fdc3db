"""Profile one or several dynamics runs into a per-example table (Parquet or polars).

Memory stays bounded by the block size. The cartography regions need thresholds taken from
the whole data (quantiles of confidence and variability), so with quantile regions a cheap
first pass reads only p_gold and fills the confidence/variability histograms; the main pass
then validates the logs, runs the kernels, counts the categories and writes the final
profile, region included, under a temporary name before renaming it. Reading the next block
and writing the last one run on threads of their own while a block is profiled. Should that
first pass fail (unreadable files), or its histograms differ from the main pass's, the profile
is made the older way, which reports the problem: pass one validates and computes into a
temporary Arrow file while accumulating the histograms, pass two adds the regions.
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
from soicurate.profiling.streams import BackgroundWorker, Prefetched, _to_numpy, column_stream, next_chunks
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
    if block.precomputed is not None and block.precomputed[0] == late_fraction:
        return dict(block.precomputed[1])  # computed by the reader, with the validation
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
        out[k] = _run_mean([r[k] for r in per_run])
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


def _run_mean(values: list[np.ndarray]) -> np.ndarray:
    """The mean over runs of one statistic (the region pre-pass relies on it being this
    exact computation)."""
    return np.stack(values).astype(np.float64).mean(axis=0)


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


PROFILE_ROW_GROUP_ROWS = DEFAULT_BLOCK_ROWS  # the profile's row groups, whatever block_rows is
# Column statistics (min/max per row group) are kept for these columns only: they let a reader
# skip row groups when filtering by example id or label; for the others they cost more to
# compute than they would save.
STATISTICS_COLUMNS = ("example_id", "label")
# float64 columns with few distinct values, which a dictionary stores in a few bits per row:
# single-run correctness takes E + 1 values; the run means and shares of several runs a few
# more.
_FEW_VALUED_FLOATS = ("correctness", "forgetting_events", "learning_events", "first_learned_epoch", "final_correct",
                      "category_agreement")  # fmt: skip


def _parquet_options(schema) -> dict:
    """How the profile is encoded, chosen for writing speed (measured in docs/performance.md):
    no compression (the float statistics are random to the last bit; strings and small integers
    are dictionary or delta encoded, a few bits per row already); dictionaries for the strings
    (label names, groups, categories, regions), the constant epochs_seen / n_runs and the few-
    valued floats; delta encoding for the other integers (example ids are sorted); plain for
    the other floats, where trying a dictionary only doubled the time."""
    import pyarrow as pa

    dictionary, encoding = [], {}
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t) or pa.types.is_string(t) or f.name in ("epochs_seen", "n_runs"):
            dictionary.append(f.name)
        elif pa.types.is_fixed_size_list(t):
            dictionary.append(f"{f.name}.list.element")
        elif f.name in _FEW_VALUED_FLOATS and pa.types.is_floating(t):
            dictionary.append(f.name)
        elif pa.types.is_integer(t):
            encoding[f.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(t):
            encoding[f.name] = "PLAIN"
    return {
        "compression": "none",
        "use_dictionary": dictionary,
        "column_encoding": encoding,
        "write_statistics": [c for c in STATISTICS_COLUMNS if c in schema.names],
    }


class _ProfileSink:
    """Writes the profile Parquet file: tables of the profile's columns (string columns either
    as strings or as dictionary arrays, which Parquet stores without hashing every value
    again), one row group per write.

    The file's Arrow schema (the `ARROW:schema` metadata that pyarrow and polars read types
    from) is written by hand as the profile's `schema`, with plain string columns: the file
    reads back exactly as if it had been written from string arrays, and its metadata holds
    the schema's metadata as pyarrow would store it.
    """

    def __init__(self, path: Path, schema):
        self.path = path
        self.schema = schema
        self._writer = None

    def _open(self, physical_schema) -> None:
        import pyarrow.parquet as pq

        options = _parquet_options(physical_schema)
        self._writer = pq.ParquetWriter(self.path, physical_schema, store_schema=False, **options)

    def write(self, table) -> None:
        if self._writer is None:
            self._open(table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        import base64

        if self._writer is None:
            self._open(self.schema)
        meta = {b"ARROW:schema": base64.b64encode(self.schema.serialize().to_pybytes())}
        meta.update(self.schema.metadata or {})
        self._writer.add_key_value_metadata(meta)
        self._writer.close()

    def abort(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:
                pass


class _Regroup:
    """Regroups tables into tables of exactly `rows` rows (the last may be shorter), so the
    profile's row groups do not depend on block_rows."""

    def __init__(self, rows: int):
        self.rows = rows
        self.pending: list = []
        self.count = 0

    def add(self, table) -> list:
        import pyarrow as pa

        if table.num_rows == 0:
            return []
        self.pending.append(table)
        self.count += table.num_rows
        out = []
        while self.count >= self.rows:
            merged = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
            out.append(merged.slice(0, self.rows))
            self.count -= self.rows
            self.pending = [merged.slice(self.rows)] if self.count else []
        return out

    def finish(self) -> list:
        import pyarrow as pa

        if not self.count:
            return []
        return [pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]]


class _Carried:
    """One examples.parquet column carried into the profile (a group column or guid), turned
    into the profile's string column. A group column becomes a dictionary array over the
    column's values seen so far, whose codes also give the counts per group."""

    def __init__(self, group: bool):
        self.group = group
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self._dictionary = None

    def _code(self, value: str) -> int:
        code = self.index.get(value)
        if code is None:
            code = self.index[value] = len(self.values)
            self.values.append(value)
            self._dictionary = None
        return code

    def dictionary(self):
        import pyarrow as pa

        if self._dictionary is None:
            self._dictionary = pa.array(self.values, pa.string())
        return self._dictionary

    def convert(self, col):
        """(profile column, codes into self.values or None): strings as they are, any other
        type as numpy's str() of it, as the profile always did."""
        import pyarrow as pa

        t = col.type
        strings = (pa.types.is_string, pa.types.is_large_string)
        if pa.types.is_dictionary(t) and any(k(t.value_type) for k in strings):
            if not self.group:
                return col.dictionary_decode().cast(pa.string()), None
            local, indices = col.dictionary, col.indices
        elif any(k(t) for k in strings):
            if not self.group:
                return col.cast(pa.string()), None
            enc = col.dictionary_encode()
            local, indices = enc.dictionary, enc.indices
        else:
            values = _to_numpy(col)
            out = pa.array(values.astype(str) if values.dtype.kind not in "OUS" else values, pa.string())
            if not self.group:
                return out, None
            enc = pa.array(values.astype(str), pa.string()).dictionary_encode()
            local, indices = enc.dictionary, enc.indices
        local = local.to_pylist()
        lut = np.fromiter((self._code(v) for v in local), np.int32, len(local))
        codes = lut[indices.to_numpy(zero_copy_only=False)] if len(lut) else np.zeros(len(indices), np.int32)
        return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), self.dictionary()), codes


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
    regions = regions or RegionRule()
    readers = _open_readers(runs, mapping)
    _check_compatible(readers)
    first = readers[0]
    schema = _schema(first.carry_columns, len(readers))
    output = Path(output)

    def new_summary() -> ProfileSummary:
        summary = ProfileSummary(label_names=first.label_names, group_columns=first.group_columns,
                                 late_fraction=late_fraction)  # fmt: skip
        summary.runs = [
            {"run_dir": str(r.run_dir), "run_id": r.manifest.run_id, "seed": r.manifest.seed, "model": r.manifest.model,
             "epochs": r.epochs, "recorded_by": r.manifest.recorded_by}
            for r in readers
        ]  # fmt: skip
        summary.output = str(output)
        return summary

    expected = None
    if regions.mode == "quantile":
        try:
            expected = _region_histograms(readers, block_rows)
        except Exception:  # the two-pass way below reports the problem, as it always has
            expected = None
        if expected is None:
            return _write_two_passes(readers, output, schema, new_summary(), regions, late_fraction, block_rows,
                                     progress)  # fmt: skip
        v_thr, c_thr = thresholds(regions, expected) if expected.count else (math.nan, math.nan)
    else:
        v_thr, c_thr = thresholds(regions, None)
    summary = new_summary()
    summary.thresholds = {"mode": regions.mode, "fraction": regions.fraction if regions.mode == "quantile" else None,
                          "variability": v_thr, "confidence": c_thr}  # fmt: skip
    try:
        _write_one_pass(readers, output, schema, summary, v_thr, c_thr, expected, late_fraction, block_rows, progress)
    except _HistogramMismatch:
        return _write_two_passes(readers, output, schema, new_summary(), regions, late_fraction, block_rows, progress)
    return summary


class _HistogramMismatch(Exception):
    """The region pre-pass saw other confidence/variability values than the main pass (the
    run changed in between): its thresholds cannot be trusted."""


def _profile_metadata(summary: ProfileSummary) -> dict:
    return {"late_fraction": summary.late_fraction, "region_thresholds": summary.thresholds, "runs": summary.runs,
            "label_names": summary.label_names, "group_columns": summary.group_columns}  # fmt: skip


def _final_schema(schema, summary: ProfileSummary):
    import pyarrow as pa

    final = schema.append(pa.field("region", pa.string()))
    return final.with_metadata({PROFILE_METADATA_KEY: json.dumps(_profile_metadata(summary)).encode()})


def _region_histograms(readers: list[RunReader], block_rows: int) -> RegionHistograms:
    """Confidence and variability histograms of the profile to come, from p_gold alone: the
    same values, computed the same way, as the main pass will compute (and check)."""
    hist = RegionHistograms()
    streams, epochs = [], []
    for r in readers:
        epochs.append(len(r.epochs))
        for e in r.epochs:
            paths = r.files[e]
            cols = ["p_gold"] if len(paths) == 1 else ["example_id", "p_gold"]  # ranks merge by example id
            streams.append(column_stream(paths, cols, block_rows))
    while True:
        chunks = next_chunks(streams)
        if chunks[0] is None:
            break
        n = len(chunks[0]["p_gold"])
        if any(c is None or len(c["p_gold"]) != n for c in chunks):
            raise ValueError("epochs differ in length")
        conf, var = [], []
        i = 0
        for E in epochs:
            p_gold = np.empty((E, n), np.float32)
            for e in range(E):
                p_gold[e] = chunks[i + e]["p_gold"]
            i += E
            conf.append(np.empty(n, np.float64))
            var.append(np.empty(n, np.float64))
            kernels.confidence_variability(p_gold, conf[-1], var[-1])
        if len(epochs) == 1:
            hist.add(conf[0], var[0])
        else:
            hist.add(_run_mean(conf), _run_mean(var))
    return hist


def _write_one_pass(readers, output, schema, summary, v_thr, c_thr, expected, late_fraction, block_rows, progress):
    """Validate, profile and write the final profile in one pass over the runs."""
    first = readers[0]
    final = _final_schema(schema, summary)
    carried = {c: _Carried(c in first.group_columns) for c in first.carry_columns}
    check = RegionHistograms() if expected is not None else None
    names = _ProfileNames(first.label_names, len(readers))
    bar = _progress(progress, first.num_examples * len(readers), "profiling")
    # Each run's blocks are read, validated and profiled on a thread of their own, one block
    # ahead (kernels single-threaded there: the threads already keep the cores busy), and the
    # profile is encoded and written on another, while this thread counts and assembles.
    iters = [Prefetched(r._blocks(block_rows, late_fraction=late_fraction, arrow_groups=True, serial=True))
             for r in readers]  # fmt: skip
    try:
        with atomic_path(output) as tmp:
            sink = _ProfileSink(tmp, final)
            worker = BackgroundWorker(sink.write)
            try:
                regroup = _Regroup(PROFILE_ROW_GROUP_ROWS)
                for blocks in aligned_blocks(readers, iters):
                    b0 = blocks[0]
                    stats = combine_runs([compute_block(b, late_fraction) for b in blocks])
                    conf, var = stats["confidence"], stats["variability"]
                    if check is not None:
                        check.add(conf, var)
                    codes = region_codes(conf, var, v_thr, c_thr)
                    summary.region_counts += np.bincount(codes, minlength=len(REGIONS))
                    columns, group_codes = {}, {}
                    for c, conv in carried.items():
                        columns[c], g_codes = conv.convert(b0.groups[c])
                        if conv.group:
                            group_codes[c] = (g_codes, conv.values)
                    summary.add_coded(stats["category"], b0.gold, group_codes)
                    table = _profile_table(b0.example_id, b0.gold, columns, stats, codes, names, final)
                    for part in regroup.add(table):
                        worker.submit(part)
                    bar.update(b0.n * len(readers))
                for part in regroup.finish():
                    worker.submit(part)
                worker.finish()
                if check is not None and not (
                    np.array_equal(check.confidence, expected.confidence)
                    and np.array_equal(check.variability, expected.variability)
                ):
                    raise _HistogramMismatch()
                sink.close()
            except BaseException:
                worker.abandon()
                sink.abort()
                raise
    finally:
        bar.close()
        for it in iters:
            it.close()


class _ProfileNames:
    """The dictionaries of the profile's string columns built from codes."""

    def __init__(self, label_names: Sequence[str], n_runs: int):
        import pyarrow as pa

        self.labels = pa.array(list(label_names), pa.string())
        self.categories = pa.array(list(CATEGORIES), pa.string())
        self.regions = pa.array(list(REGIONS), pa.string())
        self.n_runs = n_runs


def _profile_table(ids, labels, carried, stats, regions, names: _ProfileNames, schema):
    """One block of the profile as an Arrow table: the columns of `schema`, with label_name,
    the group columns, category, run_categories and region as dictionary arrays."""
    import pyarrow as pa

    dictionary = pa.DictionaryArray.from_arrays
    label = pa.array(labels, pa.int32())
    cols = [pa.array(ids, pa.int64()), label, dictionary(label, names.labels)]
    cols += list(carried.values())
    for k in ("epochs_seen", *STAT_COLUMNS):
        v = stats[k]
        if k == "first_learned_epoch":
            cols.append(pa.array(v, schema.field(k).type, mask=v < 0))
        elif k == "mean_margin":
            cols.append(pa.array(v, pa.float64(), mask=np.isnan(v)))
        else:
            cols.append(pa.array(v, schema.field(k).type))
    cols.append(dictionary(pa.array(stats["category"], pa.int8()), names.categories))
    if "category_agreement" in stats:
        cols.append(pa.array(stats["category_agreement"], pa.float64()))
        cols.append(pa.array(stats["confidence_std"], pa.float64()))
        cols.append(pa.array(stats["variability_std"], pa.float64()))
        cols.append(pa.array(stats["n_runs"], pa.int32()))
        rc = stats["run_categories"]
        flat = dictionary(pa.array(np.ascontiguousarray(rc).reshape(-1), pa.int8()), names.categories)
        cols.append(pa.FixedSizeListArray.from_arrays(flat, rc.shape[1]))
    cols.append(dictionary(pa.array(regions, pa.int8()), names.regions))
    return pa.Table.from_arrays(cols, names=schema.names)


def _write_two_passes(readers, output, schema, summary, regions, late_fraction, block_rows, progress) -> ProfileSummary:
    """The profile the older way (see the module docstring): pass one validates, profiles and
    writes a temporary Arrow file while it fills the region histograms; pass two adds the
    regions and writes the final file."""
    import pyarrow as pa

    first = readers[0]
    groups = first.group_columns
    hist = RegionHistograms()
    stage1 = temporary_sibling(output, ".stage1")
    bar = _progress(progress, first.num_examples * len(readers), "profiling")
    try:
        # Stage one is an uncompressed Arrow IPC file (one record batch per block): writing and
        # reading it back is a copy, where a Parquet stage cost a second encode and decode.
        with pa.OSFile(str(stage1), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            iters = [r.iter_blocks(block_rows) for r in readers]
            for blocks in aligned_blocks(readers, iters):
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
        _add_regions(stage1, output, v_thr, c_thr, summary, schema)
    finally:
        bar.close()
        stage1.unlink(missing_ok=True)
    return summary


def _add_regions(stage1: Path, output: Path, v_thr: float, c_thr: float, summary: ProfileSummary, schema) -> None:
    import pyarrow as pa

    final = _final_schema(schema, summary)
    with pa.OSFile(str(stage1), "rb") as source, atomic_path(output) as tmp:
        reader = pa.ipc.open_file(source)
        sink = _ProfileSink(tmp, final)
        try:
            for table in _regrouped(reader, PROFILE_ROW_GROUP_ROWS):
                conf = table.column("confidence").to_numpy()
                var = table.column("variability").to_numpy()
                codes = region_codes(conf, var, v_thr, c_thr)
                summary.region_counts += np.bincount(codes, minlength=len(REGIONS))
                table = table.append_column("region", _names(REGIONS, codes))
                sink.write(table.replace_schema_metadata(None))
            sink.close()
        except BaseException:
            sink.abort()
            raise


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


def aligned_blocks(readers: list[RunReader], iters):
    """One list of blocks per step, the i-th block from readers[i]'s iterator, checked to hold
    the same examples (ids and gold labels) as the first run's; ends with the first run."""
    while True:
        blocks = [next(it, None) for it in iters]
        if blocks[0] is None:
            return
        _check_same_examples(readers, blocks)
        yield blocks


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
