"""Dataset Cartography regions: easy-to-learn, ambiguous, hard-to-learn.

Rule (exhaustive, mutually exclusive): an example is ambiguous when its variability is at
least the variability threshold; otherwise hard-to-learn when its confidence is below the
confidence threshold; otherwise easy-to-learn. Thresholds are either absolute values or
taken from the data as quantiles, the way Cartography selects its subsets: with fraction q,
the q most variable examples are ambiguous and the examples in the lowest q of confidence
(that are not ambiguous) are hard-to-learn.

Quantiles are read off fixed 65,536-bin histograms accumulated block by block, so they cost
no memory per example (resolution: 1.5e-5 in confidence, 7.6e-6 in variability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REGIONS = ("easy_to_learn", "ambiguous", "hard_to_learn")
HIST_BINS = 1 << 16
CONFIDENCE_RANGE = (0.0, 1.0)
VARIABILITY_RANGE = (0.0, 0.5)


@dataclass(frozen=True)
class RegionRule:
    """How regions are chosen: mode 'quantile' (fraction q) or 'absolute' (two thresholds)."""

    mode: str = "quantile"
    fraction: float = 1 / 3
    variability_threshold: float | None = None
    confidence_threshold: float | None = None

    def __post_init__(self):
        if self.mode not in ("quantile", "absolute"):
            raise ValueError(f"region mode must be 'quantile' or 'absolute', got {self.mode!r}")
        if self.mode == "quantile" and not 0 < self.fraction < 1:
            raise ValueError(f"region fraction must be in (0, 1), got {self.fraction}")
        if self.mode == "absolute" and (self.variability_threshold is None or self.confidence_threshold is None):
            raise ValueError("absolute regions need both variability_threshold and confidence_threshold")


class RegionHistograms:
    """Streaming histograms of confidence and variability for quantile thresholds."""

    def __init__(self):
        self.confidence = np.zeros(HIST_BINS, dtype=np.int64)
        self.variability = np.zeros(HIST_BINS, dtype=np.int64)

    def add(self, confidence: np.ndarray, variability: np.ndarray) -> None:
        from soicurate.profiling.kernels import histogram_add

        histogram_add(confidence, *CONFIDENCE_RANGE, self.confidence)
        histogram_add(variability, *VARIABILITY_RANGE, self.variability)

    @property
    def count(self) -> int:
        return int(self.confidence.sum())


def _upper_quantile_edge(counts: np.ndarray, lo: float, hi: float, fraction: float) -> float:
    """Lower edge of the bin where the count from the top first reaches fraction * total."""
    total = counts.sum()
    need = fraction * total
    from_top = np.cumsum(counts[::-1])
    k = int(np.searchsorted(from_top, need, side="left"))
    b = len(counts) - 1 - min(k, len(counts) - 1)
    return lo + b * (hi - lo) / len(counts)


def _lower_quantile_edge(counts: np.ndarray, lo: float, hi: float, fraction: float) -> float:
    """Upper edge of the bin where the count from the bottom first reaches fraction * total."""
    need = fraction * counts.sum()
    b = int(np.searchsorted(np.cumsum(counts), need, side="left"))
    return lo + (min(b, len(counts) - 1) + 1) * (hi - lo) / len(counts)


def thresholds(rule: RegionRule, hist: RegionHistograms | None) -> tuple[float, float]:
    """(variability_threshold, confidence_threshold) for `rule`."""
    if rule.mode == "absolute":
        return float(rule.variability_threshold), float(rule.confidence_threshold)
    if hist is None or hist.count == 0:
        raise ValueError("quantile regions need the data's histograms")
    v = _upper_quantile_edge(hist.variability, *VARIABILITY_RANGE, rule.fraction)
    c = _lower_quantile_edge(hist.confidence, *CONFIDENCE_RANGE, rule.fraction)
    return float(v), float(c)


def region_codes(confidence: np.ndarray, variability: np.ndarray, v_thr: float, c_thr: float) -> np.ndarray:
    """Region index into REGIONS for each example."""
    codes = np.zeros(len(confidence), dtype=np.int8)
    codes[confidence < c_thr] = 2
    codes[variability >= v_thr] = 1
    return codes
