"""The drift check behind `python -m monitoring.drift` (see it for the options, outputs and exit
codes): the current window (the prediction log or a CSV) against the current model's training
sample, written as a report. monitoring.scheduled runs the same check."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from churn.alert import alert_if_configured
from churn.detector import DriftResult, detect
from churn.logs import setup_logging
from churn.model import ModelUnavailable, load_reference
from churn.model_registry import RegistryError, current_tag
from churn.monitoring_inputs import (
    InputError,
    LoadedData,
    load_current_window,
    normalise,
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
    """The options of `python -m monitoring.drift`, checked (see its docstring)."""

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


def _detect_and_report(settings: Settings, options: DriftOptions, log) -> tuple[int, DriftSummary]:
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


def check_drift(options: DriftOptions) -> tuple[int, DriftSummary | DriftNoVerdict | None]:
    """The command but its option parsing and its last line: the exit code and the summary (None:
    bad input, told on stderr). SystemExit on bad settings."""
    settings = settings_or_exit()
    log = setup_logging(settings, "drift").getChild("drift")
    try:
        return _detect_and_report(settings, options, log)
    except NoVerdict as exc:
        if not options.allow_no_verdict:
            print(f"error: {exc}", file=sys.stderr)
            return 2, None
        print(f"no verdict: {exc}", file=sys.stderr)
        return 0, DriftNoVerdict(drift=None, verdict=False, reason=str(exc))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
