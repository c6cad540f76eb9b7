"""The performance report's logic (`python -m monitoring.performance` parses its options and calls
`check_performance`): per model version, realized metrics on the untreated outcomes that came back, beside its
training-time metrics and its CBPE estimate (churn.estimation), and where the two disagree.
"""

from __future__ import annotations

import datetime as dt
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from churn.alert import alert_if_configured
from churn.estimation import (
    BAND,
    Calibrator,
    ErrorComponents,
    EstimateCheck,
    check_estimate,
    estimate,
    fit_calibrator,
    sampling_error_components,
)
from churn.logs import setup_logging
from churn.model import load_calibration, load_membership, trained_on
from churn.model_registry import RegistryData, RegistryError, read_registry
from churn.monitoring_inputs import InputError, LogScan, iter_prediction_log, prediction_log_files
from churn.outcomes import iter_examples, untreated_examples
from churn.report_files import (
    PERFORMANCE_REPORT_HTML,
    SHOWN,
    point_latest,
    render_performance_html,
    write_report_folder,
)
from churn.reports import (
    LATEST_PERFORMANCE,
    PERFORMANCE_REPORT_JSON,
    Chunk,
    Comparison,
    ModelPerformance,
    PerformanceNoVerdict,
    PerformanceReport,
    PerformanceSummary,
    VersionSummary,
    report_json,
)
from churn.settings import Settings, settings_or_exit
from churn.utctime import parse_time

MIN_PREDICTIONS = 50  # fewer, and a version gets no estimate either
CHUNKS = 8  # points per version on the report's plots


@dataclass(frozen=True)
class PerformanceOptions:
    """What `python -m monitoring.performance` was asked (its flags, checked there)."""

    since: dt.datetime | None  # None: every prediction in the log
    since_text: str | None  # --since as given, for messages
    output_dir: Path | None  # None: a new folder under $MLOPS_HOME/reports/
    min_labels: int
    fail_below_auc: float | None
    alert: bool
    allow_no_verdict: bool
    max_bad_fraction: float


@dataclass
class Served:
    """One version's predictions in the window (as shadow, the ones it scored beside the current)."""

    times: array = field(default_factory=lambda: array("d"))
    proba: array = field(default_factory=lambda: array("d"))
    churn: array = field(default_factory=lambda: array("b"))
    agree: int = 0  # shadow only: predictions where its label equals the served one


def collect(
    settings: Settings, since: dt.datetime | None, max_bad_fraction: float
) -> tuple[dict[str, Served], LogScan]:
    """Per version (and per shadow candidate, under "shadow:<tag>"), every prediction in the window;
    and what the scan saw (files deleted by retention during it are skipped and counted)."""
    served: dict[str, Served] = {}
    scan = LogScan()
    paths = prediction_log_files(settings.predictions_dir, since) if settings.predictions_dir.is_dir() else []
    for entry, stamp in iter_prediction_log(paths, since, scan):
        when = stamp.timestamp()
        rows = [(entry["model"], entry["churn_probability"], entry["churn"])]
        shadow = entry.get("shadow")
        if shadow:
            rows.append((f"shadow:{shadow['model']}", shadow["churn_probability"], shadow["churn"]))
            served.setdefault(rows[-1][0], Served()).agree += shadow["churn"] == entry["churn"]
        for tag, proba, churn in rows:
            s = served.setdefault(tag, Served())
            s.times.append(when)
            s.proba.append(float(proba))
            s.churn.append(bool(churn))
    scan.check(str(settings.predictions_dir), max_bad_fraction)
    return served, scan


Outcomes = tuple[list[float], list[bool], list[bool], list[str]]


@dataclass
class Treatment:
    """How many outcomes were untreated (used), treated or of unknown treatment (left out)."""

    counts: dict[str, int] = field(default_factory=dict)


def labelled(settings: Settings, since: dt.datetime | None, treatment: Treatment) -> dict[str, Outcomes]:
    """Per version (and "shadow:<tag>"), the untreated outcomes of its predictions in the window:
    (probabilities, served labels, outcomes, customers)."""
    out: dict[str, Outcomes] = {}
    cutoff = None if since is None else since.astimezone(dt.UTC)
    window = [
        e
        for e in iter_examples(settings)
        if e["prediction"] is not None and (cutoff is None or parse_time(e["prediction"]["time"]) >= cutoff)
    ]
    # Only outcomes free of our own actions (churn.holdout); the counts go into the report.
    kept, treatment.counts = untreated_examples(window, settings.holdout_fraction > 0)
    for example in kept:
        p = example["prediction"]
        assert p is not None
        pairs = [(p["model"], p["churn_probability"], p["churn"])]
        if p.get("shadow"):
            pairs.append(
                (f"shadow:{p['shadow']['model']}", p["shadow"]["churn_probability"], p["shadow"]["churn"])
            )
        for tag, proba, churn in pairs:
            probas, served, truth, customers = out.setdefault(tag, ([], [], [], []))
            probas.append(float(proba))
            served.append(bool(churn))
            truth.append(bool(example["churn"]))
            customers.append(example["customerID"])
    return out


