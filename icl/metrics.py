"""Classification metrics over predictions and gold labels (class indices)."""

from __future__ import annotations

import numpy as np


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float(np.mean(pred == gold)) if len(gold) else float("nan")


def macro_f1(pred, gold, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over all classes; a class never hit scores 0."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    scores = []
    for c in range(n_classes):
        tp = np.sum((pred == c) & (gold == c))
        fp = np.sum((pred == c) & (gold != c))
        fn = np.sum((pred != c) & (gold == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def prediction_shares(pred, n_classes: int) -> list[float]:
    """The share of predictions that went to each class (a collapsed model shows here)."""
    pred = np.asarray(pred, dtype=int)
    if not len(pred):
        return [float("nan")] * n_classes
    return (np.bincount(pred, minlength=n_classes) / len(pred)).tolist()


def majority_share(gold, n_classes: int) -> float:
    """The accuracy of always predicting the most frequent gold class."""
    gold = np.asarray(gold, dtype=int)
    return float(np.bincount(gold, minlength=n_classes).max() / len(gold)) if len(gold) else 0.0


def majority_macro_f1(gold, n_classes: int) -> float:
    """The macro-F1 of always predicting the most frequent gold class: that class's F1,
    2 n_c / (n + n_c), over the number of classes (every other class scores 0)."""
    gold = np.asarray(gold, dtype=int)
    if not len(gold):
        return 0.0
    top = np.bincount(gold, minlength=n_classes).max()
    return float(2 * top / (len(gold) + top) / n_classes)


def classification_metrics(pred, gold, label_names: list[str]) -> dict:
    n = len(label_names)
    shares = prediction_shares(pred, n)
    return {
        "accuracy": accuracy(pred, gold),
        "macro_f1": macro_f1(pred, gold, n),
        "n": int(len(gold)),
        "prediction_share": dict(zip(label_names, shares)),
        "majority_baseline": majority_share(gold, n),
        "majority_baseline_macro_f1": majority_macro_f1(gold, n),
    }
