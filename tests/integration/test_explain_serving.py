"""`"explain": K` over HTTP and gRPC: reasons from the saved model, additive to the logit of the
probability served; without it, the answer is what it always was; a model the fast path refuses
gets a 4xx that says why."""

from __future__ import annotations

import json
import math
import re
import urllib.request

import bentoml
import numpy as np
import pytest

from churn.client import call_grpc, records_from_csv
from churn.explain import LinearReasons
from churn.jsonio import json_bytes
from churn.model import get_store_model, load_reference
from churn.schema import FEATURE_NAMES
from churn.settings import settings_from_env
from tests.integration.test_model_serving import saved_pipeline_proba, valid_mixes
from tests.support import DATA, ROOT, Server, http, run_cli, state_env, wait_for

pytestmark = pytest.mark.slow

TOLERANCE = 1e-9


def saved_reasons(home, tag: str, records: list[dict]) -> tuple[float, np.ndarray]:
    """The baseline and contributions computed here from the saved pipeline and its reference."""
    settings = settings_from_env(state_env(home))
    pipeline = bentoml.sklearn.load_model(get_store_model(settings, tag))
    reasons = LinearReasons.for_pipeline(pipeline, load_reference(settings, tag))
    features = [{k: r[k] for k in FEATURE_NAMES} for r in records]
    return reasons.baseline, reasons.contributions_records(features)


def raw_post(url: str, body: dict) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.read()


def check_explained(body: dict, records: list[dict], expected_proba, baseline, contributions, k: int):
    predictions = body["predictions"]
    proba = np.array([p["churn_probability"] for p in predictions])
    assert np.abs(proba - expected_proba).max() <= TOLERANCE
    for i, p in enumerate(predictions):
        assert abs(p["baseline"] - baseline) <= TOLERANCE
        assert len(p["reasons"]) == k
        shares = [r["contribution"] for r in p["reasons"]]
        assert shares == sorted(shares, reverse=True)
        want = sorted(range(len(FEATURE_NAMES)), key=lambda j: -contributions[i, j])[:k]
        assert abs(shares[-1] - contributions[i, want[-1]]) <= TOLERANCE  # the K largest
        for r in p["reasons"]:
            j = FEATURE_NAMES.index(r["feature"])
            assert abs(r["contribution"] - contributions[i, j]) <= TOLERANCE
            assert r["value"] == records[i][r["feature"]]
        if k == len(FEATURE_NAMES):  # additive: baseline + every contribution = the served logit
            logit = math.log(p["churn_probability"] / (1 - p["churn_probability"]))
            assert abs(p["baseline"] + sum(shares) - logit) <= 1e-9


def test_explained_predictions_over_http_and_grpc(http_server, grpc_server, served_home):
    home, summary = served_home
    tag = summary["tag"]
    records = records_from_csv(str(DATA), limit=2000) + valid_mixes(500)
    expected = saved_pipeline_proba(home, tag, records)
    baseline, contributions = saved_reasons(home, tag, records)
    for k, explain in ((3, 3), (len(FEATURE_NAMES), "all")):
        status, body, _ = http(
            "POST", http_server.url + "/predict", {"instances": records, "explain": explain}
        )
        assert status == 200, body
        check_explained(body, records, expected, baseline, contributions, k)
        for encoding in ("json", "bytes"):  # a Struct carries 3 as 3.0: accepted as well
            code, reply = call_grpc(
                grpc_server.address, {"instances": records, "explain": explain}, 60, encoding
            )
            assert code == "OK", reply
            check_explained(reply, records, expected, baseline, contributions, k)  # 1.0 == 1


