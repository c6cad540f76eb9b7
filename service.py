"""The churn inference service: a thin BentoML adapter over `churn.serving`.

    bentoml serve service:svc --port 3000          # HTTP
    bentoml serve-grpc service:svc --port 50051    # gRPC

It uses BentoML's legacy runner API because it is the only BentoML API that serves gRPC. The
model is not baked in: the runner loads the registry's current model from the store under
BENTOML_HOME and follows the registry (hot reload).
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import logging
import os
import sys
import uuid
from typing import Any

import bentoml
import grpc
from bentoml._internal.context import trace_context
from bentoml._internal.utils.http import set_cookies
from bentoml.exceptions import InvalidArgument
from bentoml.io import JSON
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from churn.explain import split_explain
from churn.jsonio import json_bytes, json_loads
from churn.logs import setup_logging
from churn.metrics import serving_metrics
from churn.schema import RecordValidationError, parse_predict_request
from churn.serving import (
    HolderStatus,
    ModelHolder,
    PredictionLog,
    ScoreResult,
    build_response,
    openapi_request_model,
)
from churn.settings import load_settings, settings_from_env
from churn.tuning import balance_http_workers

log = logging.getLogger("churn.service")

STATUS_TIMEOUT_SECONDS = 3.0
# A 10,000-record request takes well under a second; past this the runner is presumed gone.
RUNNER_TIMEOUT_SECONDS = 5.0


class ChurnRunnable(bentoml.legacy.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        settings = load_settings()
        setup_logging(settings, "runner", stream=sys.stdout)
        metrics = serving_metrics()
        # Loads lazily and never raises: the API may start before the training Job has finished.
        self.holder = ModelHolder(
            settings, PredictionLog(settings, on_drop=metrics.log_dropped.inc), metrics=metrics
        )
        self.holder.start()
        # Flush the prediction log when the process exits (SIGTERM included: BentoML exits cleanly).
        atexit.register(self.holder.stop)

    # Not batchable: a request's records are scored in microseconds each on the verified fast path
    # (churn/fastpath.py), so there is nothing for adaptive batching to amortise.
    @bentoml.legacy.Runnable.method(batchable=False)
    def predict(
        self, records: list[dict[str, Any]], ids: list[Any], request_id: str, explain: int | None = None
    ) -> ScoreResult:
        return self.holder.score(records, ids, request_id, explain)

    @bentoml.legacy.Runnable.method(batchable=False)
    def status(self) -> HolderStatus:
        return self.holder.status()


# BentoML's HTTP worker imports this module before its server starts: from then on, each wake-up of
# its event loop accepts one connection, so that a burst of clients is shared by the workers
# (churn/tuning.py). In any other process importing it, this does nothing.
balance_http_workers()

# BentoML needs the runner object when it imports this module, so its placement (embedded in the
# API workers, or remote runner processes) is the one setting read at import. A bad value stops
# the server with the same one-line error as any other setting.
runner = bentoml.legacy.Runner(
    ChurnRunnable,
    name="churn_runner",
    embedded=settings_from_env(os.environ).runner_embedded,
)
svc = bentoml.legacy.Service("churn_service", runners=[runner])


@svc.on_startup
def _startup(_ctx: bentoml.Context) -> None:
    settings = load_settings()
    setup_logging(settings, "api", stream=sys.stdout)
    log.info("API worker started (MLOPS_HOME=%s, model name %s)", settings.mlops_home, settings.model_name)


# ------------------------------------------------------------------------------------------------
# /predict (HTTP and gRPC)
# ------------------------------------------------------------------------------------------------


class _ClientError:
    def __init__(self, status: int, body: dict[str, Any]):
        self.status, self.body = status, body


# A gRPC request whose body came as `serialized_bytes` (JSON text) is answered the same way: a
# protobuf Struct per record costs more than scoring (65 ms vs 28 ms a 1,000-record request).
_ANSWER_BYTES: contextvars.ContextVar[bool] = contextvars.ContextVar("answer_bytes", default=False)


class PredictJSON(JSON, proto_fields=("json",)):
    """BentoML's JSON IO, but a bad body becomes a value the API answers with a JSON error
    (BentoML's own answer to a bad body is a bare string), and the content type is checked."""

    async def from_http_request(self, request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return _ClientError(
                415,
                {
                    "error": "unsupported_media_type",
                    "message": f"Content-Type must be application/json, got {ctype!r}",
                },
            )
        raw = await request.body()
        try:
            return json_loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad unicode are ValueErrors
            return _ClientError(400, {"error": "malformed_json", "message": f"malformed JSON body: {exc}"})

    async def from_proto(self, field: Any) -> Any:
        from google.protobuf.json_format import MessageToDict

        if isinstance(field, bytes):
            try:
                return json_loads(field)
            except (ValueError, RecursionError) as exc:
                return _ClientError(
                    400, {"error": "malformed_json", "message": f"malformed JSON body: {exc}"}
                )
        try:
            return MessageToDict(field, preserving_proto_field_name=True)
        except ValueError as exc:  # e.g. NaN or Infinity in a number_value: not JSON
            return _ClientError(400, {"error": "malformed_json", "message": f"malformed JSON value: {exc}"})


class PredictResponseJSON(JSON, proto_fields=("json",)):
    """BentoML's JSON output, written by orjson (json.dumps took 3 ms of a 1,000-record answer);
    to a gRPC `serialized_bytes` request, the JSON text, which the interceptor moves into the
    response's `serialized_bytes`."""

    async def to_http_response(self, obj: Any, ctx: bentoml.Context | None = None) -> Response:
        if not isinstance(obj, dict):
            return await super().to_http_response(obj, ctx)
        if ctx is None:
            return Response(json_bytes(obj), media_type=self._mime_type)
        response = Response(
            json_bytes(obj),
            media_type=self._mime_type,
            headers=ctx.response.metadata,
            status_code=ctx.response.status_code,
        )
        set_cookies(response, ctx.response.cookies)
        return response

    async def to_proto(self, obj: Any) -> Any:
        if not _ANSWER_BYTES.get():
            return await super().to_proto(obj)
        from google.protobuf import struct_pb2

        return struct_pb2.Value(string_value=json_bytes(obj).decode())


def _client_error(ctx: bentoml.Context | None, error: _ClientError) -> dict[str, Any]:
    if ctx is None:  # gRPC: the status code carries the class of error
        raise InvalidArgument(json.dumps(error.body))
    ctx.response.status_code = error.status
    return error.body


def _unavailable(ctx: bentoml.Context | None, message: str) -> dict[str, Any]:
    body = {"error": "model_unavailable", "message": message}
    if ctx is None:
        from bentoml.exceptions import ServiceUnavailable

        raise ServiceUnavailable(json.dumps(body))
    ctx.response.status_code = 503
    ctx.response.headers["Retry-After"] = "5"
    return body


@svc.api(
    input=PredictJSON(pydantic_model=openapi_request_model()),
    output=PredictResponseJSON(),
    route="/predict",
    name="predict",
    doc="Churn probability for 1 to 10,000 customer records.",
)
async def predict(body: Any, ctx: bentoml.Context | None = None) -> dict[str, Any]:
    # BentoML's gRPC servicer passes no context: `ctx` is None there, and errors are raised as
    # gRPC status codes instead of set on an HTTP response.
    if isinstance(body, _ClientError):
        return _client_error(ctx, body)
    try:
        body, explain = split_explain(body)  # "explain": K asks for reasons (churn/explain.py)
        records, ids = parse_predict_request(body)
    except RecordValidationError as exc:
        return _client_error(ctx, _ClientError(400, exc.as_dict()))
    # The same id BentoML returns in the X-BentoML-Request-ID header, so that a prediction-log line
    # can be matched with the response a client got.
    request_id = trace_context.request_id
    request_id = str(request_id) if request_id is not None else uuid.uuid4().hex
    try:
        # Bounded: a request caught in a runner process that dies is otherwise left waiting.
        result = await asyncio.wait_for(
            runner.predict.async_run(records, ids, request_id, explain), RUNNER_TIMEOUT_SECONDS
        )
    except Exception as exc:
        # The runner process is down or restarting (killed, OOM) or shed the load: a clean,
        # retryable 503 instead of BentoML's bare 500. The input was already validated.
        log.warning("runner call failed: %s: %s", type(exc).__name__, exc)
        return _unavailable(ctx, f"model runner unavailable ({type(exc).__name__}); retry shortly")
    if not result.models:
        return _unavailable(ctx, result.error or "no model loaded yet")
    if result.explained is not None and result.explained.refused:
        return _client_error(ctx, _ClientError(422, result.explained.error_body()))
    return build_response(result, ids)


# ------------------------------------------------------------------------------------------------
# Health routes for the Kubernetes probes
# ------------------------------------------------------------------------------------------------


async def _runner_status() -> tuple[HolderStatus | None, str | None]:
    """The runner's status, or (None, why) when it does not answer."""
    try:
        return await asyncio.wait_for(runner.status.async_run(), STATUS_TIMEOUT_SECONDS), None
    except Exception as exc:  # the runner process is down, restarting or stuck
        return None, f"runner not answering: {type(exc).__name__}: {exc}"


async def health(_request: Request) -> JSONResponse:
    """Liveness: the process answers. Never depends on the model, so a slow training Job does not
    get healthy pods killed."""
    return JSONResponse({"status": "alive"})


async def startup(_request: Request) -> JSONResponse:
    status, down = await _runner_status()
    if status is not None and status.loaded:
        return JSONResponse({"status": "started", "model": status.model})
    return JSONResponse({"status": "starting", "reason": down or status.error}, status_code=503)


async def ready(_request: Request) -> JSONResponse:
    status, down = await _runner_status()
    if status is not None and status.loaded:
        return JSONResponse({"status": "ready", "model": status.model})
    return JSONResponse({"status": "not_ready", "reason": down or status.error}, status_code=503)


async def model_info(_request: Request) -> JSONResponse:
    status, down = await _runner_status()
    if status is None or not status.loaded:
        message = down or status.error
        return JSONResponse({"error": "model_unavailable", "message": message}, status_code=503)
    body = status.details | {
        "registry_current": status.registry_current,
        "reload_error": status.error,
        "candidate": status.candidate,
    }
    return JSONResponse(body)


health_app = Starlette(
    routes=[
        Route("/health", health, methods=["GET"]),
        Route("/startup", startup, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/model", model_info, methods=["GET"]),
    ]
)
svc.mount_asgi_app(health_app, path="/")


# ------------------------------------------------------------------------------------------------
# gRPC: model-aware health (BentoML marks everything SERVING at start) and a clean answer to an
# unknown api_name (BentoML raises it outside its error handling, and the call hangs until the
# client's deadline)
# ------------------------------------------------------------------------------------------------

GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
GRPC_CALL = "/bentoml.grpc.v1.BentoService/Call"
GRPC_SERVICE_NAMES = ("", "bentoml.grpc.v1.BentoService")


class ChurnGrpcInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method == GRPC_HEALTH_CHECK:
            return self._health_handler()
        handler = await continuation(handler_call_details)
        if handler_call_details.method == GRPC_CALL and handler is not None and handler.unary_unary:
            inner = handler.unary_unary

            async def call(request, context):
                if request.api_name not in svc.apis:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"unknown api_name {request.api_name!r}; this service has {sorted(svc.apis)}",
                    )
                # Decided here, once: BentoML's servicer runs from_proto and to_proto in this task.
                answer_bytes = request.WhichOneof("content") == "serialized_bytes"
                _ANSWER_BYTES.set(answer_bytes)
                response = await inner(request, context)
                if answer_bytes and response.json.string_value:
                    return type(response)(serialized_bytes=response.json.string_value.encode())
                return response

            return handler._replace(unary_unary=call)
        return handler

    @staticmethod
    def _health_handler():
        from grpc_health.v1 import health_pb2

        async def check(request, context):
            if request.service not in GRPC_SERVICE_NAMES:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
            status, _ = await _runner_status()
            serving = health_pb2.HealthCheckResponse.SERVING
            loaded = status is not None and status.loaded
            return health_pb2.HealthCheckResponse(
                status=serving if loaded else health_pb2.HealthCheckResponse.NOT_SERVING
            )

        return grpc.unary_unary_rpc_method_handler(
            check,
            request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )


svc.add_grpc_interceptor(ChurnGrpcInterceptor)
