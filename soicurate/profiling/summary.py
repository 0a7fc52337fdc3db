"""Counts per Subset of Interest, overall and broken down by label and group columns."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from soicurate.profiling.regions import REGIONS
from soicurate.profiling.soi import CATEGORIES

K = len(CATEGORIES)


@dataclass
class ProfileSummary:
    """What `soicurate profile` prints: counts and shares per category, label and group."""

    label_names: list[str]
    group_columns: list[str]
    runs: list[dict] = field(default_factory=list)
    num_examples: int = 0
    category_counts: np.ndarray = field(default_factory=lambda: np.zeros(K, dtype=np.int64))
    label_counts: np.ndarray | None = None  # (num_labels, K)
    group_counts: dict[str, Counter] = field(default_factory=dict)  # column -> Counter[(value, code)]
    region_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(REGIONS), dtype=np.int64))
    thresholds: dict = field(default_factory=dict)
    late_fraction: float = 0.25
    output: str | None = None

    def __post_init__(self):
        if self.label_counts is None:
            self.label_counts = np.zeros((len(self.label_names), K), dtype=np.int64)
        for g in self.group_columns:
            self.group_counts.setdefault(g, Counter())

    def add(self, categories: np.ndarray, labels: np.ndarray, groups: dict[str, np.ndarray]) -> None:
        cats = categories.astype(np.int64)
        self.num_examples += len(cats)
        self.category_counts += np.bincount(cats, minlength=K)
        nl = len(self.label_names)
        self.label_counts += np.bincount(labels.astype(np.int64) * K + cats, minlength=nl * K).reshape(nl, K)
        for g, values in groups.items():
            uniq, inverse = np.unique(values.astype(str), return_inverse=True)
            counts = np.bincount(inverse * K + cats, minlength=len(uniq) * K).reshape(len(uniq), K)
            counter = self.group_counts[g]
            for u, row in zip(uniq, counts):
                for code in np.flatnonzero(row):
                    counter[(str(u), int(code))] += int(row[code])

    def add_coded(
        self, categories: np.ndarray, labels: np.ndarray, groups: dict[str, tuple[np.ndarray, list[str]]]
    ) -> None:
        """add(), with each group column given as (codes, values): row i has values[codes[i]]
        (what the profiling pipeline has at hand: no string per row is looked at)."""
        cats = categories.astype(np.int64)
        self.num_examples += len(cats)
        self.category_counts += np.bincount(cats, minlength=K)
        nl = len(self.label_names)
        self.label_counts += np.bincount(labels.astype(np.int64) * K + cats, minlength=nl * K).reshape(nl, K)
        for g, (codes, values) in groups.items():
            counts = np.bincount(codes.astype(np.int64) * K + cats, minlength=len(values) * K)
            counter = self.group_counts[g]
            for at in np.flatnonzero(counts):
                counter[(values[at // K], int(at % K))] += int(counts[at])

    # -- views -----------------------------------------------------------------------------
    def table(self, by: str | None = None) -> list[dict]:
        """Rows of {group, category: count, ..., total} for `by` in (None, 'label', group)."""
        if by is None:
            return [self._row("all", self.category_counts)]
        if by == "label":
            return [self._row(name, self.label_counts[i]) for i, name in enumerate(self.label_names)]
        counter = self.group_counts[by]
        values = sorted({v for v, _ in counter})
        return [self._row(v, np.array([counter.get((v, c), 0) for c in range(K)])) for v in values]

    @staticmethod
    def _row(name: str, counts: np.ndarray) -> dict:
        total = int(counts.sum())
        row = {"group": name}
        row.update({c: int(counts[i]) for i, c in enumerate(CATEGORIES)})
        row["total"] = total
        return row

    def to_dict(self) -> dict:
        n = max(self.num_examples, 1)
        return {
            "output": self.output,
            "num_examples": self.num_examples,
            "runs": self.runs,
            "late_fraction": self.late_fraction,
            "categories": {
                c: {"count": int(self.category_counts[i]), "share": self.category_counts[i] / n}
                for i, c in enumerate(CATEGORIES)
            },
            "regions": {
                r: {"count": int(self.region_counts[i]), "share": self.region_counts[i] / n}
                for i, r in enumerate(REGIONS)
            },
            "region_thresholds": self.thresholds,
            "by_label": self.table("label"),
            "by_group": {g: self.table(g) for g in self.group_columns},
        }

    def format(self) -> str:
        """Plain-text tables for the terminal."""
        n = max(self.num_examples, 1)
        lines = [f"{self.num_examples} examples, {len(self.runs)} run(s)"]
        lines.append("")
        lines.append(_grid(["category", "count", "share"], [
            [c, str(int(self.category_counts[i])), f"{self.category_counts[i] / n:.1%}"] for i, c in enumerate(CATEGORIES)
        ]))
        lines.append("")
        t = self.thresholds
        lines.append(
            f"cartography regions (ambiguous: variability >= {t.get('variability', float('nan')):.4f}; "
            f"hard_to_learn: confidence < {t.get('confidence', float('nan')):.4f})"
        )
        lines.append(_grid(["region", "count", "share"], [
            [r, str(int(self.region_counts[i])), f"{self.region_counts[i] / n:.1%}"] for i, r in enumerate(REGIONS)
        ]))
        for by in ["label", *self.group_columns]:
            lines.append("")
            lines.append(f"by {by}:")
            rows = self.table(by)
            lines.append(_grid([by, *CATEGORIES, "total"], [
                [r["group"], *[_count_share(r[c], r["total"]) for c in CATEGORIES], str(r["total"])] for r in rows
            ]))
        return "\n".join(lines)


def _count_share(count: int, total: int) -> str:
    return f"{count} ({count / total:.0%})" if total else "0"


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out.extend(fmt(r) for r in rows)
    return "\n".join(out)
