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
import time
import uuid
from typing import Any

import anyio
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

from churn.contract import (
    ClientError,
    build_response,
    malformed_json,
    model_unavailable,
    openapi_request_model,
    unsupported_media_type,
)
from churn.explain import split_explain
from churn.jsonio import json_bytes, json_loads
from churn.logs import setup_logging
from churn.metrics import accept_balancing_gauge, grpc_metrics, serving_metrics
from churn.predictionlog import PredictionLog
from churn.schema import RecordValidationError, parse_predict_request
from churn.serving import HolderStatus, ModelHolder, ScoreResult
from churn.settings import load_settings, settings_from_env
from churn.tuning import balance_http_workers, check_http_balancing

log = logging.getLogger("churn.service")

STATUS_TIMEOUT_SECONDS = 3.0
# A 10,000-record request takes well under a second; past this the runner is presumed gone.
RUNNER_TIMEOUT_SECONDS = 5.0
# A large request's JSON parsing, validation and answer are done in a thread, one request at a time
# per worker, not on the event loop: 48 clients sending 5,000-record requests kept the loop 85 %
# busy with them, and /health took 2-5 s (tests/integration/test_probes.py). Small requests stay on
# the loop, where they cost less than a thread's hand-off.
OFF_LOOP_BYTES = 64 * 1024
OFF_LOOP_RECORDS = 100
_off_loop_limiter: anyio.CapacityLimiter | None = None


async def _off_loop(fn, *args):
    """fn(*args) in a worker thread, one at a time per process: the event loop stays free."""
    global _off_loop_limiter
    if _off_loop_limiter is None:
        _off_loop_limiter = anyio.CapacityLimiter(1)
    return await anyio.to_thread.run_sync(fn, *args, limiter=_off_loop_limiter)


# The holder of this process, when the runner is embedded in it (the default): the probes read it
# directly. Through the runner they would queue behind predictions (an embedded runner runs one
# call at a time per worker), and a busy pod would turn unready.
_local_holder: ModelHolder | None = None


class ChurnRunnable(bentoml.legacy.Runnable):
    SUPPORTED_RESOURCES = ("cpu",)
    SUPPORTS_CPU_MULTI_THREADING = False

    def __init__(self) -> None:
        global _local_holder
        settings = load_settings()
        setup_logging(settings, "runner", stream=sys.stdout)
        metrics = serving_metrics()
        # Loads lazily and never raises: the API may start before the training Job has finished.
        self.holder = ModelHolder(
            settings, PredictionLog(settings, on_drop=metrics.log_dropped.inc), metrics=metrics
        )
        self.holder.start()
        _local_holder = self.holder
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


