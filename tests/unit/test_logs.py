"""The prediction log and the application log: rotation by size and by day, one file per process,
and a queue bounded in records."""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing as mp
import os

import numpy as np
import pytest

from churn import logs
from churn.jsonio import json_bytes
from churn.predictionlog import PredictionLog
from churn.schema import EXAMPLE_RECORD, parse_predict_request
from churn.serving import ScoreResult
from churn.settings import settings_from_env

RECORDS, IDS = parse_predict_request({"instances": [EXAMPLE_RECORD] * 10})


def settings(tmp_path, **env):
    return settings_from_env({"MLOPS_HOME": str(tmp_path), **env})


def result(n: int) -> ScoreResult:
    return ScoreResult(np.full(n, 0.25), np.zeros(n, bool), ("churn_model:v1",))


def lines(folder) -> list[dict]:
    return [json.loads(x) for p in sorted(folder.glob("*.jsonl")) for x in p.read_text().splitlines()]


def test_prediction_log_rotates_by_size_and_loses_nothing(tmp_path):
    log = PredictionLog(settings(tmp_path, PREDICTION_LOG_MAX_BYTES="8192"))
    for i in range(60):
        log.append(f"req-{i}", result(10), RECORDS, IDS)
    assert log.flush(10)
    log.close()
    files = sorted((tmp_path / "predictions").glob("*.jsonl"))
    assert len(files) >= 10  # 600 lines of ~570 bytes at 8 KB a file
    assert all(f.stat().st_size <= 8192 for f in files)
    seqs = [int(f.stem.rsplit("-", 1)[1]) for f in files]
    assert seqs == list(range(len(files)))  # <host>-<pid>-<day>-<seq>, seq counting up
    assert len(lines(tmp_path / "predictions")) == 600 and log.dropped == 0


def test_prediction_log_starts_a_new_file_each_day(tmp_path):
    now = [dt.datetime(2026, 11, 29, 23, 59, 59, tzinfo=dt.UTC).timestamp()]
    log = PredictionLog(settings(tmp_path), clock=lambda: now[0])
    log.append("before-midnight", result(10), RECORDS, IDS)
    log.flush(5)
    now[0] += 2
    log.append("after-midnight", result(10), RECORDS, IDS)
    log.close()
    files = sorted(p.name for p in (tmp_path / "predictions").glob("*.jsonl"))
    prefix = f"{os.uname().nodename}-{os.getpid()}"
    assert files == [f"{prefix}-20261129-0000.jsonl", f"{prefix}-20261130-0000.jsonl"]
    entries = lines(tmp_path / "predictions")
    assert [e["time"][:10] for e in entries] == ["2026-11-29"] * 10 + ["2026-11-30"] * 10


def test_prediction_log_queue_is_bounded_in_records(tmp_path):
    log = PredictionLog(settings(tmp_path, PREDICTION_LOG_QUEUE_SIZE="25"), clock=lambda: 0.0)
    log._ensure_thread = lambda: None  # the writer has not started: everything stays queued
    log.append("a", result(10), RECORDS, IDS)
    log.append("b", result(10), RECORDS, IDS)
    log.append("c", result(10), RECORDS, IDS)  # 30 > 25 records: dropped whole, counted
    assert log.dropped == 10 and log._queued == 20


def test_application_log_rotates_and_keeps_a_bounded_number_of_backups(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "LOG_MAX_BYTES", 4096)
    logger = logging.getLogger("churn")
    saved = logger.handlers[:], getattr(logger, "_churn_configured", False)
    logger.handlers, logger._churn_configured = [], False
    try:
        log = logs.setup_logging(settings(tmp_path), "unit", stream=open(os.devnull, "w"))  # noqa: SIM115
        for i in range(400):
            log.info("line %04d %s", i, "x" * 60)
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers, logger._churn_configured = saved
    name = logs.log_file_name("unit")
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == [name] + [f"{name}.{i}" for i in range(1, logs.LOG_BACKUPS + 1)]
    assert all((tmp_path / "logs" / f).stat().st_size <= 4096 for f in files)
    assert "line 0399" in (tmp_path / "logs" / name).read_text()


def _name_in_child(queue):
    queue.put(logs.log_file_name("api"))


def test_each_process_of_a_pod_gets_its_own_log_file():
    """API workers of one pod share a host name: their rotating files must still differ."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_name_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    names = {queue.get(timeout=10) for _ in children}
    for child in children:
        child.join(10)
    assert len(names) == 2 and logs.log_file_name("api") not in names


@pytest.mark.parametrize("n", [1, 10])
def test_record_models_name_the_version_of_each_record(n):
    plain = result(n)
    assert plain.model == "churn_model:v1" and plain.record_models() == ["churn_model:v1"] * n
    split = ScoreResult(
        np.zeros(n), np.zeros(n, bool), ("v1", "v2"), np.array([i % 2 for i in range(n)], np.int8)
    )
    assert split.model == ("v1" if n == 1 else None)
    assert split.record_models() == ["v1", "v2"][: min(n, 2)] * (n // 2) + (["v1"] if n % 2 else [])


@pytest.mark.parametrize("cid", ["7590-VHVEG", 42, 2**70, None])
def test_a_log_line_is_the_json_of_its_entry(cid):
    entry = {"time": "2026-11-30T12:00:00.000Z", "record": {**EXAMPLE_RECORD, "customerID": cid}, "p": 0.1}
    assert json.loads(json_bytes(entry)) == entry  # 2**70: orjson refuses it, json writes it
