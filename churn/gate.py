"""The champion/challenger gate: is a new model really better, or is the difference noise?

Both models are scored on the same labelled rows (paired), or each on its own customers (a
canary: unpaired). Before any comparison, each side's rows must hold at least GATE_MIN_CLASS_COUNT
churners and as many non-churners (fewer: TooFewOutcomes, nothing is compared). Then, one-sided
at ALPHA = 0.05:

- ROC AUC (ranking, what a retention team calling the top of the list needs): the challenger's
  gain over MIN_AUC_GAIN must be significant by DeLong's test for correlated ROC curves (DeLong,
  DeLong and Clarke-Pearson 1988; paired) or for independent samples (unpaired);
- log loss (calibration): the challenger must be non-inferior: its log loss significantly less
  than the champion's plus LOG_LOSS_MARGIN (a t-test on the per-row differences, paired; Welch's,
  unpaired). "Not significantly worse" is not enough: at small n a calibration regression passes.

Promote when both hold. Reject when the champion's ROC AUC is significantly better, or the
challenger's log loss significantly worse. Otherwise the evidence does not decide. Log loss alone
is not enough: a challenger that only learned a new group's base rate lowers it while ranking worse.

That is a test for one look (training.retrain: one evaluation window). training.decide looks again
at a growing sample every time it runs, so it uses a design that holds its error rate across any
number of looks: a one-sided mixture sequential probability ratio test (mSPRT; Robbins 1970,
Johari et al. 2017, "always valid p-values"), see `sequential_decision`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import norm, rankdata

from churn.evaluation import EPS, classification_metrics
from churn.model_registry import SequentialDesign
from churn.settings import DEFAULT_GATE_MIN_CLASS_COUNT

ALPHA = 0.05
Z = float(norm.ppf(1 - ALPHA))  # 1.645: one-sided
# The least ROC AUC gain worth a promotion. Two trainings of the same model on the same data rank
# the same rows almost alike, so their predictions are so correlated that a gain of 0.001 can be
# "significant" on a few hundred rows: measured, 11 % of such null comparisons promoted without
# a margin, none with it (tests/integration/test_gate_error_rates.py).
MIN_AUC_GAIN = 0.005
# Log-loss non-inferiority margin (nats): the calibration loss we accept for a better ranking.
# 0.02 is 3-5 % of the log loss of the models here (0.42 on the data set's test rows, 0.59 in the
# unit tests' simulation); a challenger worse by more must not be promoted however well it ranks.
LOG_LOSS_MARGIN = 0.02
# The always-valid test's mixing scales: the size of a plausible true effect. Gains seen here run
# from ROC AUC +0.03 (the demo's retraining) to +0.13 (the rollout test's canary): with 0.05 both
# are found (0.03 reached the bound about as often as with a scale of 0.03, simulated; 0.13 on
# ~470 customers a side 3x more surely). 0.05 nats of log loss is a clear calibration change.
TAU_AUC = 0.05
TAU_LOG_LOSS = 0.05
RULE = (
    f"each class needs the minimum count on each side; promote if the challenger's ROC AUC gain "
    f"exceeds {MIN_AUC_GAIN} significantly (DeLong, one-sided alpha {ALPHA}) and its log loss is "
    f"significantly below the champion's + {LOG_LOSS_MARGIN} (non-inferiority; t-test on the row "
    f"differences, one-sided alpha {ALPHA}); reject if the champion ranks significantly better or the "
    "challenger's log loss is significantly worse; otherwise undecided"
)
SEQUENTIAL_METHOD = "one-sided mixture SPRT (half-normal mixture), always valid across looks"


class TooFewOutcomes(ValueError):
    """A side's rows hold fewer churners or non-churners than the minimum: nothing to compare."""


def sequential_design(min_class_count: int = DEFAULT_GATE_MIN_CLASS_COUNT) -> SequentialDesign:
    """The design a candidate is judged by, fixed when it is staged (kept in the registry)."""
    return {
        "method": SEQUENTIAL_METHOD,
        "alpha": ALPHA,
        "auc_margin": MIN_AUC_GAIN,
        "log_loss_margin": LOG_LOSS_MARGIN,
        "tau_auc": TAU_AUC,
        "tau_log_loss": TAU_LOG_LOSS,
        "min_class_count": min_class_count,
    }


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


def _require_counts(y: np.ndarray, min_class_count: int, side: str) -> None:
    churners = int(y.sum())
    if min(churners, len(y) - churners) < min_class_count:
        raise TooFewOutcomes(
            f"{side} hold {churners} churner(s) and {len(y) - churners} non-churner(s); each class needs "
            f"{min_class_count} (GATE_MIN_CLASS_COUNT) before the models are compared"
        )


