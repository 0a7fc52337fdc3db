"""Import a long table of per-example, per-epoch predictions (CSV, JSON Lines or Parquet).

One row per (example, epoch). A :class:`TableMapping` names the columns: the example id, the
epoch, the gold label and exactly one source of probabilities:

- ``probs``: a list column holding the full probability vector,
- ``logits``: a list column holding the raw logits,
- ``pred`` and ``p_gold``: the predicted label and the gold-label probability,
- ``prob``: binary tasks only, the probability of label 1.

In a CSV file a list column is a string such as ``"[0.1, 0.9]"`` (JSON or Python list, or a
NumPy array's ``"[0.1 0.9]"``). Gold and predicted labels are integers, or label names when
``label_names`` are given. Ids are integers; string ids are hashed exactly like Cartography
guids (see :func:`soicurate.recording.ids.stable_id`) and kept in
``examples.parquet`` (column ``guid``).

The table is scanned lazily with polars and one epoch is held in memory at a time. Rows in
error messages count data rows from 1 (a CSV header is not counted).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from soicurate.atomic import atomic_directory
from soicurate.errors import LogFormatError, UsageError
from soicurate.recording.adapters.cartography import (
    check_no_collisions,
    example_ids_from_guids,
    ids_from_known_guids,
    non_integer_guids,
)

TABLE_SUFFIXES = {".csv": "csv", ".jsonl": "ndjson", ".ndjson": "ndjson", ".parquet": "parquet"}
PROBABILITY_SOURCES = ("probs", "logits", "pred+p_gold", "prob")
_ROW = "__soicurate_row"
_TINY = float(np.finfo(np.float32).tiny)  # p_gold is clipped here before taking logs
_SUM_TOLERANCE = 1e-2  # |sum(probs) - 1| allowed per row (covers float16 storage)
_RANGE_TOLERANCE = 1e-6  # probabilities this far outside [0, 1] are rounding, and clipped


@dataclass
class TableMapping:
    """Which columns of a long table hold what.

    Exactly one probability source: `probs`, `logits`, `pred` together with `p_gold`, or
    `prob` (binary tasks: probability of label 1). `loss` and `margin` columns are optional
    (loss defaults to -log p_gold; margin is derived from probs/logits/prob, and absent for
    pred+p_gold unless given). `groups` are columns such as source, task or language that are
    constant per example and are carried into the profile.
    """

    id: str = "example_id"
    epoch: str = "epoch"
    gold: str = "gold"
    probs: str | None = None
    logits: str | None = None
    pred: str | None = None
    p_gold: str | None = None
    prob: str | None = None
    loss: str | None = None
    margin: str | None = None
    groups: tuple[str, ...] = field(default_factory=tuple)
    label_names: list[str] | None = None
    num_labels: int | None = None

    def __post_init__(self):
        if isinstance(self.groups, str):
            self.groups = (self.groups,)
        self.groups = tuple(self.groups or ())
        for name in ("id", "epoch", "gold", "probs", "logits", "pred", "p_gold", "prob", "loss", "margin"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise UsageError(f"table mapping: {name} must be a column name, got {value!r}")
        for g in self.groups:
            if not isinstance(g, str) or not g:
                raise UsageError(f"table mapping: group columns must be column names, got {g!r}")
        if len(set(self.groups)) != len(self.groups):
            raise UsageError(f"table mapping: group columns repeat a name: {', '.join(self.groups)}")
        if (self.pred is None) != (self.p_gold is None):
            given, other = ("pred", "p_gold") if self.pred is not None else ("p_gold", "pred")
            raise UsageError(f"table mapping: {given} needs {other} as well (they form one probability source)")
        given = self.sources()
        if not given:
            raise UsageError(
                "table mapping: name one probability source: probs (probability vector), logits, "
                "pred together with p_gold, or prob (binary tasks)"
            )
        if len(given) > 1:
            raise UsageError(
                f"table mapping: give exactly one probability source, not {' and '.join(given)}"
            )
        if self.label_names is not None:
            self.label_names = [str(x) for x in self.label_names]
            if len(self.label_names) < 2:
                raise UsageError("table mapping: label_names must list at least two labels")
            if len(set(self.label_names)) != len(self.label_names):
                raise UsageError("table mapping: label_names repeat a name")
        if self.num_labels is not None:
            if isinstance(self.num_labels, bool) or not isinstance(self.num_labels, int) or self.num_labels < 2:
                raise UsageError(f"table mapping: num_labels must be an integer >= 2, got {self.num_labels!r}")
            if self.label_names is not None and len(self.label_names) != self.num_labels:
                raise UsageError(
                    f"table mapping: num_labels is {self.num_labels} but {len(self.label_names)} label_names are given"
                )
        if self.prob is not None and (self.declared_num_labels() or 2) != 2:
            raise UsageError("table mapping: prob (probability of label 1) is for binary tasks only; use probs")

    def sources(self) -> list[str]:
        """The probability sources this mapping names (valid mappings name exactly one)."""
        out = [s for s in ("probs", "logits") if getattr(self, s) is not None]
        if self.pred is not None and self.p_gold is not None:
            out.append("pred+p_gold")
        if self.prob is not None:
            out.append("prob")
        return out

    @property
    def source(self) -> str:
        return self.sources()[0]

    def declared_num_labels(self) -> int | None:
        if self.num_labels is not None:
            return self.num_labels
        return len(self.label_names) if self.label_names is not None else None

    def columns(self) -> list[tuple[str, str]]:
        """(role, column) pairs for every mapped column, in a stable order."""
        roles = ["id", "epoch", "gold", "probs", "logits", "pred", "p_gold", "prob", "loss", "margin"]
        out = [(r, getattr(self, r)) for r in roles if getattr(self, r) is not None]
        return out + [("group", g) for g in self.groups]


# -- reading -------------------------------------------------------------------------------
def _scan(path: Path):
    import polars as pl

    if not path.exists():
        raise LogFormatError(path, "does not exist")
    if path.is_dir():
        raise LogFormatError(path, "is a directory (expected a CSV, JSONL or Parquet file)")
    kind = TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise LogFormatError(path, f"unknown table format {path.suffix!r} (use .csv, .jsonl, .ndjson or .parquet)")
    try:
        if path.stat().st_size == 0:
            raise LogFormatError(path, "file is empty (0 bytes)")
        if kind == "csv":
            lf = pl.scan_csv(path, infer_schema_length=10000)
        elif kind == "ndjson":
            lf = pl.scan_ndjson(path, infer_schema_length=10000)
        else:
            lf = pl.scan_parquet(path)
        schema = lf.collect_schema()
    except LogFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - polars/pyarrow/OS errors of many kinds
        raise LogFormatError(path, f"cannot read {kind.upper()} file ({_first_line(exc)})") from None
    return lf, schema


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _collect(lf, path: Path):
    try:
        return lf.collect()
    except Exception as exc:  # noqa: BLE001
        raise LogFormatError(path, f"cannot read the table ({_first_line(exc)})") from None


# -- column conversions (each raises LogFormatError naming the file and the row) -------------
class _Epoch:
    """One epoch's rows, with helpers that name the row and example in errors."""

    def __init__(self, path: Path, df, mapping: TableMapping, value, label):
        self.path = path
        self.df = df
        self.m = mapping
        self.value = value  # the original epoch value
        self.label = label  # e.g. "epoch 3"
        self.rows = df[_ROW].to_numpy()
        self.ids: np.ndarray | None = None  # set once computed (file order)

    def fail(self, i: int, problem: str):
        ex = None if self.ids is None else int(self.ids[i])
        raise LogFormatError(self.path, f"{self.label}: {problem}", row=int(self.rows[i]), example_id=ex)

    def no_nulls(self, col: str, role: str) -> None:
        s = self.df[col]
        if s.null_count():
            i = int(np.flatnonzero(s.is_null().to_numpy())[0])
            self.fail(i, f"column {col!r} ({role}) has a missing value")

    def labels(self, col: str, role: str, k: int | None) -> np.ndarray:
        import polars as pl

        self.no_nulls(col, role)
        s = self.df[col]
        dt = s.dtype
        if dt == pl.Boolean:
            out = s.cast(pl.Int64).to_numpy()
        elif dt.is_integer():
            out = s.cast(pl.Int64, strict=False).to_numpy()
            if s.cast(pl.Int64, strict=False).null_count():
                i = int(np.flatnonzero(s.cast(pl.Int64, strict=False).is_null().to_numpy())[0])
                self.fail(i, f"{role} label {s[i]} in column {col!r} is too large")
        elif dt.is_float():
            v = s.to_numpy()
            bad = np.flatnonzero(~np.isfinite(v) | (v != np.round(v)))
            if len(bad):
                self.fail(int(bad[0]), f"{role} label {v[bad[0]]} in column {col!r} is not an integer")
            out = v.astype(np.int64)
        elif dt == pl.String or isinstance(dt, (pl.Categorical, pl.Enum)):
            names = self.m.label_names
            s = s.cast(pl.String)
            if names is None:
                self.fail(0, f"{role} column {col!r} holds names ({s[0]!r}); give label_names to map them to ids")
            codes = s.replace_strict(names, list(range(len(names))), default=None, return_dtype=pl.Int64)
            if codes.null_count():
                i = int(np.flatnonzero(codes.is_null().to_numpy())[0])
                self.fail(i, f"{role} label {s[i]!r} is not one of the label names {names}")
            out = codes.to_numpy()
        else:
            self.fail(0, f"{role} column {col!r} must hold integer labels (found {dt})")
        out = np.asarray(out, dtype=np.int64)
        if k is not None:
            bad = np.flatnonzero((out < 0) | (out >= k))
            if len(bad):
                self.fail(int(bad[0]), f"{role} label {out[bad[0]]} out of range (the task has {k} labels: 0..{k - 1})")
        return out

    def numbers(self, col: str, role: str) -> np.ndarray:
        import polars as pl

        self.no_nulls(col, role)
        s = self.df[col]
        if not (s.dtype.is_numeric() or s.dtype == pl.Boolean):
            self.fail(0, f"column {col!r} ({role}) must hold numbers (found {s.dtype})")
        v = s.cast(pl.Float64).to_numpy()
        bad = np.flatnonzero(~np.isfinite(v))
        if len(bad):
            self.fail(int(bad[0]), f"{role} is {'NaN' if np.isnan(v[bad[0]]) else 'infinite'} (column {col!r})")
        return v

    def probabilities(self, col: str, role: str) -> np.ndarray:
        v = self.numbers(col, role)
        bad = np.flatnonzero((v < -_RANGE_TOLERANCE) | (v > 1 + _RANGE_TOLERANCE))
        if len(bad):
            self.fail(int(bad[0]), f"{role} {v[bad[0]]} is outside [0, 1] (column {col!r})")
        return np.clip(v, 0.0, 1.0)

    def vectors(self, col: str, role: str, k: int | None) -> np.ndarray:
        """(n, K) float64 from a list/array column, or from strings like "[0.1, 0.9]"."""
        import polars as pl

        self.no_nulls(col, role)
        s = self.df[col]
        if s.dtype == pl.String:
            parts = (
                s.str.strip_chars()
                .str.strip_chars("[]()")
                .str.strip_chars()
                .str.replace_all(r"[,;\s]+", " ")
                .str.split(" ")
            )
            parsed = parts.cast(pl.List(pl.Float64), strict=False)
            bad = parsed.list.eval(pl.element().is_null()).list.any() | parsed.is_null()
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                text = s[i] if len(s[i]) <= 60 else s[i][:57] + "..."
                self.fail(i, f"column {col!r} ({role}) is not a list of numbers: {text!r}")
            s = parsed
        elif isinstance(s.dtype, pl.Array):
            s = s.cast(pl.List(s.dtype.inner))
        if not isinstance(s.dtype, pl.List) or not (s.dtype.inner.is_numeric()):
            self.fail(0, f"column {col!r} ({role}) must hold lists of numbers (found {s.dtype})")
        lengths = s.list.len().to_numpy()
        width = int(lengths[0]) if k is None else k
        bad = np.flatnonzero(lengths != width)
        if len(bad):
            i = int(bad[0])
            self.fail(i, f"column {col!r} ({role}) has {lengths[i]} values, expected {width} (one per label)")
        if width < 2:
            self.fail(0, f"column {col!r} ({role}) has {width} value(s); need at least 2 labels")
        flat = s.explode().cast(pl.Float64).to_numpy()  # nulls inside lists become NaN
        v = flat.reshape(-1, width)
        bad_rows = np.flatnonzero(~np.isfinite(v).all(axis=1))
        if len(bad_rows):
            self.fail(int(bad_rows[0]), f"column {col!r} ({role}) holds a NaN, infinite or missing value")
        return v


