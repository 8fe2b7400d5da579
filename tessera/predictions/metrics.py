"""Accuracy measures of the back-test: what an analyst reads to decide whether to trust a
model, each computed the same way for a model and for its naive baselines."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

# Which way is better, per metric: the asset check compares a model with its baselines.
HIGHER_IS_BETTER = {"auc": True, "average_precision": True, "top_decile_lift": True,
                    "brier": False, "mae": False, "abs_total_error_pct": False}


def top_decile_lift(y: np.ndarray, score: np.ndarray) -> float:
    """Positive rate among the 10 % highest scores over the overall positive rate. Ties are
    broken by position (the population's customer order), so the figure is deterministic."""
    n = len(y)
    if n == 0 or y.sum() == 0:
        return float("nan")
    k = max(1, n // 10)
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean() / y.mean())


def classification(y: np.ndarray, score: np.ndarray, probability: bool) -> dict[str, float]:
    """AUC, average precision and top-decile lift of a score; Brier and the calibration
    ratio (mean predicted over observed rate) only when the score is a probability."""
    y = np.asarray(y, int)
    score = np.asarray(score, float)
    out = {"auc": float("nan"), "average_precision": float("nan"),
           "top_decile_lift": top_decile_lift(y, score)}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, score))
        out["average_precision"] = float(average_precision_score(y, score))
    if probability:
        out["brier"] = float(brier_score_loss(y, np.clip(score, 0, 1)))
        out["calibration_ratio"] = float(score.mean() / y.mean()) if y.sum() else float("nan")
    return out


def counts(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Mean absolute error per contact, and the error of the total in percent (signed and
    absolute): a campaign planner cares about both."""
    actual = np.asarray(actual, float)
    predicted = np.asarray(predicted, float)
    total = actual.sum()
    err = (predicted.sum() - total) / total * 100 if total else float("nan")
    return {"mae": float(np.abs(predicted - actual).mean()) if len(actual) else float("nan"),
            "total_error_pct": float(err), "abs_total_error_pct": float(abs(err))}
