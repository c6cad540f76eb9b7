"""The holdout: a sticky share of customers marked "no action" in every response and log line.

The retention team calls the top of the list, and the customers it saves come back as "No". Those
outcomes say what our actions did, not what the model predicted: retraining on them learns to rank
saved customers lower, and a shadow comparison on them favours any candidate that disagrees with
the current model. A holdout is a random share of customers, chosen by a keyed hash of their ID
(the same customer is always in or out, whatever the version; a larger share keeps the smaller
one's customers), that the team must not act on: their outcomes are what no action gives, the fair
ground for the gate and the performance report (churn.outcomes.untreated_mask).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

KEY = b"churn-holdout-v1"  # fixed: a customer keeps their place across versions and restarts


def holdout_share(customer_id: str) -> float:
    """A stable position in [0, 1) for a customer."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8, key=KEY).digest()
    return int.from_bytes(digest, "big") / 2**64


def holdout_mask(ids: list[Any], fraction: float) -> np.ndarray:
    """For each record, whether its customer is held out (never a record without a customerID:
    no outcome can ever come back for it)."""
    if fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    return np.fromiter(
        (cid is not None and holdout_share(str(cid)) < fraction for cid in ids), dtype=bool, count=len(ids)
    )
