"""Outcomes come back (monitoring.feedback): validated, stored atomically and once, joined with the
prediction each one answers, written by the service's own log writer."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from churn.predictionlog import PredictionLog
from churn.schema import EXAMPLE_RECORD, parse_predict_request
from churn.serving import ScoreResult
from churn.settings import settings_from_env
from tests.support import last_json_line, run_cli, state_env

pytestmark = pytest.mark.slow

T0 = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC).timestamp()


def log_predictions(home, rows: list[tuple[str, float, str, float]]) -> None:
    """(customerID, time, model, probability) lines, written by the service's PredictionLog."""
    settings = settings_from_env(state_env(home))
    clock = [0.0]
    log = PredictionLog(settings, clock=lambda: clock[0])
    for cid, when, model, proba in rows:
        clock[0] = when
        records, ids = parse_predict_request({"instances": [dict(EXAMPLE_RECORD, customerID=cid)]})
        log.append("req", ScoreResult(np.array([proba]), np.array([proba >= 0.5]), (model,)), records, ids)
        log.flush(5)
    log.close()


def outcomes_csv(tmp_path, rows, name="outcomes.csv", columns=("customerID", "Churn", "observed_at")) -> str:
    path = tmp_path / name
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return str(path)


def ingest(home, path):
    proc = run_cli("monitoring.feedback", "--labels", path, env=state_env(home))
    return proc, (last_json_line(proc.stdout) if proc.returncode == 0 else None)


def stored(home) -> list[dict]:
    return [
        json.loads(line)
        for p in sorted((home / "feedback").glob("*.jsonl"))
        for line in p.read_text().splitlines()
    ]


def test_outcomes_join_the_latest_prediction_before_they_were_observed(tmp_path):
    home = tmp_path / "home"
    log_predictions(
        home,
        [
            ("A", T0, "m:1", 0.20),
            ("A", T0 + 3600, "m:2", 0.70),  # the latest before A's outcome
            ("A", T0 + 7200, "m:2", 0.90),  # after it: not what the outcome answers
            ("B", T0, "m:1", 0.40),
        ],
    )
    path = outcomes_csv(
        tmp_path,
        [
            ("A", "Yes", "2026-11-01T13:30:00Z"),
            ("B", "No", "2026-11-01T12:00:00.000Z"),  # observed at the very time of its prediction
            ("C", "Yes", "2026-11-01T14:00:00+01:00"),  # never scored: kept, counted
        ],
    )
    proc, counts = ingest(home, path)
    assert proc.returncode == 0, proc.stderr
    assert counts == {
        "accepted": 3, "matched": 1, "unmatched": 2, "duplicates": 0, "corrected": 0, "joined_late": 0,
        "pending": 2, "vanished_files": 0,
    }  # fmt: skip
    examples = {e["customerID"]: e for e in stored(home)}
    assert examples["A"]["prediction"]["model"] == "m:2"
    assert examples["A"]["prediction"]["churn_probability"] == 0.70
    assert examples["A"]["prediction"]["record"]["Contract"] == EXAMPLE_RECORD["Contract"]
    assert examples["A"]["churn"] is True and examples["A"]["observed_at"] == "2026-11-01T13:30:00.000Z"
    assert examples["B"]["prediction"] is None  # only predictions made before the outcome count
    assert examples["C"]["prediction"] is None and examples["C"]["observed_at"] == "2026-11-01T13:00:00.000Z"
    assert not list((home / "feedback").glob(".*.tmp"))


def test_the_same_outcomes_twice_add_nothing(tmp_path):
    home = tmp_path / "home"
    log_predictions(home, [("A", T0, "m:1", 0.2)])
    rows = [("A", "Yes", ""), ("B", "No", ""), ("B", "No", "")]  # no time: the ingestion time
    path = outcomes_csv(tmp_path, rows)
    first = ingest(home, path)[1]
    assert (first["accepted"], first["matched"], first["unmatched"], first["duplicates"]) == (2, 1, 1, 1)
    again = ingest(home, path)[1]
    assert (again["accepted"], again["corrected"], again["duplicates"], again["pending"]) == (0, 0, 3, 1)
    assert len(stored(home)) == 2 and len(list((home / "feedback").glob("*.jsonl"))) == 1
    # another label for the prediction A's outcome answers is a correction, not a second outcome
    later = ingest(home, outcomes_csv(tmp_path, [("A", "No", "2026-12-01T00:00:00Z")], "later.csv"))[1]
    assert later["corrected"] == 1 and len(stored(home)) == 3 and current(home)["A"]["churn"] is False


