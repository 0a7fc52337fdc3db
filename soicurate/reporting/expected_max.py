"""The expected-max plot of a seed sweep: expected best score against the number of runs."""

from __future__ import annotations

import numpy as np


def plot_expected_max(expected: dict, metric: str, path) -> None:
    """E[max of n] against n, one line per eval set, with a +-1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, per_metric in expected.items():
        row = per_metric.get(metric)
        if not row:
            continue
        n, mean, std = np.array(row["n"]), np.array(row["expected_max"]), np.array(row["std"])
        ax.plot(n, mean, marker="o", label=name)
        ax.fill_between(n, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("number of fine-tuning runs n")
    ax.set_ylabel(f"expected best {metric}")
    ax.set_title("Expected validation performance (Dodge et al., 2020)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
