"""Import Dataset Cartography logs (Swayamdipta et al., 2020) into soicurate's native format.

Cartography writes one JSON Lines file per epoch::

    OUTPUT_DIR/training_dynamics/dynamics_epoch_0.jsonl
    OUTPUT_DIR/training_dynamics/dynamics_epoch_1.jsonl
    ...

and each line is ``{"guid": ..., "logits_epoch_N": [float, ...], "gold": int}``. The source
epoch numbers N are kept in the manifest (``extra["source_epochs"]``); the native epochs are
numbered 1..E in sorted order.

Example ids: when every guid is an integer (or an integer written as a string, in canonical
form such as ``"17"``), the example id is that integer. Otherwise every guid is hashed to a
stable 63-bit id (:func:`stable_example_id`) and the original guid strings are kept in
``examples.parquet`` (column ``guid``), so the ids are the same in every run of the same data.

Reading: each file is parsed with polars (fast); if polars cannot read it, or the parsed data
breaks any rule, the file is read again line by line with :func:`json.loads`, which finds the
first bad line and reports it. Rows in error messages are 1-based line numbers of the file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from soicurate.atomic import atomic_directory
from soicurate.errors import LogFormatError, UsageError
from soicurate.recording.ids import stable_id, stable_ids

DYNAMICS_DIR = "training_dynamics"
_FILE_RE = re.compile(r"^dynamics_epoch_(\d+)\.jsonl$")
_INT_GUID = r"^(?:0|-?[1-9][0-9]*)$"


# -- example ids from guids (shared with the table adapter) --------------------------------
stable_example_id = stable_id  # one guid -> one id, the same everywhere (soicurate.recording.ids)


def ids_from_known_guids(guids, known_guids, known_ids: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Ids of `guids` looked up among guids already seen (an earlier epoch) instead of hashing.

    Returns (ids, index of the first guid that is not known, or None).
    """
    import polars as pl

    s = _as_string_series(guids)
    looked_up = s.replace_strict(
        _as_string_series(known_guids), pl.Series(known_ids, dtype=pl.Int64), default=None, return_dtype=pl.Int64
    )
    if looked_up.null_count():
        return np.empty(0, np.int64), int(np.flatnonzero(looked_up.is_null().to_numpy())[0])
    return looked_up.to_numpy().astype(np.int64, copy=False), None


def guids_are_integers(guids) -> bool:
    """True when every guid string is an integer in canonical form that fits in int64."""
    import polars as pl

    s = _as_string_series(guids)
    if s.null_count() or not s.str.contains(_INT_GUID).all():
        return False
    return s.cast(pl.Int64, strict=False).null_count() == 0


def example_ids_from_guids(guids, hashed: bool | None = None) -> tuple[np.ndarray, bool]:
    """(int64 example ids, hashed) for guid strings.

    `hashed=None` decides: integer ids when every guid is an integer string, hashed ids
    otherwise. With `hashed=False` every guid must be an integer string (polars raises if not).
    Uniqueness is not checked here; see :func:`check_no_collisions`.
    """
    import polars as pl

    s = _as_string_series(guids)
    if hashed is None:
        hashed = not guids_are_integers(s)
    if hashed:
        ids = stable_ids(s.to_list())
    else:
        ids = s.cast(pl.Int64, strict=True).to_numpy()
    return np.ascontiguousarray(ids, dtype=np.int64), hashed


def non_integer_guids(guids) -> np.ndarray:
    """Indices of the guids that are not canonical int64 integers."""
    import polars as pl

    s = _as_string_series(guids)
    ok = s.str.contains(_INT_GUID) & s.cast(pl.Int64, strict=False).is_not_null()
    return np.flatnonzero(~ok.fill_null(False).to_numpy())


