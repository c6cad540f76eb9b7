"""training.retrain: what it learns from, what it refuses, what it records. The whole loop on real
data (a gain promoted, shuffled outcomes refused) is test_demo.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from churn.client import records_from_csv
from churn.model_registry import Registry
from churn.outcomes import LabelledExample
from churn.retraining import EVAL_FRACTION, split_examples, training_data
from churn.schema import read_customers_csv
from tests.support import DATA, ROOT, Server, http, last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow


def example(cid: str, when: str, churn: bool = True) -> LabelledExample:
    record = records_from_csv(str(DATA), limit=1)[0] | {"customerID": cid}
    return {
        "customerID": cid,
        "churn": churn,
        "observed_at": when,
        "observed_at_given": True,
        "ingested_at": when,
        "source": "test",
        "prediction": {
            "time": when,
            "model": "m:1",
            "record": record,
            "churn_probability": 0.5,
            "churn": True,
        },
    }


def test_the_evaluation_window_is_the_newest_outcomes_and_never_trained_on():
    examples = [example(f"c{i}", f"2026-11-{1 + i % 20:02d}T00:00:00.000Z") for i in range(100)]
    examples.append(example("c5", "2026-11-30T00:00:00.000Z", churn=False))  # c5 again, newest
    train_part, window = split_examples(examples, seed=1)
    assert len(window) == round(len(examples) * EVAL_FRACTION)
    assert min(e["observed_at"] for e in window) >= max(e["observed_at"] for e in train_part)
    assert "c5" in {e["customerID"] for e in window}
    assert not {e["customerID"] for e in window} & {e["customerID"] for e in train_part}
    # ties (same observed_at) are split by the seed, the same way every time
    assert [e["customerID"] for e in split_examples(examples, seed=1)[1]] == [e["customerID"] for e in window]
    # and the base data's rows of the window's customers are left out too
    base = read_customers_csv(str(DATA), require_label=True)
    data = training_data(base, train_part, window)
    held = {e["customerID"] for e in window} & set(base.ids)
    assert len(data.features) == len(base.features) - len(held) + len(train_part)


@pytest.fixture(scope="module")
def labelled_home(tmp_path_factory):
    """A current model (trained without them), 800 customers scored by a real server and their
    outcomes back (the window, 30 %, then holds more than the gate's 50 churners)."""
    home = tmp_path_factory.mktemp("retrain")
    rest = pd.read_csv(DATA, dtype=str, keep_default_na=False).iloc[800:]
    rest.to_csv(home.parent / f"{home.name}-rest.csv", index=False)
    first = train(home, "--data", str(home.parent / f"{home.name}-rest.csv"))["tag"]  # not these 800
    server = Server("http", home, home).start()
    try:
        records = records_from_csv(str(DATA), limit=800)
        assert http("POST", server.url + "/predict", {"instances": records})[0] == 200
    finally:
        server.stop()
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False).head(800)
    raw[["customerID", "Churn"]].to_csv(home / "outcomes.csv", index=False)
    assert (
        run_cli("monitoring.feedback", "--labels", str(home / "outcomes.csv"), env=state_env(home)).returncode
        == 0
    )
    return home, first


def test_too_few_outcomes_is_a_skipped_run(labelled_home):
    home, first = labelled_home
    proc = run_cli("training.retrain", "--min-labels", "1000", env=state_env(home))
    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc.stdout)
    assert summary["skipped"] is True and summary["tag"] is None and summary["promoted"] is False
    assert "only 800 labelled example(s)" in summary["reason"]
    assert Registry(home / "registry.json", "churn_model").current() == first


def test_a_window_with_too_few_of_a_class_is_a_skipped_run(labelled_home):
    """Issue 20.1: the gate compares nothing below GATE_MIN_CLASS_COUNT churners (a setting)."""
    home, first = labelled_home
    before = (home / "registry.json").read_text()
    proc = run_cli("training.retrain", env=state_env(home, GATE_MIN_CLASS_COUNT="100"))
    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc.stdout)
    assert summary["skipped"] is True and summary["tag"] is None
    assert "the gate needs 100 of each (GATE_MIN_CLASS_COUNT)" in summary["reason"]
    assert (home / "registry.json").read_text() == before


