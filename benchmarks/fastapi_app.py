"""The usual alternative, for the benchmark only: a plain FastAPI app serving the same model from the
same store, with the same input validation and response, and an `async def` endpoint.

    MLOPS_HOME=... uvicorn benchmarks.fastapi_app:app --workers 2
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from churn.model import load_current
from churn.schema import RecordValidationError, parse_predict_request, records_to_frame
from churn.settings import load_settings

app = FastAPI()
_model = {}


@app.on_event("startup")
def _load() -> None:
    _model["m"] = load_current(load_settings())


@app.post("/predict")
async def predict(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
        records, ids = parse_predict_request(body)
    except (ValueError, RecordValidationError) as exc:
        detail = exc.as_dict() if isinstance(exc, RecordValidationError) else {"error": "malformed_json"}
        return JSONResponse(detail, status_code=400)
    model = _model["m"]
    proba = model.predict_proba(records_to_frame(records))
    return JSONResponse(
        {
            "model": model.tag,
            "predictions": [
                {"customerID": cid, "churn_probability": float(p), "churn": bool(p >= model.threshold)}
                for cid, p in zip(ids, proba, strict=True)
            ],
        }
    )
