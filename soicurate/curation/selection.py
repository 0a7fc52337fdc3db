"""Which examples of a profile to keep: pure polars, no dataset and no files involved.

A selection is built in a fixed order (docs/curate.md), each step narrowing the previous:

1. **pick**: the union of the examples whose SOI category is one of `categories` and of those
   whose cartography region is one of `regions`; every example when neither is given;
2. **quantiles**: AND every `top` / `bottom` pick; `top=("variability", 0.33)` keeps the
   ceil(0.33 x N) most variable examples of the *whole* profile (N = its rows; ties go to
   the smaller example_id; nulls are never picked), so a quantile means the same thing
   whatever the other filters are;
3. **where**: AND a SQL boolean expression over the profile's columns (polars SQL);
4. **agreement**: AND `category_agreement >= min_agreement` (profiles of several runs only);
5. **balance**: downsample every label present to the count of the rarest one (seeded);
6. **cap**: keep at most `max_examples`, drawn at random (seeded); with balance, every label
   keeps at most floor(max_examples / labels), so the result stays balanced.

The result keeps the profile's row order (ascending example_id).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from soicurate.errors import UsageError
from soicurate.profiling.regions import REGIONS
from soicurate.profiling.soi import CATEGORIES

# Profile columns that --top/--bottom may rank by: every numeric statistic.
NON_METRIC_COLUMNS = frozenset({"example_id", "label", "n_runs"})


@dataclass
class SelectionRule:
    """How a curated subset is chosen; see the module docstring for how the parts combine."""

    categories: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    top: list[tuple[str, float]] = field(default_factory=list)
    bottom: list[tuple[str, float]] = field(default_factory=list)
    where: str | None = None
    min_agreement: float | None = None
    balance_labels: bool = False
    max_examples: int | None = None
    seed: int = 0

    def __post_init__(self):
        self.categories = _names(self.categories, CATEGORIES, "category")
        self.regions = _names(self.regions, REGIONS, "region")
        self.top = [parse_quantile(q, "top") for q in self.top]
        self.bottom = [parse_quantile(q, "bottom") for q in self.bottom]
        if self.where is not None and not str(self.where).strip():
            self.where = None
        if self.min_agreement is not None and not 0.0 <= float(self.min_agreement) <= 1.0:
            raise UsageError(f"min_agreement must be in [0, 1], got {self.min_agreement}")
        if self.max_examples is not None and (not isinstance(self.max_examples, int) or self.max_examples < 1):
            raise UsageError(f"max_examples must be a positive integer, got {self.max_examples!r}")

    def describe(self) -> str:
        """The rule as command-line options (what a person would type to get it again)."""
        parts = [f"--category {c}" for c in self.categories] + [f"--region {r}" for r in self.regions]
        parts += [f"--top {m}:{q:g}" for m, q in self.top] + [f"--bottom {m}:{q:g}" for m, q in self.bottom]
        if self.where:
            parts.append(f'--where "{self.where}"')
        if self.min_agreement is not None:
            parts.append(f"--min-agreement {self.min_agreement:g}")
        if self.balance_labels:
            parts.append("--balance-labels")
        if self.max_examples is not None:
            parts.append(f"--max-examples {self.max_examples}")
        if self.balance_labels or self.max_examples is not None:
            parts.append(f"--seed {self.seed}")
        return " ".join(parts) if parts else "(every example)"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["top"] = [{"metric": m, "fraction": q} for m, q in self.top]
        d["bottom"] = [{"metric": m, "fraction": q} for m, q in self.bottom]
        return d


@dataclass
class Selection:
    """The chosen profile rows and how many examples were left after each step."""

    rows: object  # polars DataFrame: the selected profile rows, ascending example_id
    rule: SelectionRule
    profile_rows: int
    steps: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ids(self) -> np.ndarray:
        return self.rows["example_id"].to_numpy()

    def __len__(self) -> int:
        return self.rows.height


def parse_quantile(value, option: str = "top") -> tuple[str, float]:
    """'variability:0.33' (or a (metric, fraction) pair) -> ('variability', 0.33)."""
    if isinstance(value, str):
        metric, sep, frac = value.rpartition(":")
        if not sep or not metric:
            raise UsageError(f"--{option} {value!r}: expected METRIC:FRACTION, e.g. variability:0.33")
    else:
        try:
            metric, frac = value
        except (TypeError, ValueError):
            raise UsageError(f"--{option} {value!r}: expected METRIC:FRACTION, e.g. variability:0.33") from None
    try:
        q = float(frac)
    except (TypeError, ValueError):
        raise UsageError(f"--{option} {value!r}: fraction {frac!r} is not a number") from None
    if not 0.0 < q <= 1.0:
        raise UsageError(f"--{option} {value!r}: fraction must be in (0, 1], got {q:g}")
    return str(metric).strip(), q


def _names(values: Iterable[str] | str | None, allowed: Sequence[str], what: str) -> list[str]:
    """Validate names (comma-separated lists allowed), keeping the first occurrence of each."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for name in str(v).split(","):
            name = name.strip()
            if not name:
                continue
            if name not in allowed:
                raise UsageError(f"unknown {what} {name!r} (choose from {', '.join(allowed)})")
            if name not in out:
                out.append(name)
    return out


