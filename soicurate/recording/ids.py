"""Stable example ids: the key that joins runs, seeds and settings.

A dataset's own integer id column is used as it is; anything else (string guids, or no id
column at all) becomes a 63-bit blake2b hash of its parts, e.g. (source, split, row), which is
the same on every machine and in every run.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK = (1 << 63) - 1


def stable_id(*parts) -> int:
    """A non-negative 63-bit id from the parts' string forms (joined unambiguously)."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & _MASK


def stable_ids(values, *prefix) -> np.ndarray:
    """stable_id(*prefix, v) for every value, as an int64 array."""
    return np.fromiter((stable_id(*prefix, v) for v in values), dtype=np.int64, count=len(values))


def as_integer_ids(values) -> np.ndarray | None:
    """The values as int64 if every one is an integer (or an integer string), else None."""
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            return None
        if isinstance(v, (int, np.integer)):
            out[i] = int(v)
            continue
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            out[i] = int(v)
            continue
        return None
    return out
