"""Compare new data with the training distribution of the current model.

    python -m monitoring.drift [--current PATH] [--since 24h] [--max-records N] [--reference CSV]
                              [--p-val 0.05] [--output-dir DIR] [--fail-on-drift] [--alert]
                              [--allow-no-verdict]

--current: a CSV with the data set's columns, or a prediction-log file or folder (JSON lines);
default: the service's prediction log under $MLOPS_HOME/predictions/.
--reference: a CSV; default: the training sample stored with the registry's current model.

Writes drift_report.json, drift_report.html and drift_metrics.prom to --output-dir (default
$MLOPS_HOME/reports/<UTC timestamp>/, with $MLOPS_HOME/reports/latest pointing to the newest).
A short summary goes to stderr; the last line of stdout is a JSON summary.

Exit codes: 0 the check ran (drift or not); 1 drift found with --fail-on-drift; 2 bad input
(missing file, missing or unknown columns, too many unreadable log lines, fewer than 50 rows; with
--allow-no-verdict, too few rows is exit 0 and a summary with "drift": null).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from churn.cli import open_unit, options_from, positive_int, value_or_exit
from churn.drift_check import DriftOptions, check_drift
from churn.monitoring_inputs import add_max_bad_fraction, parse_since


def parse_options(argv: list[str] | None) -> DriftOptions:
    """SystemExit (code 2, the problem on stderr) on a bad option, as argparse does."""
    parser = argparse.ArgumentParser(prog="python -m monitoring.drift", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--current", type=Path, help="CSV, prediction-log file or folder (default: the prediction log)"
    )
    parser.add_argument("--since", help="only log records newer than this: 24h, 30m, 7d or an ISO time")
    parser.add_argument(
        "--max-records", type=positive_int, default=100_000, help="newest N records (default %(default)s)"
    )
    parser.add_argument(
        "--reference", type=Path, help="reference CSV (default: stored with the current model)"
    )
    parser.add_argument(
        "--p-val", type=open_unit, default=0.05, help="significance level (default %(default)s)"
    )
    parser.add_argument(
        "--output-dir", type=Path, help="report folder (default $MLOPS_HOME/reports/<UTC time>/)"
    )
    parser.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is found")
    parser.add_argument(
        "--alert", action="store_true", help="POST the summary to MONITORING_WEBHOOK_URL on drift"
    )
    parser.add_argument(
        "--allow-no-verdict",
        action="store_true",
        help="fewer than 50 current records is not an error: say so and exit 0 (scheduled jobs)",
    )
    add_max_bad_fraction(parser)
    args = parser.parse_args(argv)
    return options_from(DriftOptions, args, since=value_or_exit(parser, parse_since, args.since))


def main(argv: list[str] | None = None) -> int:
    code, summary = check_drift(parse_options(argv))
    if summary is not None:
        print(json.dumps(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