# -- import ----------------------------------------------------------------------------------
def import_table(path: str | Path, out_dir: str | Path, mapping: TableMapping, *, overwrite: bool = False) -> Path:
    """Convert a long table (CSV, JSONL/NDJSON or Parquet) into a native run directory.

    Epochs are sorted by their values and numbered 1..E (the original values are kept in the
    manifest's ``extra["source_epochs"]``). Every epoch must hold the same examples, with the
    same gold labels and group values. Any problem raises LogFormatError naming the file, the
    row and the example id, and leaves nothing at `out_dir`.
    """
    import polars as pl

    from soicurate.recording.writer import DynamicsWriter

    if not isinstance(mapping, TableMapping):
        raise UsageError("import_table needs a TableMapping (column names for id, epoch, gold and probabilities)")
    path = Path(path)
    out_dir = Path(out_dir)
    lf, schema = _scan(path)
    available = list(schema.names())
    for role, col in mapping.columns():
        if col not in schema:
            raise LogFormatError(
                path, f"column {col!r} (mapped as {role}) not found; available columns: {', '.join(available)}"
            )
    if out_dir.exists() and not overwrite:
        raise UsageError(f"{out_dir}: already exists (choose another directory or overwrite it)")
    cols = list(dict.fromkeys(c for _, c in mapping.columns()))
    lf = lf.select(cols).with_row_index(_ROW, offset=1)

    epoch_dtype = schema[mapping.epoch]
    if not epoch_dtype.is_numeric():
        raise LogFormatError(path, f"epoch column {mapping.epoch!r} must hold numbers (found {epoch_dtype})")
    epochs_df = _collect(lf.group_by(mapping.epoch).agg(pl.col(_ROW).min()).sort(mapping.epoch, nulls_last=True), path)
    if epochs_df.height == 0:
        raise LogFormatError(path, "table has no rows")
    values = epochs_df[mapping.epoch].to_list()
    for v, r in zip(values, epochs_df[_ROW].to_list()):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            raise LogFormatError(path, f"epoch column {mapping.epoch!r} has a missing or NaN value", row=r)

    k = _num_labels(lf, mapping, path)
    source = mapping.source
    store_probs = source in ("probs", "logits", "prob")
    store_margin = source != "pred+p_gold" or mapping.margin is not None

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        writer = None
        first: dict | None = None
        for native, value in enumerate(values, start=1):
            df = _collect(lf.filter(pl.col(mapping.epoch) == value), path)
            ep = _Epoch(path, df, mapping, value, f"epoch {value}")
            ep.no_nulls(mapping.id, "id")
            ids, hashed = _ids(ep, None if first is None else first["hashed"], first)
            ep.ids = ids
            order = np.argsort(ids, kind="stable")
            sorted_ids = ids[order]
            dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
            if len(dup):
                a, b = int(order[dup[0]]), int(order[dup[0] + 1])
                if hashed and df[mapping.id][a] != df[mapping.id][b]:
                    check_no_collisions(path, sorted_ids, df[mapping.id].cast(pl.String).gather(order), rows=ep.rows[order])
                ep.fail(b, f"duplicate row for this example and epoch (first at row {int(ep.rows[a])})")

            vec = None
            if source in ("probs", "logits"):
                vec = ep.vectors(getattr(mapping, source), source, k)
                k = vec.shape[1]
            gold = ep.labels(mapping.gold, "gold", k if k is not None else (2 if source == "prob" else None))
            if k is None:  # unreachable: _num_labels decides for pred+p_gold and prob
                raise AssertionError("number of labels undetermined")

            if first is None:
                first = {"hashed": hashed, "ids": sorted_ids, "gold": gold[order], "label": ep.label,
                         "groups": {}, "guid": None}  # fmt: skip
                if hashed:
                    first["guid"] = df[mapping.id].cast(pl.String).gather(order).to_numpy()
                for g in mapping.groups:
                    ep.no_nulls(g, "group")
                    first["groups"][g] = df[g].cast(pl.String).gather(order)
                names = mapping.label_names or [str(i) for i in range(k)]
                if len(names) != k:
                    raise LogFormatError(
                        path, f"the table has {k} labels but {len(names)} label names were given"
                    )
                extra = {"imported_from": "table", "source": str(path), "source_epochs": values,
                         "example_ids": "blake2b(id)" if hashed else "id", "mapping": _mapping_dict(mapping)}  # fmt: skip
                writer = DynamicsWriter(
                    tmp, names, recorded_by="import", store_margin=store_margin, store_probs=store_probs, extra=extra
                )
            else:
                _check_same_examples(ep, order, sorted_ids, gold, first)

            cols = _derive(ep, mapping, source, vec, gold, k)
            writer.log(
                sorted_ids,
                gold[order],
                cols["pred"][order],
                cols["p_gold"][order],
                cols["loss"][order],
                None if cols["margin"] is None else cols["margin"][order],
                None if cols["probs"] is None else cols["probs"][order],
            )
            writer.end_epoch(native)
            del df, ep, vec, cols

        ex_cols = {g: s.to_numpy() for g, s in first["groups"].items()}
        if first["hashed"]:
            ex_cols["guid"] = first["guid"]
        if ex_cols:
            writer.write_examples(first["ids"], ex_cols, groups=list(mapping.groups))
    return out_dir


