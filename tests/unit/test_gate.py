"""The champion/challenger gate: DeLong's variance, and decisions that tell a gain from noise."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from training.gate import auc_variance, compare_paired, compare_unpaired


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


def test_one_outcome_only_cannot_be_compared():
    with pytest.raises(ValueError, match="one outcome only"):
        compare_paired(np.zeros(50), np.full(50, 0.2), np.full(50, 0.3), ("a", "b"), (0.5, 0.5))