def _calibrator(
    settings: Settings, tag: str, threshold: float
) -> tuple[Calibrator, str, ErrorComponents | None]:
    """The version's calibration, how it was made, and its sampling-error components (NannyML's
    recipe, from the same reference rows; None without them)."""
    frame = load_calibration(settings, tag)
    if frame is None:
        return Calibrator(None), "unavailable", None
    y, p = frame["churn"].to_numpy().astype(int), frame["churn_probability"].to_numpy()
    cal = fit_calibrator(p, y)
    return cal, "isotonic" if cal.calibrated else "none", sampling_error_components(y, p, threshold)


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _round(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    if metrics is None:
        return None
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}


@dataclass(frozen=True)
class ServedInOrder:
    """A version's predictions as arrays, oldest first."""

    times: np.ndarray
    proba: np.ndarray
    churn: np.ndarray  # the served labels


def _in_time_order(served: Served) -> ServedInOrder:
    times, proba = np.frombuffer(served.times), np.frombuffer(served.proba)
    churn = np.frombuffer(served.churn, dtype=np.int8).astype(bool)
    order = np.argsort(times, kind="stable")
    return ServedInOrder(times[order], proba[order], churn[order])


def _check_on_labelled(
    outcomes: Outcomes,
    keep: np.ndarray,
    calibrator: Calibrator,
    components: ErrorComponents | None,
    threshold: float,
) -> EstimateCheck:
    """Estimated and realized on the same (kept) labelled rows, judged by the sampling error of
    that many rows (from the version's reference rows, or, without them, from these rows themselves)."""
    p_l, served_l, truth_l = (np.array(outcomes[i])[keep] for i in range(3))
    return check_estimate(
        p_l,
        served_l,
        truth_l,
        calibrator,
        components or sampling_error_components(truth_l, p_l, threshold),
    )


