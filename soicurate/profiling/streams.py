"""Stream Parquet columns in blocks of an exact number of rows, memory bounded by the block.

One epoch is either one file or one file per rank; rank files are merged by example_id on the
fly (each rank's file is sorted), so no epoch is ever loaded whole.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np

from soicurate.errors import LogFormatError

Chunk = dict[str, np.ndarray]


def _batches(path: Path, columns: Sequence[str], batch_rows: int, arrow: Collection[str] = ()) -> Iterator[Chunk]:
    """Batches of `columns` as numpy arrays; the columns named in `arrow` stay Arrow arrays
    (dictionary arrays where the file stores dictionary-encoded strings)."""
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False: the default (True) reads every selected column chunk of the whole
        # file into memory before the first batch, so memory grew with the file, not the block.
        # buffer_size streams each column chunk in 1 MiB reads, bounding memory for files with
        # very large row groups too.
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        strings = _dictionary_strings(pf, columns)
        if strings:
            # Dictionary-encoded strings (group columns such as source) are read as dictionary
            # arrays: one Python object per distinct value, then indexing, is far faster than
            # one per row. Strings that are mostly distinct (guid) are read as they are.
            pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20, read_dictionary=strings)
        # use_threads=False: the epochs of a block are read in parallel already (parallel_map);
        # pyarrow's own threads on top of that only cost CPU time.
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(columns), use_threads=False):
            chunk = {}
            for name, col in zip(batch.schema.names, batch.columns):
                if col.null_count:
                    first = col.is_null().to_numpy(zero_copy_only=False).argmax()
                    raise LogFormatError(path, f"column {name} has missing (null) values", row=None if first is None else int(first))
                chunk[name] = col if name in arrow else _to_numpy(col)
            yield chunk
    except LogFormatError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on corrupt data
        raise LogFormatError(path, f"cannot read Parquet data ({str(exc).splitlines()[0]})") from None


def _dictionary_strings(pf, columns: Sequence[str]) -> list[str]:
    """String columns whose first row group is dictionary-encoded (a dictionary page, and data
    pages of a few bytes per value: indices, not the strings themselves)."""
    import pyarrow as pa

    kinds = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    schema = pf.schema_arrow
    wanted = {c for c in columns if c in schema.names and any(k(schema.field(c).type) for k in kinds)}
    if not wanted or pf.metadata.num_row_groups == 0:
        return []
    rg = pf.metadata.row_group(0)
    out = []
    for i in range(rg.num_columns):
        col = rg.column(i)
        if col.path_in_schema in wanted and col.has_dictionary_page and col.total_uncompressed_size < 4 * max(col.num_values, 1):
            out.append(col.path_in_schema)
    return out


def _to_numpy(col) -> np.ndarray:
    """A column without nulls as numpy (dictionary arrays decoded: strings become objects)."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        return col.dictionary.to_numpy(zero_copy_only=False)[col.indices.to_numpy(zero_copy_only=False)]
    return col.to_numpy(zero_copy_only=False)


def _concat(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return {k: _concat_arrays([c[k] for c in chunks]) for k in chunks[0]}


def _concat_arrays(parts: list):
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import pyarrow as pa

    return pa.concat_arrays(parts)  # dictionary arrays: their dictionaries are unified


def _rows(chunk: Chunk) -> int:
    return len(next(iter(chunk.values())))


def rechunk(chunks: Iterator[Chunk], rows: int) -> Iterator[Chunk]:
    """Regroup chunks of any size into chunks of exactly `rows` rows (the last may be shorter)."""
    pending: list[Chunk] = []
    count = 0
    for chunk in chunks:
        n = _rows(chunk)
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


_POOL = None
_POOL_PID = None


def _pool():
    """A process-wide thread pool (re-created after a fork, whose child has no threads)."""
    global _POOL, _POOL_PID
    import os
    from concurrent.futures import ThreadPoolExecutor

    if _POOL is None or _POOL_PID != os.getpid():
        _POOL = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 1)), thread_name_prefix="soicurate-read")
        _POOL_PID = os.getpid()
    return _POOL


def parallel_map(fn, items: Sequence) -> list:
    """[fn(x) for x in items], run on threads (pyarrow decoding and numpy copies release the
    GIL). Every call finishes before anything is raised; the first exception in item order is
    raised, exactly as the sequential loop would raise it."""
    items = list(items)
    if len(items) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import wait

    futures = [_pool().submit(fn, x) for x in items]
    wait(futures)
    return [f.result() for f in futures]


def next_chunks(streams: Sequence[Iterator[Chunk]]) -> list[Chunk | None]:
    """The next chunk of every stream (None for an exhausted one), streams read in parallel."""
    return parallel_map(lambda s: next(s, None), streams)


def column_stream(
    paths: Sequence[Path], columns: Sequence[str], rows: int, arrow: Collection[str] = ()
) -> Iterator[Chunk]:
    """Blocks of exactly `rows` rows of `columns`, merged by example_id across `paths` (the
    columns named in `arrow` stay Arrow arrays; only a single path may have them)."""
    if len(paths) == 1:
        return rechunk(_batches(paths[0], columns, rows, arrow), rows)
    return rechunk(merge_sorted([_batches(p, columns, rows) for p in paths]), rows)


class Prefetched:
    """Iterate `items` on a thread of its own, up to `depth` items ahead of the consumer.

    Items and the iterator's exception arrive in the order the iterator produced them, so a
    consumer sees exactly what iterating directly would give, while the next item is being
    made (pyarrow decoding and numba kernels release the GIL). close() stops the thread
    (finishing the item in progress) and closes the iterator there.
    """

    _END = object()

    def __init__(self, items: Iterator, depth: int = 1, name: str = "soicurate-prefetch"):
        import queue
        import threading

        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _run(self, items) -> None:
        try:
            for item in items:
                if not self._put((True, item)):
                    break
            else:
                self._put((True, self._END))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def _put(self, entry) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        if self._done:
            raise StopIteration
        ok, value = self._queue.get()
        if ok and value is not self._END:
            return value
        self._done = True
        self._thread.join()
        if ok:
            raise StopIteration
        raise value

    def close(self) -> None:
        import queue

        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._done = True


class BackgroundWorker:
    """Run fn(item) for submitted items, in order, on a thread of its own; at most `depth`
    items wait. An exception from fn is raised by the next submit() or by finish()."""

    def __init__(self, fn, depth: int = 1, name: str = "soicurate-write"):
        import queue
        import threading

        self._fn = fn
        self._queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._fn(item[0])
                except BaseException as exc:
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, item) -> None:
        self._raise()
        self._queue.put((item,))

    def finish(self) -> None:
        """Wait for every submitted item, then raise fn's exception if there was one."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def abandon(self) -> None:
        """Skip the items still waiting, wait for the one in progress; no exception raised."""
        import queue

        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._error = None
