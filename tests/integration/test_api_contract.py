"""The API contract, route by route, over HTTP and gRPC, against real servers."""

from __future__ import annotations

import copy
import json
import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from churn.client import call_grpc, grpc_health, predict_grpc, records_from_csv
from churn.schema import EXAMPLE_RECORD
from tests.support import DATA, http, run_cli, state_env, wait_for

pytestmark = pytest.mark.slow


def rec(**changes):
    out = copy.deepcopy(EXAMPLE_RECORD)
    out.update(changes)
    return out


def test_predict_returns_the_contract_in_input_order(http_server, served_home):
    _, summary = served_home
    records = records_from_csv(str(DATA), limit=25)
    records[3]["customerID"] = None
    status, body, headers = http("POST", http_server.url + "/predict", {"instances": records})
    assert status == 200, body
    assert set(body) == {"model", "predictions"}
    assert body["model"] == summary["tag"]
    assert [p["customerID"] for p in body["predictions"]] == [r["customerID"] for r in records]
    threshold = http("GET", http_server.url + "/model")[1]["threshold"]
    for p in body["predictions"]:
        assert set(p) == {"customerID", "churn_probability", "churn", "model"}  # no holdout configured
        assert p["model"] == summary["tag"]  # every prediction names the version that computed it
        assert 0.0 <= p["churn_probability"] <= 1.0
        assert p["churn"] is (p["churn_probability"] >= threshold)
    assert {p["churn"] for p in body["predictions"]} == {True, False}
    assert "x-bentoml-request-id" in {k.lower() for k in headers}


def test_record_without_customer_id_gets_null(http_server):
    record = rec()
    del record["customerID"]
    status, body, _ = http("POST", http_server.url + "/predict", {"instances": [record]})
    assert status == 200 and body["predictions"][0]["customerID"] is None


def test_max_size_request_is_served(http_server):
    records = records_from_csv(str(DATA), limit=None)
    records = (records * 2)[:10_000]
    status, body, _ = http("POST", http_server.url + "/predict", {"instances": records}, timeout=60)
    assert status == 200 and len(body["predictions"]) == 10_000


def test_grpc_carries_the_same_json(grpc_server, http_server):
    records = records_from_csv(str(DATA), limit=10)
    code, body = predict_grpc(grpc_server.address, records)
    assert code == "OK", body
    _, http_body, _ = http("POST", http_server.url + "/predict", {"instances": records})
    assert body["model"] == http_body["model"]
    for g, h in zip(body["predictions"], http_body["predictions"], strict=True):
        assert g["customerID"] == h["customerID"] and g["churn"] == h["churn"]
        assert math.isclose(g["churn_probability"], h["churn_probability"], rel_tol=1e-12)


BAD_BODIES = [
    ("malformed JSON", b'{"instances": [', "application/json", 400, None, None),
    (
        "NaN literal",
        json.dumps({"instances": [rec()]}).replace("1889.5", "NaN").encode(),
        "application/json",
        400,
        None,
        None,
    ),
    ("wrong content type", json.dumps({"instances": [rec()]}).encode(), "text/plain", 415, None, None),
    (
        "missing field",
        {"instances": [rec(), {k: v for k, v in rec().items() if k != "Contract"}]},
        None,
        400,
        "Contract",
        1,
    ),
    ("extra field", {"instances": [rec(Surprise=1)]}, None, 400, "Surprise", 0),
    ("wrong type", {"instances": [rec(tenure="34")]}, None, 400, "tenure", 0),
    (
        "unknown category",
        {"instances": [rec(), rec(), rec(PaymentMethod="Bitcoin")]},
        None,
        400,
        "PaymentMethod",
        2,
    ),
    ("negative tenure", {"instances": [rec(tenure=-3)]}, None, 400, "tenure", 0),
    ("empty list", {"instances": []}, None, 400, "instances", None),
    ("over-long list", {"instances": [rec()] * 10_001}, None, 400, "instances", None),
    ("not an object", [rec()], None, 400, None, None),
]


@pytest.mark.parametrize(
    ("name", "body", "ctype", "status", "field", "index"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
def test_bad_input_gets_a_4xx_json_error_naming_field_and_index(
    http_server, name, body, ctype, status, field, index
):
    raw = body if isinstance(body, bytes) else None
    code, payload, _ = http(
        "POST",
        http_server.url + "/predict",
        None if raw else body,
        raw=raw,
        content_type=ctype or "application/json",
    )
    assert code == status, payload
    assert isinstance(payload, dict) and payload["error"] and payload["message"]
    if field is not None:
        assert payload["details"][0]["field"] == field and payload["details"][0]["index"] == index
        assert field in payload["message"]
    # and the server is still fine
    assert http("POST", http_server.url + "/predict", {"instances": [rec()]})[0] == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": [rec(Contract="Forever")]}, "Contract"),
        ({"instances": []}, "instances"),
        ("oops", None),
    ],
)
@pytest.mark.parametrize("encoding", ["json", "bytes"])
def test_grpc_bad_input_is_invalid_argument_with_json_details(grpc_server, body, field, encoding):
    code, details = call_grpc(grpc_server.address, body, encoding=encoding)
    assert code == "INVALID_ARGUMENT"
    assert details["error"] == "invalid_input"
    if field:
        assert details["details"][0]["field"] == field


