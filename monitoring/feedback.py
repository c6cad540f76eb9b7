"""Outcomes come back: store what really happened to scored customers, joined with their predictions.

    python -m monitoring.feedback --labels outcomes.csv

The CSV is what a CRM exports: `customerID`, `Churn` (Yes/No) and, optionally, `observed_at`
(ISO 8601; UTC when it has no zone; the ingestion time when the column is absent or the cell is
empty) and `treated` (Yes: the retention team acted on the customer; No; empty: unknown; see
churn.holdout). Other columns are ignored. Each outcome is joined with the latest logged prediction for
its customer made before `observed_at` and within PREDICTION_HORIZON_DAYS of it, and stored under
$MLOPS_HOME/feedback/ (churn.feedback: identity, corrections, history), atomically. Outcomes that
answered no prediction yet are retried at every ingestion while their horizon lasts: a prediction
that reached the log after its outcome still joins. The log is streamed once per ingestion, and
memory is bounded by the number of outcomes, not by the log.

The last line of stdout is JSON: {"accepted": n, "matched": n, "unmatched": n, "duplicates": n,
"corrected": n, "joined_late": n, "pending": n, "vanished_files": n}: accepted = new outcomes stored (of which
matched/unmatched to a prediction); duplicates = outcomes already stored, or repeated in the file;
corrected = a new label for a stored outcome; joined_late = earlier outcomes that now found their
prediction; pending = outcomes still waiting for one; vanished_files = prediction-log files that
retention deleted during the pass, skipped).
Exit codes: 0 done; 2 bad input (missing column, a label other than Yes/No, a bad time, a customer
labelled both ways in the file, an empty customerID), with nothing written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from churn.feedback import (
    LabelledExample,
    example_key,
    ingest_lock,
    iter_examples,
    outcome_key,
    write_examples,
)
from churn.logs import setup_logging
from churn.predictionlog import PredictionLine, customer_of
from churn.schema import ID_COLUMN, LABEL_COLUMN, LABEL_VALUES, read_raw_csv
from churn.settings import Settings, settings_or_exit
from churn.utctime import format_time, parse_time
from monitoring.data import (
    MAX_BAD_FRACTION,
    InputError,
    LogScan,
    add_max_bad_fraction,
    iter_prediction_log,
    prediction_log_files,
)

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
) -> tuple[list[PredictionLine | None], int]:
    """For each (customer, observed time), the latest logged prediction of that customer made
    before it and within the prediction horizon, or None. One pass over the log; memory holds the
    outcomes and one candidate line each, whatever the log's size. Also: how many log files
    vanished (retention) during the pass."""
    horizon = dt.timedelta(days=settings.prediction_horizon_days)
    by_customer: dict[str, list[int]] = {}
    for i, (cid, _) in enumerate(wanted):
        by_customer.setdefault(cid, []).append(i)
    best: list[PredictionLine | None] = [None] * len(wanted)
    best_time: list[dt.datetime | None] = [None] * len(wanted)
    scan = LogScan()
    folder = settings.predictions_dir
    paths = prediction_log_files(folder, None) if folder.is_dir() and by_customer else []
    for line, when in iter_prediction_log(paths, None, scan):
        mine = by_customer.get(customer_of(line))  # type: ignore[arg-type]
        if not mine:
            continue
        for i in mine:
            observed = wanted[i][1]
            if observed - horizon <= when < observed and (best_time[i] is None or when >= best_time[i]):
                best[i], best_time[i] = line, when
    scan.check(str(folder), max_bad_fraction)
    return best, scan.vanished


def ingest(settings: Settings, path: Path, max_bad_fraction: float = MAX_BAD_FRACTION) -> dict[str, int]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    now_dt = dt.datetime.now(dt.UTC)
    now = format_time(now_dt)
    outcomes, repeated = read_outcomes(path, now_dt)
    source = f"{path.name} sha256:{digest[:12]}"
    counts = dict.fromkeys(("accepted", "matched", "unmatched", "corrected", "joined_late", "pending"), 0)
    counts["duplicates"] = repeated
    with ingest_lock(settings):
        stored = {example_key(e): e for e in iter_examples(settings)}
        horizon = dt.timedelta(days=settings.prediction_horizon_days)
        waiting = [
            e
            for e in stored.values()
            if e["prediction"] is None and now_dt - parse_time(e["observed_at"]) <= horizon
        ]
        joined, counts["vanished_files"] = join_predictions(
            settings,
            [(e["customerID"], parse_time(e["observed_at"])) for e in waiting]
            + [(o.customer, o.observed) for o in outcomes],
            max_bad_fraction,
        )
        new: dict[str, LabelledExample] = {}
        for example, prediction in zip(waiting, joined[: len(waiting)], strict=True):
            if prediction is None:
                counts["pending"] += 1
                continue
            key = outcome_key(example["customerID"], prediction)
            new[key] = example | {  # type: ignore[assignment]
                "key": key,
                "prediction": prediction,
                "ingested_at": now,
                "supersedes": example_key(example),
            }
            counts["joined_late"] += 1
        for outcome, prediction in zip(outcomes, joined[len(waiting) :], strict=True):
            key = outcome_key(outcome.customer, prediction)
            before = new.get(key) or stored.get(key)
            if (
                before is not None
                and before["churn"] == outcome.churn
                and outcome.treated in (None, before.get("treated"))
            ):
                counts["duplicates"] += 1
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
                "treated": outcome.treated if outcome.treated is not None else (before or {}).get("treated"),
            }
            if before is not None:
                counts["corrected"] += 1
                continue
            counts["accepted"] += 1
            counts["matched" if prediction is not None else "unmatched"] += 1
            counts["pending"] += prediction is None
        if new:
            stamp = now.replace("-", "").replace(":", "").replace(".", "")
            write_examples(settings, f"{stamp}-{digest[:12]}.jsonl", list(new.values()))
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.feedback", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--labels", type=Path, required=True, help="CSV: customerID, Churn, [observed_at]")
    add_max_bad_fraction(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_or_exit()
    log = setup_logging(settings, "feedback").getChild("feedback")
    try:
        counts = ingest(settings, args.labels, args.max_bad_fraction)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info(
        "outcomes from %s: %d new (%d joined with a prediction, %d not yet), %d corrected, %d joined "
        "late, %d already stored; %d waiting for a prediction",
        args.labels,
        counts["accepted"],
        counts["matched"],
        counts["unmatched"],
        counts["corrected"],
        counts["joined_late"],
        counts["duplicates"],
        counts["pending"],
    )
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
