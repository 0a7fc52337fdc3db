"""Dataset Cartography data map: variability (x) against confidence (y), one point per example.

Points are coloured by SOI category or by correctness; the region thresholds the profile used
are drawn as lines (taken from the profile's metadata, so they sit where the data put them),
and a large profile is subsampled (uniformly, with a fixed seed) so 10^6 examples still draw
in about a second and stay readable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from soicurate.atomic import atomic_path
from soicurate.profiling.soi import CATEGORIES

CATEGORY_COLORS = {
    "always_correct": "#1b9e77",
    "learned_early": "#66a61e",
    "learned_late": "#e6ab02",
    "forgettable": "#7570b3",
    "forgotten": "#d95f02",
    "unlearned": "#e7298a",
}
DEFAULT_MAX_POINTS = 60_000


def profile_metadata(path: str | Path) -> dict:
    """The `soicurate.profile` metadata (thresholds, runs, labels) of a profile Parquet file."""
    import pyarrow.parquet as pq

    from soicurate.profiling.pipeline import PROFILE_METADATA_KEY

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(PROFILE_METADATA_KEY)
    return json.loads(raw) if raw else {}


def plot_datamap(
    df,
    output: str | Path,
    *,
    color_by: str = "category",
    thresholds: dict | None = None,
    title: str | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
    marginals: bool = True,
    seed: int = 0,
) -> Path:
    """Draw the data map of a profile DataFrame `df` into the PNG `output` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if color_by not in ("category", "correctness"):
        raise ValueError(f"color_by must be 'category' or 'correctness', got {color_by!r}")
    n_total = df.height
    shown = df if n_total <= max_points else df.sample(n=max_points, seed=seed)
    x = shown["variability"].to_numpy()
    y = shown["confidence"].to_numpy()

    fig = plt.figure(figsize=(8.5, 7.5) if marginals else (8, 6.5), dpi=110)
    if marginals:
        grid = fig.add_gridspec(2, 2, width_ratios=(5, 1), height_ratios=(1, 5), wspace=0.04, hspace=0.04)
        ax = fig.add_subplot(grid[1, 0])
        ax_top = fig.add_subplot(grid[0, 0], sharex=ax)
        ax_right = fig.add_subplot(grid[1, 1], sharey=ax)
    else:
        ax = fig.add_subplot(111)
    size = float(np.clip(30000 / max(len(x), 1), 2.0, 18))
    alpha = float(np.clip(8000 / max(len(x), 1), 0.3, 0.85))
    if color_by == "category":
        cats = shown["category"].cast(str).to_numpy()
        for name in CATEGORIES:
            mask = cats == name
            if mask.any():
                count = int((df["category"].cast(str) == name).sum())
                ax.scatter(x[mask], y[mask], s=size, alpha=alpha, c=CATEGORY_COLORS[name], linewidths=0,
                           label=f"{name.replace('_', ' ')} ({count:,})", rasterized=True)  # fmt: skip
        legend = ax.legend(loc="lower right", fontsize=8, markerscale=max(1.0, 6 / size ** 0.5), framealpha=0.9)
        for handle in legend.legend_handles:
            handle.set_alpha(1)
    else:
        corr = shown["correctness"].to_numpy()
        sc = ax.scatter(x, y, s=size, alpha=alpha, c=corr, cmap="viridis", vmin=0, vmax=1, linewidths=0, rasterized=True)
        cbar = fig.colorbar(sc, ax=ax_right if marginals else ax, fraction=0.5 if marginals else 0.05, pad=0.02)
        cbar.set_label("correctness (share of epochs correct)")
        cbar.solids.set_alpha(1)

    t = thresholds or {}
    v_thr, c_thr = t.get("variability"), t.get("confidence")
    x_max = max(0.5 if len(x) == 0 else float(np.nanmax(x)) * 1.05, (v_thr or 0) * 1.1, 0.05)
    ax.set_xlim(0, x_max)
    ax.set_ylim(-0.02, 1.02)
    if v_thr is not None and np.isfinite(v_thr):
        ax.axvline(v_thr, color="0.25", lw=1, ls="--")
        ax.text(v_thr + 0.005 * x_max, 0.5, "ambiguous", color="0.2", fontsize=10, va="center", rotation=90, fontweight="bold")
    if c_thr is not None and np.isfinite(c_thr):
        right = v_thr if v_thr is not None and np.isfinite(v_thr) else x_max
        ax.plot([0, right], [c_thr, c_thr], color="0.25", lw=1, ls="--")
        ax.text(0.01 * x_max, c_thr - 0.03, "hard-to-learn", color="0.2", fontsize=10, va="top", fontweight="bold")
        ax.text(0.01 * x_max, min(1.0, c_thr + 0.03), "easy-to-learn", color="0.2", fontsize=10, va="bottom", fontweight="bold")
    ax.set_xlabel("variability (std of gold-label probability across epochs)")
    ax.set_ylabel("confidence (mean gold-label probability)")
    ax.grid(alpha=0.25)
    if marginals:
        ax_top.hist(df["variability"].to_numpy(), bins=60, color="0.45")
        ax_right.hist(df["confidence"].to_numpy(), bins=60, orientation="horizontal", color="0.45")
        ax_top.tick_params(labelbottom=False, labelsize=7)
        ax_right.tick_params(labelleft=False, labelsize=7)
        ax_top.set_ylabel("examples", fontsize=8)
        ax_right.set_xlabel("examples", fontsize=8)
        for a in (ax_top, ax_right):
            a.grid(alpha=0.25)
    heading = title or "Data map"
    sub = f"{n_total:,} examples" + (f", {len(x):,} shown (uniform sample)" if len(x) < n_total else "")
    (ax_top if marginals else ax).set_title(f"{heading}\n{sub}", fontsize=11, loc="left")
    output = Path(output)
    with atomic_path(output, ".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return output
