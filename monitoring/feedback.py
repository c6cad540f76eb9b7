"""Outcomes come back: store what really happened to scored customers, joined with their predictions.

    python -m monitoring.feedback --labels outcomes.csv
    python -m monitoring.feedback --inbox       (the churn-feedback CronJob: the drop folder)

The CSV is what a CRM exports: `customerID`, `Churn` (Yes/No) and, optionally, `observed_at`
(ISO 8601; UTC when it has no zone; the ingestion time when the column is absent or the cell is
empty) and `treated` (Yes: the retention team acted on the customer; No; empty: unknown; see
churn.holdout). Other columns are ignored. Each outcome is joined with the latest logged prediction for
its customer made before `observed_at` and within PREDICTION_HORIZON_DAYS of it, and stored under
$MLOPS_HOME/feedback/ (churn.outcomes: identity, corrections, history), atomically. Outcomes that
answered no prediction yet are retried at every ingestion while their horizon lasts: a prediction
that reached the log after its outcome still joins. The log is streamed once per ingestion, and
memory is bounded by the number of outcomes, not by the log.

The last line of stdout is JSON: {"accepted": n, "matched": n, "unmatched": n, "duplicates": n,
"corrected": n, "joined_late": n, "pending": n, "vanished_files": n}: accepted = new outcomes stored (of which
matched/unmatched to a prediction); duplicates = outcomes already stored, or repeated in the file;
corrected = a new label for a stored outcome; joined_late = earlier outcomes that now found their
prediction; pending = outcomes still waiting for one; vanished_files = prediction-log files that
retention deleted during the pass, skipped).
With --inbox: every CSV in $MLOPS_HOME/outcomes/inbox/ written more than a minute ago (one still
being copied waits for the next run) is ingested in the same single pass, then moved to
outcomes/done/; a bad file is moved to outcomes/rejected/ beside a note naming the problem, and
the run exits 2 after storing the good ones; the JSON adds "files" and "rejected".
Exit codes: 0 done; 2 bad input (missing column, a label other than Yes/No, a bad time, a customer
labelled both ways in the file, an empty customerID), with nothing written (with --inbox: the bad
files set aside, the good ones stored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from churn.cli import options_from
from churn.monitoring_inputs import add_max_bad_fraction
from churn.outcome_ingest import FeedbackOptions, ingest_outcomes


def parse_options(argv: list[str] | None) -> FeedbackOptions:
    """SystemExit (code 2, the problem on stderr) on a bad option, as argparse does."""
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.feedback", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", type=Path, help="CSV: customerID, Churn, [observed_at], [treated]")
    source.add_argument(
        "--inbox",
        action="store_true",
        help="ingest every CSV dropped in $MLOPS_HOME/outcomes/inbox/ (the scheduled Job)",
    )
    add_max_bad_fraction(parser)
    args = parser.parse_args(argv)
    return options_from(FeedbackOptions, args, labels=None if args.inbox else args.labels)


def main(argv: list[str] | None = None) -> int:
    return ingest_outcomes(parse_options(argv))


if __name__ == "__main__":
    sys.exit(main())
