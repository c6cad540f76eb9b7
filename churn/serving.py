"""Serving logic, kept out of service.py so that another serving API would only replace that file.

- ModelHolder lives in the runner: it loads the registry's current model, polls the registry and
  swaps models atomically (hot reload), and reports its status for the health routes.
- PredictionLog lives in the API workers: it appends one JSON line per prediction from a
  background thread, never blocking or failing a request, and counts what it had to drop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from churn.model import LoadedModel, ModelUnavailable, load_model
from churn.registry import RegistryError, current_tag
from churn.schema import CATEGORICAL_FEATURES, EXAMPLE_RECORD, FEATURES, ID_COLUMN, MAX_INSTANCES
from churn.settings import Settings

log = logging.getLogger("churn.serving")


class ModelHolder:
    """The model a runner serves, swapped in place when the registry's current model changes."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._model: LoadedModel | None = None
        self._wanted: str | None = None
        self._error: str | None = "not checked yet"
        self._checked_at: float | None = None
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Look at the registry once; load the current model if it is not the one held."""
        with self._refresh_lock:
            self._checked_at = time.time()
            try:
                wanted = current_tag(self.settings.registry_path, self.settings.model_name)
            except (RegistryError, OSError) as exc:
                self._set_error(f"registry unreadable: {exc}")
                return
            self._wanted = wanted
            held = self._model
            if wanted is None:
                self._set_error(
                    None if held else f"no current model in the registry {self.settings.registry_path}"
                )
                return
            if held is not None and held.tag == wanted:
                self._set_error(None)
                return
            try:
                model = load_model(self.settings, wanted)
            except ModelUnavailable as exc:
                # A server that holds a good model keeps serving it; the reason stays visible.
                self._set_error(str(exc))
                return
            self._model = model  # one reference assignment: in-flight batches keep the old object
            self._set_error(None)
            log.info("serving %s (was %s)", model.tag, held.tag if held else "none")

    def _set_error(self, error: str | None) -> None:
        if error != self._error and error is not None:
            log.warning("model status: %s", error)
        self._error = error

    def start(self) -> None:
        """First load now (so a ready runner has its model), then poll in a daemon thread."""
        try:
            self.refresh()
        except Exception:  # never let the runner's __init__ fail: BentoML would restart it in a loop
            log.exception("first model load failed")
        self._thread = threading.Thread(target=self._poll, name="churn-model-reload", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.settings.reload_interval_seconds):
            try:
                self.refresh()
            except Exception:
                log.exception("model refresh failed")

    def stop(self) -> None:
        self._stop.set()

    def _model_or_refresh(self) -> LoadedModel | None:
        """The held model; with none yet, look at the registry now rather than at the next poll,
        so that every worker serves the first model as soon as any of them reports it."""
        if self._model is None:
            try:
                self.refresh()
            except Exception:
                log.exception("model refresh failed")
        return self._model

    def status(self) -> dict[str, Any]:
        model = self._model_or_refresh()
        return {
            "loaded": model is not None,
            "model": model.tag if model else None,
            "registry_current": self._wanted,
            "error": self._error,
            "checked_at": self._checked_at,
            "details": model.describe() if model else None,
        }

    def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """{"churn_probability": array, "threshold": float, "model": tag}; model "" if none is loaded."""
        model = self._model_or_refresh()  # read once: the whole request is computed by one model
        if model is None:
            return {"churn_probability": np.full(len(records), np.nan), "threshold": np.nan, "model": ""}
        return {
            "churn_probability": model.predict_records(records),
            "threshold": model.threshold,
            "model": model.tag,
        }


def read_drift_report(settings: Settings) -> dict[str, Any] | None:
    """The latest drift report the drift job wrote, or None (none yet, or unreadable)."""
    try:
        return json.loads(settings.latest_drift_report.read_text())
    except (OSError, ValueError):
        return None


def start_drift_gauges(settings: Settings, detected, p_value, created) -> threading.Thread:
    """Copy the latest drift report into the service's gauges, re-read every RELOAD_INTERVAL_SECONDS."""

    def refresh_forever() -> None:
        seen = None
        while True:
            report = read_drift_report(settings)
            if report is not None and report.get("created") != seen:
                seen = report.get("created")
                detected.set(int(bool(report.get("drift"))))
                for name, feature in report.get("features", {}).items():
                    p_value.labels(feature=name).set(float(feature.get("p_value", float("nan"))))
                try:
                    when = dt.datetime.fromisoformat(str(seen).replace("Z", "+00:00"))
                    created.set(when.timestamp())
                except ValueError:
                    pass
            time.sleep(settings.reload_interval_seconds)

    thread = threading.Thread(target=refresh_forever, name="churn-drift-gauges", daemon=True)
    thread.start()
    return thread


