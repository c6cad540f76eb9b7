"""The prediction log: its line, the one definition of it, and the service's writer of it.
The writer (PredictionLog) encodes with `encode_lines`; every reader (the drift job, the outcomes
join, the performance report) decodes with `decode_line`.

One JSON object per line:

    {"time": "2026-11-27T03:26:41.263Z", "request_id": "...", "model": "churn_model:...",
     "record": {"customerID": "7590-VHVEG", "gender": "Female", ...},
     "churn_probability": 0.7199, "churn": true,
     "shadow": {"model", "churn_probability", "churn"}     (while a shadow candidate runs),
     "holdout": true                                        (a held-out customer: no action)}

`time` is in the project's one time format (churn.utctime).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

import numpy as np
import orjson

from churn.cleanup import prune_prediction_logs
from churn.jsonio import json_bytes, json_loads
from churn.schema import ID_COLUMN
from churn.settings import Settings
from churn.utctime import format_time, parse_time

if TYPE_CHECKING:  # the readers of the log need neither the models nor the server
    from churn.model import LoadedModel
    from churn.serving import ScoreResult

# The server's logger, as before the writer moved here: its lines keep their name.
log = logging.getLogger("churn.serving")


class ShadowScore(TypedDict):
    """A shadow candidate's score of the same record (never answered)."""

    model: str
    churn_probability: float
    churn: bool


class PredictionLine(TypedDict):
    time: str
    request_id: str
    model: str  # the version that answered
    record: dict[str, Any]  # the customer's features as scored, and its customerID
    churn_probability: float
    churn: bool
    shadow: NotRequired[ShadowScore]
    holdout: NotRequired[bool]  # the customer is in the holdout: "no action" (churn.holdout)


def encode_lines(
    when: float,
    request_id: str,
    models: list[str],
    records: list[dict[str, Any]],
    ids: list[Any],
    probabilities: np.ndarray,
    churn: np.ndarray,
    shadow: tuple[str, np.ndarray, np.ndarray] | None = None,
    holdout: np.ndarray | None = None,
) -> bytes:
    """One request's lines, newline-terminated. `shadow`: (tag, probabilities, labels);
    `holdout`: which records' customers are held out (written only then, as `"holdout": true`)."""
    stamp = format_time(when)
    lines = []
    for i, rec in enumerate(records):
        line: PredictionLine = {
            "time": stamp,
            "request_id": request_id,
            "model": models[i],
            "record": {ID_COLUMN: ids[i], **rec},
            "churn_probability": float(probabilities[i]),
            "churn": bool(churn[i]),
        }
        if shadow is not None:
            line["shadow"] = {
                "model": shadow[0],
                "churn_probability": float(shadow[1][i]),
                "churn": bool(shadow[2][i]),
            }
        if holdout is not None and holdout[i]:
            line["holdout"] = True
        lines.append(json_bytes(line))
    return b"\n".join(lines) + b"\n"


def decode_line(raw: bytes) -> PredictionLine:
    """A line as written by `encode_lines` (or by older versions: NaN is read); ValueError if it
    has no `record` object and `time` text. The time is parsed by `line_time`.

    orjson first, straight: the join reads millions of these, and churn.jsonio's guard against
    long integers (a regex over every line) cost 3x orjson itself. The schema bounds every
    feature, so the only place a number of 19 digits or more can stand is customerID, where
    orjson would give a float: then, and for what orjson refuses (NaN), json reads it exactly."""
    try:
        try:
            line = orjson.loads(raw)
            if isinstance(line["record"].get(ID_COLUMN), float):
                raise ValueError("a long integer customerID: read exactly")
        except (ValueError, TypeError, KeyError, AttributeError):
            line = json_loads(raw, constants=True)
        if not isinstance(line["record"], dict) or not isinstance(line["time"], str):
            raise TypeError("record is not an object, or time not a string")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a prediction-log line: {exc}") from None
    return line


def line_time(line: PredictionLine) -> dt.datetime:
    """The line's time (aware, UTC); ValueError if it is not in a readable format."""
    return parse_time(line["time"])


def customer_of(line: PredictionLine) -> str | None:
    cid = line["record"].get(ID_COLUMN)
    return None if cid is None else str(cid)


# A shadow candidate is scored by the log writer for what arrives within this window (or up to this
# many records), in one call: a candidate the fast path refuses costs ~4 ms a call through the
# sklearn pipeline whatever the number of records, and scored request by request it took the
# interpreter from the requests (one client, one record: median 2.0 -> 9.9 ms).
SHADOW_BATCH_SECONDS = 0.1
SHADOW_BATCH_RECORDS = 5_000


