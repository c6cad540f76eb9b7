"""What the servers answer is what the saved model computes, whichever scoring path serves it, and a
model that fails to load costs one attempt per reload interval, not one per request."""

from __future__ import annotations

import pickle
import random
import re
import statistics
import time

import bentoml
import numpy as np
import pytest

from churn.client import predict_grpc, records_from_csv
from churn.model import get_store_model
from churn.schema import FEATURES, records_to_frame
from churn.settings import settings_from_env
from tests.support import DATA, Server, http, run_cli, state_env, train, wait_for

pytestmark = pytest.mark.slow

TOLERANCE = 1e-9


def valid_mixes(n: int, seed: int = 5) -> list[dict]:
    """Records the schema accepts but the data set never holds together (e.g. no internet service
    with online security, tenure 900): every category and range drawn independently."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rec: dict = {"customerID": f"mix-{i}"}
        for f in FEATURES:
            if f.is_categorical:
                rec[f.name] = rng.choice(f.categories)
            elif f.kind == "integer":
                rec[f.name] = rng.randint(0, int(f.maximum))
            else:
                rec[f.name] = round(rng.uniform(0, f.maximum), 2)
        out.append(rec)
    return out


def saved_pipeline_proba(home, tag: str, records: list[dict]) -> np.ndarray:
    model = bentoml.sklearn.load_model(get_store_model(settings_from_env(state_env(home)), tag))
    return model.predict_proba(
        records_to_frame([{k: v for k, v in r.items() if k != "customerID"} for r in records])
    )[:, 1]


def test_served_probabilities_equal_the_saved_pipeline(http_server, grpc_server, served_home):
    home, summary = served_home
    records = records_from_csv(str(DATA), limit=3000) + valid_mixes(1000)
    expected = saved_pipeline_proba(home, summary["tag"], records)
    status, body, _ = http("POST", http_server.url + "/predict", {"instances": records}, timeout=60)
    assert status == 200, body
    assert http("GET", http_server.url + "/model")[1]["scoring"] == "fast"
    served = np.array([p["churn_probability"] for p in body["predictions"]])
    assert np.abs(served - expected).max() <= TOLERANCE
    code, reply = predict_grpc(grpc_server.address, records, timeout=60)
    assert code == "OK", reply
    served = np.array([p["churn_probability"] for p in reply["predictions"]])
    assert np.abs(served - expected).max() <= TOLERANCE
    # and the mixes really are off the data: many combinations no training row has
    assert sum(r["InternetService"] == "No" and r["OnlineSecurity"] == "Yes" for r in records[3000:]) > 50


def test_a_pipeline_the_fast_path_refuses_is_served_through_the_pipeline(tmp_path):
    home = tmp_path / "home"
    proc = run_cli("tests.models", "unsupported", env=state_env(home))
    assert proc.returncode == 0, proc.stderr
    tag = proc.stdout.strip().splitlines()[-1]
    server = Server("http", home, tmp_path).start()
    try:
        wait_for(lambda: http("GET", server.url + "/startup")[0] == 200, 60, what="model loaded")
        info = http("GET", server.url + "/model")[1]
        assert info["model"] == tag and info["scoring"] == "pipeline"
        records = records_from_csv(str(DATA), limit=500) + valid_mixes(200, seed=9)
        status, body, _ = http("POST", server.url + "/predict", {"instances": records}, timeout=60)
        assert status == 200, body
        served = np.array([p["churn_probability"] for p in body["predictions"]])
        assert np.abs(served - saved_pipeline_proba(home, tag, records)).max() <= TOLERANCE
    finally:
        server.stop()


class _SlowBroken:
    def __reduce__(self):
        return (time.sleep, (0.3,))  # unpickles to None after 0.3 s


def test_a_corrupt_model_costs_one_load_attempt_per_interval_and_probes_stay_fast(tmp_path):
    home = tmp_path / "home"
    tag = train(home)["tag"]
    name, version = tag.split(":")
    # A pickle that takes 0.3 s to load and then fails the smoke test: what a load attempt costs
    # is visible in the probes' latency if a probe ever triggers one.
    (home / "bentoml" / "models" / name / version / "saved_model.pkl").write_bytes(
        pickle.dumps(_SlowBroken())
    )
    server = Server("http", home, tmp_path, RELOAD_INTERVAL_SECONDS="1").start()
    # Read once: parsing the data set in the loop took 140 ms a round on a busy machine, and the
    # count of probes below measured the test's own CSV reading.
    request = {"instances": records_from_csv(str(DATA), limit=1)}
    try:
        started = time.monotonic()
        latencies = []
        while time.monotonic() - started < 10:
            t = time.perf_counter()
            status, body, _ = http("GET", server.url + "/startup")
            latencies.append(time.perf_counter() - t)
            assert status == 503 and tag in body["reason"]
            assert http("POST", server.url + "/predict", request)[0] == 503
        elapsed = time.monotonic() - started + 5  # the server's own start-up is counted too
        attempts = len(re.findall(rf"loading {re.escape(tag)}", server.log_text()))
        workers = 2
        median_ms, max_ms = statistics.median(latencies) * 1000, max(latencies) * 1000
        print(
            f"\ncorrupt model: {len(latencies)} probes in 10 s, median {median_ms:.1f} ms, "
            f"max {max_ms:.1f} ms; {attempts} load attempts"
        )
        assert len(latencies) > 100
        assert attempts <= workers * (elapsed / 1.0 + 1)  # once per interval per worker, not per probe
        assert statistics.median(latencies) < 0.05
    finally:
        server.stop()
