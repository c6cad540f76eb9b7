"""The outcomes store, `$MLOPS_HOME/feedback/`: what really happened to the customers the service
scored, each joined with the prediction it answers.

One file per ingestion (`<UTC time>-<sha256 of the input, 12 hex>.jsonl`), written under a
temporary name and renamed into place, never changed afterwards: a reader sees whole files only.
An outcome is identified by (customerID, label, observed_at as given): ingesting it again adds
nothing. Each line is a LabelledExample: the outcome, plus the most recent logged prediction for
that customer made before `observed_at` (its features, version and probability), or null when
the service never scored the customer (kept and counted, not lost). The join is made at
ingestion, so an example survives the retention of the prediction log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

from churn.settings import Settings

LOCK_NAME = ".ingest.lock"


class LoggedPrediction(TypedDict, total=False):
    """A prediction-log line (see churn.serving.PredictionLog)."""

    time: str
    request_id: str
    model: str
    record: dict[str, Any]
    churn_probability: float
    churn: bool
    shadow: dict[str, Any]  # {"model", "churn_probability", "churn"} while a shadow candidate runs


class LabelledExample(TypedDict):
    customerID: str
    churn: bool  # the outcome: did the customer leave?
    observed_at: str  # when it was observed (the ingestion time if the file gave none)
    observed_at_given: bool
    ingested_at: str
    source: str  # the input file's name and sha256
    prediction: LoggedPrediction | None


def outcome_key(customer_id: str, churn: bool, observed_at: str | None) -> str:
    """What identifies an outcome across ingestions (the time only if the file gave one)."""
    return json.dumps([customer_id, churn, observed_at or ""])


def example_key(example: LabelledExample) -> str:
    given = example["observed_at"] if example["observed_at_given"] else None
    return outcome_key(example["customerID"], example["churn"], given)


def feedback_files(settings: Settings) -> list[Path]:
    folder = settings.feedback_dir
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def iter_examples(settings: Settings) -> Iterator[LabelledExample]:
    """Every stored example, oldest ingestion first."""
    for path in feedback_files(settings):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def read_examples(settings: Settings) -> list[LabelledExample]:
    return list(iter_examples(settings))


@contextlib.contextmanager
def ingest_lock(settings: Settings) -> Iterator[None]:
    """One ingestion at a time, so that two never store the same outcome twice."""
    settings.feedback_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.feedback_dir / LOCK_NAME, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_examples(settings: Settings, name: str, examples: list[LabelledExample]) -> Path:
    """Store one ingestion's new examples atomically; returns the file."""
    folder = settings.feedback_dir
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for example in examples:
                fh.write(json.dumps(example, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        path = folder / name
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
