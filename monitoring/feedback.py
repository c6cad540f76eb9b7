"""Outcomes come back: store what really happened to scored customers, joined with their predictions.

    python -m monitoring.feedback --labels outcomes.csv

The CSV is what a CRM exports: `customerID`, `Churn` (Yes/No) and, optionally, `observed_at`
(ISO 8601; UTC when it has no zone; the ingestion time when the column is absent or the cell is
empty). Other columns are ignored. Each outcome is joined with the most recent logged prediction
for its customer made before `observed_at` (see churn.feedback) and stored under
$MLOPS_HOME/feedback/, atomically; ingesting the same outcomes again adds nothing.

The last line of stdout is JSON: {"accepted": n, "matched": n, "unmatched": n, "duplicates": n}
(accepted = new outcomes stored, of which matched/unmatched to a prediction; duplicates = outcomes
already stored, or repeated in the file).
Exit codes: 0 done; 2 bad input (missing column, a label other than Yes/No, a bad time, a customer
labelled both ways in the file, an empty customerID), with nothing written.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path

from churn.feedback import (
    LabelledExample,
    LoggedPrediction,
    example_key,
    ingest_lock,
    iter_examples,
    outcome_key,
    write_examples,
)
from churn.logs import setup_logging
from churn.registry import utc_now
from churn.schema import ID_COLUMN, LABEL_COLUMN, LABEL_VALUES, read_raw_csv
from churn.settings import Settings, settings_or_exit
from monitoring.data import (
    MAX_BAD_FRACTION,
    InputError,
    LogScan,
    add_max_bad_fraction,
    iter_prediction_log,
    prediction_log_files,
)

TIME_COLUMN = "observed_at"


def log_time(when: dt.datetime) -> str:
    """The prediction log's time format, so that times compare as strings."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_outcomes(path: Path, now: str) -> tuple[list[tuple[str, bool, str, bool]], int]:
    """Validated (customerID, churn, observed_at, observed_at_given) rows, each outcome once, and
    how many rows repeated an earlier one. Any problem is an InputError naming the row."""
    raw = read_raw_csv(str(path), InputError)
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in (ID_COLUMN, LABEL_COLUMN) if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    if raw.empty:
        raise InputError(f"{path}: no data rows")
    rows: dict[str, tuple[str, bool, str, bool]] = {}
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
        if text:
            try:
                when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                raise InputError(
                    f"{path}: column {TIME_COLUMN!r}, row {i}: not an ISO 8601 time ({text!r})"
                ) from None
            observed = log_time(when if when.tzinfo else when.replace(tzinfo=dt.UTC))
        else:
            observed = now
        key = outcome_key(cid, churn, observed if text else None)
        if key in rows:
            repeated += 1
            continue
        rows[key] = (cid, churn, observed, bool(text))
    return list(rows.values()), repeated


def latest_predictions(
    settings: Settings, customers: set[str], max_bad_fraction: float
) -> dict[str, list[LoggedPrediction]]:
    """Every logged prediction of these customers, oldest first."""
    found: dict[str, list[LoggedPrediction]] = {}
    scan = LogScan()
    paths = prediction_log_files(settings.predictions_dir, None) if settings.predictions_dir.is_dir() else []
    for entry in iter_prediction_log(paths, None, scan):
        cid = entry["record"].get(ID_COLUMN)
        if cid is not None and str(cid) in customers:
            found.setdefault(str(cid), []).append(entry)
    scan.check(str(settings.predictions_dir), max_bad_fraction)
    for entries in found.values():
        entries.sort(key=lambda e: e["time"])
    return found


def ingest(settings: Settings, path: Path, max_bad_fraction: float = MAX_BAD_FRACTION) -> dict[str, int]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    now = utc_now()
    outcomes, repeated = read_outcomes(path, now)
    with ingest_lock(settings):
        stored = {example_key(e) for e in iter_examples(settings)}
        fresh = [o for o in outcomes if outcome_key(o[0], o[1], o[2] if o[3] else None) not in stored]
        duplicates = repeated + len(outcomes) - len(fresh)
        predictions = latest_predictions(settings, {o[0] for o in fresh}, max_bad_fraction)
        examples: list[LabelledExample] = []
        for cid, churn, observed, given in fresh:
            before = [p for p in predictions.get(cid, []) if p["time"] < observed]
            examples.append(
                {
                    "customerID": cid,
                    "churn": churn,
                    "observed_at": observed,
                    "observed_at_given": given,
                    "ingested_at": now,
                    "source": f"{path.name} sha256:{digest[:12]}",
                    "prediction": before[-1] if before else None,
                }
            )
        if examples:
            stamp = now.replace("-", "").replace(":", "").replace(".", "")
            write_examples(settings, f"{stamp}-{digest[:12]}.jsonl", examples)
    matched = sum(e["prediction"] is not None for e in examples)
    return {
        "accepted": len(examples),
        "matched": matched,
        "unmatched": len(examples) - matched,
        "duplicates": duplicates,
    }


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
        "outcomes from %s: %d new (%d joined with a prediction, %d never scored), %d already stored",
        args.labels,
        counts["accepted"],
        counts["matched"],
        counts["unmatched"],
        counts["duplicates"],
    )
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
