"""The champion/challenger gate: DeLong's variance, and decisions that tell a gain from noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from churn.gate import TooFewOutcomes, auc_variance, compare_paired, compare_unpaired
from churn.settings import DEFAULT_GATE_MIN_CLASS_COUNT


def _rows(n: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    signal = y + rng.normal(0, 1.0, n)
    return y.astype(int), signal, rng


def test_delong_auc_matches_sklearn_and_its_variance_the_bootstrap():
    y, signal, rng = _rows(400, 1)
    other = signal + rng.normal(0, 0.7, len(y))
    aucs, cov = auc_variance(y, np.vstack([signal, other]))
    assert aucs == pytest.approx([roc_auc_score(y, signal), roc_auc_score(y, other)], abs=1e-12)
    boot = []
    for _ in range(600):
        i = rng.integers(0, len(y), len(y))
        if len(np.unique(y[i])) == 2:
            boot.append(roc_auc_score(y[i], other[i]) - roc_auc_score(y[i], signal[i]))
    delong_var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert delong_var == pytest.approx(np.var(boot), rel=0.25)


def _proba(score):
    return 1 / (1 + np.exp(-(score - 1.0)))


def test_identical_models_are_undecided_and_a_clearly_better_one_is_promoted():
    y, signal, rng = _rows(400, 2)
    champion = _proba(signal + rng.normal(0, 1.5, len(y)))
    same = compare_paired(y, champion, champion, ("a", "b"), (0.5, 0.5))
    assert same.decision == "undecided" and same.delta_roc_auc == 0
    better = compare_paired(y, champion, _proba(signal), ("a", "b"), (0.5, 0.5))
    assert better.decision == "promote" and better.z_roc_auc > 1.645 and better.paired
    worse = compare_paired(y, _proba(signal), champion, ("a", "b"), (0.5, 0.5))
    assert worse.decision == "reject"
    assert better.champion["roc_auc"] == pytest.approx(roc_auc_score(y, champion))


def test_a_better_log_loss_alone_never_promotes():
    """A challenger that only moved its probabilities toward the base rate (same ranking) has a
    better log loss and the same ROC AUC: not promoted."""
    from sklearn.linear_model import LogisticRegression

    y, signal, _ = _rows(400, 3)
    champion = _proba(4 * signal)  # over-confident
    logit = np.log(champion / (1 - champion)).reshape(-1, 1)
    challenger = LogisticRegression().fit(logit, y).predict_proba(logit)[:, 1]  # Platt: same order
    result = compare_paired(y, champion, challenger, ("a", "b"), (0.5, 0.5))
    assert result.delta_log_loss < 0 and abs(result.delta_roc_auc) < 1e-12
    assert result.decision == "undecided"


def test_unpaired_comparison_of_a_canary():
    y0, s0, _ = _rows(800, 4)
    y1, s1, _ = _rows(300, 5)
    noisy = _proba(s0 + np.random.default_rng(6).normal(0, 2.0, len(y0)))
    result = compare_unpaired((y0, noisy), (y1, _proba(s1)), ("a", "b"), (0.5, 0.5))
    assert result.decision == "promote" and not result.paired
    assert (result.n_champion, result.n_challenger) == (800, 300)


def test_too_few_of_a_class_cannot_be_compared_and_the_minimum_is_a_parameter():
    with pytest.raises(TooFewOutcomes, match="0 churner"):
        compare_paired(np.zeros(50), np.full(50, 0.2), np.full(50, 0.3), ("a", "b"), (0.5, 0.5))
    full, signal, rng = _rows(400, 7)
    y = full.copy()
    y[np.flatnonzero(y)[10:]] = 0  # 10 churners left
    p0, p1 = _proba(signal), _proba(signal + rng.normal(0, 1, 400))
    with pytest.raises(TooFewOutcomes, match="10 churner.*each class needs 50"):
        compare_paired(y, p0, p1, ("a", "b"), (0.5, 0.5))
    assert compare_paired(y, p0, p1, ("a", "b"), (0.5, 0.5), min_class_count=10).n_champion == 400
    with pytest.raises(TooFewOutcomes, match="the challenger's rows hold 10"):
        compare_unpaired((full, p0), (y, p1), ("a", "b"), (0.5, 0.5), min_class_count=11)


def test_a_zero_standard_error_never_decides():
    """Every churner and every non-churner moves alike: DeLong's variance of the difference is 0
    although the AUCs differ by 1. Undecided, never z = +inf."""
    y = np.array([1, 1, 0, 0])
    champion = np.array([0.3, 0.3, 0.4, 0.4])
    challenger = np.array([0.5, 0.5, 0.4, 0.4])
    result = compare_paired(y, champion, challenger, ("a", "b"), (0.5, 0.5), min_class_count=2)
    assert result.delta_roc_auc == 1 and result.decision == "undecided"
    assert "no variance in the ROC AUC difference" in result.reason


def _null_window_rates(positives: int, n: int, runs: int, seed: int) -> dict[str, float]:
    """Two models of equal quality (the same signal, each with its own noise) on windows of `n`
    rows holding exactly `positives` churners: every promotion is a false one."""
    rng = np.random.default_rng(seed)
    counts = {"promote": 0, "reject": 0, "undecided": 0}
    for _ in range(runs):
        y = np.zeros(n, int)
        y[rng.choice(n, positives, replace=False)] = 1
        signal = y + rng.normal(0, 1.0, n)
        champion = _proba(signal + rng.normal(0, 1.0, n))
        challenger = _proba(signal + rng.normal(0, 1.0, n))
        try:
            counts[compare_paired(y, champion, challenger, ("a", "b"), (0.5, 0.5)).decision] += 1
        except TooFewOutcomes:
            counts["too few"] = counts.get("too few", 0) + 1
    return {k: v / runs for k, v in counts.items()}


def test_a_window_with_few_of_a_class_never_promotes_by_chance():
    """Issue 20.1: with one churner np.cov gives NaN, the standard error became 0 and any gain
    over the margin promoted (z = +inf): about 45 % of null windows. Below the minimum count of
    each class the gate compares nothing."""
    for positives in (1, 2, 3, DEFAULT_GATE_MIN_CLASS_COUNT):
        rates = _null_window_rates(positives, 300, 200, positives)
        print(f"\n{positives} churner(s) in 300 rows, no real gain: {rates}")
        assert rates["promote"] <= 0.05, (positives, rates)


def test_a_calibration_regression_is_not_promoted_for_its_better_ranking():
    """Issue 20.3: "log loss not significantly worse" is not non-inferiority. This challenger ranks
    better (ROC AUC +0.050 on 200,000 rows) but is over-confident: log loss +0.039 nats (0.585 ->
    0.624). On 240-row windows the old rule promoted it 51 % of the time; it must not pass the
    log-loss non-inferiority margin by chance (at most 5 %)."""
    rng = np.random.default_rng(0)
    promoted = 0
    for _ in range(200):
        y = (rng.random(240) < 0.3).astype(int)
        signal = y + rng.normal(0, 1.0, 240)
        champion = _proba(signal + rng.normal(0, 0.8, 240))
        challenger = 1 / (1 + np.exp(-1.8 * (signal - 0.5)))
        promoted += compare_paired(y, champion, challenger, ("a", "b"), (0.5, 0.5)).decision == "promote"
    print(f"\ncalibration regression, 240-row windows: promoted {promoted / 200:.1%}")
    assert promoted / 200 <= 0.05


def test_the_mixture_ratio_has_its_closed_form_and_its_known_values():
    """Known answers: with nothing observed (estimate 0) the ratio is 1/sqrt(1 + tau^2 I); and the
    closed form equals the half-normal average of the Gaussian likelihood ratio, integrated."""
    from scipy.integrate import quad

    from churn.gate import mixture_lr

    assert mixture_lr(0.0, 0.01, 0.03) == pytest.approx(1 / np.sqrt(1 + 9), rel=1e-12)
    for estimate, se, tau in ((0.02, 0.01, 0.03), (-0.01, 0.02, 0.05), (0.05, 0.015, 0.03)):
        info, score = 1 / se**2, estimate / se**2

        def integrand(theta, info=info, score=score, tau=tau):
            return (
                np.exp(theta * score - theta**2 * info / 2)
                * 2
                * np.exp(-(theta**2) / (2 * tau**2))
                / (tau * np.sqrt(2 * np.pi))
            )

        assert mixture_lr(estimate, se, tau) == pytest.approx(quad(integrand, 0, np.inf)[0], rel=1e-6)
