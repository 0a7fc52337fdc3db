"""Stream Parquet columns in blocks of an exact number of rows, memory bounded by the block.

One epoch is either one file or one file per rank; rank files are merged by example_id on the
fly (each rank's file is sorted), so no epoch is ever loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from soicurate.errors import LogFormatError

Chunk = dict[str, np.ndarray]


def _batches(path: Path, columns: Sequence[str], batch_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: the default (True) reads every selected column chunk of the whole
        # file into memory before the first batch, so memory grew with the file, not the block.
        # buffer_size streams each column chunk in 1 MiB reads, bounding memory for files with
        # very large row groups too.
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        strings = _string_columns(pf.schema_arrow, columns)
        if strings:
            # Strings (group columns such as source) are read as dictionary arrays: making one
            # Python object per distinct value and indexing is far faster than one per row.
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20, read_dictionary=strings)
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns), use_threads=True):
            chunk = {}
            for name, col in zip(batch.schema.names, batch.columns):
                if col.null_count:
                    first = col.is_null().to_numpy(zero_copy_only=False).argmax()
                    raise LogFormatError(path, f"column {name} has missing (null) values", row=None if first is None else int(first))
                chunk[name] = _to_numpy(col)
            yield chunk
    except LogFormatError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on corrupt data
        raise LogFormatError(path, f"cannot read Parquet data ({str(exc).splitlines()[0]})") from None


def _string_columns(schema, columns: Sequence[str]) -> list[str]:
    import pyarrow as pa

    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    return [c for c in columns if c in schema.names and any(k(schema.field(c).type) for k in kinds)]


def _to_numpy(col) -> np.ndarray:
    """A column without nulls as numpy (dictionary arrays decoded: strings become objects)."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        return col.dictionary.to_numpy(zero_copy_only=False)[col.indices.to_numpy(zero_copy_only=False)]
    return col.to_numpy(zero_copy_only=False)


def _concat(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def rechunk(chunks: Iterator[Chunk], rows: int) -> Iterator[Chunk]:
    """Regroup chunks of any size into chunks of exactly `rows` rows (the last may be shorter)."""
    pending: list[Chunk] = []
    count = 0
    for chunk in chunks:
        n = len(chunk["example_id"])
        if n == 0:
            continue
        pending.append(chunk)
        count += n
        while count >= rows:
            merged = _concat(pending)
            yield {k: v[:rows] for k, v in merged.items()}
            count -= rows
            pending = [{k: v[rows:] for k, v in merged.items()}] if count else []
    if count:
        yield _concat(pending)


def merge_sorted(streams: list[Iterator[Chunk]]) -> Iterator[Chunk]:
    """k-way merge of chunk streams that are each sorted by example_id."""
    buffers: list[Chunk | None] = [None] * len(streams)
    done = [False] * len(streams)

    def refill(i: int) -> None:
        while not done[i] and (buffers[i] is None or len(buffers[i]["example_id"]) == 0):
            nxt = next(streams[i], None)
            if nxt is None:
                done[i] = True
                buffers[i] = None
            else:
                buffers[i] = nxt

    while True:
        for i in range(len(streams)):
            refill(i)
        live = [i for i in range(len(streams)) if buffers[i] is not None and len(buffers[i]["example_id"])]
        if not live:
            return
        bounds = [buffers[i]["example_id"][-1] for i in live if not done[i]]
        cutoff = min(bounds) if bounds else None
        parts = []
        for i in live:
            buf = buffers[i]
            ids = buf["example_id"]
            take = len(ids) if cutoff is None else int(np.searchsorted(ids, cutoff, side="right"))
            if take:
                parts.append({k: v[:take] for k, v in buf.items()})
                buffers[i] = {k: v[take:] for k, v in buf.items()}
        merged = _concat(parts)
        if len(parts) > 1:
            order = np.argsort(merged["example_id"], kind="stable")
            merged = {k: v[order] for k, v in merged.items()}
        yield merged


def column_stream(paths: Sequence[Path], columns: Sequence[str], rows: int) -> Iterator[Chunk]:
    """Blocks of exactly `rows` rows of `columns`, merged by example_id across `paths`."""
    if len(paths) == 1:
        return rechunk(_batches(paths[0], columns, rows), rows)
    return rechunk(merge_sorted([_batches(p, columns, rows) for p in paths]), rows)
