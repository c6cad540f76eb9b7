"""A server's life: started before any model exists, picking up the first model without a
restart, surviving an unwritable prediction log, and following promotions and rollbacks under
load without failing a request. The tests run in order on one pair of servers."""

from __future__ import annotations

import re
import threading
import time

import pytest

from churn.client import grpc_health, predict_grpc, records_from_csv
from tests.support import DATA, Server, http, run_cli, state_env, train, wait_for

pytestmark = pytest.mark.slow

RELOAD = "1"  # seconds between registry checks, to keep the test short (default 5)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    home = tmp_path_factory.mktemp("fresh")
    # The prediction folder is a file: every write fails, as on a read-only or full volume
    # (tests run as root, for whom permission bits do not stop a write).
    (home / "predictions").write_text("in the way\n")
    logs = tmp_path_factory.mktemp("logs")
    servers = {
        "http": Server("http", home, logs, RELOAD_INTERVAL_SECONDS=RELOAD).start(),
        "grpc": Server("grpc", home, logs, RELOAD_INTERVAL_SECONDS=RELOAD).start(),
    }
    yield home, servers, {}
    for server in servers.values():
        server.stop()


RECORDS = records_from_csv(str(DATA), limit=40)


def test_without_a_model_the_server_lives_but_is_not_started(fresh):
    _, servers, _ = fresh
    url = servers["http"].url
    assert http("GET", url + "/health")[:2] == (200, {"status": "alive"})
    status, body, _ = http("GET", url + "/startup")
    assert status == 503 and body["status"] == "starting" and "no current model" in body["reason"]
    status, body, _ = http("GET", url + "/ready")
    assert status == 503 and "no current model" in body["reason"]
    status, body, headers = http("POST", url + "/predict", {"instances": RECORDS[:1]})
    assert status == 503 and body["error"] == "model_unavailable"
    assert http("GET", url + "/model")[0] == 503
    assert grpc_health(servers["grpc"].address) == "NOT_SERVING"
    assert grpc_health(servers["grpc"].address, "") == "NOT_SERVING"
    code, details = predict_grpc(servers["grpc"].address, RECORDS[:1])
    assert code == "UNAVAILABLE" and details["error"] == "model_unavailable"


def test_first_model_is_picked_up_without_restart(fresh):
    home, servers, shared = fresh
    pids = {k: s.proc.pid for k, s in servers.items()}
    shared["v1"] = train(home)["tag"]
    started = time.monotonic()
    wait_for(lambda: http("GET", servers["http"].url + "/startup")[0] == 200, 30, what="startup 200")
    wait_for(lambda: grpc_health(servers["grpc"].address) == "SERVING", 30, what="gRPC SERVING")
    assert time.monotonic() - started < 30
    assert {k: s.proc.pid for k, s in servers.items()} == pids and all(
        s.proc.poll() is None for s in servers.values()
    )
    status, body, _ = http("POST", servers["http"].url + "/predict", {"instances": RECORDS})
    assert status == 200 and body["model"] == shared["v1"]


def _dropped(url: str) -> float:
    text = http("GET", url + "/metrics")[1]
    match = re.search(r"^churn_prediction_log_dropped_total ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_unwritable_prediction_log_never_fails_requests_and_recovers(fresh):
    home, servers, _ = fresh
    url = servers["http"].url
    for _ in range(5):
        assert http("POST", url + "/predict", {"instances": RECORDS[:4]})[0] == 200
    wait_for(lambda: _dropped(url) >= 20, 10, what="dropped records counted")
    # Space comes back: the next writes land.
    (home / "predictions").unlink()
    (home / "predictions").mkdir()
    for _ in range(3):
        assert http("POST", url + "/predict", {"instances": RECORDS[:2]})[0] == 200
    wait_for(
        lambda: sum(len(p.read_text().splitlines()) for p in (home / "predictions").glob("*.jsonl")) >= 6,
        10,
        what="prediction log resumed",
    )


def test_promote_and_rollback_under_load_fail_no_request(fresh):
    home, servers, shared = fresh
    v1 = shared["v1"]
    v2 = train(home, "--seed", "3", "--promote", "never")["tag"]
    seen: list[tuple[float, str, str]] = []  # (time, transport, model)
    failures: list[str] = []
    stop = threading.Event()

    def http_client(i):
        while not stop.is_set():
            status, body, _ = http(
                "POST", servers["http"].url + "/predict", {"instances": RECORDS[i : i + 3]}
            )
            if status == 200:
                seen.append((time.monotonic(), "http", body["model"]))
            else:
                failures.append(f"http {status} {body}")

    def grpc_client():
        while not stop.is_set():
            code, body = predict_grpc(servers["grpc"].address, RECORDS[:3])
            if code == "OK":
                seen.append((time.monotonic(), "grpc", body["model"]))
            else:
                failures.append(f"grpc {code} {body}")

    threads = [threading.Thread(target=http_client, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=grpc_client))
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        env = state_env(home)
        assert run_cli("training.registry", "promote", v2, env=env).returncode == 0
        t_promote = time.monotonic()
        for transport in ("http", "grpc"):
            wait_for(
                lambda tr=transport: any(m == v2 and ts > t_promote for ts, tt, m in seen if tt == tr),
                30,
                what=f"{transport} serving {v2}",
            )
        time.sleep(2)
        assert run_cli("training.registry", "rollback", env=env).returncode == 0
        t_rollback = time.monotonic()
        for transport in ("http", "grpc"):
            wait_for(
                lambda tr=transport: any(m == v1 and ts > t_rollback + 3 for ts, tt, m in seen if tt == tr),
                30,
                what=f"{transport} back on {v1}",
            )
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert len(seen) > 50
    assert {m for _, _, m in seen} == {v1, v2}
