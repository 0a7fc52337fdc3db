"""The six Subsets of Interest (see docs/soi.md for definitions and worked examples)."""

from __future__ import annotations

import math

CATEGORIES = (
    "always_correct",
    "learned_early",
    "learned_late",
    "forgettable",
    "forgotten",
    "unlearned",
)

DEFAULT_LATE_FRACTION = 0.25


def late_window_size(num_epochs: int, late_fraction: float = DEFAULT_LATE_FRACTION) -> int:
    """Number of epochs in the late window: ceil(fraction * E), at least the last epoch."""
    if not 0 < late_fraction <= 1:
        raise ValueError(f"late_fraction must be in (0, 1], got {late_fraction}")
    return max(1, math.ceil(late_fraction * num_epochs - 1e-9))


def late_start(num_epochs: int, late_fraction: float = DEFAULT_LATE_FRACTION) -> int:
    """1-based first epoch of the late window."""
    return num_epochs - late_window_size(num_epochs, late_fraction) + 1
