"""Open whatever a user points at as a RunReader: a native run directory, or another tool's
logs (converted once into a temporary native directory by the adapters)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from soicurate.errors import LogFormatError
from soicurate.profiling.reader import RunReader
from soicurate.recording.manifest import MANIFEST_NAME


def detect_format(path: str | Path) -> str:
    """'native', 'cartography' or 'table' for a path; LogFormatError when it is none of them."""
    path = Path(path)
    if not path.exists():
        raise LogFormatError(path, "does not exist")
    if path.is_dir():
        if (path / MANIFEST_NAME).exists():
            return "native"
        from soicurate.recording.adapters.cartography import find_cartography_files

        if find_cartography_files(path, required=False):
            return "cartography"
        raise LogFormatError(
            path / MANIFEST_NAME,
            "manifest missing: not a soicurate dynamics run directory (nor a Cartography training_dynamics directory)",
        )
    if path.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".parquet"):
        return "table"
    raise LogFormatError(path, "not a run directory, a Cartography directory or a CSV/JSONL/Parquet table")


def open_run(path: str | Path, mapping=None) -> RunReader:
    """A RunReader for `path`; foreign logs are imported into a temporary directory first."""
    kind = detect_format(path)
    if kind == "native":
        return RunReader(path)
    tmp = Path(tempfile.mkdtemp(prefix="soicurate-import-"))
    atexit.register(shutil.rmtree, tmp, True)
    out = tmp / "run"
    if kind == "cartography":
        from soicurate.recording.adapters.cartography import import_cartography

        import_cartography(path, out)
    else:
        from soicurate.recording.adapters.table import import_table

        if mapping is None:
            raise LogFormatError(path, "a long table needs a column mapping (id, epoch, gold and probabilities)")
        import_table(path, out, mapping)
    return RunReader(out)
