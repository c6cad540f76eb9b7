"""Outcome ingestion behind `python -m monitoring.feedback` (see that command for the CSV and the
JSON line): validate outcome files, join each outcome with its prediction in one streaming pass over
the prediction log, and store the new versions in the outcome store (churn.outcomes)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from churn.cleanup import BUSY_SECONDS
from churn.logs import setup_logging
from churn.monitoring_inputs import (
    MAX_BAD_FRACTION,
    InputError,
    LogScan,
    iter_log_lines,
    prediction_log_files,
)
from churn.outcomes import (
    LabelledExample,
    example_key,
    ingest_lock,
    iter_examples,
    outcome_key,
    write_examples,
)
from churn.predictionlog import customer_of, decode_line, line_time
from churn.schema import ID_COLUMN, LABEL_COLUMN, LABEL_VALUES, read_raw_csv
from churn.settings import Settings, settings_or_exit
from churn.utctime import format_time, parse_time

TIME_COLUMN = "observed_at"
TREATED_COLUMN = "treated"  # optional: Yes (we acted on the customer), No, or empty (unknown)


@dataclass(frozen=True)
class Outcome:
    """One validated row of an outcomes file."""

    customer: str
    churn: bool
    observed: dt.datetime
    given: bool  # observed_at came from the file (else: the ingestion time)
    treated: bool | None  # the file's `treated`: None when absent or empty


def read_outcomes(path: Path, now: dt.datetime) -> tuple[list[Outcome], int]:
    """Validated rows, each (customer, label, time as given) once, and how many rows repeated an
    earlier one. Any problem is an InputError naming the row."""
    raw = read_raw_csv(str(path), InputError)
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in (ID_COLUMN, LABEL_COLUMN) if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    if raw.empty:
        raise InputError(f"{path}: no data rows")
    rows: dict[tuple[str, bool, str], Outcome] = {}
    label_of: dict[str, tuple[bool, int]] = {}
    repeated = 0
    for i, rec in enumerate(raw.to_dict(orient="records"), start=1):
        cid = str(rec[ID_COLUMN]).strip()
        if not cid:
            raise InputError(f"{path}: row {i}: empty {ID_COLUMN}")
        label = str(rec[LABEL_COLUMN]).strip()
        if label not in LABEL_VALUES:
            raise InputError(
                f"{path}: column {LABEL_COLUMN!r}, row {i}: unknown value {label!r} "
                f"(allowed: {list(LABEL_VALUES)})"
            )
        churn = label == "Yes"
        if cid in label_of and label_of[cid][0] != churn:
            raise InputError(
                f"{path}: row {i}: customer {cid!r} is labelled both ways in this file "
                f"(see row {label_of[cid][1]})"
            )
        label_of.setdefault(cid, (churn, i))
        text = str(rec.get(TIME_COLUMN, "")).strip()
        observed = now
        if text:
            try:
                observed = dt.datetime.fromisoformat(text)
            except ValueError:
                raise InputError(
                    f"{path}: column {TIME_COLUMN!r}, row {i}: not an ISO 8601 time ({text!r})"
                ) from None
            observed = parse_time(
                format_time(observed if observed.tzinfo else observed.replace(tzinfo=dt.UTC))
            )
        flag = str(rec.get(TREATED_COLUMN, "")).strip()
        if flag not in ("", *LABEL_VALUES):
            raise InputError(
                f"{path}: column {TREATED_COLUMN!r}, row {i}: unknown value {flag!r} (Yes, No or empty)"
            )
        key = (cid, churn, format_time(observed) if text else "")
        if key in rows:
            repeated += 1
            continue
        rows[key] = Outcome(cid, churn, observed, bool(text), None if not flag else flag == "Yes")
    return list(rows.values()), repeated


def join_predictions(
    settings: Settings, wanted: list[tuple[str, dt.datetime]], max_bad_fraction: float
) -> tuple[list[bytes | None], int]:
    """For each (customer, observed time), the latest logged prediction of that customer made
    before it and within the prediction horizon (the line as logged), or None; and how many log files vanished
    (retention) during the pass. One pass over the log: each line is parsed once, and only the
    lines of wanted customers are looked at further; for each outcome only where its best line
    is (file, offset) is kept, and those lines are read again at the end. Memory grows with the
    number of outcomes, never with the log."""
    horizon = dt.timedelta(days=settings.prediction_horizon_days)
    by_customer: dict[str, list[int]] = {}
    for i, (cid, _) in enumerate(wanted):
        by_customer.setdefault(cid, []).append(i)
    best: list[tuple[dt.datetime, int, int] | None] = [None] * len(wanted)  # (time, file, offset)
    scan = LogScan()
    folder = settings.predictions_dir
    paths = prediction_log_files(folder, None) if folder.is_dir() and by_customer else []
    for index, offset, raw in iter_log_lines(paths, scan):
        try:
            line = decode_line(raw)
        except ValueError:
            scan.bad += 1
            continue
        mine = by_customer.get(customer_of(line))  # type: ignore[arg-type]
        if not mine:
            continue
        try:
            when = line_time(line)
        except ValueError:
            scan.bad += 1
            continue
        for i in mine:
            observed, now = wanted[i][1], best[i]
            if observed - horizon <= when < observed and (now is None or when >= now[0]):
                best[i] = (when, index, offset)
    scan.check(str(folder), max_bad_fraction)
    return _read_lines(paths, best), scan.vanished


def _read_lines(paths: list[Path], where: list[tuple[dt.datetime, int, int] | None]) -> list[bytes | None]:
    """The lines at (file, offset), file by file in offset order, as logged (kept as bytes: a
    parsed line costs several times its size in memory, and it is stored as it came)."""
    out: list[bytes | None] = [None] * len(where)
    wanted = sorted((w[1], w[2], i) for i, w in enumerate(where) if w is not None)
    current, fh = -1, None
    try:
        for index, offset, i in wanted:
            if index != current:
                if fh is not None:
                    fh.close()
                fh, current = open(paths[index], "rb"), index  # noqa: SIM115 - closed below
            fh.seek(offset)
            out[i] = fh.readline().rstrip(b"\n")
    except FileNotFoundError as exc:  # deleted between the pass and now: those wait for next time
        raise InputError(f"{exc.filename}: deleted during the join; run it again") from None
    finally:
        if fh is not None:
            fh.close()
    return out


@dataclass(frozen=True)
class Known:
    """What ingestion needs of a stored outcome: its label and treatment (not the whole record)."""

    churn: bool
    treated: bool | None


@dataclass
class IngestCounts:
    """The command's counts, in the order of its JSON line (see monitoring.feedback)."""

    accepted: int = 0
    matched: int = 0
    unmatched: int = 0
    corrected: int = 0
    joined_late: int = 0
    pending: int = 0
    duplicates: int = 0
    vanished_files: int = 0


