"""The decision threshold a training run chooses (its metrics: churn.evaluation)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve


def choose_threshold(y_true: np.ndarray, proba: np.ndarray) -> float:
    """The probability cut-off that maximises F1 (churners are the minority class, 26.5 %).

    Chosen on out-of-fold predictions of the training part, never on the test part.
    """
    precision, recall, thresholds = precision_recall_curve(y_true, proba)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    return float(round(thresholds[best], 4))