@pytest.mark.parametrize(
    ("rows", "columns", "message"),
    [
        ([("A", "Yes")], ("customerID", "Outcome"), "missing column(s) ['Churn']"),
        (
            [("A", "Yes"), ("B", "Maybe")],
            ("customerID", "Churn"),
            "column 'Churn', row 2: unknown value 'Maybe'",
        ),
        ([("A", "Yes", "yesterday")], ("customerID", "Churn", "observed_at"), "row 1: not an ISO 8601 time"),
        (
            [("A", "Yes"), ("B", "No"), ("A", "No")],
            ("customerID", "Churn"),
            "row 3: customer 'A' is labelled both",
        ),
        ([("", "Yes")], ("customerID", "Churn"), "row 1: empty customerID"),
    ],
    ids=["missing-column", "bad-label", "bad-time", "both-ways", "empty-id"],
)
def test_bad_outcomes_exit_2_name_the_row_and_write_nothing(tmp_path, rows, columns, message):
    home = tmp_path / "home"
    proc, _ = ingest(home, outcomes_csv(tmp_path, rows, columns=columns))
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not list((home / "feedback").glob("*.jsonl"))


def test_unreadable_files_exit_2(tmp_path):
    home = tmp_path / "home"
    (tmp_path / "empty.csv").write_bytes(b"")
    for path, message in ((tmp_path / "nope.csv", "no such file"), (tmp_path / "empty.csv", "empty file")):
        proc, _ = ingest(home, str(path))
        assert proc.returncode == 2 and message in proc.stderr


def current(home) -> dict[str, dict]:
    """The outcomes as the gate and the reports read them (one per identity), by customer."""
    from churn.outcomes import iter_examples

    out: dict[str, dict] = {}
    for e in iter_examples(settings_from_env(state_env(home))):
        assert e["customerID"] not in out, f"{e['customerID']} counted twice"
        out[e["customerID"]] = e
    return out


def test_the_same_outcome_with_and_without_observed_at_is_stored_once(tmp_path):
    """Issue 20.6: an outcome has an identity (the customer and the prediction it answers), so the
    CRM's first export (no time) and its later one (with the time) count once in the gate."""
    home = tmp_path / "home"
    log_predictions(home, [("A", T0, "m:1", 0.7)])
    first = ingest(home, outcomes_csv(tmp_path, [("A", "Yes", "")], "first.csv"))[1]
    again = ingest(home, outcomes_csv(tmp_path, [("A", "Yes", "2026-11-01T13:00:00Z")], "again.csv"))[1]
    assert first["accepted"] == 1 and again["accepted"] == 0 and again["duplicates"] == 1
    assert current(home)["A"]["prediction"]["churn_probability"] == 0.7


def test_a_corrected_label_replaces_the_earlier_one_and_the_history_is_kept(tmp_path):
    home = tmp_path / "home"
    log_predictions(home, [("A", T0, "m:1", 0.7), ("B", T0, "m:1", 0.2)])
    ingest(home, outcomes_csv(tmp_path, [("A", "Yes", "2026-11-02T00:00:00Z"), ("B", "No", "")], "1.csv"))
    fixed = ingest(home, outcomes_csv(tmp_path, [("A", "No", "2026-11-02T00:00:00Z")], "2.csv"))[1]
    now = current(home)
    assert now["A"]["churn"] is False and now["B"]["churn"] is False and len(now) == 2
    assert fixed["corrected"] == 1 and fixed["accepted"] == 0
    history = [e["churn"] for e in stored(home) if e["customerID"] == "A"]
    assert history == [True, False]  # both versions stay in the store, in order


