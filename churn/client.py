"""A small client for the churn service, over HTTP or gRPC, from a CSV of customers.

    python -m churn.client --csv data/telco_churn.csv --limit 5                      # HTTP :3000
    python -m churn.client --transport grpc --address 127.0.0.1:50051 --csv FILE     # gRPC
    python -m churn.client --transport grpc --grpc-body bytes --csv FILE             # gRPC, JSON text
    python -m churn.client --health                                                  # probes

It prints the service's JSON response. Exit codes: 0 ok, 1 the service answered with an error
or could not be reached, 2 bad input (file, columns, values).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Literal

from churn.schema import FEATURES, ID_COLUMN, DataValidationError, read_customers_csv

GRPC_SERVICE = "bentoml.grpc.v1.BentoService"


def records_from_csv(path: str, limit: int | None = None) -> list[dict[str, Any]]:
    data = read_customers_csv(path, require_label=False)
    frame = data.features if limit is None else data.features.head(limit)
    records = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        rec = {f.name: int(row[f.name]) if f.whole_numbers else row[f.name] for f in FEATURES}
        rec[ID_COLUMN] = None if data.ids is None else str(data.ids.iloc[i])
        records.append(rec)
    return records


def predict_http(url: str, records: list[dict[str, Any]], timeout: float = 30.0) -> tuple[int, Any]:
    body = json.dumps({"instances": records}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/predict", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except ValueError:
            return exc.code, payload.decode(errors="replace")


def grpc_stub(address: str):
    import grpc
    from bentoml.grpc.v1 import service_pb2_grpc

    channel = grpc.insecure_channel(
        address,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
    )
    return channel, service_pb2_grpc.BentoServiceStub(channel)


GrpcEncoding = Literal["json", "bytes"]
GRPC_ENCODINGS: tuple[GrpcEncoding, ...] = ("json", "bytes")


def predict_grpc(
    address: str, records: list[dict[str, Any]], timeout: float = 30.0, encoding: GrpcEncoding = "json"
) -> tuple[str, Any]:
    return call_grpc(address, {"instances": records}, timeout, encoding)


def call_grpc(
    address: str, payload: Any, timeout: float = 30.0, encoding: GrpcEncoding = "json"
) -> tuple[str, Any]:
    """Send any JSON payload to the predict API, as a protobuf Struct in the `json` field
    (encoding "json"), or as JSON text in `serialized_bytes` (encoding "bytes", answered the same
    way; cheaper for large requests). Returns ("OK", response) or (status code name, details)."""
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb
    from google.protobuf import json_format, struct_pb2

    if encoding not in GRPC_ENCODINGS:
        raise ValueError(f"encoding must be one of {GRPC_ENCODINGS}, got {encoding!r}")
    channel, stub = grpc_stub(address)
    try:
        if encoding == "bytes":
            request = pb.Request(api_name="predict", serialized_bytes=json.dumps(payload).encode())
        else:
            request = pb.Request(api_name="predict", json=json_format.ParseDict(payload, struct_pb2.Value()))
        reply = stub.Call(request, timeout=timeout)
        if reply.WhichOneof("content") == "serialized_bytes":
            return "OK", json.loads(reply.serialized_bytes)
        return "OK", json_format.MessageToDict(reply.json)  # also a server that answers bytes with a Struct
    except grpc.RpcError as exc:
        details = exc.details()
        try:
            details = json.loads(details)
        except (TypeError, ValueError):
            pass
        return exc.code().name, details
    finally:
        channel.close()


def grpc_health(address: str, service: str = GRPC_SERVICE, timeout: float = 5.0) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m churn.client", description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("http", "grpc"), default="http")
    parser.add_argument(
        "--grpc-body",
        choices=GRPC_ENCODINGS,
        default="json",
        help="gRPC request and answer: a protobuf Struct (json) or JSON text in serialized_bytes",
    )
    parser.add_argument(
        "--address",
        help="http: base URL (default http://127.0.0.1:3000); grpc: host:port (default 127.0.0.1:50051)",
    )
    parser.add_argument("--csv", help="customers to score (the data set's columns; Churn optional)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N rows")
    parser.add_argument(
        "--health", action="store_true", help="print the health routes (or gRPC health) instead"
    )
    args = parser.parse_args(argv)
    address = args.address or ("http://127.0.0.1:3000" if args.transport == "http" else "127.0.0.1:50051")

    if args.health:
        if args.transport == "grpc":
            print(json.dumps({"grpc.health.v1": grpc_health(address)}))
            return 0
        out = {}
        for route in ("health", "startup", "ready"):
            try:
                out[route] = http_get(f"{address.rstrip('/')}/{route}")
            except OSError as exc:
                out[route] = ("unreachable", str(exc))
        print(json.dumps(out))
        return 0

    if not args.csv:
        parser.error("--csv is required (or --health)")
    try:
        records = records_from_csv(args.csv, args.limit)
    except DataValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.transport == "http":
            status, body = predict_http(address, records)
            ok = status == 200
        else:
            status, body = predict_grpc(address, records, encoding=args.grpc_body)
            ok = status == "OK"
    except OSError as exc:
        print(f"error: cannot reach {address}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    if not ok:
        print(f"error: the service answered {status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
