"""SOI transitions between two profiles of the same examples (for example single- versus
multi-setting training, or two seeds): which Subset of Interest an example moves to.

    from soicurate.reporting.transitions import compare_profiles
    result = compare_profiles("single.parquet", "multi.parquet", filters={"source": ["news"]})
    result.counts        # polars: category_a x category_b counts (+ total)
    result.shares        # the same, each row divided by its total (rows sum to 1)
    result.changes       # per category in A: mean confidence / variability in A and in B
    result.n_only_a      # examples of A that B does not have (counted, never dropped silently)
    result.plot("transitions.png")

Examples are joined on `example_id`. Examples present in only one profile are counted and
reported (overall and per category on their own side). Filters on label/source/task/language
apply to each profile that has the column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from soicurate.errors import LogFormatError, UsageError
from soicurate.profiling.soi import CATEGORIES

FILTER_COLUMNS = ("label", "source", "task", "language")
K = len(CATEGORIES)


@dataclass
class TransitionResult:
    """The SOI transition matrix of two profiles and what goes with it."""

    name_a: str
    name_b: str
    matrix: np.ndarray  # (K, K) int64: rows category in A, columns category in B
    n_a: int  # examples in A after filtering
    n_b: int
    n_only_a: int
    n_only_b: int
    only_a_counts: np.ndarray  # (K,) categories (in A) of the examples only A has
    only_b_counts: np.ndarray  # (K,) categories (in B) of the examples only B has
    confidence: np.ndarray  # (K, 2) mean confidence in A and in B of the joined examples, by category in A
    variability: np.ndarray  # (K, 2)
    label_mismatches: int = 0  # joined examples whose gold label differs between A and B
    filters: dict = field(default_factory=dict)
    filtered_sides: dict = field(default_factory=dict)  # column -> ["A", "B"] sides the filter applied to

    # -- numbers ---------------------------------------------------------------------------
    @property
    def n_joined(self) -> int:
        return int(self.matrix.sum())

    @property
    def row_totals(self) -> np.ndarray:
        return self.matrix.sum(axis=1)

    @property
    def share_matrix(self) -> np.ndarray:
        """Row-normalised matrix; rows with no example are NaN."""
        totals = self.row_totals[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(totals > 0, self.matrix / np.where(totals > 0, totals, 1), np.nan)

    @property
    def unchanged_share(self) -> float:
        """Share of the joined examples whose category is the same in A and B."""
        return float(np.trace(self.matrix) / self.n_joined) if self.n_joined else math.nan

    @property
    def counts(self):
        import polars as pl

        data = {"category_a": list(CATEGORIES)}
        for j, c in enumerate(CATEGORIES):
            data[c] = self.matrix[:, j].astype(np.int64)
        data["total"] = self.row_totals.astype(np.int64)
        return pl.DataFrame(data)

    @property
    def shares(self):
        import polars as pl

        s = self.share_matrix
        data = {"category_a": list(CATEGORIES)}
        for j, c in enumerate(CATEGORIES):
            data[c] = pl.Series(c, s[:, j], dtype=pl.Float64, nan_to_null=True)
        return pl.DataFrame(data)

    @property
    def changes(self):
        """Per category in A: count, mean confidence and variability in A and B, and the change."""
        import polars as pl

        totals = self.row_totals
        return pl.DataFrame(
            {
                "category_a": list(CATEGORIES),
                "count": totals.astype(np.int64),
                "same_category": np.diag(self.matrix).astype(np.int64),
                "confidence_a": pl.Series(self.confidence[:, 0], nan_to_null=True),
                "confidence_b": pl.Series(self.confidence[:, 1], nan_to_null=True),
                "delta_confidence": pl.Series(self.confidence[:, 1] - self.confidence[:, 0], nan_to_null=True),
                "variability_a": pl.Series(self.variability[:, 0], nan_to_null=True),
                "variability_b": pl.Series(self.variability[:, 1], nan_to_null=True),
                "delta_variability": pl.Series(self.variability[:, 1] - self.variability[:, 0], nan_to_null=True),
            }
        )

    @property
    def only(self):
        """Per category (on its own side): how many examples only A has and only B has."""
        import polars as pl

        return pl.DataFrame(
            {
                "category": list(CATEGORIES),
                "only_in_a": self.only_a_counts.astype(np.int64),
                "only_in_b": self.only_b_counts.astype(np.int64),
            }  # fmt: skip
        )

    # -- output ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        shares = self.share_matrix
        nan_none = lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else v  # noqa: E731
        return {
            "profile_a": self.name_a,
            "profile_b": self.name_b,
            "filters": self.filters,
            "filtered_sides": self.filtered_sides,
            "examples_a": self.n_a,
            "examples_b": self.n_b,
            "joined": self.n_joined,
            "only_in_a": self.n_only_a,
            "only_in_b": self.n_only_b,
            "only_in_a_by_category": {c: int(v) for c, v in zip(CATEGORIES, self.only_a_counts)},
            "only_in_b_by_category": {c: int(v) for c, v in zip(CATEGORIES, self.only_b_counts)},
            "label_mismatches": self.label_mismatches,
            "unchanged_share": nan_none(self.unchanged_share),
            "categories": list(CATEGORIES),
            "counts": {
                a: {b: int(self.matrix[i, j]) for j, b in enumerate(CATEGORIES)} for i, a in enumerate(CATEGORIES)
            },
            "row_shares": {
                a: {b: nan_none(float(shares[i, j])) for j, b in enumerate(CATEGORIES)}
                for i, a in enumerate(CATEGORIES)
            },
            "changes": self.changes.to_dicts(),
        }

    def format(self) -> str:
        """Plain-text tables for the terminal."""
        from soicurate.profiling.summary import _grid

        lines = [
            f"A: {self.name_a} ({self.n_a:,} examples)",
            f"B: {self.name_b} ({self.n_b:,} examples)",
        ]
        if self.filters:
            lines.append("filters: " + "; ".join(
                f"{k} in {{{', '.join(map(str, v))}}} (applied to {'+'.join(self.filtered_sides.get(k, []))})"
                for k, v in self.filters.items()
            ))  # fmt: skip
        lines.append(
            f"joined on example_id: {self.n_joined:,}; only in A: {self.n_only_a:,}; only in B: {self.n_only_b:,}"
        )
        if self.label_mismatches:
            lines.append(f"warning: {self.label_mismatches:,} joined examples have a different gold label in A and B")
        lines.append(f"same category in A and B: {self.unchanged_share:.1%}" if self.n_joined else "")
        lines.append("")
        lines.append("transitions (rows: category in A, columns: category in B; count and row share)")
        shares = self.share_matrix
        rows = []
        for i, a in enumerate(CATEGORIES):
            cells = [
                f"{self.matrix[i, j]:,} ({_pct(shares[i, j], self.matrix[i, j])})" if self.row_totals[i] else "-"
                for j in range(K)
            ]
            rows.append([a, *cells, f"{int(self.row_totals[i]):,}"])
        lines.append(_grid(["A \\ B", *CATEGORIES, "total"], rows))
        lines.append("")
        lines.append("mean confidence and variability by category in A (A -> B)")
        ch = []
        for i, a in enumerate(CATEGORIES):
            if not self.row_totals[i]:
                ch.append([a, "0", "-", "-"])
                continue
            (ca, cb), (va, vb) = self.confidence[i], self.variability[i]
            ch.append([a, f"{int(self.row_totals[i]):,}", f"{ca:.3f} -> {cb:.3f} ({cb - ca:+.3f})",
                       f"{va:.3f} -> {vb:.3f} ({vb - va:+.3f})"])  # fmt: skip
        lines.append(_grid(["category in A", "examples", "confidence", "variability"], ch))
        if self.n_only_a or self.n_only_b:
            lines.append("")
            lines.append("examples not in both profiles (by their own category)")
            lines.append(_grid(["category", "only in A", "only in B"], [
                [c, f"{int(self.only_a_counts[i]):,}", f"{int(self.only_b_counts[i]):,}"] for i, c in enumerate(CATEGORIES)
            ] + [["total", f"{self.n_only_a:,}", f"{self.n_only_b:,}"]]))  # fmt: skip
        return "\n".join(lines)

    def plot(self, output: str | Path | None = None, *, title: str | None = None, dpi: int = 110):
        """An annotated heatmap (row shares as colour, count and share in each cell).

        Writes a PNG to `output` (atomically) when given and returns the PNG bytes.
        """
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shares = self.share_matrix
        fig, ax = plt.subplots(figsize=(8.4, 6.4), dpi=dpi)
        shown = np.where(np.isnan(shares), 0.0, shares)
        im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        nice = [c.replace("_", " ") for c in CATEGORIES]
        ax.set_xticks(range(K), nice, rotation=30, ha="right")
        ax.set_yticks(range(K), [f"{n}\n({int(t):,})" for n, t in zip(nice, self.row_totals)])
        for i in range(K):
            for j in range(K):
                if not self.row_totals[i]:
                    ax.text(j, i, "-", ha="center", va="center", color="0.5", fontsize=9)
                    continue
                s = shares[i, j]
                color = "white" if s > 0.55 else "0.1"
                weight = "bold" if i == j else "normal"
                ax.text(j, i, f"{_pct(s, self.matrix[i, j])}\n{int(self.matrix[i, j]):,}", ha="center", va="center", color=color,
                        fontsize=8.5, fontweight=weight)  # fmt: skip
        ax.set_xlabel(f"category in B: {_short(self.name_b)}")
        ax.set_ylabel(f"category in A: {_short(self.name_a)}")
        cbar = fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
        cbar.set_label("share of the row (category in A)")
        head = title or "SOI transitions A \u2192 B"
        sub = f"{self.n_joined:,} examples in both; only in A: {self.n_only_a:,}; only in B: {self.n_only_b:,}"
        if self.filters:
            sub += "\nfilter: " + "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in self.filters.items())
        ax.set_title(f"{head}\n{sub}", fontsize=10.5, loc="left")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        data = buf.getvalue()
        if output is not None:
            from soicurate.atomic import atomic_path

            with atomic_path(output, ".png") as tmp:
                Path(tmp).write_bytes(data)
        return data


def _pct(share: float, count: int) -> str:
    return "<1%" if count and share < 0.005 else f"{share:.0%}"


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else "\u2026" + name[-(width - 1) :]


def load_profile(profile, name: str | None = None):
    """(DataFrame with Enum category, display name) from a path or a DataFrame."""
    import polars as pl

    from soicurate.profiling.pipeline import read_profile

    if isinstance(profile, pl.DataFrame):
        df = profile
        missing = [c for c in ("example_id", "category", "confidence", "variability") if c not in df.columns]
        if missing:
            raise UsageError(f"{name or 'profile'}: not a soicurate profile: missing column(s) {', '.join(missing)}")
        if df.schema["category"] != pl.Enum(CATEGORIES):
            df = df.with_columns(pl.col("category").cast(pl.Enum(CATEGORIES)))
        return df, name or "profile"
    return read_profile(profile), name or str(profile)


def apply_filters(df, filters: dict, label_names=None):
    """Rows of `df` matching every filter whose column it has; (filtered df, columns applied)."""
    import polars as pl

    applied = []
    for col, values in filters.items():
        values = [str(v) for v in values]
        if col == "label":
            if "label" not in df.columns:
                continue
            cond = pl.col("label").cast(pl.String).is_in(values)
            if "label_name" in df.columns:
                cond = cond | pl.col("label_name").cast(pl.String).is_in(values)
        else:
            if col not in df.columns:
                continue
            cond = pl.col(col).cast(pl.String).is_in(values)
        df = df.filter(cond)
        applied.append(col)
    return df, applied


def compare_profiles(
    profile_a,
    profile_b,
    *,
    filters: dict | None = None,
    name_a: str | None = None,
    name_b: str | None = None,
) -> TransitionResult:
    """The SOI transition matrix from profile A to profile B (paths or DataFrames).

    `filters` maps label/source/task/language (or any column) to accepted values; a filter
    applies to each profile that has the column and is an error when neither has it. Raises
    UsageError when no example is in both profiles (after filtering).
    """
    import polars as pl

    a, name_a = load_profile(profile_a, name_a)
    b, name_b = load_profile(profile_b, name_b)
    for df, name in ((a, name_a), (b, name_b)):
        if df["example_id"].is_duplicated().any():
            dup = df.filter(pl.col("example_id").is_duplicated())["example_id"][0]
            raise LogFormatError(name, "duplicate example_id in profile", example_id=int(dup))
    filters = {k: list(v) for k, v in (filters or {}).items() if v}
    sides: dict[str, list[str]] = {}
    if filters:
        a, applied_a = apply_filters(a, filters)
        b, applied_b = apply_filters(b, filters)
        for col in filters:
            sides[col] = [s for s, applied in (("A", applied_a), ("B", applied_b)) if col in applied]
            if not sides[col]:
                raise UsageError(f"filter on {col!r}: neither {name_a} nor {name_b} has a {col!r} column")
    keep = ["example_id", "category", "confidence", "variability"] + (
        ["label"] if "label" in a.columns and "label" in b.columns else []
    )
    a_small, b_small = a.select(keep), b.select(keep)
    joined = a_small.join(b_small, on="example_id", how="inner", suffix="_b")
    only_a = a_small.join(b_small.select("example_id"), on="example_id", how="anti")
    only_b = b_small.join(a_small.select("example_id"), on="example_id", how="anti")
    if joined.height == 0:
        what = f" after filtering ({', '.join(f'{k}={v}' for k, v in filters.items())})" if filters else ""
        raise UsageError(
            f"no example_id in common between {name_a} ({a.height:,} examples) and {name_b} ({b.height:,}){what}"
        )
    ca = joined["category"].to_physical().to_numpy().astype(np.int64)
    cb = joined["category_b"].to_physical().to_numpy().astype(np.int64)
    matrix = np.bincount(ca * K + cb, minlength=K * K).reshape(K, K)
    totals = np.bincount(ca, minlength=K).astype(np.float64)
    conf = np.full((K, 2), np.nan)
    var = np.full((K, 2), np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, col in enumerate(("confidence", "confidence_b")):
            conf[:, j] = np.bincount(ca, weights=joined[col].to_numpy(), minlength=K) / totals
        for j, col in enumerate(("variability", "variability_b")):
            var[:, j] = np.bincount(ca, weights=joined[col].to_numpy(), minlength=K) / totals
    mismatches = 0
    if "label" in keep:
        mismatches = int((joined["label"] != joined["label_b"]).sum())
    return TransitionResult(
        name_a=name_a,
        name_b=name_b,
        matrix=matrix,
        n_a=a.height,
        n_b=b.height,
        n_only_a=only_a.height,
        n_only_b=only_b.height,
        only_a_counts=np.bincount(only_a["category"].to_physical().to_numpy().astype(np.int64), minlength=K),
        only_b_counts=np.bincount(only_b["category"].to_physical().to_numpy().astype(np.int64), minlength=K),
        confidence=conf,
        variability=var,
        label_mismatches=mismatches,
        filters=filters,
        filtered_sides=sides,
    )