def test_grpc_serialized_bytes_are_answered_in_serialized_bytes(grpc_server):
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb

    from churn.client import grpc_stub

    records = records_from_csv(str(DATA), limit=1000)
    code, as_json = predict_grpc(grpc_server.address, records)
    assert code == "OK", as_json
    channel, stub = grpc_stub(grpc_server.address)
    with channel:
        body = json.dumps({"instances": records}).encode()
        reply = stub.Call(pb.Request(api_name="predict", serialized_bytes=body), timeout=30)
        assert reply.WhichOneof("content") == "serialized_bytes"
        assert json.loads(reply.serialized_bytes) == as_json  # the same answer, number for number
        bad = pb.Request(api_name="predict", serialized_bytes=b'{"instances": [NaN]}')
        with pytest.raises(grpc.RpcError) as caught:
            stub.Call(bad, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(caught.value.details())["error"] == "malformed_json"


def test_grpc_unknown_api_is_a_clean_error(grpc_server):
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb
    from google.protobuf import struct_pb2

    from churn.client import grpc_stub

    channel, stub = grpc_stub(grpc_server.address)
    with pytest.raises(grpc.RpcError) as info:
        stub.Call(pb.Request(api_name="nope", json=struct_pb2.Value(string_value="x")), timeout=10)
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_health_is_serving_with_a_model(grpc_server):
    assert grpc_health(grpc_server.address) == "SERVING"
    assert grpc_health(grpc_server.address, "") == "SERVING"
    assert grpc_health(grpc_server.address, "no.such.Service") == "NOT_FOUND"


def test_health_routes_with_a_model(http_server, served_home):
    tag = served_home[1]["tag"]
    assert http("GET", http_server.url + "/health")[:2] == (200, {"status": "alive"})
    assert http("GET", http_server.url + "/startup")[:2] == (200, {"status": "started", "model": tag})
    assert http("GET", http_server.url + "/ready")[:2] == (200, {"status": "ready", "model": tag})
    status, model, _ = http("GET", http_server.url + "/model")
    assert status == 200 and model["model"] == tag and model["metrics"]["roc_auc"] >= 0.84
    for route in ("/livez", "/readyz"):
        assert http("GET", http_server.url + route)[0] == 200


def test_metrics_expose_churn_series(http_server, served_home):
    http("POST", http_server.url + "/predict", {"instances": records_from_csv(str(DATA), limit=50)})
    status, text, _ = http("GET", http_server.url + "/metrics")
    assert status == 200
    tag = served_home[1]["tag"]
    assert f'churn_predictions_total{{model="{tag}",outcome="churn"}}' in text
    assert f'churn_predictions_total{{model="{tag}",outcome="no_churn"}}' in text
    assert f'churn_model_info{{model="{tag}"}} 1.0' in text
    assert "churn_prediction_log_dropped_total" in text


def test_prediction_log_holds_every_served_prediction(http_server, served_home):
    home, summary = served_home
    records = records_from_csv(str(DATA), limit=7)
    marker = "log-test-customer"
    records[0]["customerID"] = marker
    _, body, headers = http("POST", http_server.url + "/predict", {"instances": records})
    request_id = {k.lower(): v for k, v in headers.items()}["x-bentoml-request-id"]

    def lines():
        found = []
        for path in (home / "predictions").glob("*.jsonl"):
            text = path.read_text()
            # the log may be mid-append (another request's 10,000 lines): whole lines only
            for line in text[: text.rfind("\n") + 1].splitlines():
                entry = json.loads(line)
                if entry["request_id"] == request_id:
                    found.append(entry)
        return found if len(found) == 7 else None

    entries = wait_for(lines, 10, what="7 prediction-log lines")
    first = next(e for e in entries if e["record"]["customerID"] == marker)
    assert first["model"] == summary["tag"]
    assert first["churn_probability"] == body["predictions"][0]["churn_probability"]
    assert first["churn"] == body["predictions"][0]["churn"]
    assert first["record"]["Contract"] == records[0]["Contract"] and first["time"].endswith("Z")


def test_32_concurrent_clients_get_no_error(http_server):
    records = records_from_csv(str(DATA), limit=200)

    def client(i):
        codes = []
        for j in range(15):
            codes.append(
                http("POST", http_server.url + "/predict", {"instances": [records[(i * 15 + j) % 200]]})[0]
            )
        return codes

    with ThreadPoolExecutor(32) as pool:
        codes = [c for cs in pool.map(client, range(32)) for c in cs]
    assert len(codes) == 480 and set(codes) == {200}


def test_metrics_expose_the_latest_drift_report(http_server, served_home):
    home, _ = served_home
    proc = run_cli("monitoring.drift", "--current", str(DATA), env=state_env(home))
    assert proc.returncode == 0, proc.stderr

    def gauges():
        text = http("GET", http_server.url + "/metrics")[1]
        return "churn_drift_detected 0.0" in text and 'churn_drift_p_value{feature="tenure"}' in text

    wait_for(gauges, 30, what="drift gauges on /metrics")


def test_the_client_cli_gives_one_answer_over_every_transport(http_server, grpc_server, served_home):
    home, _ = served_home
    answers = {}
    for name, args in {
        "http": ["--address", http_server.url],
        "grpc": ["--transport", "grpc", "--address", grpc_server.address],
        "grpc-bytes": ["--transport", "grpc", "--grpc-body", "bytes", "--address", grpc_server.address],
    }.items():
        proc = run_cli("churn.client", *args, "--csv", str(DATA), "--limit", "5", env=state_env(home))
        assert proc.returncode == 0, (name, proc.stderr)
        answers[name] = json.loads(proc.stdout)
    assert len(answers["http"]["predictions"]) == 5
    assert answers["http"] == answers["grpc"] == answers["grpc-bytes"]
    proc = run_cli("churn.client", "--grpc-body", "xml", "--csv", str(DATA), env=state_env(home))
    assert proc.returncode == 2 and "--grpc-body" in proc.stderr
