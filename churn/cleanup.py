"""Retention: what keeps the volume from filling.

- Prediction logs are kept at least LABEL_DELAY_DAYS (outcomes join them until then; the settings
  refuse a shorter RETENTION_DAYS); the size cap deleting younger ones is an error, logged and
  counted.
- Prediction logs are capped in total size (PREDICTION_LOG_MAX_TOTAL_BYTES): every writer prunes
  the oldest files when it starts a new one, so a burst of traffic between two retention runs
  cannot fill the volume; the retention job prunes by size and by age (RETENTION_DAYS).
- The retention job (monitoring.retention, its own CronJob: churn-retention) also deletes
  report folders and application logs older than RETENTION_DAYS, and outcome files older than
  FEEDBACK_RETENTION_DAYS. The registry and the model store are never touched.

A file written in the last minute is never deleted: another process may still be appending to it.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from churn.reports import LATEST_DRIFT, LATEST_PERFORMANCE
from churn.settings import Settings

BUSY_SECONDS = 60.0  # a file modified this recently may be open for appending by another process
DAY = 86400.0
log = logging.getLogger("churn.cleanup")


@lru_cache(maxsize=1)
def _premature_counter():
    """Made on first use, never at import: in a server, after BentoML set its multiprocess folder,
    so /metrics shows it."""
    import prometheus_client as prom

    return prom.Counter(
        "churn_prediction_log_premature_deletions",
        "Prediction-log files the size cap deleted before LABEL_DELAY_DAYS: their outcomes cannot join",
    )


@dataclass
class Pruned:
    """What one retention pass deleted, per kind of state."""

    files: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    premature: int = 0  # prediction-log files deleted by the size cap before the label delay

    def add(self, kind: str, size: int) -> None:
        self.files[kind] = self.files.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + size


def _files(folder: Path, pattern: str) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of the files matching `pattern`, oldest first; vanished ones skipped."""
    out = []
    for path in folder.glob(pattern):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file():
            out.append((st.st_mtime, st.st_size, path))
    return sorted(out)


def _delete(path: Path, size: int, kind: str, pruned: Pruned) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return  # another process pruned it first
    pruned.add(kind, size)


def prune_prediction_logs(
    folder: Path,
    max_total_bytes: int,
    max_age_seconds: float | None = None,
    now: float | None = None,
    label_delay_seconds: float | None = None,
) -> Pruned:
    """Delete the oldest prediction-log files until the folder holds at most `max_total_bytes`
    (and, with `max_age_seconds`, every file older than that). A file the cap deletes younger
    than `label_delay_seconds` is counted (`premature`, and the metric) and logged as an error:
    the volume must not fill, but outcomes still to come for those predictions will not join."""
    now = time.time() if now is None else now
    pruned = Pruned()
    files = _files(folder, "*.jsonl")
    total = sum(size for _, size, _ in files)
    for mtime, size, path in files:
        if now - mtime < BUSY_SECONDS:
            break  # oldest first: everything after this one is newer still
        too_old = max_age_seconds is not None and now - mtime > max_age_seconds
        if total > max_total_bytes or too_old:
            deleted = pruned.files.get("predictions", 0)
            _delete(path, size, "predictions", pruned)
            total -= size
            young = label_delay_seconds is not None and now - mtime < label_delay_seconds
            if young and not too_old and pruned.files.get("predictions", 0) > deleted:
                pruned.premature += 1
    if pruned.premature:
        _premature_counter().inc(pruned.premature)
        log.error(
            "the prediction log's size cap (PREDICTION_LOG_MAX_TOTAL_BYTES=%d) deleted %d file(s) younger "
            "than LABEL_DELAY_DAYS (%.1f days): outcomes arriving for those predictions will not join. "
            "Raise the cap or the volume",
            max_total_bytes,
            pruned.premature,
            (label_delay_seconds or 0) / DAY,
        )
    return pruned


def apply_retention(settings: Settings, now: float | None = None) -> Pruned:
    """One pass over every kind of state the settings bound."""
    now = time.time() if now is None else now
    max_age = settings.retention_days * DAY
    pruned = prune_prediction_logs(
        settings.predictions_dir,
        settings.prediction_log_max_total_bytes,
        max_age,
        now,
        settings.label_delay_days * DAY,
    )
    for mtime, size, path in _files(settings.logs_dir, "*.log*"):
        if now - mtime > max_age:
            _delete(path, size, "logs", pruned)
    feedback_age = settings.feedback_retention_days * DAY
    for mtime, size, path in _files(settings.feedback_dir, "*.jsonl"):
        if now - mtime > feedback_age:
            _delete(path, size, "feedback", pruned)
    for folder in ("done", "rejected"):  # ingested or refused outcome files, kept as long as outcomes
        for mtime, size, path in _files(settings.outcomes_inbox.parent / folder, "*"):
            if now - mtime > feedback_age:
                _delete(path, size, "outcome_files", pruned)
    if settings.reports_dir.is_dir():
        latest = {(settings.reports_dir / link).resolve() for link in (LATEST_DRIFT, LATEST_PERFORMANCE)}
        for folder in settings.reports_dir.iterdir():
            if not folder.is_dir() or folder.is_symlink() or folder.resolve() in latest:
                continue
            if now - folder.stat().st_mtime > max_age:
                size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
                pruned.add("reports", size)
    return pruned
