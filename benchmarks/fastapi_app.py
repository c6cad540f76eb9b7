"""The usual alternative, for the benchmark only: a plain FastAPI app serving the same model from the
same store, with the same input validation and response, and an `async def` endpoint.

    MLOPS_HOME=... BENCH_SCORING=pipeline uvicorn benchmarks.fastapi_app:app --workers 2

BENCH_SCORING picks the scoring path: `pipeline` (the sklearn pipeline on a DataFrame, as a
FastAPI user would write it) or `fast` (the same verified fast scorer this service uses), so that
the benchmark separates the framework's cost from the scoring path's. Its bodies, the answer and
the errors, are the service's own (churn.contract).
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from churn.contract import malformed_json, response_body
from churn.model import load_current_model
from churn.schema import RecordValidationError, parse_predict_request, records_to_frame
from churn.settings import load_settings

SCORING = os.environ.get("BENCH_SCORING", "pipeline")
app = FastAPI()
_model = {}


@app.on_event("startup")
def _load() -> None:
    model = load_current_model(load_settings())
    if SCORING == "fast" and model.fast is None:
        raise RuntimeError("BENCH_SCORING=fast but the fast path refused this model")
    _model["m"] = model


@app.post("/predict")
async def predict(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        error = malformed_json(exc)
        return JSONResponse(error.body, status_code=error.status)
    try:
        records, ids = parse_predict_request(body)
    except RecordValidationError as exc:
        return JSONResponse(exc.as_dict(), status_code=400)
    model = _model["m"]
    if SCORING == "fast":
        proba = model.predict_records(records)
    else:
        proba = model.predict_proba(records_to_frame(records))
    churn = (proba >= model.threshold).tolist()
    return JSONResponse(response_body(model.tag, ids, proba.tolist(), churn, [model.tag] * len(ids)))
