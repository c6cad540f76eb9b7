"""The prediction-log line: what the service logs for every prediction, the one definition of it.
The service's writer (churn.serving.PredictionLog) encodes with `encode_lines`; every reader (the
drift job, the outcomes join, the performance report) decodes with `decode_line`.

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
from typing import Any, NotRequired, TypedDict

import numpy as np
import orjson

from churn.jsonio import json_bytes, json_loads
from churn.schema import ID_COLUMN
from churn.utctime import format_time, parse_time


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
