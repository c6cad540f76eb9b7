"""How often the gate errs, measured on the real data set (docs/lifecycle.md quotes these figures).

Windows of real customers are drawn at random; on each, the gate compares two models:
- two models no better than each other (the same data, another seed; or two disjoint halves):
  every promotion is a false one;
- the month-to-month case of the demo (a model that never saw month-to-month customers, and one
  trained with their outcomes, scored on new ones): every refusal is a missed gain;
- a challenger trained on shuffled outcomes: every promotion is a false one.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from churn.fitting import fit
from churn.gate import compare_paired
from churn.schema import validate_frame
from tests.support import DATA

pytestmark = pytest.mark.slow
WINDOWS = 200
LOG = logging.getLogger("test")


def _fit(frame: pd.DataFrame, seed: int = 42):
    return fit(validate_frame(frame, require_label=True), {"file": "test", "sha256": "-"}, seed, LOG)


def _rates(champion, challenger, pool: pd.DataFrame, n: int, seed: int) -> dict[str, float]:
    data = validate_frame(pool, require_label=True)
    y = data.label.to_numpy()
    p0 = champion.pipeline.predict_proba(data.features)[:, 1]
    p1 = challenger.pipeline.predict_proba(data.features)[:, 1]
    rng = np.random.default_rng(seed)
    counts = {"promote": 0, "reject": 0, "undecided": 0}
    for _ in range(WINDOWS):
        i = rng.choice(len(y), n, replace=False)
        counts[compare_paired(y[i], p0[i], p1[i], ("a", "b"), (0.5, 0.5)).decision] += 1
    return {k: v / WINDOWS for k, v in counts.items()}


@pytest.fixture(scope="module")
def raw():
    return pd.read_csv(DATA, dtype=str, keep_default_na=False)


def test_no_real_gain_is_almost_never_promoted(raw):
    pool_a = raw.sample(frac=0.7, random_state=1)
    windows = raw.drop(pool_a.index)
    same_data = _rates(_fit(pool_a, 1), _fit(pool_a, 2), windows, 300, 0)
    half = pool_a.sample(frac=0.5, random_state=3)
    halves = _rates(_fit(half), _fit(pool_a.drop(half.index)), windows, 300, 1)
    print(f"\nno real gain, 300-row windows: same data {same_data}; disjoint halves {halves}")
    assert same_data["promote"] <= 0.05 and halves["promote"] <= 0.05


def test_a_real_gain_is_promoted_and_shuffled_outcomes_never(raw):
    contracts = raw[raw["Contract"] != "Month-to-month"]
    monthly = raw[raw["Contract"] == "Month-to-month"].sample(frac=1.0, random_state=5)
    known, new = monthly.iloc[: int(len(monthly) * 0.6)], monthly.iloc[int(len(monthly) * 0.6) :]
    champion = _fit(contracts)
    challenger = _fit(pd.concat([contracts, known]))
    shuffled = known.assign(Churn=known["Churn"].sample(frac=1.0, random_state=9).to_numpy())
    impostor = _fit(pd.concat([contracts, shuffled]))
    power = {n: _rates(champion, challenger, new, n, n) for n in (300, 700)}
    false = _rates(champion, impostor, new, 300, 2)
    print(f"\nreal gain: 300-row windows {power[300]}, 700-row windows {power[700]}; shuffled {false}")
    assert power[300]["reject"] == 0 and power[300]["promote"] >= 0.45
    assert power[700]["promote"] >= 0.8
    assert false["promote"] == 0
