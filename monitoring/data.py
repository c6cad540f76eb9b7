"""Reading the drift check's inputs: CSV files and the service's prediction log (JSON lines).

Unlike training, the drift check must not refuse a category it has never seen: it is exactly what
it is there to report. So categorical values are kept as they are, and only structure (columns,
numbers) is enforced.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churn.schema import FEATURE_NAMES, FEATURES, ID_COLUMN, LABEL_COLUMN, read_raw_csv

JSONL_SUFFIXES = (".jsonl", ".json", ".log")


class DriftInputError(ValueError):
    """Bad input for the drift check (exit code 2); the message names the problem."""


@dataclass
class LoadedData:
    frame: pd.DataFrame  # the 19 features; categorical columns as strings, numeric as float
    source: str
    bad_lines: int = 0
    total_lines: int = 0
    notes: list[str] = field(default_factory=list)


def parse_since(text: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """`24h`, `30m`, `7d`, `90s` or an ISO time (UTC if no zone) -> an aware datetime."""
    if text is None:
        return None
    now = now or dt.datetime.now(dt.UTC)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match:
        seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - dt.timedelta(seconds=seconds)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DriftInputError(
            f"--since {text!r}: expected a duration like 24h, 30m, 7d or an ISO time"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def normalise(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check columns and numbers; keep categories verbatim (as strings)."""
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in FEATURE_NAMES if c not in raw.columns]
    if missing:
        raise DriftInputError(f"{source}: missing column(s) {missing}")
    unknown = [c for c in raw.columns if c not in FEATURE_NAMES and c not in (ID_COLUMN, LABEL_COLUMN)]
    if unknown:
        raise DriftInputError(f"{source}: unknown column(s) {unknown}")
    out = pd.DataFrame(index=raw.index)
    for feature in FEATURES:
        col = raw[feature.name]
        if feature.is_categorical:
            # SeniorCitizen 1, 1.0 and "1" are one category
            text = col.astype(str).str.strip()
            if feature.name == "SeniorCitizen":
                text = text.str.replace(r"^(\d+)\.0$", r"\1", regex=True)
            out[feature.name] = text
            continue
        text = col.astype(str).str.strip()
        if feature.name == "TotalCharges":  # same deliberate rule as training: new customers owe 0
            tenure = pd.to_numeric(raw["tenure"], errors="coerce")
            text = text.mask((text == "") & (tenure == 0), "0")
        num = pd.to_numeric(text, errors="coerce")
        bad = num.isna() | ~np.isfinite(num)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DriftInputError(
                f"{source}: column {feature.name!r}, row {row + 1}: not a number ({text.iloc[row]!r})"
            )
        out[feature.name] = num.astype(np.float64)
    return out.reset_index(drop=True)


def read_csv(path: Path) -> LoadedData:
    raw = read_raw_csv(str(path), DriftInputError)
    return LoadedData(frame=normalise(raw, str(path)), source=str(path), total_lines=len(raw))


def prediction_log_files(folder: Path, since: dt.datetime | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in JSONL_SUFFIXES)
    if since is not None:  # a file last written before `since` holds nothing newer
        files = [p for p in files if dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC) >= since]
    return files


def read_prediction_log(
    paths: list[Path],
    source: str,
    since: dt.datetime | None = None,
    max_records: int | None = None,
    max_bad_fraction: float = 0.01,
) -> LoadedData:
    """Records of the prediction log, oldest first. Streams the files and keeps only the newest
    `max_records` on a heap, so memory is bounded by `max_records`, not by the log's size.
    Unreadable lines are counted; more than `max_bad_fraction` of them is an error (a wrong file,
    not a few torn lines)."""
    kept: list[tuple[str, int, dict]] = []  # a min-heap on (time, line number): the oldest on top
    bad = total = 0
    cutoff = None if since is None else since.astimezone(dt.UTC)
    for path in paths:
        try:
            with open(path, "rb") as fh:
                for line in fh:
                    if not line.strip() or not line.endswith(b"\n"):
                        continue  # blank, or the last line of a file the service is appending to
                    total += 1
                    try:
                        entry = json.loads(line)
                        record = entry["record"]
                        stamp = str(entry["time"])
                        if not isinstance(record, dict):
                            raise TypeError("record is not an object")
                        if cutoff is not None and parse_log_time(stamp) < cutoff:
                            continue
                    except (ValueError, KeyError, TypeError):
                        bad += 1
                        continue
                    item = (stamp, total, record)
                    if max_records is None or len(kept) < max_records:
                        heapq.heappush(kept, item)
                    elif item > kept[0]:
                        heapq.heapreplace(kept, item)
        except OSError as exc:
            raise DriftInputError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if total and bad / total > max_bad_fraction:
        raise DriftInputError(
            f"{source}: {bad} of {total} lines are not prediction-log records "
            f"(more than the tolerated {max_bad_fraction:.1%})"
        )
    kept.sort()
    if not kept:
        return LoadedData(
            frame=pd.DataFrame(columns=list(FEATURE_NAMES)), source=source, bad_lines=bad, total_lines=total
        )
    raw = pd.DataFrame.from_records([r for _, _, r in kept])
    raw = raw.drop(columns=[c for c in (ID_COLUMN,) if c in raw.columns])
    notes = [f"{bad} unreadable line(s) of {total} skipped"] if bad else []
    return LoadedData(
        frame=normalise(raw, source), source=source, bad_lines=bad, total_lines=total, notes=notes
    )


def parse_log_time(stamp: str) -> dt.datetime:
    """A prediction-log time ("2026-11-27T03:26:41.263Z") as an aware datetime; ValueError if not."""
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time without a zone: {stamp!r}")
    return when


def load_current(path: Path | None, default_folder: Path, since, max_records, max_bad_fraction) -> LoadedData:
    """--current: a CSV, a prediction-log file or folder; default the service's prediction log."""
    if path is None:
        if not default_folder.is_dir():
            raise DriftInputError(
                f"no prediction log at {default_folder} (serve some predictions, or pass --current)"
            )
        return read_prediction_log(
            prediction_log_files(default_folder, since),
            str(default_folder),
            since,
            max_records,
            max_bad_fraction,
        )
    if path.is_dir():
        return read_prediction_log(
            prediction_log_files(path, since), str(path), since, max_records, max_bad_fraction
        )
    if not path.exists():
        raise DriftInputError(f"{path}: no such file or folder")
    if path.suffix.lower() in JSONL_SUFFIXES:
        return read_prediction_log([path], str(path), since, max_records, max_bad_fraction)
    data = read_csv(path)
    if max_records is not None and len(data.frame) > max_records:
        data.frame = data.frame.tail(max_records).reset_index(drop=True)
    return data
