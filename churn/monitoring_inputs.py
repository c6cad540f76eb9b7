"""Reading the monitoring checks' inputs (drift, performance, outcome ingestion): CSV files and
the service's prediction log (JSON lines).

Unlike training, the drift check must not refuse a category it has never seen: it is exactly what
it is there to report. So categorical values are kept as they are, and only structure (columns,
numbers) is enforced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from churn.cli import share
from churn.predictionlog import PredictionLine, decode_line, line_time
from churn.schema import FEATURE_NAMES, FEATURES, ID_COLUMN, LABEL_COLUMN, read_raw_csv

MAX_BAD_FRACTION = 0.01  # tolerated share of unreadable prediction-log lines, by default


def add_max_bad_fraction(parser: argparse.ArgumentParser) -> None:
    """--max-bad-fraction, the same for every command that reads the prediction log."""
    parser.add_argument(
        "--max-bad-fraction",
        type=share,
        default=MAX_BAD_FRACTION,
        help="tolerated share of unreadable prediction-log lines (default %(default)s)",
    )


JSONL_SUFFIXES = (".jsonl", ".json", ".log")
_INTEGRAL = re.compile(r"^(\d+)\.0$")
_PLAIN_DTYPES = frozenset({"string", "integer", "floating", "mixed-integer-float"})  # pandas infer_dtype


class InputError(ValueError):
    """Bad input for a monitoring command (exit code 2); the message names the problem."""


@dataclass
class LoadedData:
    frame: pd.DataFrame  # the 19 features; categorical columns as strings, numeric as float
    source: str
    bad_lines: int = 0
    vanished_files: int = 0  # listed, then deleted (retention) before they were read: skipped
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
        raise InputError(f"--since {text!r}: expected a duration like 24h, 30m, 7d or an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _stripped_text(col: pd.Series, integral: bool) -> np.ndarray:
    """Each value as stripped text (and "1.0" as "1" when `integral`).

    A column of strings alone, or of numbers alone, is cleaned one distinct value at a time
    (factorize is C; 100,000 records hold a few hundred distinct values per column: 0.8 s of string
    methods before). Mixed columns (True beside 1, None, lists) are cleaned value by value, because
    factorize would merge values that are equal but print differently.
    """
    if pd.api.types.infer_dtype(col, skipna=False) in _PLAIN_DTYPES:
        codes, uniques = pd.factorize(col, use_na_sentinel=False)
        texts = [str(u).strip() for u in uniques]
        if integral:
            texts = [_INTEGRAL.sub(r"\1", t) for t in texts]
        return np.array(texts, dtype=object)[codes]
    text = col.astype(str).str.strip()
    if integral:
        text = text.str.replace(_INTEGRAL, r"\1", regex=True)
    return text.to_numpy(dtype=object)


def normalise(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check columns and numbers; keep categories verbatim (as strings)."""
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in FEATURE_NAMES if c not in raw.columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {missing}")
    unknown = [c for c in raw.columns if c not in FEATURE_NAMES and c not in (ID_COLUMN, LABEL_COLUMN)]
    if unknown:
        raise InputError(f"{source}: unknown column(s) {unknown}")
    out = pd.DataFrame(index=raw.index)
    for feature in FEATURES:
        # integer codes (SeniorCitizen 1, 1.0 and "1") are one category
        text = _stripped_text(raw[feature.name], integral=feature.integer_codes)
        if feature.is_categorical:
            out[feature.name] = text
            continue
        rule = feature.blank
        if rule is not None:  # the training data's rule (churn.schema), e.g. new customers owe 0
            when = pd.to_numeric(raw[rule.when], errors="coerce").to_numpy()
            text = np.where(rule.fills(text == "", when), rule.value, text)
        values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"{source}: column {feature.name!r}, row {row + 1}: not a number ({text[row]!r})"
            )
        out[feature.name] = values
    return out.reset_index(drop=True)


def read_drift_csv(path: Path) -> LoadedData:
    raw = read_raw_csv(str(path), InputError)
    return LoadedData(frame=normalise(raw, str(path)), source=str(path))


def prediction_log_files(folder: Path, since: dt.datetime | None) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in JSONL_SUFFIXES)
    if since is None:
        return files
    kept = []
    for p in files:  # a file last written before `since` holds nothing newer
        try:
            if dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC) >= since:
                kept.append(p)
        except FileNotFoundError:
            continue  # deleted by retention since the listing
    return kept