def check_no_collisions(path, ids_sorted: np.ndarray, guids_sorted, *, rows=None) -> None:
    """LogFormatError when two different guids received the same (hashed) example id."""
    dup = np.flatnonzero(ids_sorted[1:] == ids_sorted[:-1])
    if len(dup):
        i = int(dup[0])
        g = _as_string_series(guids_sorted)
        row = None if rows is None else int(rows[i + 1])
        raise LogFormatError(
            path,
            f"guids {g[i]!r} and {g[i + 1]!r} hash to the same example id {int(ids_sorted[i])}; "
            "give the examples integer ids instead",
            row=row,
        )


def _as_string_series(guids):
    import polars as pl

    if isinstance(guids, pl.Series):
        return guids if guids.dtype == pl.String else guids.cast(pl.String)
    return pl.Series("guid", [str(g) for g in guids], dtype=pl.String)


# -- finding the files ---------------------------------------------------------------------
def find_cartography_files(path: str | Path, required: bool = True) -> dict[int, Path]:
    """Source epoch number -> file for a Cartography log directory, in epoch order.

    Looks in `path/training_dynamics/` first, then in `path` itself, for files named
    ``dynamics_epoch_N.jsonl``. Returns {} when none is found and `required` is False;
    raises LogFormatError when `required` is True, and always when two files hold the same
    epoch (``dynamics_epoch_1.jsonl`` and ``dynamics_epoch_01.jsonl``).
    """
    path = Path(path)
    if not path.exists():
        if required:
            raise LogFormatError(path, "does not exist")
        return {}
    if not path.is_dir():
        if required:
            raise LogFormatError(path, "not a directory (expected a Cartography output or training_dynamics directory)")
        return {}
    for folder in (path / DYNAMICS_DIR, path):
        if not folder.is_dir():
            continue
        found: dict[int, Path] = {}
        for entry in sorted(folder.iterdir()):
            m = _FILE_RE.match(entry.name)
            if not m or not entry.is_file():
                continue
            n = int(m.group(1))
            if n in found:  # Cartography logs, but ambiguous: an error even when not required
                raise LogFormatError(entry, f"two files hold epoch {n}: {found[n].name} and {entry.name}")
            found[n] = entry
        if found:
            return dict(sorted(found.items()))
    if required:
        raise LogFormatError(
            path,
            f"no Cartography logs found (expected {DYNAMICS_DIR}/dynamics_epoch_N.jsonl or dynamics_epoch_N.jsonl)",
        )
    return {}


# -- parsing one epoch file ----------------------------------------------------------------
@dataclass
class _EpochLog:
    guid: object  # polars String Series, file order
    gold: np.ndarray  # (n,) int64
    logits: np.ndarray  # (n, K) float64
    lines: np.ndarray | None  # (n,) 1-based line numbers (None from the fast path)


def _key(n: int) -> str:
    return f"logits_epoch_{n}"


def _read_epoch(path: Path, n: int, num_labels: int | None) -> _EpochLog:
    log = _read_fast(path, n, num_labels)
    return log if log is not None else _read_slow(path, n, num_labels)


def _read_fast(path: Path, n: int, num_labels: int | None) -> _EpochLog | None:
    """polars parse plus vectorised checks; None whenever anything is off (the slow path explains)."""
    import polars as pl

    key = _key(n)
    try:
        df = pl.read_ndjson(
            path, schema_overrides={key: pl.List(pl.Float64), "gold": pl.Int64}, infer_schema_length=1000
        )
    except Exception:  # noqa: BLE001 - polars raises many types; the slow path reports precisely
        return None
    if df.height == 0 or "guid" not in df.columns or df.schema["guid"] not in (pl.Int64, pl.String):
        return None
    if df["guid"].null_count() or df["gold"].null_count() or df[key].null_count():
        return None
    lengths = df[key].list.len()
    k = int(lengths[0])
    if k < 2 or (num_labels is not None and k != num_labels) or (lengths != k).any():
        return None
    logits = df[key].explode().to_numpy().reshape(-1, k)
    gold = df["gold"].to_numpy()
    if not np.isfinite(logits).all() or gold.min() < 0 or gold.max() >= k:
        return None
    guid = df["guid"].cast(pl.String)
    if guid.n_unique() != len(guid):
        return None
    return _EpochLog(guid, gold.astype(np.int64), logits.astype(np.float64, copy=False), None)


