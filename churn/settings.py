"""Settings: read once from the environment into one validated, typed object.

Every program (training, registry CLI, service, drift job) calls `load_settings()` at start-up;
an invalid value stops it with a one-line error that names the variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from churn.reports import DRIFT_REPORT_JSON, LATEST_DRIFT, LATEST_PERFORMANCE, PERFORMANCE_REPORT_JSON

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# The gate compares nothing below this many churners, and as many non-churners, on a side. From a
# power calculation (Hanley and McNeil's variance of a ROC AUC; models of ROC AUC 0.80 whose
# estimates correlate 0.5-0.6; the data set's 27 % churn rate; one-sided alpha 0.05): 45-56
# churners give 80 % power to detect a gain of 0.10 over the 0.005 margin. Below that even a
# large gain is a coin toss, and below a few the variance estimate itself fails (issue 20.1).
DEFAULT_GATE_MIN_CLASS_COUNT = 50

# Environment variable -> settings field. The settings table of docs/settings.md lists the same names.
ENV_VARS: dict[str, str] = {
    "MLOPS_HOME": "mlops_home",
    "BENTOML_HOME": "bentoml_home",
    "MODEL_STORE": "model_store",
    "MODEL_NAME": "model_name",
    "LOG_LEVEL": "log_level",
    "RELOAD_INTERVAL_SECONDS": "reload_interval_seconds",
    "PREDICTION_LOG_ENABLED": "prediction_log_enabled",
    "PREDICTION_LOG_MAX_BYTES": "prediction_log_max_bytes",
    "PREDICTION_LOG_QUEUE_SIZE": "prediction_log_queue_size",
    "RUNNER_EMBEDDED": "runner_embedded",
    "HTTP_ACCEPT_BALANCING": "http_accept_balancing",
    "PREDICTION_LOG_MAX_TOTAL_BYTES": "prediction_log_max_total_bytes",
    "RETENTION_DAYS": "retention_days",
    "FEEDBACK_RETENTION_DAYS": "feedback_retention_days",
    "GATE_MIN_CLASS_COUNT": "gate_min_class_count",
    "PREDICTION_HORIZON_DAYS": "prediction_horizon_days",
    "LABEL_DELAY_DAYS": "label_delay_days",
    "HOLDOUT_FRACTION": "holdout_fraction",
    "MONITORING_WEBHOOK_URL": "monitoring_webhook_url",
    "MONITORING_API_TOKEN": "monitoring_api_token",
}
# Never echoed back, not even in a settings error.
SECRET_VARS = frozenset({"MONITORING_API_TOKEN", "MONITORING_WEBHOOK_URL"})


class SettingsError(SystemExit):
    """Exit code 2 with a one-line message naming the variable."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mlops_home: Path = Path(".mlops")
    bentoml_home: Path | None = None
    # The versioned models, shared by every program. Apart from BENTOML_HOME, which each server
    # must have to itself (every start empties its prometheus_multiproc_dir): the manifests put
    # BENTOML_HOME on the pod's own /tmp and the store on the volume.
    model_store: Path | None = None
    model_name: str = Field("churn_model", pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    log_level: str = "INFO"
    # How often each server re-reads the registry (hot reload: 30 s is the promise, 5 s leaves room)
    # and the latest drift report (for its drift gauges).
    reload_interval_seconds: float = Field(5.0, gt=0, le=30)
    prediction_log_enabled: bool = True
    prediction_log_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Records (not requests) waiting for the log writer: about 2 KB each in memory, so 20,000 hold
    # a worker's queue under ~40 MB. Past it a request's records are dropped and counted.
    prediction_log_queue_size: int = Field(20_000, ge=1)
    # The prediction log's share of the volume: past it, writers and the retention job delete the
    # oldest files first. Rotation by PREDICTION_LOG_MAX_BYTES keeps each file well below it.
    prediction_log_max_total_bytes: int = Field(1024**3, ge=1024 * 1024)
    # Age past which the retention job deletes prediction logs, reports and application logs
    # (the registry and the model store are never touched) ...
    retention_days: float = Field(30, gt=0)
    # ... and outcomes, which are small and what retraining learns from.
    feedback_retention_days: float = Field(365, gt=0)
    # Share of customers marked "no action" (a sticky keyed hash of the ID, churn.holdout): their
    # outcomes are free of our own actions. 0: no holdout.
    holdout_fraction: float = Field(0.0, ge=0, le=0.5)
    # How long after a prediction its outcome may still arrive: the prediction log is kept at
    # least this long (RETENTION_DAYS may not be shorter), and the size cap deleting younger
    # predictions is logged as an error and counted (churn.cleanup).
    label_delay_days: float = Field(30, gt=0)
    # An outcome answers the latest prediction of its customer made within this many days before
    # it (never one made after it): a churn long after the last score says nothing about it.
    prediction_horizon_days: float = Field(90, gt=0)
    # Churners (and non-churners) each side of a comparison needs before the gate compares models.
    gate_min_class_count: int = Field(DEFAULT_GATE_MIN_CLASS_COUNT, ge=2)
    # The model runs inside each API worker (BentoML "embedded runner") rather than in separate
    # runner processes. Measured here: the remote runner client leaks ~8 KB per request in the API
    # workers (RSS +290 MB over 45 s at 32 clients) and adds an inter-process hop; embedded, RSS
    # stays flat. false restores remote runner processes with adaptive batching.
    runner_embedded: bool = True
    # The HTTP workers' accept balancing (churn/tuning.py): "auto" with two API workers or more (with
    # one it only adds latency), "on" always, "off" never. Read when BentoML imports service.py.
    http_accept_balancing: Literal["auto", "on", "off"] = "auto"
    # Drift alerting, from the Kubernetes Secret. SecretStr: printing the settings shows '**********'.
    monitoring_webhook_url: SecretStr | None = None
    monitoring_api_token: SecretStr | None = None

    @field_validator("monitoring_webhook_url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _keep_predictions_for_their_outcomes(self) -> Settings:
        if self.retention_days < self.label_delay_days:
            raise ValueError(
                f"RETENTION_DAYS ({self.retention_days:g}) must be at least LABEL_DELAY_DAYS "
                f"({self.label_delay_days:g}): outcomes would arrive for predictions already deleted"
            )
        return self

    @field_validator("http_accept_balancing", mode="before")
    @classmethod
    def _balancing(cls, value: str) -> str:
        return str(value).strip().lower()

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: str) -> str:
        level = str(value).strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def bentoml_home_path(self) -> Path:
        return self.bentoml_home or self.mlops_home / "bentoml"

    @property
    def model_store_path(self) -> Path:
        return self.model_store or self.bentoml_home_path / "models"

    @property
    def registry_path(self) -> Path:
        return self.mlops_home / "registry.json"

    @property
    def logs_dir(self) -> Path:
        return self.mlops_home / "logs"

    @property
    def predictions_dir(self) -> Path:
        return self.mlops_home / "predictions"

    @property
    def reports_dir(self) -> Path:
        return self.mlops_home / "reports"

    @property
    def feedback_dir(self) -> Path:
        return self.mlops_home / "feedback"

    @property
    def outcomes_inbox(self) -> Path:
        """The drop folder the scheduled outcomes Job reads (outcomes/done/, outcomes/rejected/ beside)."""
        return self.mlops_home / "outcomes" / "inbox"

    @property
    def latest_drift_report(self) -> Path:
        """Written by the drift job, read by the service for its drift gauges."""
        return self.reports_dir / LATEST_DRIFT / DRIFT_REPORT_JSON

    @property
    def latest_performance_report(self) -> Path:
        """Written by the performance job, read by the service for its performance gauges."""
        return self.reports_dir / LATEST_PERFORMANCE / PERFORMANCE_REPORT_JSON

    def _folders(self) -> tuple[list[tuple[str, Path]], list[Path]]:
        """(the roots: (variable, folder)), (the sub-folders of MLOPS_HOME the programs write to)."""
        outcomes = self.outcomes_inbox.parent
        subs = [self.logs_dir, self.predictions_dir, self.reports_dir, self.feedback_dir]
        subs += [self.outcomes_inbox, outcomes / "done", outcomes / "rejected"]  # the drop folder
        roots = [
            ("MLOPS_HOME", self.mlops_home),
            ("BENTOML_HOME", self.bentoml_home_path),
            ("MODEL_STORE", self.model_store_path),
        ]
        return roots, subs

    def _not_writable(self, var: str, value: Path, path: Path) -> str | None:
        """Why `path` cannot be made and written to by this process, naming the folder and the user
        (on shared storage that ignores fsGroup, many ReadWriteMany drivers, the volume's owner is the
        first thing to check, and Pod Security forbids a root `chown`); None if it can."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            return (
                f"{var}={value}: not a writable folder: {path} for uid {os.getuid()} gid {os.getgid()} "
                f"({exc.strerror or exc}); the volume must be writable by that user "
                "(docs/kubernetes.md, Storage)"
            )
        return None

    def ensure_dirs(self) -> None:
        """Create every folder the programs write to. The roots must be writable (SettingsError if
        not): nothing works without them. The sub-folders are created where possible and judged by
        the caller (unwritable_folders): the programs stop on them, the servers log them and keep
        serving (their prediction log is best-effort: a record it cannot write is dropped, counted)."""
        roots, subs = self._folders()
        for var, path in roots:
            if (problem := self._not_writable(var, path, path)) is not None:
                raise SettingsError(problem)
        for sub in subs:
            try:
                sub.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass

    def unwritable_folders(self) -> list[str]:
        """Each sub-folder of MLOPS_HOME this process cannot write to, as a message naming it."""
        _, subs = self._folders()
        problems = (self._not_writable("MLOPS_HOME", self.mlops_home, sub) for sub in subs)
        return [p for p in problems if p is not None]

    def export_bentoml_home(self) -> None:
        """Point BentoML at the store on the volume; must run before bentoml reads its config."""
        os.environ["BENTOML_HOME"] = str(self.bentoml_home_path)


def settings_from_env(env: Mapping[str, str]) -> Settings:
    values = {field: env[var] for var, field in ENV_VARS.items() if env.get(var, "") != ""}
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule across settings: its message names them
            raise SettingsError(f"invalid settings: {err['msg'].removeprefix('Value error, ')}") from None
        field = str(err["loc"][0])
        var = next((v for v, f in ENV_VARS.items() if f == field), field)
        shown = "<hidden>" if var in SECRET_VARS else repr(env.get(var, ""))
        raise SettingsError(f"invalid setting {var}={shown}: {err['msg']}") from None
    # Absolute paths from here on, so that a later chdir (bentoml serve does one) changes nothing.
    return settings.model_copy(
        update={
            "mlops_home": settings.mlops_home.expanduser().absolute(),
            "bentoml_home": settings.bentoml_home_path.expanduser().absolute(),
            "model_store": settings.model_store_path.expanduser().absolute(),
        }
    )


@lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The process's settings, read once from os.environ, folders created and checked."""
    settings = settings_from_env(os.environ)
    settings.ensure_dirs()
    settings.export_bentoml_home()
    return settings


def settings_or_exit() -> Settings:
    """load_settings() for the command-line programs: a bad setting, or a folder of the volume they
    cannot write to, is one line and exit code 2, before they have done anything."""
    try:
        settings = load_settings()
        problems = settings.unwritable_folders()
        if problems:
            raise SettingsError(problems[0])
        return settings
    except SettingsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
