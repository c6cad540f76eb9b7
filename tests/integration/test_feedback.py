"""Outcomes come back (monitoring.feedback): validated, stored atomically and once, joined with the
prediction each one answers, written by the service's own log writer."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from churn.schema import EXAMPLE_RECORD, parse_predict_request
from churn.serving import PredictionLog, ScoreResult
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
    assert counts == {"accepted": 3, "matched": 1, "unmatched": 2, "duplicates": 0}
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
    assert first == {"accepted": 2, "matched": 1, "unmatched": 1, "duplicates": 1}
    again = ingest(home, path)[1]
    assert again == {"accepted": 0, "matched": 0, "unmatched": 0, "duplicates": 3}
    assert len(stored(home)) == 2 and len(list((home / "feedback").glob("*.jsonl"))) == 1
    # a later outcome of the same customer, observed at another time, is a new one
    later = ingest(home, outcomes_csv(tmp_path, [("A", "No", "2026-12-01T00:00:00Z")], "later.csv"))[1]
    assert later["accepted"] == 1 and len(stored(home)) == 3


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