@dataclass
class _Incoming:
    """The validated outcomes of every file, each with its source (file name and digest)."""

    outcomes: list[tuple[Outcome, str]]
    repeated: int  # rows that repeated an earlier one of their file
    digests: list[str]  # one per file: they name the stored file


def _read_files(paths: list[Path], now: dt.datetime) -> _Incoming:
    """Every file validated before anything is written: an InputError names the first bad one."""
    incoming = _Incoming([], 0, [])
    for path in paths:
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        rows, repeated = read_outcomes(path, now)
        incoming.repeated += repeated
        incoming.outcomes += [(o, f"{path.name} sha256:{digest[:12]}") for o in rows]
        incoming.digests.append(digest)
    return incoming


@dataclass
class _Stored:
    """The stored outcomes by key, and those still waiting for their prediction inside their
    horizon (they are joined again)."""

    known: dict[str, Known]
    waiting: list[LabelledExample]


def _read_stored(settings: Settings, now: dt.datetime) -> _Stored:
    horizon = dt.timedelta(days=settings.prediction_horizon_days)
    stored = _Stored({}, [])
    for e in iter_examples(settings):
        stored.known[example_key(e)] = Known(e["churn"], e.get("treated"))
        if e["prediction"] is None and now - parse_time(e["observed_at"]) <= horizon:
            stored.waiting.append(e)
    return stored


def _join_late(
    waiting: list[LabelledExample],
    joined: list[bytes | None],
    now: str,
    counts: IngestCounts,
    new: dict[str, LabelledExample],
) -> None:
    """New versions of the waiting outcomes that found their prediction now; the others stay pending."""
    for example, raw in zip(waiting, joined, strict=True):
        if raw is None:
            counts.pending += 1
            continue
        key = outcome_key(example["customerID"], decode_line(raw))
        new[key] = example | {  # type: ignore[assignment]
            "key": key,
            "prediction": orjson.Fragment(raw),  # stored as logged
            "ingested_at": now,
            "supersedes": example_key(example),
        }
        counts.joined_late += 1


def _add_outcomes(
    outcomes: list[tuple[Outcome, str]],
    joined: list[bytes | None],
    stored: dict[str, Known],
    now: str,
    counts: IngestCounts,
    new: dict[str, LabelledExample],
) -> None:
    """The files' outcomes with their predictions: new ones and corrections are added to `new`;
    one that says what is already stored (or added earlier in this run) is a duplicate."""
    for (outcome, source), raw in zip(outcomes, joined, strict=True):
        key = outcome_key(outcome.customer, None if raw is None else decode_line(raw))
        prediction = None if raw is None else orjson.Fragment(raw)  # stored as logged
        before = new.get(key)
        known = Known(before["churn"], before.get("treated")) if before else stored.get(key)
        if known is not None and known.churn == outcome.churn and outcome.treated in (None, known.treated):
            counts.duplicates += 1
            continue
        new[key] = {
            "key": key,
            "customerID": outcome.customer,
            "churn": outcome.churn,
            "observed_at": format_time(outcome.observed),
            "observed_at_given": outcome.given,
            "ingested_at": now,
            "source": source,
            "prediction": prediction,
            "treated": outcome.treated if outcome.treated is not None else (known.treated if known else None),
        }
        if known is not None:
            counts.corrected += 1
            continue
        counts.accepted += 1
        if prediction is not None:
            counts.matched += 1
        else:
            counts.unmatched += 1
            counts.pending += 1