@dataclass
class LogScan:
    """What a pass over prediction-log files saw: lines read, lines that were not records, and
    files deleted (by retention or the size cap) between the listing and the read."""

    total: int = 0
    bad: int = 0
    vanished: int = 0

    def check(self, source: str, max_bad_fraction: float) -> None:
        """More than `max_bad_fraction` unreadable lines is an error: a wrong file, not torn lines."""
        if self.total and self.bad / self.total > max_bad_fraction:
            raise InputError(
                f"{source}: {self.bad} of {self.total} lines are not prediction-log records "
                f"(more than the tolerated {max_bad_fraction:.1%})"
            )


def iter_log_lines(paths: list[Path], scan: LogScan) -> Iterator[tuple[int, int, bytes]]:
    """(file index, byte offset, line) of every complete, non-blank line of `paths`, in file
    order; counted in `scan`. A file deleted between the listing and the read is skipped and
    counted (`scan.vanished`); any other unreadable file is an InputError."""
    for index, path in enumerate(paths):
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            scan.vanished += 1  # deleted since the listing: skipped and counted, not an error
            continue
        except OSError as exc:
            raise InputError(f"{path}: unreadable ({exc.strerror or exc})") from None
        offset = 0
        try:
            with fh:
                for line in fh:
                    start, offset = offset, offset + len(line)
                    if not line.endswith(b"\n") or line.isspace():
                        continue  # blank, or the last line of a file the service is appending to
                    scan.total += 1
                    yield index, start, line
        except OSError as exc:
            raise InputError(f"{path}: unreadable ({exc.strerror or exc})") from None


def iter_prediction_log(
    paths: list[Path], since: dt.datetime | None = None, scan: LogScan | None = None
) -> Iterator[tuple[PredictionLine, dt.datetime]]:
    """The prediction-log lines of `paths` (newer than `since`), one parsed line and its time at
    a time, in file order. Unreadable lines are skipped and counted in `scan`; so are files
    deleted between the listing and the read (`scan.vanished`)."""
    scan = scan if scan is not None else LogScan()
    cutoff = None if since is None else since.astimezone(dt.UTC)
    for _, _, line in iter_log_lines(paths, scan):
        try:
            entry = decode_line(line)
            when = line_time(entry)
        except ValueError:
            scan.bad += 1
            continue
        if cutoff is None or when >= cutoff:
            yield entry, when


def read_prediction_log(
    paths: list[Path],
    source: str,
    since: dt.datetime | None = None,
    max_records: int | None = None,
    max_bad_fraction: float = MAX_BAD_FRACTION,
) -> LoadedData:
    """Records of the prediction log, oldest first. Streams the files and keeps only the newest
    `max_records` on a heap, so memory is bounded by `max_records`, not by the log's size."""
    kept: list[tuple[dt.datetime, int, dict]] = []  # a min-heap on (time, arrival): the oldest on top
    scan = LogScan()
    for n, (entry, when) in enumerate(iter_prediction_log(paths, since, scan)):
        item = (when, n, entry["record"])
        if max_records is None or len(kept) < max_records:
            heapq.heappush(kept, item)
        elif item > kept[0]:
            heapq.heapreplace(kept, item)
    scan.check(source, max_bad_fraction)
    kept.sort()
    bad, total = scan.bad, scan.total
    notes = [f"{bad} unreadable line(s) of {total} skipped"] if bad else []
    if scan.vanished:
        notes.append(f"{scan.vanished} file(s) deleted during the scan (retention) skipped")
    counts = {"bad_lines": bad, "vanished_files": scan.vanished, "notes": notes}
    if not kept:
        return LoadedData(frame=pd.DataFrame(columns=list(FEATURE_NAMES)), source=source, **counts)
    raw = pd.DataFrame.from_records([r for _, _, r in kept])
    raw = raw.drop(columns=[c for c in (ID_COLUMN,) if c in raw.columns])
    return LoadedData(frame=normalise(raw, source), source=source, **counts)


def load_current_window(
    path: Path | None, default_folder: Path, since, max_records, max_bad_fraction
) -> LoadedData:
    """--current: a CSV, a prediction-log file or folder; default the service's prediction log."""
    if path is None:
        if not default_folder.is_dir():
            raise InputError(
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
        raise InputError(f"{path}: no such file or folder")
    if path.suffix.lower() in JSONL_SUFFIXES:
        return read_prediction_log([path], str(path), since, max_records, max_bad_fraction)
    data = read_drift_csv(path)
    if max_records is not None and len(data.frame) > max_records:
        data.frame = data.frame.tail(max_records).reset_index(drop=True)
    return data