def test_an_outcome_that_arrives_before_its_prediction_waits_and_joins_later(tmp_path):
    home = tmp_path / "home"
    log_predictions(home, [("B", T0, "m:1", 0.3)])
    early = ingest(home, outcomes_csv(tmp_path, [("A", "Yes", "2026-11-01T13:00:00Z")], "1.csv"))[1]
    assert early["unmatched"] == 1
    log_predictions(home, [("A", T0 + 600, "m:1", 0.8)])  # reaches the log after the outcome came
    later = ingest(home, outcomes_csv(tmp_path, [("B", "No", "2026-11-01T13:00:00Z")], "2.csv"))[1]
    now = current(home)
    assert now["A"]["prediction"] is not None, "the early outcome was never joined"
    assert now["A"]["prediction"]["churn_probability"] == 0.8 and now["A"]["churn"] is True
    assert now["B"]["prediction"]["churn_probability"] == 0.3
    assert later["joined_late"] == 1


def test_an_outcome_joins_only_a_prediction_within_the_horizon(tmp_path):
    """PREDICTION_HORIZON_DAYS (90): a churn 100 days after the last prediction says nothing
    about that prediction; nor does a prediction made after the churn."""
    rows = [("A", "Yes", "2026-02-09T12:00:00Z"), ("B", "Yes", "2026-10-31T12:00:00Z")]
    for horizon, joined in (("90", set()), ("120", {"A"})):
        home = tmp_path / horizon
        log_predictions(home, [("A", T0 - 100 * 86400 - 265 * 86400, "m:1", 0.7), ("B", T0, "m:1", 0.6)])
        proc = run_cli(
            "monitoring.feedback",
            "--labels",
            outcomes_csv(tmp_path, rows, f"{horizon}.csv"),
            env=state_env(home, PREDICTION_HORIZON_DAYS=horizon),
        )
        assert proc.returncode == 0, proc.stderr
        assert {c for c, e in current(home).items() if e["prediction"]} == joined


def test_the_scheduled_job_ingests_the_drop_folder_and_sets_bad_files_aside(tmp_path):
    """Issue 20.7: outcomes are dropped on the volume and the churn-feedback CronJob ingests them,
    not a command run inside an API pod."""
    import os
    import time

    home = tmp_path / "home"
    log_predictions(home, [("A", T0, "m:1", 0.7), ("B", T0, "m:1", 0.2)])
    inbox = home / "outcomes" / "inbox"
    inbox.mkdir(parents=True)
    good = pd.DataFrame(
        [("A", "Yes", "2026-11-02T00:00:00Z")], columns=["customerID", "Churn", "observed_at"]
    )
    good.to_csv(inbox / "crm-1.csv", index=False)
    pd.DataFrame([("B", "Maybe")], columns=["customerID", "Churn"]).to_csv(inbox / "crm-2.csv", index=False)
    pd.DataFrame([("B", "No")], columns=["customerID", "Churn"]).to_csv(inbox / "copying.csv", index=False)
    old = time.time() - 120
    for name in ("crm-1.csv", "crm-2.csv"):
        os.utime(inbox / name, (old, old))  # copied two minutes ago; copying.csv is still being written
    proc = run_cli("monitoring.feedback", "--inbox", env=state_env(home))
    assert proc.returncode == 2 and "unknown value 'Maybe'" in proc.stderr
    counts = last_json_line(proc.stdout)
    assert (counts["files"], counts["rejected"], counts["accepted"], counts["matched"]) == (1, 1, 1, 1)
    assert sorted(p.name for p in inbox.iterdir()) == ["copying.csv"]
    done, rejected = home / "outcomes" / "done", home / "outcomes" / "rejected"
    assert [p.name.endswith("-crm-1.csv") for p in done.iterdir()] == [True]
    notes = [p for p in rejected.iterdir() if p.name.endswith(".error.txt")]
    assert len(notes) == 1 and "Maybe" in notes[0].read_text()
    assert current(home)["A"]["churn"] is True
    # nothing new: a run still succeeds (and would retry outcomes waiting for a prediction)
    os.utime(inbox / "copying.csv", (old, old))
    again = run_cli("monitoring.feedback", "--inbox", env=state_env(home))
    assert again.returncode == 0 and last_json_line(again.stdout)["accepted"] == 1
    assert run_cli("monitoring.feedback", "--inbox", env=state_env(home)).returncode == 0