def outcomes(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and churn labels (probability >= the computing model's threshold)."""
    proba = np.asarray(result["churn_probability"], dtype=np.float64)
    return proba, proba >= result["threshold"]


def build_response(result: dict[str, Any], ids: list[Any]) -> dict[str, Any]:
    """The API's 200 body."""
    proba, churn = outcomes(result)
    return {
        "model": result["model"],
        "predictions": [
            {"customerID": cid, "churn_probability": p, "churn": c}
            for cid, p, c in zip(ids, proba.tolist(), churn.tolist(), strict=True)
        ],
    }


class PredictionLog:
    """Append-only JSON-lines log of served predictions, under `$MLOPS_HOME/predictions/`.

    One file per process and day (`<host>-<pid>-<YYYYMMDD>-<seq>.jsonl`), a new `seq` past
    PREDICTION_LOG_MAX_BYTES: replicas on one volume never write the same file. Requests only put
    a tuple on a bounded queue; a full queue or a failed write drops records and calls `on_drop`.
    A failed write closes the file, so the next batch opens it again: logging resumes by itself
    once the disk has room or the folder is writable again.
    """

    def __init__(self, settings: Settings, on_drop: Callable[[int], None] = lambda n: None):
        self.folder = settings.predictions_dir
        self.max_bytes = settings.prediction_log_max_bytes
        self.enabled = settings.prediction_log_enabled
        self.on_drop = on_drop
        self.dropped = 0
        self.written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=settings.prediction_log_queue_size)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._fh = None
        self._path: str | None = None
        self._day = ""
        self._seq = 0
        self._prefix = f"{socket.gethostname()}-{os.getpid()}"

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="churn-prediction-log", daemon=True
                    )
                    self._thread.start()

    def append(self, request_id: Any, result: dict[str, Any], records: list[dict], ids: list[Any]) -> None:
        if not self.enabled:
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait((time.time(), request_id, result, records, ids))
        except queue.Full:
            self._drop(len(records))

    def _drop(self, n: int) -> None:
        self.dropped += n
        try:
            self.on_drop(n)
        except Exception:
            pass

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                self._queue.task_done()
                break
            try:
                self._write(*item)
            except Exception:
                self._drop(len(item[3]))
                self._close()
            finally:
                self._queue.task_done()

    def _write(
        self, ts: float, request_id: Any, result: dict[str, Any], records: list[dict], ids: list[Any]
    ) -> None:
        when = dt.datetime.fromtimestamp(ts, dt.UTC)
        stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        proba, churn = outcomes(result)
        model = result["model"]
        lines = []
        for i, rec in enumerate(records):
            lines.append(
                json.dumps(
                    {
                        "time": stamp,
                        "request_id": request_id,
                        "model": model,
                        "record": {ID_COLUMN: ids[i], **rec},
                        "churn_probability": float(proba[i]),
                        "churn": bool(churn[i]),
                    },
                    separators=(",", ":"),
                )
            )
        payload = ("\n".join(lines) + "\n").encode()
        fh = self._open(when.strftime("%Y%m%d"), len(payload))
        fh.write(payload)
        fh.flush()
        self.written += len(records)

    def _open(self, day: str, incoming: int):
        if self._fh is not None and (day != self._day or self._fh.tell() + incoming > self.max_bytes):
            self._close()
            self._seq = 0 if day != self._day else self._seq + 1
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._day = day
            while True:
                path = self.folder / f"{self._prefix}-{day}-{self._seq:04d}.jsonl"
                if not path.exists() or path.stat().st_size + incoming <= self.max_bytes:
                    break
                self._seq += 1
            self._fh = open(path, "ab")  # noqa: SIM115 - kept open across batches on purpose
            self._path = str(path)
        return self._fh

    def _close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until what is queued is written; used at shutdown and by tests."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout=5)
        self._close()


def openapi_request_model():
    """A pydantic model of the request body, built from the schema: it documents /predict in
    /docs.json. Validation itself is churn.schema.parse_predict_request (faster, and its errors
    name the record index and field)."""
    from pydantic import BaseModel, ConfigDict, Field, create_model

    fields: dict[str, Any] = {ID_COLUMN: (str | int | None, None)}
    for feature in FEATURES:
        if feature.name in CATEGORICAL_FEATURES:
            fields[feature.name] = (Literal[feature.categories], ...)  # type: ignore[valid-type]
        else:
            kind = int if feature.kind == "integer" else float
            fields[feature.name] = (kind, Field(..., ge=feature.minimum, le=feature.maximum))
    record = create_model("CustomerRecord", __config__=ConfigDict(extra="forbid"), **fields)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(
            extra="forbid", json_schema_extra={"example": {"instances": [EXAMPLE_RECORD]}}
        )
        instances: list[record] = Field(..., min_length=1, max_length=MAX_INSTANCES)  # type: ignore[valid-type]

    return PredictRequest
