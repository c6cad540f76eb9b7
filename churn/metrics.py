"""The service's own Prometheus series, made once per process.

BentoML serves them on `/metrics` (HTTP) or its metrics port (gRPC) from its multiprocess folder,
so they must be created after BentoML has set PROMETHEUS_MULTIPROC_DIR: at start-up, never at
import. Gauges say how the values of several worker processes combine (`multiprocess_mode`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any


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

    def gauge(name: str, doc: str, labels=(), mode: str = "livemax"):
        return prom.Gauge(name, doc, list(labels), multiprocess_mode=mode)

    return ServingMetrics(
        predictions=prom.Counter(
            "churn_predictions", "Predictions served, by outcome and model", ["outcome", "model"]
        ),
        log_dropped=prom.Counter(
            "churn_prediction_log_dropped", "Prediction-log records dropped (queue full or write failed)"
        ),
        model_info=gauge("churn_model_info", "1 for the model version this worker serves", ["model"]),
        model_loaded=gauge(
            "churn_model_loaded", "1 when every worker holds a current model, else 0", mode="livemin"
        ),
        candidate_info=gauge(
            "churn_candidate_info", "1 for the staged candidate version, by mode", ["model", "mode"]
        ),
        drift_detected=gauge("churn_drift_detected", "1 if the latest drift check found drift"),
        drift_p_value=gauge(
            "churn_drift_p_value", "p-value of the latest drift test, per feature", ["feature"]
        ),
        drift_report_timestamp=gauge(
            "churn_drift_report_timestamp_seconds", "when the latest drift report was made"
        ),
        performance={
            name: gauge(f"churn_model_{name}", doc, ["model"]) for name, doc in PERFORMANCE_GAUGES.items()
        },
        performance_report_timestamp=gauge(
            "churn_performance_report_timestamp_seconds", "when the latest performance report was made"
        ),
    )