def _mapping_dict(mapping: TableMapping) -> dict:
    d = asdict(mapping)
    d["groups"] = list(d["groups"])
    return {k: v for k, v in d.items() if v not in (None, [])}


def _num_labels(lf, mapping: TableMapping, path: Path) -> int | None:
    """The number of labels when the mapping or the source fixes it without reading vectors."""
    import polars as pl

    declared = mapping.declared_num_labels()
    if declared is not None:
        return declared
    if mapping.source == "prob":
        return 2
    if mapping.source != "pred+p_gold":
        return None  # from the vector width of the first epoch
    exprs = []
    for col in (mapping.gold, mapping.pred):
        exprs.append(pl.col(col).cast(pl.Float64, strict=False).max().alias(col))
    maxima = _collect(lf.select(exprs), path).row(0)
    top = max((int(x) for x in maxima if x is not None and math.isfinite(x)), default=1)
    return max(2, top + 1)


def _ids(ep: _Epoch, hashed: bool | None, first: dict | None) -> tuple[np.ndarray, bool]:
    import polars as pl

    col = ep.m.id
    s = ep.df[col]
    dt = s.dtype
    # One column has one dtype in every epoch, so only string ids can be hashed.
    if dt.is_integer():
        v = s.cast(pl.Int64, strict=False)
        if v.null_count():
            i = int(np.flatnonzero(v.is_null().to_numpy())[0])
            ep.fail(i, f"id {s[i]} does not fit in a 64-bit signed integer")
        return v.to_numpy().astype(np.int64), False
    if dt.is_float():
        v = s.to_numpy()
        bad = np.flatnonzero(~np.isfinite(v) | (v != np.round(v)) | (np.abs(v) >= 2.0**63))
        if len(bad):
            ep.fail(int(bad[0]), f"id {v[bad[0]]} in column {col!r} is not an integer")
        return v.astype(np.int64), False
    if dt == pl.String or isinstance(dt, (pl.Categorical, pl.Enum)):
        s = s.cast(pl.String)
        if hashed:  # look the ids up among the first epoch's instead of hashing again
            ids, unknown = ids_from_known_guids(s, first["guid"], first["ids"])
            if unknown is not None:
                ep.fail(unknown, f"example ids differ between epochs: id {s[unknown]!r} is not in {first['label']}")
            return ids, True
        if hashed is False:
            bad = non_integer_guids(s)
            if len(bad):
                ep.fail(int(bad[0]), f"id {s[int(bad[0])]!r} is not among {first['label']}'s ids (which are integers)")
        return example_ids_from_guids(s, hashed=hashed)
    ep.fail(0, f"id column {col!r} must hold integers or strings (found {dt})")


