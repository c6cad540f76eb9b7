"""`make demo` (scripts/demo.py): the lifecycle on real data through make run's real servers. The
first model knows only one- and two-year contracts; month-to-month customers arrive; their real
outcomes come back; the report shows the drop, retraining promotes a better model, both servers
switch under load without a failed request, and the next report shows the recovery. With the
outcomes shuffled, the challenger must be refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.slow
MARGIN = 2.0  # as in test_lifecycle: the demo's servers re-read the registry every second


def demo(tmp_path, *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--home", str(tmp_path / "demo"), "--json", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print("\n" + proc.stdout.rsplit("\n", 2)[0])  # the table
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_outcomes_show_the_drop_retraining_promotes_and_the_servers_recover(tmp_path):
    story = demo(tmp_path)
    first, after = story["stages"]
    v1 = first["performance"][story["first_model"]]
    assert first["drift"] is True  # month-to-month customers are not the contract customers
    # the drop: on the new customers the first model is far worse than on its own test rows
    assert v1["realized"]["log_loss"] > 0.8 and v1["realized"]["roc_auc"] < 0.76
    report = json.loads(Path(first["performance_json"]).read_text())
    m1 = report["models"][story["first_model"]]
    assert m1["realized"]["log_loss"] > 3 * m1["training"]["log_loss"]
    assert any("differ by more than" in w for w in m1["warnings"])  # the estimate no longer holds
    # retraining on the outcomes: the gate promotes
    retrain = story["retrain"]
    assert retrain["promoted"] is True and retrain["evaluation"]["decision"] == "promote"
    assert retrain["evaluation"]["z_roc_auc"] > 1.645
    # every server switched within the reload interval, under load, with no failed request
    assert story["load"]["failed"] == 0 and story["load"]["requests"] > 500
    assert max(story["switch_seconds"].values()) <= 1 + MARGIN
    assert story["old_version_after_switch"] == 0
    # the recovery, on new customers and their outcomes
    v2 = after["performance"][retrain["tag"]]
    assert story["wave_b_model"] == retrain["tag"] == story["current"]
    assert v2["n_labelled"] == story["wave_b"]
    assert v2["realized"]["log_loss"] < v1["realized"]["log_loss"] - 0.2
    assert (
        v2["realized"]["f1"] > v1["realized"]["f1"] and v2["realized"]["roc_auc"] > v1["realized"]["roc_auc"]
    )


def test_shuffled_outcomes_teach_nothing_and_the_champion_stays(tmp_path):
    story = demo(tmp_path, "--shuffled-outcomes")
    retrain = story["retrain"]
    assert retrain["promoted"] is False and retrain["evaluation"]["decision"] != "promote"
    # the challenger learned the new group's base rate: a better log loss, no better ranking
    assert retrain["evaluation"]["delta_log_loss"] < 0 and retrain["evaluation"]["z_roc_auc"] < 1.645
    assert story["current"] == story["first_model"] == story["wave_b_model"]
    assert story["load"]["failed"] == 0
