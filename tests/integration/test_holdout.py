"""The holdout through a real server (issue 20.5): a sticky share of customers marked "no action"
in the response and the prediction log; outcomes may say `treated`; the performance report uses
only untreated outcomes and says how many it left out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from churn.client import records_from_csv
from churn.holdout import holdout_mask
from tests.support import DATA, Server, http, last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow
FRACTION = "0.3"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("holdout")
    home = folder / "home"
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    raw.iloc[1000:].to_csv(folder / "train.csv", index=False)
    train(home, "--data", str(folder / "train.csv"))
    server = Server("http", home, folder, HOLDOUT_FRACTION=FRACTION).start()
    records = records_from_csv(str(DATA), limit=1000)
    try:
        first = http("POST", server.url + "/predict", {"instances": records})[1]
        again = http("POST", server.url + "/predict", {"instances": records[::-1]})[1]
    finally:
        server.stop()
    return home, folder, records, first, again


def test_held_out_customers_are_marked_in_the_response_sticky_and_in_the_log(served):
    home, _, records, first, again = served
    ids = [r["customerID"] for r in records]
    marked = [p["holdout"] for p in first["predictions"]]
    assert marked == holdout_mask(ids, float(FRACTION)).tolist()
    assert 0.25 < sum(marked) / len(marked) < 0.35
    assert [p["holdout"] for p in again["predictions"]][::-1] == marked  # the same customers, any order
    logged: dict[str, bool] = {}
    for path in (home / "predictions").glob("*.jsonl"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            logged[entry["record"]["customerID"]] = entry.get("holdout", False)
    assert [logged[c] for c in ids] == marked


def test_the_report_uses_untreated_outcomes_and_says_how_many(served):
    home, folder, records, first, _ = served
    truth = pd.read_csv(DATA, dtype=str, keep_default_na=False).head(1000)
    held = {p["customerID"] for p in first["predictions"] if p["holdout"]}
    # the team called the others with a high score, and says so; for the rest it does not know
    called = {
        p["customerID"] for p in first["predictions"] if not p["holdout"] and p["churn_probability"] > 0.5
    }
    truth["treated"] = ["Yes" if c in called else "" for c in truth["customerID"]]
    truth[["customerID", "Churn", "treated"]].to_csv(folder / "outcomes.csv", index=False)
    env = state_env(home, HOLDOUT_FRACTION=FRACTION)
    assert run_cli("monitoring.feedback", "--labels", str(folder / "outcomes.csv"), env=env).returncode == 0
    proc = run_cli("monitoring.performance", "--min-labels", "50", env=env)
    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc.stdout)
    report = json.loads(Path(summary["report"]).read_text())
    assert report["treatment"] == {
        "untreated_used": len(held),
        "treated_left_out": len(called),
        "treatment_unknown": 1000 - len(called),
        "holdout": len(held),
    }
    (model,) = summary["models"].values()
    assert model["n_labelled"] == len(held)