def _check_same_examples(ep: _Epoch, order, sorted_ids, gold, first) -> None:
    import polars as pl

    ids0 = first["ids"]
    if len(sorted_ids) != len(ids0) or not np.array_equal(sorted_ids, ids0):
        extra = np.flatnonzero(~np.isin(sorted_ids, ids0))
        if len(extra):
            ep.fail(int(order[extra[0]]), f"example ids differ between epochs: this example is not in {first['label']}")
        missing = np.flatnonzero(~np.isin(ids0, sorted_ids))
        ex = int(ids0[missing[0]])
        name = f" (id {first['guid'][missing[0]]!r})" if first["hashed"] else ""
        raise LogFormatError(
            ep.path,
            f"example ids differ between epochs: {ep.label} has no row for an example of {first['label']}{name}",
            example_id=ex,
        )
    g = gold[order]
    changed = np.flatnonzero(g != first["gold"])
    if len(changed):
        j = int(changed[0])
        ep.fail(int(order[j]), f"gold label changes between epochs ({int(first['gold'][j])} in {first['label']}, {int(g[j])} here)")
    for name, values0 in first["groups"].items():
        ep.no_nulls(name, "group")
        values = ep.df[name].cast(pl.String).gather(order)
        diff = values != values0
        if diff.any():
            j = int(np.flatnonzero(diff.to_numpy())[0])
            ep.fail(
                int(order[j]),
                f"group column {name!r} changes between epochs ({values0[j]!r} in {first['label']}, {values[j]!r} here)",
            )


