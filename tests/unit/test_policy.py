"""The one promotion policy (issue 21.1): a first model becomes current; a champion is replaced
only on the gate's "promote" on outcomes; `always`/`never` override and say so."""

import numpy as np
import pytest

from churn.gate import compare_paired
from churn.promotion import promotion


def _gate(gain: float, n: int = 2000, seed: int = 0):
    """The gate on simulated outcomes: the challenger's scores carry `gain` more signal."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    noise = rng.normal(size=n)
    champion = 1 / (1 + np.exp(-(1.0 * (y - 0.3) * 2 + noise)))
    challenger = 1 / (1 + np.exp(-((1.0 + gain) * (y - 0.3) * 2 + noise)))
    return compare_paired(y, champion, challenger, ("m:1", "m:2"), (0.5, 0.5))


def test_first_model_is_promoted():
    decided = promotion(None)
    assert decided.promote and decided.champion is None and "no current model" in decided.reason


def test_a_champion_stays_without_a_comparison_on_outcomes():
    # What training.train --promote auto used to promote: any model within 0.005 of the champion's
    # test ROC AUC, on other rows. Now, whatever its own test figures, it is registered only.
    decided = promotion("m:1")
    assert decided.decision == "keep" and not decided.promote and decided.champion == "m:1"
    assert "training.retrain" in decided.reason


def test_a_champion_is_replaced_on_the_gates_promote_only():
    better, same, worse = _gate(1.0), _gate(0.0, seed=1), _gate(-1.0)
    assert (better.decision, same.decision, worse.decision) == ("promote", "undecided", "reject")
    assert promotion("m:1", better).decision == "promote"
    assert promotion("m:1", same).decision == "keep"
    assert promotion("m:1", worse).decision == "reject"
    decided = promotion("m:1", better)
    assert decided.reason.startswith("gate: promote") and decided.champion == "m:1"


def test_overrides_and_stage_say_so():
    worse = _gate(-1.0)
    assert promotion("m:1", worse, "always").promote
    assert promotion("m:1", worse, "always").reason.startswith("--promote always; gate: reject")
    assert promotion(None, override="never").decision == "keep"
    assert promotion("m:1", _gate(1.0), stage="canary").decision == "keep"  # staged, not promoted
    assert promotion("m:1", worse, stage="shadow").decision == "reject"
    with pytest.raises(ValueError, match="promote must be"):
        promotion("m:1", override="sometimes")  # type: ignore[arg-type]