@dataclass(frozen=True)
class Stats:
    """The two differences the gate judges (challenger - champion) and their standard errors."""

    d_auc: float
    se_auc: float
    d_ll: float  # lower is better
    se_ll: float
    sizes: tuple[int, int]
    paired: bool


def paired_stats(y: np.ndarray, champion: np.ndarray, challenger: np.ndarray, min_class_count: int) -> Stats:
    y = np.asarray(y, int)
    _require_counts(y, min_class_count, "the rows")
    aucs, cov = auc_variance(y, np.vstack([champion, challenger]))
    var_auc = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    diff = _row_log_loss(y, np.asarray(challenger)) - _row_log_loss(y, np.asarray(champion))
    return Stats(
        float(aucs[1] - aucs[0]), math.sqrt(max(0.0, var_auc)),
        float(diff.mean()), float(diff.std(ddof=1) / math.sqrt(len(diff))), (len(y), len(y)), True,
    )  # fmt: skip


def unpaired_stats(
    champion: tuple[np.ndarray, np.ndarray], challenger: tuple[np.ndarray, np.ndarray], min_class_count: int
) -> Stats:
    (y0, p0), (y1, p1) = ((np.asarray(y, int), np.asarray(p, float)) for y, p in (champion, challenger))
    _require_counts(y0, min_class_count, "the champion's rows")
    _require_counts(y1, min_class_count, "the challenger's rows")
    (a0,), c0 = auc_variance(y0, p0[None, :])
    (a1,), c1 = auc_variance(y1, p1[None, :])
    l0, l1 = _row_log_loss(y0, p0), _row_log_loss(y1, p1)
    return Stats(
        float(a1 - a0), math.sqrt(max(0.0, float(c0[0, 0] + c1[0, 0]))),
        float(l1.mean() - l0.mean()), math.sqrt(l0.var(ddof=1) / len(l0) + l1.var(ddof=1) / len(l1)),
        (len(y0), len(y1)), False,
    )  # fmt: skip


def _facts(s: Stats) -> str:
    return (
        f"ROC AUC {s.d_auc:+.4f} (se {s.se_auc:.4f}), log loss {s.d_ll:+.4f} (se {s.se_ll:.4f}, "
        f"margin {LOG_LOSS_MARGIN})"
    )


def _degenerate(s: Stats) -> str | None:
    """A standard error that is zero or not finite cannot judge anything (never a z of infinity)."""
    for name, se in (("ROC AUC", s.se_auc), ("log loss", s.se_ll)):
        if not (math.isfinite(se) and se > 0):
            return f"no variance in the {name} difference (identical or degenerate scores): {_facts(s)}"
    return None


def fixed_decision(s: Stats) -> tuple[Literal["promote", "reject", "undecided"], str, dict[str, float]]:
    """One look at one-sided ALPHA: (decision, reason, statistics)."""
    why = _degenerate(s)
    if why:
        return "undecided", why, {}
    z_auc, z_gain = s.d_auc / s.se_auc, (s.d_auc - MIN_AUC_GAIN) / s.se_auc
    t_ll, t_ni = s.d_ll / s.se_ll, (s.d_ll - LOG_LOSS_MARGIN) / s.se_ll
    stats = {"z_roc_auc": z_auc, "z_gain": z_gain, "t_log_loss": t_ll, "t_non_inferiority": t_ni}
    facts = f"{_facts(s)}; z {z_auc:.2f}, t {t_ll:.2f}, non-inferiority t {t_ni:.2f}"
    if z_gain >= Z and t_ni <= -Z:
        return "promote", f"better: {facts}", stats
    if z_auc <= -Z or t_ll >= Z:
        return "reject", f"worse: {facts}", stats
    return (
        "undecided",
        f"no significant gain over {MIN_AUC_GAIN} with log loss within the margin: {facts}",
        stats,
    )


def mixture_lr(estimate: float, se: float, tau: float) -> float:
    """The one-sided mixture likelihood ratio for "the effect is > 0" after observing `estimate`
    with standard error `se`: the Gaussian likelihood ratio exp(theta S - theta^2 I / 2) (I = 1/se^2,
    S = estimate I) averaged over a half-normal prior theta ~ |N(0, tau^2)|. In closed form,
    2 / sqrt(1 + tau^2 I) exp(S^2 / 2a) Phi(S / sqrt(a)), a = I + 1/tau^2. It is a non-negative
    martingale with mean 1 whenever the true effect is <= 0, so by Ville's inequality it ever
    reaches 1/alpha with probability at most alpha, however often one looks."""
    info = 1.0 / se**2
    score = estimate * info
    a = info + 1.0 / tau**2
    log_lr = (
        math.log(2.0)
        - 0.5 * math.log1p(tau**2 * info)
        + score**2 / (2 * a)
        + norm.logcdf(score / math.sqrt(a))
    )
    return math.exp(min(log_lr, 700.0))


