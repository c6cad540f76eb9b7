"""training.decide promotes or unstages only what it compared (issue 19.7): the registry as a
compare-and-swap. The comparison takes minutes in real life; an operator's rollback, a manual
promote or a new stage in between must stand."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

import churn.decision as decide_module
from churn.gate import compare_paired
from churn.model import customer_hashes
from churn.model_registry import Registry
from churn.settings import settings_from_env
from churn.utctime import utc_now

LOG = logging.getLogger("test")


def _entry(auc: float) -> dict:
    return {"created": "now", "metrics": {"roc_auc": auc}, "threshold": 0.5, "data_sha256": "-"}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """m:2 current (m:1 before it), m:3 staged as a shadow, 400 shadow outcomes since."""
    settings = settings_from_env({"MLOPS_HOME": str(tmp_path)})
    reg = Registry(settings.registry_path, settings.model_name)
    for tag in ("m:1", "m:2", "m:3"):
        reg.register(tag, _entry(0.8))
    reg.promote("m:1")
    reg.promote("m:2")
    reg.stage("m:3", "shadow")
    rng = np.random.default_rng(0)
    when = utc_now()
    examples = [
        {
            "customerID": f"c{i}",
            "churn": bool(rng.random() < 0.3),
            "prediction": {
                "time": when,
                "model": "m:2",
                "churn_probability": float(rng.random()),
                "shadow": {"model": "m:3", "churn_probability": float(rng.random()), "churn": False},
            },
        }
        for i in range(400)
    ]
    monkeypatch.setattr(decide_module, "iter_examples", lambda _settings: iter(examples))
    return settings, reg


def _gate_meanwhile(monkeypatch, decision: str, meanwhile) -> None:
    """The comparison takes a while: `meanwhile` happens during it; then the gate says `decision`."""

    def gate(*args, **kwargs):
        result = compare_paired(*args, **kwargs)
        meanwhile()
        return dataclasses.replace(result, decision=decision)

    monkeypatch.setattr(decide_module, "compare_paired", gate)


def test_a_rollback_during_the_comparison_stands(world, monkeypatch):
    settings, reg = world
    _gate_meanwhile(monkeypatch, "promote", lambda: reg.rollback("operator: m:2 is broken"))
    out = decide_module.decide(settings, 100, LOG)
    assert reg.current() == "m:1", "decide promoted over the rollback"
    assert out["decision"] == "conflict" and "m:1" in out["reason"]
    assert reg.read()["history"][-1]["action"] == "conflict"


def test_a_new_candidate_staged_during_the_comparison_is_not_unstaged(world, monkeypatch):
    settings, reg = world
    _gate_meanwhile(monkeypatch, "reject", lambda: reg.stage("m:1", "canary", 0.2, "operator"))
    out = decide_module.decide(settings, 100, LOG)
    candidate = reg.candidate()
    assert candidate is not None and candidate["tag"] == "m:1", "decide unstaged a candidate it never judged"
    assert out["decision"] == "conflict" and reg.current() == "m:2"


def test_without_interference_it_promotes(world, monkeypatch):
    settings, reg = world
    _gate_meanwhile(monkeypatch, "promote", lambda: None)
    assert decide_module.decide(settings, 100, LOG)["decision"] == "promote" and reg.current() == "m:3"


def test_customers_either_version_trained_on_are_left_out(world, monkeypatch):
    """Issue 20.4: a candidate judged on customers it was trained on looks better than it is.
    decide leaves out every customer either version's training membership holds."""
    settings, _ = world
    trained = {"m:2": ["c0", "c1", "c2"], "m:3": [f"c{i}" for i in range(100, 200)]}
    monkeypatch.setattr(
        decide_module,
        "load_membership",
        lambda _s, tag: customer_hashes(trained.get(tag, [])),
        raising=False,
    )
    seen = []

    def gate(y, *args, **kwargs):
        seen.append(len(y))
        return compare_paired(y, *args, **kwargs)

    monkeypatch.setattr(decide_module, "compare_paired", gate)
    out = decide_module.decide(settings, 100, LOG)
    assert seen == [400 - 3 - 100], "customers a version trained on were compared"
    assert "103 trained on" in out["reason"] or out["evaluation"]["excluded_trained_on"] == 103