def test_a_run_records_both_models_on_the_window_and_the_decision(labelled_home):
    home, first = labelled_home
    proc = run_cli("training.retrain", "--min-labels", "50", "--promote", "never", env=state_env(home))
    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc.stdout)
    ev = summary["evaluation"]
    assert summary["promoted"] is False and summary["tag"] and ev["n"] == 240  # 30 % of 800
    assert ev["champion"]["tag"] == first and ev["challenger"]["tag"] == summary["tag"]
    assert ev["paired"] is True and ev["decision"] in ("promote", "reject", "undecided")
    assert {"roc_auc", "log_loss", "f1"} <= set(ev["champion"]) and "DeLong" in ev["rule"]
    show = json.loads(run_cli("training.registry", "show", summary["tag"], env=state_env(home)).stdout)
    register = next(e for e in show["history"] if e["action"] == "register")
    assert register["details"]["champion"]["roc_auc"] == ev["champion"]["roc_auc"]
    assert register["details"]["decision"] == ev["decision"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.csv"], "no such file"),
        (["--fraction", "0.2"], "--fraction needs --stage canary"),
        (["--stage", "canary", "--fraction", "1.5"], "must be in (0, 1]"),
    ],
)
def test_bad_input_exits_2_and_changes_nothing(labelled_home, args, message):
    home, _ = labelled_home
    before = (home / "registry.json").read_text()
    models = sorted(p.name for p in (home / "bentoml" / "models" / "churn_model").iterdir())
    proc = run_cli("training.retrain", "--min-labels", "50", *args, env=state_env(home))
    assert proc.returncode == 2 and message in proc.stderr
    assert (home / "registry.json").read_text() == before
    assert sorted(p.name for p in (home / "bentoml" / "models" / "churn_model").iterdir()) == models


def test_without_a_current_model_there_is_nothing_to_compare(tmp_path):
    proc = run_cli("training.retrain", env=state_env(tmp_path))
    assert proc.returncode == 2 and "no current model to compare with" in proc.stderr


MEANWHILE = """
import dataclasses, sys
import churn.retraining as retraining
import training.retrain as retrain
from churn.model_registry import Registry
from churn.settings import load_settings

real = retraining.compare_paired


def gate(*args, **kwargs):  # the comparison takes a while; an operator promotes another version
    result = real(*args, **kwargs)
    s = load_settings()
    Registry(s.registry_path, s.model_name).promote(sys.argv[1], "operator")
    return dataclasses.replace(result, decision="promote")


retraining.compare_paired = gate
sys.exit(retrain.main(["--min-labels", "50"]))
"""


def test_a_promote_during_retraining_stands(labelled_home):
    """Issue 19.7: retrain decides on the current model it read minutes earlier. It promotes only
    if that model is still current; otherwise it records the conflict and changes nothing."""
    home, first = labelled_home
    reg = Registry(home / "registry.json", "churn_model")
    other = train(home, "--promote", "never")["tag"]
    proc = subprocess.run(
        [sys.executable, "-c", MEANWHILE, other],
        cwd=ROOT,
        env=state_env(home),
        capture_output=True,
        text=True,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = last_json_line(proc.stdout)
        assert reg.current() == other, "retrain promoted over the operator's promote"
        assert summary["promoted"] is False and "promote refused" in summary["reason"]
        assert reg.read()["history"][-1]["action"] == "conflict"
    finally:
        reg.promote(first, "test reset")


def test_each_version_records_whom_it_was_fitted_on_and_is_not_judged_on_them(labelled_home):
    """Issue 20.4: the challenger's training membership holds the customers it learned and none of
    the window's; a champion fitted on the window's customers is not compared on them."""
    from churn.model import load_membership, trained_on
    from churn.outcomes import iter_examples
    from churn.settings import settings_from_env

    home, first = labelled_home
    settings = settings_from_env(state_env(home))
    proc = run_cli("training.retrain", "--min-labels", "50", "--promote", "never", env=state_env(home))
    summary = last_json_line(proc.stdout)
    members = load_membership(settings, summary["tag"])
    examples = [e for e in iter_examples(settings) if e["prediction"] is not None]
    train_part, window = split_examples(examples, 42)  # retrain's default seed: its very window
    assert members is not None and len(members) > 5000  # 80 % of the base rows and the examples
    assert not trained_on(members, [e["customerID"] for e in window]).any()
    assert trained_on(members, [e["customerID"] for e in train_part]).mean() > 0.7  # its 80 % split
    show = json.loads(run_cli("training.registry", "show", summary["tag"], env=state_env(home)).stdout)
    assert show["store"]["metadata"]["training_members"] == len(members)
    assert summary["evaluation"]["excluded_trained_on"] == 0  # the first model never saw them
    # a champion fitted on the whole data set has seen most of the window's customers
    everything = train(home, "--promote", "always")["tag"]
    try:
        proc = run_cli(
            "training.retrain", "--min-labels", "50", "--promote", "never",
            env=state_env(home, GATE_MIN_CLASS_COUNT="5"),
        )  # fmt: skip
        again = last_json_line(proc.stdout)
        ev = again["evaluation"]
        champion = load_membership(settings, everything)
        assert ev["n"] + ev["excluded_trained_on"] == 240 and ev["excluded_trained_on"] > 150, ev
        assert ev["champion"]["tag"] == everything and ev["membership_unknown"] is False
        assert trained_on(champion, [e["customerID"] for e in window]).sum() == ev["excluded_trained_on"]
    finally:
        Registry(home / "registry.json", "churn_model").promote(first, "test reset")
