"""Errors that the CLI turns into one clear line and exit status 2."""

from __future__ import annotations

from pathlib import Path


class SoicurateError(Exception):
    """Base class for every error soicurate reports to a user (no traceback from the CLI)."""

    exit_code = 2


class LogFormatError(SoicurateError):
    """A dynamics log (or a file read through an adapter) is malformed.

    The message always names the file, and the example id and/or row when known, so that a
    user can find the problem without a debugger.
    """

    def __init__(self, path: str | Path, problem: str, *, example_id=None, row=None):
        self.path = str(path)
        self.problem = problem
        self.example_id = example_id
        self.row = row
        where = []
        if row is not None:
            where.append(f"row {row}")
        if example_id is not None:
            where.append(f"example_id {example_id}")
        suffix = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{self.path}: {problem}{suffix}")


class UsageError(SoicurateError):
    """Arguments that do not make sense together (for example incompatible runs)."""