def metric_columns(df) -> list[str]:
    """Columns --top/--bottom can rank by (numeric, not ids or labels)."""
    return [c for c, t in df.schema.items() if t.is_numeric() and c not in NON_METRIC_COLUMNS]


def quantile_mask(df, metric: str, fraction: float, *, largest: bool) -> np.ndarray:
    """Boolean mask of the ceil(fraction x N) rows with the largest (or smallest) `metric`.

    N is the number of rows; ties go to the smaller example_id and nulls/NaNs are never chosen.
    """
    import polars as pl

    if metric not in df.columns:
        raise UsageError(f"no profile column {metric!r} to rank by (numeric columns: {', '.join(metric_columns(df))})")
    if metric not in metric_columns(df):
        choices = ", ".join(metric_columns(df))
        raise UsageError(f"cannot rank by {metric!r}: not a numeric statistic (choose from {choices})")
    n = df.height
    k = math.ceil(fraction * n - 1e-9)  # 0.25 x 8 = 2, not 3 from a rounding error
    values = df[metric].cast(pl.Float64).fill_nan(None)
    valid = ~values.is_null().to_numpy()
    order_frame = pl.DataFrame({"v": values, "id": df["example_id"], "i": np.arange(n)})
    ranked = order_frame.filter(pl.col("v").is_not_null()).sort(["v", "id"], descending=[largest, False])
    chosen = ranked["i"].head(k).to_numpy()
    mask = np.zeros(n, dtype=bool)
    mask[chosen] = True
    assert not (mask & ~valid).any()
    return mask


