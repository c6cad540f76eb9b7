"""The champion/challenger gate: is a new model really better, or is the difference noise?

Both models are scored on the same labelled rows (paired), or each on its own customers (a
canary: unpaired). The rule, one-sided at ALPHA = 0.05:

- ROC AUC (ranking, what a retention team calling the top of the list needs): the challenger's
  gain must be significant by DeLong's test for correlated ROC curves (DeLong, DeLong and
  Clarke-Pearson 1988; paired) or for independent samples (unpaired);
- log loss (calibration): the challenger must not be significantly worse (a t-test on the
  per-row differences, paired; Welch's, unpaired).

Promote when both hold, the gain exceeding MIN_AUC_GAIN. Reject when the champion's ROC AUC is
significantly better, or the challenger's log loss significantly worse. Otherwise the evidence
does not decide (wait, or keep the champion). Log loss alone is not enough: a challenger that only
learned a new group's base rate lowers it while ranking worse.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import norm, rankdata

from churn.evaluation import EPS, classification_metrics

ALPHA = 0.05
Z = float(norm.ppf(1 - ALPHA))  # 1.645: one-sided
# The least ROC AUC gain worth a promotion. Two trainings of the same model on the same data rank
# the same rows almost alike, so their predictions are so correlated that a gain of 0.001 can be
# "significant" on a few hundred rows: measured, 11 % of such null comparisons promoted without
# a margin, none with it (tests/integration/test_gate_error_rates.py).
MIN_AUC_GAIN = 0.005
RULE = (
    f"promote if the challenger's ROC AUC gain exceeds {MIN_AUC_GAIN} significantly (DeLong, one-sided "
    f"alpha {ALPHA}) and its log loss is not significantly worse (t-test on the row differences, one-sided "
    f"alpha {ALPHA}); reject if the champion ranks significantly better or the challenger's log loss is "
    "significantly worse; otherwise undecided"
)


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs of k score rows on one label vector, and their structural components (Sun and Xu's
    fast DeLong): V10 over positives, V01 over negatives, one row per score vector."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    all_ranks = np.vstack([rankdata(row) for row in np.hstack([pos, neg])])
    pos_ranks = np.vstack([rankdata(row) for row in pos])
    neg_ranks = np.vstack([rankdata(row) for row in neg])
    aucs = (all_ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (all_ranks[:, :m] - pos_ranks) / n  # for each positive: share of negatives ranked below
    v01 = 1.0 - (all_ranks[:, m:] - neg_ranks) / m  # for each negative: share of positives above
    return aucs, v10, v01


def auc_variance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for k score vectors on the same rows."""
    scores = np.atleast_2d(scores)
    aucs, v10, v01 = _delong_components(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, cov


def _row_log_loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@dataclass(frozen=True)
class GateResult:
    decision: Literal["promote", "reject", "undecided"]
    reason: str
    n_champion: int
    n_challenger: int
    paired: bool
    delta_roc_auc: float  # challenger - champion
    z_roc_auc: float
    delta_log_loss: float  # challenger - champion (lower is better)
    t_log_loss: float
    champion: dict[str, Any]
    challenger: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rule": RULE}


def _decide(d_auc: float, se_auc: float, d_ll: float, t_ll: float) -> tuple[str, str, float]:
    """(decision, reason, z of the ROC AUC difference)."""
    z_auc = d_auc / se_auc if se_auc > 0 else (0.0 if d_auc == 0 else math.copysign(math.inf, d_auc))
    z_gain = (
        (d_auc - MIN_AUC_GAIN) / se_auc if se_auc > 0 else (math.inf if d_auc > MIN_AUC_GAIN else -math.inf)
    )
    facts = f"ROC AUC {d_auc:+.4f} (z {z_auc:.2f}), log loss {d_ll:+.4f} (t {t_ll:.2f})"
    if z_gain >= Z and t_ll < Z:
        return "promote", f"better: {facts}", z_auc
    if z_auc <= -Z or t_ll >= Z:
        return "reject", f"worse: {facts}", z_auc
    return "undecided", f"no significant gain over {MIN_AUC_GAIN}: {facts}", z_auc


def _result(
    stats: tuple[float, float, float, float], sizes: tuple[int, int], paired: bool, champion, challenger
):
    d_auc, se_auc, d_ll, t_ll = stats
    decision, reason, z_auc = _decide(d_auc, se_auc, d_ll, t_ll)
    return GateResult(
        decision, reason, sizes[0], sizes[1], paired,  # type: ignore[arg-type]
        round(d_auc, 6), round(z_auc, 4), round(d_ll, 6), round(t_ll, 4), champion, challenger,
    )  # fmt: skip


def _metrics(tag: str, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    return {"tag": tag, "n": int(len(y)), "threshold": threshold} | classification_metrics(y, p, threshold)


def compare_paired(
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    tags: tuple[str, str],
    thresholds: tuple[float, float],
) -> GateResult:
    """Both models scored the same rows (the retraining's evaluation window, or a shadow's records)."""
    y = np.asarray(y, int)
    if len(np.unique(y)) < 2:
        raise ValueError("the rows hold one outcome only: ROC AUC cannot compare the models")
    aucs, cov = auc_variance(y, np.vstack([champion, challenger]))
    d_auc = float(aucs[1] - aucs[0])
    se_auc = math.sqrt(max(0.0, float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])))
    diff = _row_log_loss(y, np.asarray(challenger)) - _row_log_loss(y, np.asarray(champion))
    se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
    d_ll = float(diff.mean())
    t_ll = d_ll / se if se > 0 else 0.0
    return _result(
        (d_auc, se_auc, d_ll, t_ll), (len(y), len(y)), True,
        _metrics(tags[0], y, champion, thresholds[0]), _metrics(tags[1], y, challenger, thresholds[1]),
    )  # fmt: skip


def compare_unpaired(
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    tags: tuple[str, str],
    thresholds: tuple[float, float],
) -> GateResult:
    """Each model on its own rows (a canary: each version answered its own customers); each pair
    is (outcomes, probabilities)."""
    (y0, p0), (y1, p1) = ((np.asarray(y, int), np.asarray(p, float)) for y, p in (champion, challenger))
    for y in (y0, y1):
        if len(np.unique(y)) < 2:
            raise ValueError("one side's rows hold one outcome only: ROC AUC cannot compare the models")
    (a0,), c0 = auc_variance(y0, p0[None, :])
    (a1,), c1 = auc_variance(y1, p1[None, :])
    d_auc = float(a1 - a0)
    se_auc = math.sqrt(max(0.0, float(c0[0, 0] + c1[0, 0])))
    l0, l1 = _row_log_loss(y0, p0), _row_log_loss(y1, p1)
    d_ll = float(l1.mean() - l0.mean())
    se = math.sqrt(l0.var(ddof=1) / len(l0) + l1.var(ddof=1) / len(l1))
    t_ll = d_ll / se if se > 0 else 0.0
    return _result(
        (d_auc, se_auc, d_ll, t_ll), (len(y0), len(y1)), False,
        _metrics(tags[0], y0, p0, thresholds[0]), _metrics(tags[1], y1, p1, thresholds[1]),
    )  # fmt: skip
