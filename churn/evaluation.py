"""How right a model is on labelled rows: one set of metrics for training (test split), the
performance report (outcomes that came back) and the retraining gate (its evaluation window)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

# log loss of a probability of exactly 0 or 1 on a wrong label is infinite; clip as sklearn does.
EPS = 1e-15


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray, threshold: float | None = None, predicted: np.ndarray | None = None
) -> dict[str, float | None]:
    """ROC AUC, PR AUC, F1, precision, recall, accuracy, Brier, log loss. The labels are
    `proba >= threshold`, or `predicted` (what was served). ROC AUC and PR AUC are None when the
    rows hold one class only (they are undefined)."""
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    pred = (proba >= threshold).astype(int) if predicted is None else np.asarray(predicted, dtype=int)
    both = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(roc_auc_score(y_true, proba)) if both else None,
        "pr_auc": float(average_precision_score(y_true, proba)) if both else None,
        "f1": float(f1_score(y_true, pred, zero_division=0)),
        "precision": float(precision_score(y_true, pred, zero_division=0)),
        "recall": float(recall_score(y_true, pred, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, pred)),
        "brier": float(brier_score_loss(y_true, proba)),
        "log_loss": float(log_loss(y_true, np.clip(proba, EPS, 1 - EPS), labels=[0, 1])),
    }