def _read_slow(path: Path, n: int, num_labels: int | None) -> _EpochLog:
    """Line-by-line parse that raises a LogFormatError at the first bad line."""
    import polars as pl

    key = _key(n)
    guids: list[str] = []
    golds: list[int] = []
    rows: list[list[float]] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    k = num_labels
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise LogFormatError(path, f"cannot read file ({exc.strerror})") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except UnicodeDecodeError:
                raise LogFormatError(path, "line is not valid UTF-8 text", row=lineno) from None
            except json.JSONDecodeError as exc:
                what = exc.msg.removesuffix(" at")
                raise LogFormatError(
                    path, f"invalid JSON: {what} at column {exc.colno} (truncated or corrupt line?)", row=lineno
                ) from None
            if not isinstance(rec, dict):
                raise LogFormatError(path, f"expected a JSON object, found {type(rec).__name__}", row=lineno)
            if "guid" not in rec:
                raise LogFormatError(path, "missing key 'guid'", row=lineno)
            guid = rec["guid"]
            if isinstance(guid, bool) or not isinstance(guid, (int, str)):
                raise LogFormatError(path, f"guid must be a string or an integer, found {json.dumps(guid)}", row=lineno)
            g = str(guid)
            where = f"guid {g!r}"
            if key not in rec:
                others = sorted(k2 for k2 in rec if isinstance(k2, str) and k2.startswith("logits_epoch_"))
                if others:
                    raise LogFormatError(
                        path, f"{where}: has {others[0]!r} but this file is epoch {n} (expected {key!r})", row=lineno
                    )
                raise LogFormatError(path, f"{where}: missing key {key!r}", row=lineno)
            if "gold" not in rec:
                raise LogFormatError(path, f"{where}: missing key 'gold'", row=lineno)
            logits = rec[key]
            if not isinstance(logits, list) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in logits
            ):
                raise LogFormatError(path, f"{where}: {key} must be a list of numbers", row=lineno)
            if len(logits) < 2:
                raise LogFormatError(path, f"{where}: {key} has {len(logits)} value(s); need at least 2 labels", row=lineno)
            if k is None:
                k = len(logits)
            elif len(logits) != k:
                raise LogFormatError(
                    path, f"{where}: {key} has {len(logits)} values but the logs have {k} labels", row=lineno
                )
            if not all(math.isfinite(x) for x in logits):
                raise LogFormatError(path, f"{where}: {key} holds a NaN or infinite value", row=lineno)
            gold = rec["gold"]
            if isinstance(gold, bool) or not isinstance(gold, int):
                raise LogFormatError(path, f"{where}: gold must be an integer label, found {json.dumps(gold)}", row=lineno)
            if not 0 <= gold < k:
                raise LogFormatError(path, f"{where}: gold label {gold} out of range (0..{k - 1})", row=lineno)
            if g in seen:
                raise LogFormatError(path, f"duplicate guid {g!r} (first on line {seen[g]})", row=lineno)
            seen[g] = lineno
            guids.append(g)
            golds.append(gold)
            rows.append(logits)
            lines.append(lineno)
    if not guids:
        raise LogFormatError(path, "file is empty (no records)")
    return _EpochLog(
        pl.Series("guid", guids, dtype=pl.String),
        np.asarray(golds, dtype=np.int64),
        np.asarray(rows, dtype=np.float64),
        np.asarray(lines, dtype=np.int64),
    )