def sequential_decision(
    s: Stats, design: SequentialDesign
) -> tuple[Literal["promote", "reject", "undecided"], str, dict[str, float]]:
    """A look of training.decide: promote when the challenger's gain over the ROC AUC margin and
    its log-loss non-inferiority are both established (each mixture ratio >= 1/alpha); reject when
    the champion ranks better or the challenger's log loss is worse (likewise); else undecided
    (wait, look again later). Valid at every look, whatever the number of looks."""
    why = _degenerate(s)
    if why:
        return "undecided", why, {}
    bound = 1.0 / design["alpha"]
    lr = {
        "lr_gain": mixture_lr(s.d_auc - design["auc_margin"], s.se_auc, design["tau_auc"]),
        "lr_non_inferiority": mixture_lr(design["log_loss_margin"] - s.d_ll, s.se_ll, design["tau_log_loss"]),
        "lr_auc_worse": mixture_lr(-s.d_auc, s.se_auc, design["tau_auc"]),
        "lr_log_loss_worse": mixture_lr(s.d_ll, s.se_ll, design["tau_log_loss"]),
    }
    stats = lr | {"z_roc_auc": s.d_auc / s.se_auc, "t_log_loss": s.d_ll / s.se_ll, "bound": bound}
    facts = f"{_facts(s)}; mixture ratios " + ", ".join(f"{k[3:]} {v:.3g}" for k, v in lr.items())
    facts += f" (bound {bound:g})"
    if lr["lr_gain"] >= bound and lr["lr_non_inferiority"] >= bound:
        return "promote", f"better: {facts}", stats
    if lr["lr_auc_worse"] >= bound or lr["lr_log_loss_worse"] >= bound:
        return "reject", f"worse: {facts}", stats
    return "undecided", f"not decided yet: {facts}", stats


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
    statistics: dict[str, float]  # the test's statistics (z / t, or the sequential test's ratios)
    champion: dict[str, Any]
    challenger: dict[str, Any]
    design: SequentialDesign | None = None  # the sequential design of training.decide, if used

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"rule": RULE}


def _metrics(tag: str, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    return {"tag": tag, "n": int(len(y)), "threshold": threshold} | classification_metrics(y, p, threshold)


def _result(s: Stats, design: SequentialDesign | None, champion, challenger) -> GateResult:
    decision, reason, stats = fixed_decision(s) if design is None else sequential_decision(s, design)
    z_auc = s.d_auc / s.se_auc if s.se_auc > 0 else 0.0
    t_ll = s.d_ll / s.se_ll if s.se_ll > 0 else 0.0
    return GateResult(
        decision, reason, s.sizes[0], s.sizes[1], s.paired,
        round(s.d_auc, 6), round(z_auc, 4), round(s.d_ll, 6), round(t_ll, 4),
        {k: round(v, 4) for k, v in stats.items()}, champion, challenger, design,
    )  # fmt: skip


def compare_paired(
    y: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    tags: tuple[str, str],
    thresholds: tuple[float, float],
    min_class_count: int = DEFAULT_GATE_MIN_CLASS_COUNT,
    design: SequentialDesign | None = None,
) -> GateResult:
    """Both models scored the same rows (the retraining's evaluation window, or a shadow's records).
    With `design`, the sequential test of training.decide; else one look. TooFewOutcomes below
    `min_class_count` (the design's, when given) of either class."""
    y = np.asarray(y, int)
    count = design["min_class_count"] if design is not None else min_class_count
    s = paired_stats(y, np.asarray(champion, float), np.asarray(challenger, float), count)
    return _result(
        s,
        design,
        _metrics(tags[0], y, champion, thresholds[0]),
        _metrics(tags[1], y, challenger, thresholds[1]),
    )


def compare_unpaired(
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    tags: tuple[str, str],
    thresholds: tuple[float, float],
    min_class_count: int = DEFAULT_GATE_MIN_CLASS_COUNT,
    design: SequentialDesign | None = None,
) -> GateResult:
    """Each model on its own rows (a canary: each version answered its own customers); each pair
    is (outcomes, probabilities)."""
    count = design["min_class_count"] if design is not None else min_class_count
    s = unpaired_stats(champion, challenger, count)
    (y0, p0), (y1, p1) = ((np.asarray(y, int), np.asarray(p, float)) for y, p in (champion, challenger))
    return _result(
        s, design, _metrics(tags[0], y0, p0, thresholds[0]), _metrics(tags[1], y1, p1, thresholds[1])
    )