def where_mask(df, where: str) -> np.ndarray:
    """Boolean mask of the rows for which the SQL expression `where` is true (null = false)."""
    import polars as pl

    try:
        expr = pl.sql_expr(where)
    except Exception as exc:
        raise UsageError(f"--where {where!r}: {_first_line(exc)}") from None
    # Enums as plain strings, so that any SQL string operation (=, IN, LIKE) works on them.
    frame = df.with_columns(
        [pl.col(c).cast(pl.String) for c, t in df.schema.items() if isinstance(t, pl.Enum)]
    ).with_row_index("__row__")
    try:
        rows = frame.filter(expr)["__row__"].to_numpy()
    except Exception as exc:
        raise UsageError(f"--where {where!r}: {_first_line(exc)}") from None
    mask = np.zeros(df.height, dtype=bool)
    mask[rows] = True
    return mask


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sample(indices: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if k >= len(indices):
        return indices
    return np.sort(rng.choice(indices, size=k, replace=False))


def select(df, rule: SelectionRule | None = None, **options) -> Selection:
    """Apply `rule` (or the SelectionRule built from `options`) to the profile DataFrame `df`."""
    import polars as pl

    rule = rule or SelectionRule(**options)
    if "example_id" not in df.columns:
        raise UsageError("not a soicurate profile: no example_id column")
    n = df.height
    steps: list[dict] = []
    warnings: list[str] = []

    # 1. pick: union of categories and regions
    if rule.categories or rule.regions:
        keep = np.zeros(n, dtype=bool)
        if rule.categories:
            keep |= df["category"].cast(pl.String).is_in(rule.categories).to_numpy()
        if rule.regions:
            keep |= df["region"].cast(pl.String).is_in(rule.regions).to_numpy()
        steps.append({"step": "pick", "rule": "category in {" + ", ".join(rule.categories) + "} or region in {"
                      + ", ".join(rule.regions) + "}", "remaining": int(keep.sum())})  # fmt: skip
    else:
        keep = np.ones(n, dtype=bool)
        steps.append({"step": "pick", "rule": "every example", "remaining": n})

    # 2. quantiles over the whole profile
    for metric, q in rule.top:
        keep &= quantile_mask(df, metric, q, largest=True)
        steps.append({"step": "top", "rule": f"top {q:g} of {metric}", "remaining": int(keep.sum())})
    for metric, q in rule.bottom:
        keep &= quantile_mask(df, metric, q, largest=False)
        steps.append({"step": "bottom", "rule": f"bottom {q:g} of {metric}", "remaining": int(keep.sum())})

    # 3. SQL
    if rule.where:
        keep &= where_mask(df, rule.where)
        steps.append({"step": "where", "rule": rule.where, "remaining": int(keep.sum())})

    # 4. cross-seed agreement
    if rule.min_agreement is not None:
        if "category_agreement" not in df.columns:
            raise UsageError(
                "--min-agreement needs a profile of several runs (seeds); this profile has one run, "
                "so it has no category_agreement column"
            )
        keep &= (df["category_agreement"] >= float(rule.min_agreement)).fill_null(False).to_numpy()
        steps.append({"step": "agreement", "rule": f"category_agreement >= {rule.min_agreement:g}",
                      "remaining": int(keep.sum())})  # fmt: skip

    idx = np.flatnonzero(keep)
    rng = np.random.default_rng(rule.seed)

    # 5. balance labels
    labels = df["label"].to_numpy() if "label" in df.columns else None
    if rule.balance_labels:
        if labels is None:
            raise UsageError("--balance-labels needs a label column in the profile")
        present, counts = np.unique(labels[idx], return_counts=True)
        all_labels = _label_list(df)
        missing = [name for code, name in all_labels if code not in set(present.tolist())]
        if missing:
            warnings.append(f"no selected example has label {', '.join(missing)}; balancing the other labels")
        per_label = int(counts.min()) if len(counts) else 0
        if rule.max_examples is not None and len(present):
            per_label = min(per_label, rule.max_examples // len(present))
        idx = np.sort(np.concatenate([_sample(idx[labels[idx] == lab], per_label, rng) for lab in present]
                                     or [np.empty(0, np.int64)]))  # fmt: skip
        steps.append({"step": "balance", "rule": f"{per_label} per label (of {len(present)})", "remaining": len(idx)})

    # 6. random cap
    if rule.max_examples is not None and not rule.balance_labels:
        idx = _sample(idx, rule.max_examples, rng)
        steps.append({"step": "cap", "rule": f"at most {rule.max_examples} (seed {rule.seed})", "remaining": len(idx)})

    rows = df[idx] if len(idx) else df.head(0)
    if rows.height == 0:
        warnings.append("the selection is empty")
    return Selection(rows=rows, rule=rule, profile_rows=n, steps=steps, warnings=warnings)


def _label_list(df) -> list[tuple[int, str]]:
    """(code, name) of the labels the profile knows (from label/label_name)."""
    if "label_name" in df.columns:
        pairs = df.select("label", "label_name").unique().sort("label").rows()
        return [(int(a), str(b)) for a, b in pairs]
    return [(int(v), str(v)) for v in sorted(set(df["label"].to_list()))]


def counts(df, column: str, names: Sequence[str] | None = None) -> dict[str, int]:
    """Counts per value of `column` (all `names` listed, zeros included, in their order)."""
    import polars as pl

    if column not in df.columns:
        return {}
    got = {str(k): int(v) for k, v in df[column].cast(pl.String).value_counts().rows()}
    if names is None:
        return dict(sorted(got.items()))
    out = {str(k): got.pop(str(k), 0) for k in names}
    out.update(sorted(got.items()))
    return out
