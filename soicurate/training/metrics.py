"""Classification metrics for evaluation sets: accuracy and macro-F1 (numpy, no extra deps)."""

from __future__ import annotations

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_labels: int | None = None) -> float:
    """Unweighted mean of per-label F1 over the labels present in gold or pred (as sklearn)."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    if not len(gold):
        return float("nan")
    labels = np.union1d(np.unique(gold), np.unique(pred)) if num_labels is None else np.arange(num_labels)
    labels = [k for k in labels if (gold == k).any() or (pred == k).any()]
    scores = []
    for k in labels:
        tp = np.sum((pred == k) & (gold == k))
        fp = np.sum((pred == k) & (gold != k))
        fn = np.sum((pred != k) & (gold == k))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def classification_metrics(logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    pred = np.asarray(logits).argmax(axis=-1)
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold)}
