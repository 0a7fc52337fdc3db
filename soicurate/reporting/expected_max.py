"""The expected-max plot of a seed sweep: expected best score against the number of runs."""

from __future__ import annotations

import numpy as np


def plot_expected_max(expected: dict, metric: str, path) -> None:
    """E[max of n] against n with a +-1 std band, one panel per eval set.

    Each panel has its own y range: in- and out-of-distribution scores usually lie far apart,
    and on a shared axis the gain from more runs (a point or two) would look flat. The single
    runs' scores are drawn at n = 1 so the spread behind the curve is visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, per_metric[metric]) for name, per_metric in expected.items() if per_metric.get(metric)]
    if not rows:
        raise ValueError(f"no eval set has {metric} scores to plot")
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.8), squeeze=False)
    for ax, (name, row) in zip(axes[0], rows):
        n, mean, std = np.array(row["n"]), np.array(row["expected_max"]), np.array(row["std"])
        ax.fill_between(n, mean - std, mean + std, alpha=0.2, color="C0", label="±1 std")
        ax.plot(n, mean, marker="o", color="C0", label="expected best")
        scores = np.asarray(row.get("scores", []), dtype=float)
        if scores.size:
            ax.scatter(np.ones_like(scores), scores, marker="_", s=120, color="0.3", zorder=3, label="single runs")
        ax.annotate(f"{mean[0]:.4f}", (n[0], mean[0]), textcoords="offset points", xytext=(6, -12), fontsize=8)
        ax.annotate(f"{mean[-1]:.4f}", (n[-1], mean[-1]), textcoords="offset points", xytext=(-30, 8), fontsize=8)
        ax.set_title(name)
        ax.set_xlabel("number of fine-tuning runs n")
        ax.set_xticks(n)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"expected best {metric}")
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle("Expected validation performance (Dodge et al., 2020)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
