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
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from churn.alert import alert_if_configured
from churn.cli import open_unit, options_from, positive_int, value_or_exit
from churn.detector import DriftResult, detect
from churn.logs import setup_logging
from churn.model import ModelUnavailable, load_reference
from churn.model_registry import RegistryError, current_tag
from churn.monitoring_inputs import (
    InputError,
    LoadedData,
    add_max_bad_fraction,
    load_current_window,
    normalise,
    parse_since,
    read_drift_csv,
)
from churn.report_files import DRIFT_REPORT_HTML, REPORT_JSON, point_latest, write_report
from churn.reports import DriftNoVerdict, DriftReport, DriftSummary
from churn.settings import Settings, settings_or_exit

MIN_CURRENT_ROWS = 50


class NoVerdict(InputError):
    """Too few current records for a drift test to mean anything."""


@dataclass(frozen=True)
class DriftOptions:
    """The command's options, checked (see the module's docstring)."""

    current: Path | None  # None: the service's prediction log
    since: dt.datetime | None
    max_records: int
    reference: Path | None  # None: stored with the current model
    p_val: float
    output_dir: Path | None  # None: a new folder under $MLOPS_HOME/reports/
    fail_on_drift: bool
    alert: bool
    allow_no_verdict: bool
    max_bad_fraction: float


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


def _load_drift_reference(settings: Settings, path: Path | None, model: str | None) -> pd.DataFrame:
    """--reference, else the training sample stored with the current model."""
    if path is not None:
        return read_drift_csv(path).frame
    if model is None:
        raise InputError("no current model in the registry, so no stored reference: pass --reference")
    try:
        return normalise(load_reference(settings, model), f"reference of {model}")
    except ModelUnavailable as exc:
        raise InputError(str(exc)) from None


def _require_enough_rows(current: LoadedData, reference: pd.DataFrame) -> None:
    """NoVerdict on too few current records (expected of a quiet window), InputError on too few
    reference rows (a broken reference)."""
    n_current = len(current.frame)
    if n_current < MIN_CURRENT_ROWS:
        raise NoVerdict(
            f"only {n_current} current record(s) in {current.source}: at least {MIN_CURRENT_ROWS} are needed "
            "for a verdict (a drift test on a handful of rows is noise)"
        )
    if len(reference) < MIN_CURRENT_ROWS:
        raise InputError(f"only {len(reference)} reference rows: at least {MIN_CURRENT_ROWS} are needed")


def _tell_drift(
    result: DriftResult, unseen: dict, n_current: int, n_reference: int, p_val: float, folder: Path
) -> None:
    """The short summary on stderr."""
    listed = ": " + ", ".join(result.drifted) if result.drifted else ""
    verdict = "YES" if result.drift else "no"
    print(
        f"drift: {verdict} — {len(result.drifted)} of {len(result.features)} features drifted{listed} "
        f"({n_current} current vs {n_reference} reference rows, p-val {p_val}, Bonferroni)",
        file=sys.stderr,
    )
    if unseen:
        print(f"unseen categories: {json.dumps(unseen)}", file=sys.stderr)
    print(f"report: {folder / DRIFT_REPORT_HTML}", file=sys.stderr)


def run(settings: Settings, options: DriftOptions, log) -> tuple[int, DriftSummary]:
    current = load_current_window(
        options.current,
        settings.predictions_dir,
        options.since,
        options.max_records,
        options.max_bad_fraction,
    )
    for note in current.notes:
        log.warning("current data: %s", note)
    try:
        model = current_tag(settings.registry_path, settings.model_name)
    except RegistryError as exc:
        raise InputError(str(exc)) from None
    reference = _load_drift_reference(settings, options.reference, model)
    n_current = len(current.frame)
    _require_enough_rows(current, reference)

    log.info("comparing %d current records with %d reference rows", n_current, len(reference))
    result, unseen = detect(reference, current.frame, options.p_val)
    created = dt.datetime.now(dt.UTC)
    report = DriftReport(
        drift=result.drift,
        p_val=result.p_val,
        threshold=result.threshold,
        model=model,
        n_reference=int(len(reference)),
        n_current=int(n_current),
        created=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        features=result.features,
        current_source=current.source,
        reference_source=str(options.reference) if options.reference else f"stored with {model}",
        unreadable_lines=current.bad_lines,
        log_files_vanished=current.vanished_files,
        unseen_categories=unseen,
    )
    output_dir = options.output_dir or settings.reports_dir / created.strftime("%Y%m%dT%H%M%S%fZ")
    folder = write_report(report, reference, current.frame, output_dir)
    if options.output_dir is None:
        point_latest(settings.reports_dir, folder)
    summary: DriftSummary = {
        "drift": result.drift,
        "n_current": int(n_current),
        "drifted_features": result.drifted,
        "report": str(folder / REPORT_JSON),
        "html": str(folder / DRIFT_REPORT_HTML),
        "model": model,
    }
    _tell_drift(result, unseen, n_current, len(reference), options.p_val, folder)

    if options.alert:
        summary["alert"] = alert_if_configured(settings, summary, bool(result.drift), "no drift", log)
    code = 1 if (result.drift and options.fail_on_drift) else 0
    return code, summary


def check(options: DriftOptions) -> tuple[int, DriftSummary | DriftNoVerdict | None]:
    """The command but its option parsing and its last line: the exit code and the summary (None:
    bad input, told on stderr). SystemExit on bad settings."""
    settings = settings_or_exit()
    log = setup_logging(settings, "drift").getChild("drift")
    try:
        return run(settings, options, log)
    except NoVerdict as exc:
        if not options.allow_no_verdict:
            print(f"error: {exc}", file=sys.stderr)
            return 2, None
        print(f"no verdict: {exc}", file=sys.stderr)
        return 0, DriftNoVerdict(drift=None, verdict=False, reason=str(exc))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None


def main(argv: list[str] | None = None) -> int:
    code, summary = check(parse_options(argv))
    if summary is not None:
        print(json.dumps(summary))
    return code


if __name__ == "__main__":
    sys.exit(main())
