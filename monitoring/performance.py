"""How right each model version is: metrics realized on the outcomes that came back, beside the
version's training-time metrics and the metrics estimated from its probabilities alone (CBPE).

    python -m monitoring.performance [--since 7d] [--output-dir DIR] [--min-labels 100]
                                     [--fail-below-auc X] [--alert] [--allow-no-verdict]

For every version that served predictions in the window (the prediction log), and for a shadow
candidate (scored beside the current model on the same records): predictions, labelled outcomes,
realized metrics (null below --min-labels: noise, not a verdict), training metrics, estimated
metrics, and where estimate and realized, on the same labelled rows, disagree by more than BAND
standard errors of that many rows (churn.estimation). With a staged
candidate, a side-by-side comparison with the current model.

Writes performance_report.json and a self-contained performance_report.html to --output-dir
(default $MLOPS_HOME/reports/<UTC time>-performance/, with $MLOPS_HOME/reports/latest-performance
pointing to the newest), atomically. The last line of stdout is JSON:
{"models": {"<tag>": {"n_predictions", "n_labelled", "realized": {...} or null, "estimated": {...}}},
 "report": path, "html": path}.
Exit codes: 0 the report was made; 1 a served version with enough outcomes has a realized ROC AUC
under --fail-below-auc; 2 bad input (no predictions in the window: with --allow-no-verdict, exit 0
and "models": {}).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from churn.cli import open_unit, options_from, positive_int, value_or_exit
from churn.monitoring_inputs import add_max_bad_fraction, parse_since
from churn.performance_check import PerformanceOptions, check_performance


def parse_options(argv: list[str] | None) -> PerformanceOptions:
    """SystemExit (code 2, the problem on stderr) on a bad option, as argparse does."""
    parser = argparse.ArgumentParser(
        prog="python -m monitoring.performance", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--since", help="only predictions newer than this: 24h, 7d or an ISO time (default: all)"
    )
    parser.add_argument(
        "--output-dir", type=Path, help="report folder (default $MLOPS_HOME/reports/<time>-performance/)"
    )
    parser.add_argument(
        "--min-labels",
        type=positive_int,
        default=100,
        help="outcomes a version needs for realized metrics (default %(default)s)",
    )
    parser.add_argument(
        "--fail-below-auc", type=open_unit, help="exit 1 when a version's realized ROC AUC is under this"
    )
    parser.add_argument(
        "--alert", action="store_true", help="POST the summary to MONITORING_WEBHOOK_URL on a problem"
    )
    parser.add_argument(
        "--allow-no-verdict", action="store_true", help="no predictions in the window is exit 0"
    )
    add_max_bad_fraction(parser)
    args = parser.parse_args(argv)
    since = value_or_exit(parser, parse_since, args.since)
    return options_from(PerformanceOptions, args, since=since, since_text=args.since)


def main(argv: list[str] | None = None) -> int:
    code, summary = check_performance(parse_options(argv))
    if summary is not None:
        print(json.dumps(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
