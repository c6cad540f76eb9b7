"""The service's own Prometheus series, made once per process.

BentoML serves them on `/metrics` (HTTP) or its metrics port (gRPC) from its multiprocess folder,
so they must be created after BentoML has set PROMETHEUS_MULTIPROC_DIR: at start-up, never at
import. Gauges say how the values of several worker processes combine (`multiprocess_mode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from churn.reports import DriftReport, PerformanceReport, created_timestamp, read_report


@dataclass(frozen=True)
class GaugeSpec:
    """A gauge's name, help and labels, for the service's registry or a textfile's."""

    name: str
    doc: str
    labels: tuple[str, ...] = ()
    mode: str = "livemax"  # how the values of several worker processes combine

    def make(self, registry: Any = None) -> Any:
        """The gauge, in `registry` (default: the process's, which BentoML serves)."""
        import prometheus_client as prom

        return prom.Gauge(
            self.name,
            self.doc,
            list(self.labels),
            multiprocess_mode=self.mode,
            registry=prom.REGISTRY if registry is None else registry,
        )


# The drift report's gauges: the service copies the latest report into its own (serving_metrics),
# and the drift command writes them beside the report for a node-exporter textfile collector.
DRIFT_DETECTED = GaugeSpec("churn_drift_detected", "1 if the latest drift check found drift")
DRIFT_P_VALUE = GaugeSpec(
    "churn_drift_p_value", "p-value of the latest drift test, per feature", ("feature",)
)
DRIFT_CURRENT_ROWS = GaugeSpec("churn_drift_current_rows", "rows in the latest drift check's current data")
DRIFT_REPORT_TIMESTAMP = GaugeSpec(
    "churn_drift_report_timestamp_seconds", "when the latest drift report was made"
)


def set_drift_gauges(detected: Any, p_value: Any, report: DriftReport) -> None:
    detected.set(int(report.drift))
    for name, feature in report.features.items():
        p_value.labels(feature=name).set(feature.p_value)


def drift_textfile(report: DriftReport) -> str:
    """The drift gauges of `report` in the text exposition format (node-exporter textfile style)."""
    import prometheus_client as prom

    registry = prom.CollectorRegistry()
    detected, p_value = DRIFT_DETECTED.make(registry), DRIFT_P_VALUE.make(registry)
    set_drift_gauges(detected, p_value, report)
    DRIFT_CURRENT_ROWS.make(registry).set(report.n_current)
    return prom.generate_latest(registry).decode()


@dataclass(frozen=True)
class ServingMetrics:
    predictions: Any  # Counter churn_predictions_total{model, outcome}
    log_dropped: Any  # Counter churn_prediction_log_dropped_total
    model_info: Any  # Gauge churn_model_info{model}: 1 for the current model each worker serves
    model_loaded: Any  # Gauge churn_model_loaded: 0 as soon as one worker has no model
    candidate_info: Any  # Gauge churn_candidate_info{model, mode}
    drift_detected: Any
    drift_p_value: Any
    drift_report_timestamp: Any
    performance: dict[str, Any]  # report metric name -> Gauge {model}
    performance_report_timestamp: Any

    def publish_reports(self, drift_path: Path, performance_path: Path, seen: dict[str, str]) -> None:
        """Copy the latest drift and performance reports into the gauges (once per report:
        `seen` holds the `created` of the last one copied, per kind)."""
        drift = read_report(drift_path, DriftReport)
        if drift is not None and drift.created != seen.get("drift"):
            seen["drift"] = drift.created
            set_drift_gauges(self.drift_detected, self.drift_p_value, drift)
            when = created_timestamp(drift)
            if when is not None:
                self.drift_report_timestamp.set(when)
        perf = read_report(performance_path, PerformanceReport)
        if perf is not None and perf.created != seen.get("performance"):
            seen["performance"] = perf.created
            for tag, entry in perf.models.items():
                realized, estimated = entry.realized or {}, entry.estimated or {}
                values = {
                    "realized_roc_auc": realized.get("roc_auc"),
                    "realized_f1": realized.get("f1"),
                    "estimated_roc_auc": estimated.get("roc_auc"),
                    "estimated_f1": estimated.get("f1"),
                    "labelled": entry.n_labelled,
                }
                for name, value in values.items():
                    self.performance[name].labels(model=tag).set(float("nan") if value is None else value)
            when = created_timestamp(perf)
            if when is not None:
                self.performance_report_timestamp.set(when)