def _chunks(served: ServedInOrder, calibrator: Calibrator) -> list[Chunk]:
    """The estimate over consecutive stretches of predictions (up to CHUNKS, each of at least
    MIN_PREDICTIONS when there are enough): the points on the report's plots."""
    times, proba, churn = served.times, served.proba, served.churn
    chunks = []
    for part in np.array_split(np.arange(len(proba)), min(CHUNKS, max(1, len(proba) // MIN_PREDICTIONS))):
        if len(part):
            e = estimate(proba[part], churn[part], calibrator)
            chunks.append(
                Chunk(
                    end=_stamp(times[part[-1]]),
                    n=len(part),
                    estimated_f1=e["f1"],
                    estimated_roc_auc=e["roc_auc"],
                )
            )
    return chunks


def evaluate_version(
    settings: Settings,
    tag: str,
    role: str,
    served: Served,
    outcomes: Outcomes | None,
    registry: RegistryData,
    min_labels: int,
) -> ModelPerformance:
    ordered = _in_time_order(served)
    threshold = float(registry["versions"].get(tag, {}).get("threshold", 0.5))
    calibrator, how, components = _calibrator(settings, tag, threshold)
    estimated = (
        estimate(ordered.proba, ordered.churn, calibrator) if len(ordered.proba) >= MIN_PREDICTIONS else None
    )
    # Realized metrics leave out the customers this version was fitted on (issue 20.4).
    members = load_membership(settings, tag)
    learned = trained_on(members, outcomes[3]) if outcomes else np.zeros(0, dtype=bool)
    keep = ~learned
    n_labelled = int(keep.sum())
    realized, check = None, None
    if outcomes and n_labelled >= min_labels:
        check = _check_on_labelled(outcomes, keep, calibrator, components, threshold)
        realized = check.realized
    warnings = check.warnings if check else []
    chunks = _chunks(ordered, calibrator)
    training = registry["versions"].get(tag, {}).get("metrics", {})
    return ModelPerformance(
        role=role,
        n_predictions=int(len(ordered.proba)),
        n_labelled=n_labelled,
        n_trained_on=int(learned.sum()),  # outcomes of customers it was fitted on: left out
        membership_known=members is not None,
        first=_stamp(ordered.times[0]) if len(ordered.times) else "",
        last=_stamp(ordered.times[-1]) if len(ordered.times) else "",
        training={k: training.get(k) for k in SHOWN},
        realized=_round(realized),
        estimated=_round(estimated),
        # CBPE on the labelled rows alone, and the standard errors the warnings are judged by
        estimated_on_labelled=_round(check.estimated) if check else None,
        sampling_error=_round(check.errors) if check else None,
        calibration=how,
        warnings=warnings,
        chunks=chunks,
    )


def version_summary(entry: ModelPerformance) -> VersionSummary:
    return VersionSummary(
        n_predictions=entry.n_predictions,
        n_labelled=entry.n_labelled,
        realized=entry.realized,
        estimated=entry.estimated,
    )


def compare(
    models: dict[str, ModelPerformance], current: str | None, candidate: dict | None
) -> Comparison | None:
    """The current model and a staged candidate side by side (canary: each on its own customers;
    shadow: both on the same records)."""
    if not candidate or current is None:
        return None
    key = f"shadow:{candidate['tag']}" if candidate["mode"] == "shadow" else candidate["tag"]
    cur, cand = models.get(current), models.get(key)
    out = Comparison(
        current=current,
        candidate=candidate["tag"],
        mode=candidate["mode"],
        fraction=candidate["fraction"],
        current_metrics=None if cur is None else version_summary(cur),
        candidate_metrics=None if cand is None else version_summary(cand),
    )
    if candidate["mode"] == "shadow" and cand is not None:
        out.agreement = cand.agreement
    return out


def build_report(settings: Settings, options: PerformanceOptions) -> PerformanceReport:
    since = options.since
    try:
        registry = read_registry(settings.registry_path, settings.model_name)
    except RegistryError as exc:
        raise InputError(str(exc)) from None
    served, scan = collect(settings, since, options.max_bad_fraction)
    if not served:
        raise NoPredictions(
            f"no predictions in {settings.predictions_dir}"
            + (f" since {options.since_text}" if options.since_text else "")
        )
    treatment = Treatment()
    outcomes = labelled(settings, since, treatment)
    current, candidate = registry["current"], registry.get("candidate")
    models: dict[str, ModelPerformance] = {}
    for key, s in sorted(served.items(), key=lambda kv: kv[1].times[0] if len(kv[1].times) else 0):
        tag = key.removeprefix("shadow:")
        if key.startswith("shadow:"):
            role = "candidate (shadow)"
        elif tag == current:
            role = "current"
        elif candidate and tag == candidate["tag"]:
            role = f"candidate ({candidate['mode']})"
        else:
            role = "earlier"
        entry = evaluate_version(settings, tag, role, s, outcomes.get(key), registry, options.min_labels)
        if key.startswith("shadow:"):
            entry.agreement = round(s.agree / max(1, len(s.proba)), 4)
        models[key] = entry
    problems = [f"{tag}: {w}" for tag, m in models.items() for w in m.warnings]
    below = []
    if options.fail_below_auc is not None:
        for tag, m in models.items():
            auc = (m.realized or {}).get("roc_auc")
            if auc is not None and auc < options.fail_below_auc:
                below.append(tag)
                problems.append(f"{tag}: realized ROC AUC {auc:.3f} < {options.fail_below_auc}")
    created = dt.datetime.now(dt.UTC)
    return PerformanceReport(
        created=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        since=since.isoformat() if since else None,
        min_labels=options.min_labels,
        estimate_band=BAND,
        current=current,
        candidate=candidate,
        models=models,
        comparison=compare(models, current, candidate),
        problems=problems,
        below_floor=below,
        log_files_vanished=scan.vanished,
        # outcomes used (untreated) and left out (treated; unknown while a holdout exists)
        treatment=treatment.counts,
    )


class NoPredictions(InputError):
    """Nothing to report on: no predictions in the window."""


def write(settings: Settings, report: PerformanceReport, output_dir: Path | None) -> Path:
    created = dt.datetime.fromisoformat(report.created.replace("Z", "+00:00"))
    folder = output_dir or settings.reports_dir / f"{created.strftime('%Y%m%dT%H%M%SZ')}-performance"
    html = render_performance_html(report.model_dump(exclude_unset=True))
    folder = write_report_folder(
        {PERFORMANCE_REPORT_JSON: report_json(report), PERFORMANCE_REPORT_HTML: html}, folder
    )
    if output_dir is None:
        point_latest(settings.reports_dir, folder, LATEST_PERFORMANCE)
    return folder


def check_performance(
    options: PerformanceOptions,
) -> tuple[int, PerformanceSummary | PerformanceNoVerdict | None]:
    """The command but its option parsing and its last line: the exit code and the summary (None:
    bad input, told on stderr). SystemExit on bad settings."""
    settings = settings_or_exit()
    log = setup_logging(settings, "performance").getChild("performance")
    try:
        report = build_report(settings, options)
    except NoPredictions as exc:
        if not options.allow_no_verdict:
            print(f"error: {exc}", file=sys.stderr)
            return 2, None
        print(f"no verdict: {exc}", file=sys.stderr)
        return 0, PerformanceNoVerdict(models={}, verdict=False, reason=str(exc))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2, None
    folder = write(settings, report, options.output_dir)
    summary: PerformanceSummary = {
        "models": {tag: version_summary(m).model_dump() for tag, m in report.models.items()},
        "report": str(folder / PERFORMANCE_REPORT_JSON),
        "html": str(folder / PERFORMANCE_REPORT_HTML),
    }
    for tag, m in report.models.items():
        real = m.realized or {}
        est = m.estimated or {}
        print(
            f"{tag} ({m.role}): {m.n_predictions} predictions, {m.n_labelled} labelled; "
            f"F1 realized {real.get('f1', '-')}, estimated {est.get('f1', '-')}, "
            f"at training {m.training.get('f1')}",
            file=sys.stderr,
        )
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"report: {folder / PERFORMANCE_REPORT_HTML}", file=sys.stderr)
    if options.alert:
        summary["alert"] = alert_if_configured(
            settings, summary | {"problems": report.problems}, bool(report.problems), "no problem", log
        )
    return 1 if report.below_floor else 0, summary