def _api_workers() -> int:
    """The API worker count BentoML starts: api_server.workers, or one per CPU of the limit."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return int(BentoMLContainer.api_server_workers.get())


# Two settings are read when BentoML imports this module, before its server starts: the runner's
# placement (BentoML needs the runner object now) and the HTTP workers' accept balancing (each
# wake-up of the worker's event loop then accepts one connection, so that a burst of clients is
# shared by the workers: churn/tuning.py; in any other process it does nothing). A bad value stops
# the server with the same one-line error as any other setting.
_import_settings = settings_from_env(os.environ)
balance_http_workers(_import_settings.http_accept_balancing, _api_workers())
runner = bentoml.legacy.Runner(ChurnRunnable, name="churn_runner", embedded=_import_settings.runner_embedded)
svc = bentoml.legacy.Service("churn_service", runners=[runner])


@svc.on_startup
def _startup(_ctx: bentoml.Context) -> None:
    settings = load_settings()
    setup_logging(settings, "api", stream=sys.stdout)
    log.info("API worker started (MLOPS_HOME=%s, model name %s)", settings.mlops_home, settings.model_name)
    for problem in settings.unwritable_folders():  # served all the same; what cannot be written is counted
        log.error("%s", problem)
    try:
        balancing = check_http_balancing(asyncio.get_running_loop())
    except RuntimeError:  # no running loop: nothing was patched to act on
        balancing = check_http_balancing(None)
    log.info("HTTP accept balancing: %s (%s)", "on" if balancing.active else "off", balancing.reason)
    accept_balancing_gauge().set(int(balancing.active))


# ------------------------------------------------------------------------------------------------
# /predict (HTTP and gRPC)
# ------------------------------------------------------------------------------------------------


# A gRPC request whose body came as `serialized_bytes` (JSON text) is answered the same way: a
# protobuf Struct per record costs more than scoring (65 ms vs 28 ms a 1,000-record request).
_ANSWER_BYTES: contextvars.ContextVar[bool] = contextvars.ContextVar("answer_bytes", default=False)


class PredictJSON(JSON, proto_fields=("json",)):
    """BentoML's JSON IO, but a bad body becomes a value the API answers with a JSON error
    (BentoML's own answer to a bad body is a bare string), and the content type is checked."""

    async def from_http_request(self, request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return unsupported_media_type(ctype)
        raw = await request.body()
        return await _off_loop(_parse_json, raw) if len(raw) > OFF_LOOP_BYTES else _parse_json(raw)

    async def from_proto(self, field: Any) -> Any:
        if isinstance(field, bytes):
            return await _off_loop(_parse_json, field) if len(field) > OFF_LOOP_BYTES else _parse_json(field)
        if field.ByteSize() > OFF_LOOP_BYTES:
            return await _off_loop(_struct_to_dict, field)
        return _struct_to_dict(field)


def _parse_json(raw: bytes) -> Any:
    try:
        return json_loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad unicode are ValueErrors
        return malformed_json(exc)


def _struct_to_dict(field: Any) -> Any:
    from google.protobuf.json_format import MessageToDict

    try:
        return MessageToDict(field, preserving_proto_field_name=True)
    except ValueError as exc:  # e.g. NaN or Infinity in a number_value: not JSON
        return malformed_json(exc, "value")


def _large(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj.get("predictions", ())) > OFF_LOOP_RECORDS


class PredictResponseJSON(JSON, proto_fields=("json",)):
    """BentoML's JSON output, written by orjson (json.dumps took 3 ms of a 1,000-record answer);
    to a gRPC `serialized_bytes` request, the JSON text, which the interceptor moves into the
    response's `serialized_bytes`."""

    async def to_http_response(self, obj: Any, ctx: bentoml.Context | None = None) -> Response:
        if not isinstance(obj, dict):
            return await super().to_http_response(obj, ctx)
        body = await _off_loop(json_bytes, obj) if _large(obj) else json_bytes(obj)
        if ctx is None:
            return Response(body, media_type=self._mime_type)
        response = Response(
            body,
            media_type=self._mime_type,
            headers=ctx.response.metadata,
            status_code=ctx.response.status_code,
        )
        set_cookies(response, ctx.response.cookies)
        return response

    async def to_proto(self, obj: Any) -> Any:
        if not _ANSWER_BYTES.get():
            if _large(obj):
                return await _off_loop(_dict_to_struct, obj)
            return await super().to_proto(obj)
        from google.protobuf import struct_pb2

        text = (await _off_loop(json_bytes, obj) if _large(obj) else json_bytes(obj)).decode()
        return struct_pb2.Value(string_value=text)


def _dict_to_struct(obj: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2
    from google.protobuf.json_format import ParseDict

    return ParseDict(obj, struct_pb2.Value())


def _client_error(ctx: bentoml.Context | None, error: ClientError) -> dict[str, Any]:
    if ctx is None:  # gRPC: the status code carries the class of error
        raise InvalidArgument(json.dumps(error.body))
    ctx.response.status_code = error.status
    return error.body


def _unavailable(ctx: bentoml.Context | None, message: str) -> dict[str, Any]:
    body = model_unavailable(message)
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
    if isinstance(body, ClientError):
        return _client_error(ctx, body)
    try:
        body, explain = split_explain(body)  # "explain": K asks for reasons (churn/explain.py)
        instances = body.get("instances") if isinstance(body, dict) else None
        if isinstance(instances, list) and len(instances) > OFF_LOOP_RECORDS:
            records, ids = await _off_loop(parse_predict_request, body)
        else:
            records, ids = parse_predict_request(body)
    except RecordValidationError as exc:
        return _client_error(ctx, ClientError(400, exc.as_dict()))
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
        return _client_error(ctx, ClientError(422, result.explained.error_body()))
    if len(ids) > OFF_LOOP_RECORDS:
        return await _off_loop(build_response, result, ids)
    return build_response(result, ids)


# ------------------------------------------------------------------------------------------------
# Health routes for the Kubernetes probes
# ------------------------------------------------------------------------------------------------


async def _runner_status() -> tuple[HolderStatus | None, str | None]:
    """The model holder's status, or (None, why) when it does not answer. An embedded holder is
    asked in this process, beside the prediction queue (in a thread when it holds no model: then a
    status call may load one); a remote runner process through the runner."""
    holder = _local_holder
    if holder is not None and holder.serving.current is not None:
        return holder.status(), None  # reads memory only: a holder with a model never refreshes here
    try:
        asked = asyncio.to_thread(holder.status) if holder is not None else runner.status.async_run()
        return await asyncio.wait_for(asked, STATUS_TIMEOUT_SECONDS), None
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
        return JSONResponse(model_unavailable(message), status_code=503)
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


def _record_grpc_call(api_name: str, code: grpc.StatusCode, seconds: float) -> None:
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml.grpc.utils import to_http_status

    metrics = grpc_metrics(tuple(BentoMLContainer.duration_buckets.get()))
    # Only the service's own API names: a label per name a client makes up would grow without bound.
    labels = {
        "api_name": api_name if api_name in svc.apis else "unknown",
        "grpc_code": code.name,
        "http_response_code": str(to_http_status(code)),
    }
    metrics.requests.labels(**labels).inc()
    metrics.duration.labels(**labels).observe(seconds)


def _context_code(context: Any) -> grpc.StatusCode | None:
    code = getattr(context, "code", None)
    return code() if callable(code) else None


class ChurnGrpcInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method == GRPC_HEALTH_CHECK:
            return self._health_handler()
        handler = await continuation(handler_call_details)
        if handler_call_details.method == GRPC_CALL and handler is not None and handler.unary_unary:
            inner = handler.unary_unary

            async def call(request, context):
                started, code = time.perf_counter(), grpc.StatusCode.OK
                try:
                    response = await _call(request, context)
                    code = _context_code(context) or grpc.StatusCode.OK  # set_code() without abort
                    return response
                except grpc.aio.AbortError:  # context.abort(): the code is on the context
                    code = _context_code(context) or grpc.StatusCode.UNKNOWN
                    raise
                except asyncio.CancelledError:  # the client went away or its deadline passed
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception:  # grpc answers an unhandled exception with UNKNOWN
                    code = grpc.StatusCode.UNKNOWN
                    raise
                finally:
                    _record_grpc_call(request.api_name, code, time.perf_counter() - started)

            async def _call(request, context):
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