def ingest_files(
    settings: Settings, paths: list[Path], max_bad_fraction: float = MAX_BAD_FRACTION
) -> dict[str, int]:
    """Validate every file first (an InputError names the first bad one; nothing is written),
    then join them all in one pass over the log and store the new versions in one file."""
    now_dt = dt.datetime.now(dt.UTC)
    now = format_time(now_dt)
    incoming = _read_files(paths, now_dt)
    counts = IngestCounts(duplicates=incoming.repeated)
    with ingest_lock(settings):
        stored = _read_stored(settings, now_dt)
        waiting = stored.waiting
        joined, counts.vanished_files = join_predictions(
            settings,
            [(e["customerID"], parse_time(e["observed_at"])) for e in waiting]
            + [(o.customer, o.observed) for o, _ in incoming.outcomes],
            max_bad_fraction,
        )
        new: dict[str, LabelledExample] = {}
        _join_late(waiting, joined[: len(waiting)], now, counts, new)
        _add_outcomes(incoming.outcomes, joined[len(waiting) :], stored.known, now, counts, new)
        if new:
            stamp = now.replace("-", "").replace(":", "").replace(".", "")
            tag = hashlib.sha256("".join(incoming.digests).encode()).hexdigest()[:12]
            write_examples(settings, f"{stamp}-{tag}.jsonl", list(new.values()))
    return asdict(counts)


def ingest(settings: Settings, path: Path, max_bad_fraction: float = MAX_BAD_FRACTION) -> dict[str, int]:
    """One outcomes file (`--labels`)."""
    return ingest_files(settings, [path], max_bad_fraction)


def ingest_inbox(
    settings: Settings, max_bad_fraction: float = MAX_BAD_FRACTION
) -> tuple[dict[str, int], list[str]]:
    """The scheduled Job's run: every CSV in the drop folder older than BUSY_SECONDS (one still
    being copied waits for the next run) is validated; a bad one is moved to `rejected/` with a
    note naming the problem, the others are ingested together, then moved to `done/`. With no
    file, the run still retries the outcomes that wait for their prediction. Returns the counts
    and the problems (a non-empty list: exit 2, after storing what was good)."""
    inbox = settings.outcomes_inbox
    for sub in (inbox, inbox.parent / "done", inbox.parent / "rejected"):
        sub.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - BUSY_SECONDS
    files = sorted(p for p in inbox.glob("*.csv") if p.is_file() and p.stat().st_mtime <= cutoff)
    good, problems = [], []
    for path in files:
        try:
            read_outcomes(path, dt.datetime.now(dt.UTC))
            good.append(path)
        except InputError as exc:
            problems.append(str(exc))
            stamp = format_time(time.time()).replace(":", "")
            (inbox.parent / "rejected" / f"{stamp}-{path.name}.error.txt").write_text(f"{exc}\n")
            os.replace(path, inbox.parent / "rejected" / f"{stamp}-{path.name}")
    counts = ingest_files(settings, good, max_bad_fraction)
    stamp = format_time(time.time()).replace(":", "")
    for path in good:
        os.replace(path, inbox.parent / "done" / f"{stamp}-{path.name}")
    return counts | {"files": len(good), "rejected": len(problems)}, problems


@dataclass(frozen=True)
class FeedbackOptions:
    """The options of `python -m monitoring.feedback`, checked (see its docstring)."""

    labels: Path | None  # None: --inbox, the drop folder
    max_bad_fraction: float


def ingest_outcomes(options: FeedbackOptions) -> int:
    """`python -m monitoring.feedback` but its option parsing: prints its lines, returns its exit
    code. SystemExit on bad settings."""
    settings = settings_or_exit()
    log = setup_logging(settings, "feedback").getChild("feedback")
    problems: list[str] = []
    try:
        if options.labels is None:
            counts, problems = ingest_inbox(settings, options.max_bad_fraction)
        else:
            counts = ingest(settings, options.labels, options.max_bad_fraction)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"error: rejected (moved to outcomes/rejected/): {problem}", file=sys.stderr)
    log.info(
        "outcomes from %s: %d new (%d joined with a prediction, %d not yet), %d corrected, %d joined "
        "late, %d already stored; %d waiting for a prediction",
        options.labels or settings.outcomes_inbox,
        counts["accepted"],
        counts["matched"],
        counts["unmatched"],
        counts["corrected"],
        counts["joined_late"],
        counts["duplicates"],
        counts["pending"],
    )
    print(json.dumps(counts))
    return 2 if problems else 0
