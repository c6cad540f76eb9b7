"""What /predict answers: the 200 body, the error bodies, and the request model its docs show.

One module for every server of the API: the BentoML service (service.py) and the FastAPI baseline
of the benchmark (benchmarks/fastapi_app.py) answer with the same bodies. Validation itself is
churn.schema.parse_predict_request (its errors carry their own body, `as_dict()`), and a request's
`explain` is churn.explain.split_explain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from churn.schema import EXAMPLE_RECORD, FEATURES, ID_COLUMN, MAX_INSTANCES

if TYPE_CHECKING:
    from churn.serving import ScoreResult


@dataclass(frozen=True)
class ClientError:
    """A request refused before scoring: its HTTP status and body (gRPC: INVALID_ARGUMENT)."""

    status: int
    body: dict[str, Any]


def error_body(error: str, message: str) -> dict[str, Any]:
    return {"error": error, "message": message}


def unsupported_media_type(content_type: str) -> ClientError:
    return ClientError(
        415,
        error_body("unsupported_media_type", f"Content-Type must be application/json, got {content_type!r}"),
    )


def malformed_json(exc: Exception, what: str = "body") -> ClientError:
    """`what`: "body" for JSON text, "value" for a gRPC Struct that is not JSON (NaN, Infinity)."""
    return ClientError(400, error_body("malformed_json", f"malformed JSON {what}: {exc}"))


def model_unavailable(message: str) -> dict[str, Any]:
    """The 503 body of /predict and /model (gRPC: UNAVAILABLE)."""
    return error_body("model_unavailable", message)


def response_body(
    model: str | None,
    ids: list[Any],
    probabilities: list[float],
    churn: list[bool],
    record_models: list[str],
    holdout: list[bool] | None = None,
) -> dict[str, Any]:
    """The API's 200 body. Every prediction names the version that computed it; the top-level
    `model` is that version when one computed them all, else null (a canary split the request).
    `holdout` (only while a holdout is configured): the customer is in it, "no action"."""
    body = {
        "model": model,
        "predictions": [
            {"customerID": cid, "churn_probability": p, "churn": c, "model": m}
            for cid, p, c, m in zip(ids, probabilities, churn, record_models, strict=True)
        ],
    }
    if holdout is not None:
        for prediction, held in zip(body["predictions"], holdout, strict=True):
            prediction["holdout"] = held
    return body


def build_response(result: ScoreResult, ids: list[Any]) -> dict[str, Any]:
    """The 200 body of a runner's answer, with each prediction's reasons when it asked for them."""
    body = response_body(
        result.model,
        ids,
        result.probabilities.tolist(),
        result.churn.tolist(),
        result.record_models(),
        None if result.holdout is None else result.holdout.tolist(),
    )
    if result.explained is not None:
        result.explained.add_to(body["predictions"])
    return body


def openapi_request_model():
    """A pydantic model of the request body, built from the schema: it documents /predict in
    /docs.json. Validation itself is churn.schema.parse_predict_request (faster, and its errors
    name the record index and field)."""
    from pydantic import BaseModel, ConfigDict, Field, create_model

    fields: dict[str, Any] = {ID_COLUMN: (str | int | None, None)}
    for feature in FEATURES:
        if feature.is_categorical:
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
        explain: Annotated[int, Field(ge=1, le=len(FEATURES))] | Literal["all"] | None = Field(
            None, description="add each prediction's top reasons and baseline (churn/explain.py)"
        )

    return PredictRequest
