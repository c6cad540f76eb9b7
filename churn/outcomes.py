"""The outcome record and its store, `$MLOPS_HOME/feedback/`: what really happened to the customers
the service scored, each joined with the prediction it answers. This module is the record's one
owner: it defines it, writes it and reads it; the join itself is churn.outcome_ingest.

An outcome's **identity** is the customer and the prediction it answers (that prediction's time
and request id), or the customer alone while it answers none yet. So the same outcome sent twice
(with and without `observed_at`) is one outcome, a different label for it is a **correction**
(the newer ingestion wins; the older version stays in its file: the history), and readers count
each identity once (`iter_examples`).

One file per ingestion (`<UTC time>-<sha256 of the input, 12 hex>.jsonl`), written under a
temporary name and renamed into place, never changed afterwards: a reader sees whole files only.
Each line is a LabelledExample. An outcome that answers no prediction yet (`"prediction": null`:
the customer was never scored, or the prediction had not reached the log) is retried by later
ingestions while its prediction horizon lasts; when it joins, the joined version names the
unjoined one in `supersedes`. The join is made at ingestion, so an example survives the retention
of the prediction log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NotRequired, TypedDict

import numpy as np

from churn.jsonio import json_bytes, json_loads
from churn.predictionlog import PredictionLine
from churn.settings import Settings

LOCK_NAME = ".ingest.lock"


class LabelledExample(TypedDict):
    """One stored outcome (one line of a feedback file)."""

    key: str  # the identity: outcome_key(customerID, prediction)
    customerID: str
    churn: bool  # the outcome: did the customer leave?
    observed_at: str  # when it was observed (the ingestion time if the file gave none)
    observed_at_given: bool
    ingested_at: str
    source: str  # the input file's name and sha256
    prediction: PredictionLine | None
    supersedes: NotRequired[str]  # the key of the unjoined version this joined one replaces
    treated: NotRequired[bool | None]  # did we act on the customer (the CRM's `treated`)? None: unknown


def untreated_mask(treated: np.ndarray, holdout: np.ndarray, holdout_on: bool) -> np.ndarray:
    """Which outcomes are free of our own actions, so that the gate, retraining and the performance
    report may use them: never one marked treated; always one marked untreated, or of a held-out
    customer (churn.holdout); one whose treatment is unknown only while no holdout is configured
    (there is then nothing better, and the reports say how many were unknown)."""
    treated = np.asarray(treated, dtype=object)
    yes = np.array([t is True for t in treated], dtype=bool)
    no = np.array([t is False for t in treated], dtype=bool)
    unknown = ~yes & ~no
    return ~yes & (no | np.asarray(holdout, dtype=bool) | (unknown & (not holdout_on)))


def untreated_examples(
    examples: list[LabelledExample], holdout_on: bool
) -> tuple[list[LabelledExample], dict[str, int]]:
    """The examples untreated_mask keeps, and counts: used, treated (left out), unknown (left out
    when a holdout exists, else used), holdout."""
    treated = np.array([e.get("treated") for e in examples], dtype=object)
    holdout = np.array([bool((e["prediction"] or {}).get("holdout")) for e in examples], dtype=bool)
    keep = untreated_mask(treated, holdout, holdout_on) if examples else np.zeros(0, dtype=bool)
    counts = {
        "untreated_used": int(keep.sum()),
        "treated_left_out": int(sum(t is True for t in treated)),
        "treatment_unknown": int(sum(t is None for t in treated)),
        "holdout": int(holdout.sum()),
    }
    return [e for e, k in zip(examples, keep, strict=True) if k], counts


def outcome_key(customer_id: str, prediction: PredictionLine | None) -> str:
    """The identity of an outcome: the customer and the prediction it answers (or none yet)."""
    if prediction is None:
        return json.dumps([customer_id, None])
    return json.dumps([customer_id, prediction["time"], prediction.get("request_id", "")])


def example_key(example: LabelledExample) -> str:
    """The stored key (computed for lines written before keys were stored)."""
    return example.get("key") or outcome_key(example["customerID"], example["prediction"])


def feedback_files(settings: Settings) -> list[Path]:
    folder = settings.feedback_dir
    return sorted(folder.glob("*.jsonl")) if folder.is_dir() else []


def _lines(paths: list[Path]) -> Iterator[tuple[int, int, bytes]]:
    """(file index, line number, line) of every stored line, oldest ingestion first. A file that
    retention deletes between the listing and the read is skipped."""
    for i, path in enumerate(paths):
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue
        with fh:
            for n, raw in enumerate(fh):
                if raw.strip():
                    yield i, n, raw


def iter_examples(settings: Settings) -> Iterator[LabelledExample]:
    """The current version of each outcome, once per identity, oldest ingestion first. Streamed:
    a first pass keeps only where each identity's newest version is, the second yields those."""
    paths = feedback_files(settings)
    newest: dict[str, tuple[int, int]] = {}
    superseded: set[str] = set()
    for i, n, raw in _lines(paths):
        example = json_loads(raw, constants=True)
        newest[example_key(example)] = (i, n)
        if example.get("supersedes"):
            superseded.add(example["supersedes"])
    wanted = {pos for key, pos in newest.items() if key not in superseded}
    for i, n, raw in _lines(paths):
        if (i, n) in wanted:
            yield json_loads(raw, constants=True)


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
    """Store one ingestion's new versions atomically; returns the file."""
    folder = settings.feedback_dir
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            for example in examples:
                fh.write(json_bytes(example) + b"\n")
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
