"""Retention keeps the volume bounded; the drift reader's memory is bounded by --max-records."""

from __future__ import annotations

import json
import os
import time
import tracemalloc

import numpy as np
import pytest

from churn.cleanup import DAY, apply_retention, prune_prediction_logs
from churn.monitoring_inputs import read_prediction_log
from churn.predictionlog import PredictionLog
from churn.schema import EXAMPLE_RECORD, parse_predict_request
from churn.serving import ScoreResult
from churn.settings import settings_from_env

NOW = time.time()


def aged(path, size: int, days: float, text: str | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else "x" * size)
    os.utime(path, (NOW - days * DAY, NOW - days * DAY))
    return path


def test_prediction_logs_are_capped_oldest_first_and_busy_files_are_kept(tmp_path):
    for day in range(10):
        aged(tmp_path / f"h-1-2026110{day}-0000.jsonl", 1000, 10 - day)
    busy = tmp_path / "h-2-20261130-0000.jsonl"
    busy.write_text("y" * 5000)  # being appended to right now: never deleted
    pruned = prune_prediction_logs(tmp_path, max_total_bytes=8000, now=NOW)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert pruned.files == {"predictions": 7} and pruned.bytes == {"predictions": 7000}
    assert left == [
        "h-1-20261107-0000.jsonl",
        "h-1-20261108-0000.jsonl",
        "h-1-20261109-0000.jsonl",
        busy.name,
    ]
    # a cap below what the busy files hold deletes every old file and stops there
    assert prune_prediction_logs(tmp_path, max_total_bytes=10, now=NOW).files == {"predictions": 3}
    assert [p.name for p in tmp_path.iterdir()] == [busy.name]


def test_retention_deletes_by_age_and_never_touches_registry_store_or_latest(tmp_path):
    settings = settings_from_env({"MLOPS_HOME": str(tmp_path), "RETENTION_DAYS": "30"})
    keep = [
        aged(tmp_path / "predictions" / "h-1-20261120-0000.jsonl", 10, 10),
        aged(tmp_path / "logs" / "api-h-1.log", 10, 29),
        aged(tmp_path / "feedback" / "20250101T000000Z-abc.jsonl", 10, 300),
        aged(tmp_path / "registry.json", 10, 400),
        aged(tmp_path / "bentoml" / "models" / "churn_model" / "v1" / "saved_model.pkl", 10, 400),
    ]
    gone = [
        aged(tmp_path / "predictions" / "h-1-20261001-0000.jsonl", 10, 31),
        aged(tmp_path / "logs" / "training-h-9.log.3", 10, 45),
        aged(tmp_path / "feedback" / "20241101T000000Z-def.jsonl", 10, 400),
    ]
    old_report = aged(tmp_path / "reports" / "20261001T000000Z" / "drift_report.json", 10, 60).parent
    os.utime(old_report, (NOW - 60 * DAY, NOW - 60 * DAY))
    latest = aged(tmp_path / "reports" / "20260901T000000Z" / "drift_report.json", 10, 90).parent
    os.utime(latest, (NOW - 90 * DAY, NOW - 90 * DAY))
    (tmp_path / "reports" / "latest").symlink_to(latest.name)  # the newest report, however old
    pruned = apply_retention(settings, now=NOW)
    assert pruned.files == {"predictions": 1, "logs": 1, "feedback": 1, "reports": 1}
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    assert not old_report.exists() and latest.exists()


def test_a_writer_prunes_old_files_when_it_starts_a_new_one(tmp_path):
    settings = settings_from_env(
        {"MLOPS_HOME": str(tmp_path), "PREDICTION_LOG_MAX_TOTAL_BYTES": str(2 * 1024 * 1024)}
    )
    old = [
        aged(tmp_path / "predictions" / f"other-7-2026100{i}-0000.jsonl", 1024 * 1024, 9 - i)
        for i in range(3)
    ]
    records, ids = parse_predict_request({"instances": [EXAMPLE_RECORD]})
    log = PredictionLog(settings)
    log.append("r", ScoreResult(np.array([0.5]), np.array([True]), ("m:1",)), records, ids)
    log.close()
    assert [p.exists() for p in old] == [False, True, True]  # 3 MiB -> under the 2 MiB cap