# Gauges copied from the latest performance report, per model version (see monitoring.performance).
PERFORMANCE_GAUGES = {
    "realized_roc_auc": "ROC AUC on labelled outcomes",
    "realized_f1": "F1 at the version's threshold on labelled outcomes",
    "estimated_roc_auc": "ROC AUC estimated from the probabilities alone (CBPE)",
    "estimated_f1": "F1 estimated from the probabilities alone (CBPE)",
    "labelled": "predictions with a known outcome",
}


@dataclass(frozen=True)
class GrpcMetrics:
    """gRPC calls by how they really ended, recorded after the handler. BentoML 1.4.40's own gRPC
    series (bentoml_api_server_request_*) are recorded before it: every call 200, in about 0 s."""

    requests: Any  # Counter churn_grpc_requests_total{api_name, grpc_code, http_response_code}
    duration: Any  # Histogram churn_grpc_request_duration_seconds{api_name, grpc_code, http_response_code}


GRPC_LABELS = ("api_name", "grpc_code", "http_response_code")


@lru_cache(maxsize=1)
def grpc_metrics(buckets: tuple[float, ...]) -> GrpcMetrics:
    """`buckets`: the duration buckets of BentoML's HTTP histogram, so that both read alike."""
    import prometheus_client as prom

    return GrpcMetrics(
        requests=prom.Counter("churn_grpc_requests", "gRPC calls, by how they ended", GRPC_LABELS),
        duration=prom.Histogram(
            "churn_grpc_request_duration_seconds",
            "gRPC call duration, handler included, by how it ended",
            GRPC_LABELS,
            buckets=buckets,
        ),
    )


@lru_cache(maxsize=1)
def accept_balancing_gauge() -> Any:
    """Gauge churn_http_accept_balancing: 1 when every live HTTP worker balances its accepts
    (churn/tuning.py), else 0."""
    import prometheus_client as prom

    return prom.Gauge(
        "churn_http_accept_balancing",
        "1 when the HTTP workers' accept balancing is on (churn/tuning.py), else 0",
        multiprocess_mode="livemin",
    )


@lru_cache(maxsize=1)
def serving_metrics() -> ServingMetrics:
    import prometheus_client as prom

    def gauge(name: str, doc: str, labels: tuple[str, ...] = (), mode: str = "livemax") -> Any:
        return GaugeSpec(name, doc, labels, mode).make()

    return ServingMetrics(
        predictions=prom.Counter(
            "churn_predictions", "Predictions served, by outcome and model", ["outcome", "model"]
        ),
        log_dropped=prom.Counter(
            "churn_prediction_log_dropped", "Prediction-log records dropped (queue full or write failed)"
        ),
        model_info=gauge("churn_model_info", "1 for the model version this worker serves", ("model",)),
        model_loaded=gauge(
            "churn_model_loaded", "1 when every worker holds a current model, else 0", mode="livemin"
        ),
        candidate_info=gauge(
            "churn_candidate_info", "1 for the staged candidate version, by mode", ("model", "mode")
        ),
        drift_detected=DRIFT_DETECTED.make(),
        drift_p_value=DRIFT_P_VALUE.make(),
        drift_report_timestamp=DRIFT_REPORT_TIMESTAMP.make(),
        performance={
            name: gauge(f"churn_model_{name}", doc, ("model",)) for name, doc in PERFORMANCE_GAUGES.items()
        },
        performance_report_timestamp=gauge(
            "churn_performance_report_timestamp_seconds", "when the latest performance report was made"
        ),
    )