def _line_of(path: Path, guid: str) -> int | None:
    """1-based line holding `guid` (error path only)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            if isinstance(rec, dict) and str(rec.get("guid")) == guid:
                return lineno
    return None


# -- import ----------------------------------------------------------------------------------
def import_cartography(
    src: str | Path,
    out_dir: str | Path,
    label_names: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Convert a Cartography log directory into a native dynamics run directory at `out_dir`.

    Stores p_gold, pred, loss, margin and the full probability vectors (all derived from the
    logits). `label_names` default to "0".."K-1". The output appears only when complete; any
    problem raises LogFormatError naming the file, the line and the guid, and leaves nothing
    at `out_dir`.
    """
    from soicurate.recording.writer import DynamicsWriter

    src = Path(src)
    out_dir = Path(out_dir)
    files = find_cartography_files(src, required=True)
    if out_dir.exists() and not overwrite:
        raise UsageError(f"{out_dir}: already exists (choose another directory or overwrite it)")
    names = [str(x) for x in label_names] if label_names is not None else None
    if names is not None and len(names) < 2:
        raise UsageError("label_names must list at least two labels")

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        writer = None
        first = None  # (path, ids sorted, gold sorted, guids sorted)
        hashed = None
        k = None  # the number of labels, fixed by the first epoch file
        for epoch, (n, path) in enumerate(files.items(), start=1):
            log = _read_epoch(path, n, k)
            k = log.logits.shape[1]
            if names is not None and len(names) != k:
                raise LogFormatError(path, f"logits have {k} values but {len(names)} label names were given")
            if first is None:
                ids, hashed = example_ids_from_guids(log.guid)
            elif hashed:
                ids, unknown = ids_from_known_guids(log.guid, first[3], first[1])
                if unknown is not None:
                    _raise_not_in_first(path, log, unknown, first[0])
            else:
                bad = non_integer_guids(log.guid)
                if len(bad):
                    _raise_not_in_first(path, log, int(bad[0]), first[0])
                ids, _ = example_ids_from_guids(log.guid, hashed=False)
            order = np.argsort(ids, kind="stable")
            ids = ids[order]
            gold = log.gold[order]
            guids = log.guid.gather(order)
            if first is None:
                if hashed:
                    check_no_collisions(path, ids, guids, rows=None if log.lines is None else log.lines[order])
                first = (path, ids, gold, guids)
                writer = DynamicsWriter(
                    tmp,
                    names if names is not None else [str(i) for i in range(k)],
                    recorded_by="import",
                    store_margin=True,
                    store_probs=True,
                    extra={
                        "imported_from": "cartography",
                        "source": str(src),
                        "source_epochs": list(files),
                        "example_ids": "blake2b(guid)" if hashed else "guid",
                    },
                )
            else:
                _check_same_examples(path, log, order, ids, gold, guids, first)
            writer.log_logits(ids, log.logits[order], gold)
            writer.end_epoch(epoch)
            del log
        if hashed:
            writer.write_examples(first[1], {"guid": first[3].to_numpy()}, groups=[])
    return out_dir


def _raise_not_in_first(path: Path, log: _EpochLog, i: int, first_path: Path):
    g = log.guid[i]
    line = int(log.lines[i]) if log.lines is not None else _line_of(path, g)
    raise LogFormatError(path, f"guids differ between epochs: guid {g!r} is not in {first_path.name}", row=line)


def _check_same_examples(path, log, order, ids, gold, guids, first) -> None:
    first_path, first_ids, first_gold, first_guids = first
    if len(ids) != len(first_ids) or not np.array_equal(ids, first_ids):
        extra = np.flatnonzero(~np.isin(ids, first_ids))
        if len(extra):
            _raise_not_in_first(path, log, int(order[extra[0]]), first_path)
        missing = np.flatnonzero(~np.isin(first_ids, ids))
        if len(missing):
            g = first_guids[int(missing[0])]
            raise LogFormatError(
                path, f"guids differ between epochs: guid {g!r} of {first_path.name} is missing here"
            )
        raise LogFormatError(path, f"guids differ from {first_path.name}'s")  # unreachable: ids are unique
    changed = np.flatnonzero(gold != first_gold)
    if len(changed):
        j = int(changed[0])
        g = guids[j]
        line = int(log.lines[order[j]]) if log.lines is not None else _line_of(path, g)
        raise LogFormatError(
            path,
            f"guid {g!r}: gold label changes between epochs ({int(first_gold[j])} in {first_path.name}, "
            f"{int(gold[j])} here)",
            row=line,
        )
