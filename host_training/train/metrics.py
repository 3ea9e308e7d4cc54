"""Classification metrics as pure numpy functions (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """n x n counts; rows are the true class, columns the predicted one."""
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    return m


def report(y_true: np.ndarray, y_pred: np.ndarray, names: tuple[str, ...]) -> dict:
    """accuracy, n, per-class precision/recall/f1/support and the confusion matrix."""
    n = len(names)
    m = confusion(np.asarray(y_true), np.asarray(y_pred), n)
    tp = np.diag(m).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(m.sum(0) > 0, tp / m.sum(0), 0.0)
        recall = np.where(m.sum(1) > 0, tp / m.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = int(m.sum())
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "n": total,
        "per_class": {
            name: {"precision": round(float(precision[i]), 4), "recall": round(float(recall[i]), 4),
                   "f1": round(float(f1[i]), 4), "support": int(m[i].sum())}
            for i, name in enumerate(names)
        },
        "confusion_matrix": m.tolist(),
        "labels": list(names),
    }


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of samples where two models' top-1 agree."""
    return float(np.mean(np.asarray(a) == np.asarray(b))) if len(a) else 0.0