def test_without_explain_the_answer_is_byte_for_byte_what_it_was(http_server, grpc_server, served_home):
    _, summary = served_home
    records = records_from_csv(str(DATA), limit=50)
    status, raw = raw_post(http_server.url + "/predict", {"instances": records})
    assert status == 200
    plain = json.loads(raw)
    # the shape of the answer before reasons existed, written as the service writes it
    before = {
        "model": summary["tag"],
        "predictions": [
            {
                "customerID": r["customerID"],
                "churn_probability": p["churn_probability"],
                "churn": p["churn"],
                "model": summary["tag"],
            }
            for r, p in zip(records, plain["predictions"], strict=True)
        ],
    }
    assert raw == json_bytes(before)
    _, explained = raw_post(http_server.url + "/predict", {"instances": records, "explain": 2})
    stripped = json.loads(explained)
    for p in stripped["predictions"]:
        del p["reasons"], p["baseline"]
    # reasons only added; the probabilities come from the column-wise fast path (batch scoring's),
    # which may differ from the record-wise one in the last bit
    for a, b in zip(stripped["predictions"], plain["predictions"], strict=True):
        assert abs(a.pop("churn_probability") - b["churn_probability"]) <= 1e-15
        assert a == {k: v for k, v in b.items() if k != "churn_probability"}
    code, reply = call_grpc(grpc_server.address, {"instances": records}, 30, "bytes")
    assert code == "OK" and json_bytes(reply) == raw


@pytest.mark.parametrize("explain", [0, 20, "3", "some", True, None, 2.5])
def test_a_bad_explain_value_is_a_400_naming_the_field(http_server, grpc_server, explain):
    body = {"instances": records_from_csv(str(DATA), limit=1), "explain": explain}
    status, reply, _ = http("POST", http_server.url + "/predict", body)
    assert status == 400 and reply["error"] == "invalid_input", reply
    assert reply["details"][0]["field"] == "explain"
    code, details = call_grpc(grpc_server.address, body, 30)
    assert code == "INVALID_ARGUMENT" and details["details"][0]["field"] == "explain"


def test_a_model_the_fast_path_refuses_gets_a_4xx_saying_why(tmp_path):
    home = tmp_path / "home"
    proc = run_cli("tests.models", "unsupported", env=state_env(home))
    assert proc.returncode == 0, proc.stderr
    tag = proc.stdout.strip().splitlines()[-1]
    servers = [Server("http", home, tmp_path).start(), Server("grpc", home, tmp_path).start()]
    try:
        wait_for(lambda: http("GET", servers[0].url + "/startup")[0] == 200, 60, what="model loaded")
        records = records_from_csv(str(DATA), limit=5)
        status, reply, _ = http("POST", servers[0].url + "/predict", {"instances": records, "explain": 3})
        assert status == 422, reply
        assert reply["error"] == "explain_unavailable"
        assert tag in reply["message"] and "numeric preprocessing" in reply["message"]
        assert http("POST", servers[0].url + "/predict", {"instances": records})[0] == 200
        code, details = call_grpc(servers[1].address, {"instances": records, "explain": "all"}, 30)
        assert code == "INVALID_ARGUMENT", details
        assert details["error"] == "explain_unavailable" and "numeric preprocessing" in details["message"]
        assert call_grpc(servers[1].address, {"instances": records}, 30)[0] == "OK"
    finally:
        for server in servers:
            server.stop()


def test_the_documented_example_is_what_the_seed_42_model_answers(http_server, served_home):
    """docs/serving.md, "Reasons": the data set's customer most at risk, and her five reasons."""
    serving = (ROOT / "docs" / "serving.md").read_text()
    section = serving[serving.index("#### Reasons") :]
    request = json.loads(re.search(r"-d '(\{.*?\})'\n", section).group(1))
    shown = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))["predictions"][0]
    status, body, _ = http("POST", http_server.url + "/predict", request)
    assert status == 200, body
    got = body["predictions"][0]
    assert abs(got["churn_probability"] - shown["churn_probability"]) <= TOLERANCE
    assert abs(got["baseline"] - shown["baseline"]) <= TOLERANCE
    assert [(r["feature"], r["value"]) for r in got["reasons"]] == [
        (r["feature"], r["value"]) for r in shown["reasons"]
    ]
    assert (
        max(
            abs(a["contribution"] - b["contribution"])
            for a, b in zip(got["reasons"], shown["reasons"], strict=True)
        )
        <= 1e-9
    )
    # and she is the most at risk of the data set's 7,043 customers
    everyone = records_from_csv(str(DATA))
    status, body, _ = http("POST", http_server.url + "/predict", {"instances": everyone}, timeout=60)
    top = max(body["predictions"], key=lambda p: p["churn_probability"])
    assert top["customerID"] == shown["customerID"]
