"""Retention: what keeps the volume from filling.

- Prediction logs are capped in total size (PREDICTION_LOG_MAX_TOTAL_BYTES): every writer prunes
  the oldest files when it starts a new one, so a burst of traffic between two retention runs
  cannot fill the volume; the retention job prunes by size and by age (RETENTION_DAYS).
- The retention job (monitoring.retention, run by the scheduled monitoring job) also deletes
  report folders and application logs older than RETENTION_DAYS, and outcome files older than
  FEEDBACK_RETENTION_DAYS. The registry and the model store are never touched.

A file written in the last minute is never deleted: another process may still be appending to it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from churn.settings import Settings

BUSY_SECONDS = 60.0  # a file modified this recently may be open for appending by another process
DAY = 86400.0


@dataclass
class Pruned:
    """What one retention pass deleted, per kind of state."""

    files: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)

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
    folder: Path, max_total_bytes: int, max_age_seconds: float | None = None, now: float | None = None
) -> Pruned:
    """Delete the oldest prediction-log files until the folder holds at most `max_total_bytes`
    (and, with `max_age_seconds`, every file older than that)."""
    now = time.time() if now is None else now
    pruned = Pruned()
    files = _files(folder, "*.jsonl")
    total = sum(size for _, size, _ in files)
    for mtime, size, path in files:
        if now - mtime < BUSY_SECONDS:
            break  # oldest first: everything after this one is newer still
        too_old = max_age_seconds is not None and now - mtime > max_age_seconds
        if total > max_total_bytes or too_old:
            _delete(path, size, "predictions", pruned)
            total -= size
    return pruned


def apply_retention(settings: Settings, now: float | None = None) -> Pruned:
    """One pass over every kind of state the settings bound."""
    now = time.time() if now is None else now
    max_age = settings.retention_days * DAY
    pruned = prune_prediction_logs(
        settings.predictions_dir, settings.prediction_log_max_total_bytes, max_age, now
    )
    for mtime, size, path in _files(settings.logs_dir, "*.log*"):
        if now - mtime > max_age:
            _delete(path, size, "logs", pruned)
    feedback_age = settings.feedback_retention_days * DAY
    for mtime, size, path in _files(settings.feedback_dir, "*.jsonl"):
        if now - mtime > feedback_age:
            _delete(path, size, "feedback", pruned)
    if settings.reports_dir.is_dir():
        latest = {(settings.reports_dir / link).resolve() for link in ("latest", "latest-performance")}
        for folder in settings.reports_dir.iterdir():
            if not folder.is_dir() or folder.is_symlink() or folder.resolve() in latest:
                continue
            if now - folder.stat().st_mtime > max_age:
                size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
                shutil.rmtree(folder, ignore_errors=True)
                pruned.add("reports", size)
    return pruned