def _derive(ep: _Epoch, m: TableMapping, source: str, vec, gold, k: int) -> dict:
    """pred, p_gold, loss, margin and probs (file order) for one epoch."""
    from soicurate.recording.writer import softmax_stats

    n = len(gold)
    rows = np.arange(n)
    probs = margin = None
    if source == "logits":
        stats = softmax_stats(vec, gold)
        pred, p_gold, loss, margin, probs = stats["pred"], stats["p_gold"], stats["loss"], stats["margin"], stats["probs"]
    elif source == "probs":
        bad = np.flatnonzero(((vec < -_RANGE_TOLERANCE) | (vec > 1 + _RANGE_TOLERANCE)).any(axis=1))
        if len(bad):
            i = int(bad[0])
            ep.fail(i, f"probs {vec[i].tolist()} has a value outside [0, 1] (column {m.probs!r})")
        probs = np.clip(vec, 0.0, 1.0)
        sums = probs.sum(axis=1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > _SUM_TOLERANCE)
        if len(bad):
            i = int(bad[0])
            ep.fail(i, f"probs sum to {sums[i]:.6g}, not 1 (column {m.probs!r}; logits belong in the logits column)")
        p_gold = probs[rows, gold]
        pred = probs.argmax(axis=1)
        others = probs.copy()
        others[rows, gold] = -1.0
        margin = np.log(np.maximum(p_gold, _TINY)) - np.log(np.maximum(others.max(axis=1), _TINY))
        loss = -np.log(np.maximum(p_gold, _TINY))
    elif source == "prob":
        p1 = ep.probabilities(m.prob, "prob")
        p_gold = np.where(gold == 1, p1, 1.0 - p1)
        pred = (p1 >= 0.5).astype(np.int64)
        probs = np.stack([1.0 - p1, p1], axis=1)
        margin = np.log(np.maximum(p_gold, _TINY)) - np.log(np.maximum(1.0 - p_gold, _TINY))
        loss = -np.log(np.maximum(p_gold, _TINY))
    else:  # pred + p_gold
        pred = ep.labels(m.pred, "pred", k)
        p_gold = ep.probabilities(m.p_gold, "p_gold")
        loss = -np.log(np.maximum(p_gold, _TINY))
    if m.loss is not None:
        loss = ep.numbers(m.loss, "loss")
    if m.margin is not None:
        margin = ep.numbers(m.margin, "margin")
    return {"pred": pred, "p_gold": p_gold, "loss": loss, "margin": margin, "probs": probs}