def _write_log(path, n: int) -> None:
    record = dict(EXAMPLE_RECORD)
    with open(path, "w") as fh:
        for i in range(n):
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW - n + i)) + ".000Z"
            fh.write(
                json.dumps({"time": stamp, "request_id": str(i), "model": "m:1", "record": record}) + "\n"
            )


@pytest.mark.parametrize("max_records", [500])
def test_drift_reader_memory_is_bounded_by_max_records(tmp_path, max_records):
    path = tmp_path / "h-1-20261130-0000.jsonl"
    _write_log(path, 60_000)
    tracemalloc.start()
    data = read_prediction_log([path], str(path), max_records=max_records)
    bounded = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    everything = read_prediction_log([path], str(path))
    unbounded = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(data.frame) == max_records and len(everything.frame) == 60_000
    print(
        f"\npeak memory reading 60,000 lines: {bounded / 1e6:.1f} MB keeping 500, "
        f"{unbounded / 1e6:.1f} MB keeping all"
    )
    assert bounded < 10e6 < unbounded


def test_the_size_cap_deleting_predictions_younger_than_the_label_delay_is_loud(tmp_path, caplog):
    """Issue 19.6: outcomes arrive up to LABEL_DELAY_DAYS after their prediction; the size cap
    deleting younger predictions loses them. It still deletes (the volume must not fill), but
    says so: an ERROR log line and churn_prediction_log_premature_deletions_total."""
    import prometheus_client

    def count() -> float:
        return (
            prometheus_client.REGISTRY.get_sample_value("churn_prediction_log_premature_deletions_total") or 0
        )

    before = count()
    aged(tmp_path / "h-1-20261001-0000.jsonl", 1000, 40)  # older than the delay: a quiet deletion
    aged(tmp_path / "h-1-20261120-0000.jsonl", 1000, 10)  # younger: loud
    aged(tmp_path / "h-1-20261129-0000.jsonl", 1000, 1)
    with caplog.at_level("INFO", logger="churn.cleanup"):
        pruned = prune_prediction_logs(tmp_path, max_total_bytes=1500, now=NOW, label_delay_seconds=30 * DAY)
    assert pruned.files == {"predictions": 2} and pruned.premature == 1
    assert count() - before == 1
    loud = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(loud) == 1 and "LABEL_DELAY_DAYS" in loud[0].getMessage()


def test_predictions_are_kept_at_least_the_label_delay(tmp_path):
    from churn.settings import SettingsError

    with pytest.raises(SettingsError, match="RETENTION_DAYS.*LABEL_DELAY_DAYS"):
        settings_from_env({"MLOPS_HOME": str(tmp_path), "RETENTION_DAYS": "7", "LABEL_DELAY_DAYS": "30"})
    settings = settings_from_env(
        {"MLOPS_HOME": str(tmp_path), "RETENTION_DAYS": "30", "LABEL_DELAY_DAYS": "30"}
    )
    assert settings.label_delay_days == 30


def test_ingested_and_rejected_outcome_files_are_kept_as_long_as_outcomes(tmp_path):
    settings = settings_from_env({"MLOPS_HOME": str(tmp_path), "FEEDBACK_RETENTION_DAYS": "100"})
    old = aged(tmp_path / "outcomes" / "done" / "20250101T000000Z-crm.csv", 10, 101)
    refused = aged(tmp_path / "outcomes" / "rejected" / "20250101T000000Z-bad.csv.error.txt", 10, 120)
    recent = aged(tmp_path / "outcomes" / "done" / "20261101T000000Z-crm.csv", 10, 99)
    waiting = aged(tmp_path / "outcomes" / "inbox" / "crm.csv", 10, 300)  # not ingested yet: never deleted
    pruned = apply_retention(settings, now=NOW)
    assert pruned.files.get("outcome_files") == 2 and not old.exists() and not refused.exists()
    assert recent.exists() and waiting.exists()
