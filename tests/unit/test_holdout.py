"""Outcomes shaped by our own actions (issue 20.5), in a committed simulation with fixed seeds.

The retention team calls the current model's top 20 % (of the customers it may call) and saves
half of the churners it calls: they come back as "No". A shadow candidate as good as the current
model, but with its own errors, then looks better on those outcomes than it is: it ranks lower
many of the customers the current model sent to be saved. Judged on every outcome, the gate
promotes such no-better candidates far too often; judged on the untreated outcomes only (the
holdout, never called), it stays fair."""

from __future__ import annotations

import numpy as np

from churn.gate import TooFewOutcomes, compare_paired
from churn.holdout import holdout_mask
from churn.outcomes import untreated_mask

N = 10_000
TOP = 0.2  # share of the callable customers the team calls
SAVED = 0.5  # share of called churners who stay
HOLDOUT = 0.1


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _world(rng, holdout_fraction: float):
    """(outcomes, champion, candidate, holdout, treated) of one scoring round."""
    ids = [f"c{i}" for i in rng.integers(0, 10**12, N)]
    risk = rng.normal(0, 1, N)
    churn = rng.random(N) < _sigmoid(-1.2 + 1.5 * risk)
    champion = _sigmoid(-1.2 + 1.5 * (risk + rng.normal(0, 0.6, N)))
    candidate = _sigmoid(-1.2 + 1.5 * (risk + rng.normal(0, 0.6, N)))  # as good, its own errors
    holdout = holdout_mask(ids, holdout_fraction)
    callable_ = ~holdout
    cut = np.quantile(champion[callable_], 1 - TOP)
    treated = callable_ & (champion >= cut)
    churn = churn & ~(treated & (rng.random(N) < SAVED))  # the saved ones come back as "No"
    return churn.astype(int), champion, candidate, holdout, treated


def _false_promotions(holdout_fraction: float, runs: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    promoted = 0
    for _ in range(runs):
        y, p0, p1, holdout, treated = _world(rng, holdout_fraction)
        # The CRM does not say whom it called (treated unknown): what the gate may use.
        use = untreated_mask(np.full(N, None, dtype=object), holdout, holdout_fraction > 0)
        try:
            result = compare_paired(y[use], p0[use], p1[use], ("champion", "candidate"), (0.5, 0.5))
        except TooFewOutcomes:
            continue
        promoted += result.decision == "promote"
    return promoted / runs


def test_the_holdout_keeps_the_gate_fair_when_our_actions_shape_the_outcomes():
    without = _false_promotions(0.0, 100, seed=1)
    with_holdout = _false_promotions(HOLDOUT, 100, seed=2)
    print(f"\nno-better candidate promoted: on all outcomes {without:.0%}; on the holdout {with_holdout:.0%}")
    assert without >= 0.5  # the problem is real
    assert with_holdout <= 0.05


def test_the_holdout_is_sticky_and_its_share_is_the_setting():
    ids = [f"customer-{i}" for i in range(20_000)]
    first = holdout_mask(ids, 0.1)
    assert abs(first.mean() - 0.1) < 0.01
    assert (holdout_mask(list(reversed(ids)), 0.1)[::-1] == first).all()  # the same customers, any order
    assert not (first & ~holdout_mask(ids, 0.2)).any()  # a larger holdout keeps the smaller one's customers
    assert not holdout_mask(ids, 0.0).any() and not holdout_mask([None], 0.5).any()  # no ID: never held out


def test_what_counts_as_untreated():
    treated = np.array([True, False, None, None, True], dtype=object)
    holdout = np.array([False, False, False, True, True])
    # explicitly treated: never; explicitly untreated or held out: always; unknown: only without a holdout
    assert untreated_mask(treated, holdout, True).tolist() == [False, True, False, True, False]
    assert untreated_mask(treated, holdout, False).tolist() == [False, True, True, True, False]
