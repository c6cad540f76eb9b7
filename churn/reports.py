"""The monitoring reports' shapes and where they are: written by churn.drift_check and
churn.performance_check (through churn.report_files), read by the service for its gauges
(churn.metrics), by the reports' HTML templates and by the commands' summaries and alerts.

Each report is `<reports>/<UTC time>[-performance]/<file>.json`, the newest linked from
`<reports>/latest` (drift) and `<reports>/latest-performance` (churn.settings: latest_*_report).
The fields the gauges read are required; the others have defaults, so that a report written
before a field existed still gives the gauges. Writers set every field, and write
`model_dump(exclude_unset=True)`: a key that is written only sometimes (`agreement`,
`unseen_categories`) is left out when it was not set, as the JSON has always done.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, TypeVar

from pydantic import BaseModel, Field

DRIFT_REPORT_JSON = "drift_report.json"
PERFORMANCE_REPORT_JSON = "performance_report.json"
LATEST_DRIFT = "latest"  # the link to the newest drift report's folder
LATEST_PERFORMANCE = "latest-performance"

Metrics = dict[str, float | int | None]  # metric name -> value (null: not computable)


class DriftFeature(BaseModel):
    test: str = ""  # "KS" (numeric) or "Chi2" (categorical)
    statistic: float | None = None
    p_value: float
    drift: bool
    unseen_categories: dict[str, int] | None = None  # only when the current data has some: value -> count


class DriftReport(BaseModel):
    drift: bool
    p_val: float = 0.05
    threshold: float | None = None  # the per-feature threshold (Bonferroni-corrected p_val)
    model: str | None = None
    n_reference: int = 0
    n_current: int = 0
    created: str  # UTC, ISO 8601 with a "Z"
    features: dict[str, DriftFeature]
    current_source: str = ""
    reference_source: str = ""
    unreadable_lines: int = 0
    log_files_vanished: int = 0  # deleted by retention during the scan: skipped
    unseen_categories: dict[str, dict[str, int]] = Field(default_factory=dict)


class Chunk(BaseModel):
    """One point of a version's estimate over time."""

    end: str
    n: int
    estimated_f1: float | None
    estimated_roc_auc: float | None


class ModelPerformance(BaseModel):
    """One version (or "shadow:<tag>") in a performance report."""

    role: str = ""  # "current", "candidate (canary)", "candidate (shadow)", or "earlier"
    n_predictions: int = 0
    n_labelled: int  # outcomes it is judged on (customers it was fitted on left out)
    n_trained_on: int = 0  # outcomes of customers it was fitted on, left out of its realized metrics
    membership_known: bool = False  # False for versions trained before membership was recorded
    first: str = ""
    last: str = ""
    training: Metrics = Field(default_factory=dict)
    realized: Metrics | None
    estimated: Metrics | None
    estimated_on_labelled: Metrics | None = None
    sampling_error: Metrics | None = None  # metric -> standard error on n_labelled rows
    calibration: str = ""  # how the estimate's probabilities were calibrated: isotonic, none, unavailable
    warnings: list[str] = Field(default_factory=list)
    chunks: list[Chunk] = Field(default_factory=list)
    agreement: float | None = None  # shadow only: share of records where it gives the served label


class VersionSummary(BaseModel):
    """A version's counts and metrics: in a comparison and in the command's summary."""

    n_predictions: int
    n_labelled: int
    realized: Metrics | None
    estimated: Metrics | None


class Comparison(BaseModel):
    """The current model and a staged candidate side by side."""

    current: str
    candidate: str
    mode: str  # "shadow" or "canary"
    fraction: float | int
    current_metrics: VersionSummary | None
    candidate_metrics: VersionSummary | None
    agreement: float | None = None  # shadow only


class PerformanceReport(BaseModel):
    created: str  # UTC, ISO 8601 with a "Z"
    since: str | None = None
    min_labels: int = 0
    estimate_band: float = 0.0  # warnings: estimate and realized further apart than this many standard errors
    current: str | None = None
    # the registry's staged candidate (churn.model_registry.Candidate)
    candidate: dict[str, Any] | None = None
    models: dict[str, ModelPerformance]
    comparison: Comparison | None = None
    problems: list[str] = Field(default_factory=list)
    below_floor: list[str] = Field(default_factory=list)
    log_files_vanished: int = 0  # deleted by retention during the scan: skipped
    treatment: dict[str, int] = Field(default_factory=dict)  # outcomes used and left out


Report = TypeVar("Report", DriftReport, PerformanceReport)


# The commands' summaries: their last line of stdout, monitoring.scheduled's parts, and the body
# their alert posts (without "alert", what the posting made of it). Plain dicts, written as built.
class DriftSummary(TypedDict):
    drift: bool
    n_current: int
    drifted_features: list[str]
    report: str  # the report's JSON file
    html: str
    model: str | None
    alert: NotRequired[dict[str, Any]]  # with --alert


class PerformanceSummary(TypedDict):
    models: dict[str, dict[str, Any]]  # tag -> VersionSummary's dump
    report: str
    html: str
    alert: NotRequired[dict[str, Any]]


class DriftNoVerdict(TypedDict):
    """Too few records for a verdict (--allow-no-verdict): no report."""

    drift: None
    verdict: Literal[False]
    reason: str


class PerformanceNoVerdict(TypedDict):
    """No predictions in the window (--allow-no-verdict): no report."""

    models: dict[str, Any]  # empty
    verdict: Literal[False]
    reason: str


def report_json(report: DriftReport | PerformanceReport) -> str:
    """The report's file: the keys its writer set, indented."""
    return json.dumps(report.model_dump(exclude_unset=True), indent=2) + "\n"


def read_report(path: Path, shape: type[Report]) -> Report | None:
    """The report at `path`, or None: none yet, unreadable, or not of this shape."""
    try:
        # json, not pydantic's parser: a report may hold NaN (a statistic on constant data).
        return shape.model_validate(json.loads(path.read_bytes()))
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return None


def created_timestamp(report: DriftReport | PerformanceReport) -> float | None:
    """When the report was made (POSIX seconds), or None if its `created` is not a time."""
    try:
        return dt.datetime.fromisoformat(report.created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