class PredictionLog:
    """Append-only JSON-lines log of served predictions, under `$MLOPS_HOME/predictions/`.

    One file per process and day (`<host>-<pid>-<YYYYMMDD>-<seq>.jsonl`), a new `seq` past
    PREDICTION_LOG_MAX_BYTES: replicas on one volume never write the same file. Requests only put
    a tuple on a queue bounded in records (PREDICTION_LOG_QUEUE_SIZE); a full queue or a failed
    write drops records and calls `on_drop`. A failed write closes the file, so the next batch
    opens it again: logging resumes by itself once the disk has room or the folder is writable.
    """

    def __init__(
        self,
        settings: Settings,
        on_drop: Callable[[int], None] = lambda n: None,
        clock: Callable[[], float] = time.time,
    ):
        self.folder = settings.predictions_dir
        self.max_bytes = settings.prediction_log_max_bytes
        self.max_total_bytes = settings.prediction_log_max_total_bytes
        self.label_delay_seconds = settings.label_delay_days * 86400.0
        self.enabled = settings.prediction_log_enabled
        self.max_queued = settings.prediction_log_queue_size
        self.on_drop = on_drop
        self.clock = clock
        self.dropped = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued = 0  # records waiting: the bound is in records, so 10,000-record requests count
        self._count_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._fh = None
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

    def append(
        self,
        request_id: str,
        result: ScoreResult,
        records: list[dict],
        ids: list[Any],
        shadow: LoadedModel | None = None,
    ) -> None:
        if not self.enabled:
            return
        n = len(records)
        with self._count_lock:
            if self._queued + n > self.max_queued:
                full = True
            else:
                full = False
                self._queued += n
                self._idle.clear()
        if full:
            self._drop(n)
            return
        self._ensure_thread()
        self._queue.put((self.clock(), request_id, result, records, ids, shadow))

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
                break
            batch = [item]
            if item[5] is not None:  # a shadow: what arrives in the next moment is scored with it
                batch, stop = self._gather(batch)
            else:
                stop = False
            for it in batch:
                n = len(it[3])
                try:
                    self._write(*it)
                except Exception:
                    self._drop(n)
                    self._close()
                finally:
                    with self._count_lock:
                        self._queued -= n
                        if self._queued == 0:
                            self._idle.set()
            if stop:
                break

    def _gather(self, batch: list[tuple]) -> tuple[list[tuple], bool]:
        """The items queued within SHADOW_BATCH_SECONDS, their shadow scored in one call per
        candidate (the items then carry the scores instead of the model). True: stop after."""
        deadline = time.monotonic() + SHADOW_BATCH_SECONDS
        records, stop = len(batch[0][3]), False
        while records < SHADOW_BATCH_RECORDS:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                stop = True
                break
            batch.append(item)
            records += len(item[3])
        out = []
        for shadow in {id(it[5]): it[5] for it in batch if it[5] is not None}.values():
            mine = [it for it in batch if it[5] is shadow]
            try:
                proba, churn = shadow.scored([r for it in mine for r in it[3]])
            except Exception:  # a candidate that fails to score: its records are logged without it
                log.exception("shadow scoring failed")
                continue
            start = 0
            for it in mine:
                end = start + len(it[3])
                out.append((id(it), (shadow.tag, proba[start:end], churn[start:end])))
                start = end
        scores = dict(out)
        return [(*it[:5], scores.get(id(it))) for it in batch], stop

    def _write(
        self,
        ts: float,
        request_id: str,
        result: ScoreResult,
        records: list[dict],
        ids: list[Any],
        shadow: tuple[str, np.ndarray, np.ndarray] | None,
    ) -> None:
        """`shadow`: the candidate's tag, probabilities and labels for these records."""
        when = dt.datetime.fromtimestamp(ts, dt.UTC)
        payload = encode_lines(
            ts,
            request_id,
            result.record_models(),
            records,
            ids,
            result.probabilities,
            result.churn,
            shadow,
            result.holdout,
        )
        fh = self._open(when.strftime("%Y%m%d"), len(payload))
        fh.write(payload)
        fh.flush()

    def _open(self, day: str, incoming: int):
        if self._fh is not None and (day != self._day or self._fh.tell() + incoming > self.max_bytes):
            self._close()
            self._seq = 0 if day != self._day else self._seq + 1
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            # A new file: keep the folder under its cap first (bursts between retention runs).
            prune_prediction_logs(
                self.folder, self.max_total_bytes, label_delay_seconds=self.label_delay_seconds
            )
            if day != self._day:
                self._seq = 0
            self._day = day
            while True:
                path = self.folder / f"{self._prefix}-{day}-{self._seq:04d}.jsonl"
                if not path.exists() or path.stat().st_size + incoming <= self.max_bytes:
                    break
                self._seq += 1
            self._fh = open(path, "ab")  # noqa: SIM115 - kept open across batches on purpose
        return self._fh

    def _close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait (bounded) until what is queued is written; used at shutdown and by tests."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        if self._thread is not None:
            self.flush()
            self._queue.put(None)
            self._thread.join(timeout=5)
        self._close()
