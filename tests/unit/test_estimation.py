"""CBPE's estimate and its sampling error (issue 20.8): known answers, the false-warning rate with
nothing shifted, and a covariate shift that the estimate follows. Fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from churn.estimation import (
    Calibrator,
    check_estimate,
    estimate,
    sampling_error_components,
    sampling_errors,
)


def test_the_estimate_has_its_known_answer():
    """q = 0.9, 0.8 (served churn), 0.3, 0.1 (served no churn), calibrated: expected TP = 1.7,
    FP = 0.3, FN = 0.4, TN = 1.6; the expected ROC curve's points, walked by score."""
    q = np.array([0.9, 0.8, 0.3, 0.1])
    e = estimate(q, np.array([True, True, False, False]), Calibrator(None))
    assert (e["expected_tp"], e["expected_fp"], e["expected_fn"], e["expected_tn"]) == pytest.approx(
        (1.7, 0.3, 0.4, 1.6)
    )
    assert e["precision"] == pytest.approx(0.85) and e["recall"] == pytest.approx(1.7 / 2.1)
    assert e["f1"] == pytest.approx(1.7 / (1.7 + 0.35)) and e["accuracy"] == pytest.approx(3.3 / 4)
    fpr = np.array([0, 0.1, 0.3, 1.0, 1.9]) / 1.9
    tpr = np.array([0, 0.9, 1.7, 2.0, 2.1]) / 2.1
    assert e["roc_auc"] == pytest.approx(float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2)))


def test_the_sampling_error_has_nannymls_known_answer():
    """NannyML's own test (tests/performance_estimation/... test_auroc_sampling_error): 0.0575."""
    np.random.seed(1)
    chunk = np.random.random(50)
    y = np.random.binomial(1, 0.5, 10_000)
    proba = np.linspace(0, 1, 10_000)
    components = sampling_error_components(y, proba, threshold=0.5)
    # NannyML's half (the positives'); ours adds the negatives' half of the same variance
    assert round(sampling_errors({"roc_auc": components["roc_auc"]}, len(chunk))["roc_auc"], 4) == 0.0575
    both = sampling_errors(components, len(chunk))["roc_auc"]
    assert both == pytest.approx(np.sqrt(2) * 0.0575, abs=2e-3)  # balanced classes: the halves match


def _population(rng, n: int, shift: float = 0.0):
    """A calibrated model: x ~ N(shift, 1), P(churn | x) = sigmoid(-1 + 1.5 x), and the model's
    probability is exactly that. A shift moves who comes, not what churn means."""
    x = rng.normal(shift, 1.0, n)
    p = 1 / (1 + np.exp(-(-1 + 1.5 * x)))
    return p, (rng.random(n) < p).astype(int)


def test_with_nothing_shifted_at_most_1_percent_of_runs_warn():
    """On the old code a fixed margin of 0.05 warned on 61 % of such runs with 100 outcomes."""
    rng = np.random.default_rng(5)
    p_ref, y_ref = _population(rng, 5000)
    components = sampling_error_components(y_ref, p_ref, threshold=0.5)
    warned = 0
    for _ in range(500):
        p, y = _population(rng, 100)
        warned += bool(check_estimate(p, p >= 0.5, y, Calibrator(None), components).warnings)
    print(f"\nno shift, 100 outcomes, 500 runs: {warned / 500:.1%} warned")
    assert warned / 500 <= 0.01


def test_under_a_covariate_shift_the_estimate_follows_the_realized_change():
    """More high-risk customers come (x shifted by +1): realized F1 and ROC AUC move; the estimate
    moves with them, and the bands do not cry wolf."""
    rng = np.random.default_rng(6)
    p_ref, y_ref = _population(rng, 5000)
    components = sampling_error_components(y_ref, p_ref, threshold=0.5)
    base = check_estimate(p_ref, p_ref >= 0.5, y_ref, Calibrator(None), components)
    runs = [
        check_estimate(p, p >= 0.5, y, Calibrator(None), components)
        for p, y in (_population(rng, 500, 1.0) for _ in range(200))
    ]
    for metric in ("f1", "roc_auc"):
        realized = np.mean([r.realized[metric] for r in runs])
        estimated = np.mean([r.estimated[metric] for r in runs])
        print(f"\n{metric}: reference {base.realized[metric]:.3f}; shifted: realized {realized:.3f}")
        print(f"estimated {estimated:.3f}")
        assert abs(estimated - realized) < 0.005, metric  # the estimate follows
    # the shift changed F1 a lot (more churners above the threshold); the estimate saw it coming
    assert np.mean([r.realized["f1"] for r in runs]) - base.realized["f1"] > 0.1
    assert np.mean([bool(r.warnings) for r in runs]) <= 0.02
