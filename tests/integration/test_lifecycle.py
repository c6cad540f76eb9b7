"""A server's life: started before any model exists, picking up the first model without a restart,
surviving an unwritable prediction log, and following promotions and rollbacks under load within
the reload interval, on every worker, without failing a request. Each test stands alone: the
module's fixtures build whatever state it needs."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict

import psutil
import pytest

from churn.client import grpc_health, predict_grpc, records_from_csv
from tests.support import DATA, LoadClients, Server, http, run_cli, state_env, train, wait_for

pytestmark = pytest.mark.slow

RELOAD = 1.0  # seconds between registry checks, to keep the test short (default 5)
# What a switch may take beyond the interval: reading the registry, loading and verifying the model.
MARGIN = 2.0
RECORDS = records_from_csv(str(DATA), limit=40)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """An HTTP and a gRPC server (two workers each) on a home with no model yet."""
    home = tmp_path_factory.mktemp("lifecycle")
    logs = tmp_path_factory.mktemp("logs")
    started = {
        "http": Server("http", home, logs, workers=2, RELOAD_INTERVAL_SECONDS=str(RELOAD)).start(),
        "grpc": Server("grpc", home, logs, workers=2, RELOAD_INTERVAL_SECONDS=str(RELOAD)).start(),
    }
    yield home, started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def first_model(servers):
    """The first model, trained while the servers run, and served by both."""
    home, started = servers
    tag = train(home)["tag"]
    promoted = _registry_time(home, "promote", tag)
    took = {}

    def serving() -> bool:
        if "http" not in took and http("GET", started["http"].url + "/startup")[0] == 200:
            took["http"] = time.time() - promoted
        if "grpc" not in took and grpc_health(started["grpc"].address) == "SERVING":
            took["grpc"] = time.time() - promoted
        return len(took) == 2

    wait_for(serving, 30, interval=0.1, what="both servers serving the first model")
    return tag, took


def _registry_time(home, action: str, tag: str) -> float:
    """When the registry recorded its last `action` on `tag` (wall clock): the moment it changed."""
    import datetime as dt

    events = json.loads((home / "registry.json").read_text())["history"]
    stamp = next(e["time"] for e in reversed(events) if e["action"] == action and e["tag"] == tag)
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_server_without_a_model_lives_then_takes_the_first_model_without_restart(servers, request):
    home, started = servers
    if (home / "registry.json").exists():
        pytest.fail("run this test first or alone: another test already trained a model here")
    url = started["http"].url
    assert http("GET", url + "/health")[:2] == (200, {"status": "alive"})
    status, body, _ = http("GET", url + "/startup")
    assert status == 503 and body["status"] == "starting" and "no current model" in body["reason"]
    status, body, _ = http("GET", url + "/ready")
    assert status == 503 and "no current model" in body["reason"]
    status, body, headers = http("POST", url + "/predict", {"instances": RECORDS[:1]})
    assert status == 503 and body["error"] == "model_unavailable"
    assert {k.lower(): v for k, v in headers.items()}.get("retry-after") == "5"
    assert http("GET", url + "/model")[0] == 503
    assert grpc_health(started["grpc"].address) == "NOT_SERVING"
    assert grpc_health(started["grpc"].address, "") == "NOT_SERVING"
    code, details = predict_grpc(started["grpc"].address, RECORDS[:1])
    assert code == "UNAVAILABLE" and details["error"] == "model_unavailable"

    pids = {k: s.proc.pid for k, s in started.items()}
    tag, took = request.getfixturevalue("first_model")
    print(f"\nfirst model served after the registry named it (s): {took}")
    assert max(took.values()) <= RELOAD + MARGIN
    assert {k: s.proc.pid for k, s in started.items()} == pids
    assert all(s.proc.poll() is None for s in started.values())
    # Once the bound has passed, every worker serves it (each request may reach either worker).
    time.sleep(max(0.0, _registry_time(home, "promote", tag) + RELOAD + MARGIN - time.time()))
    for _ in range(20):
        status, body, _ = http("POST", url + "/predict", {"instances": RECORDS})
        assert status == 200 and body["model"] == tag
        assert predict_grpc(started["grpc"].address, RECORDS[:2])[1]["model"] == tag


def _dropped(url: str) -> float:
    text = http("GET", url + "/metrics")[1]
    match = re.search(r"^churn_prediction_log_dropped_total ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_unwritable_prediction_log_never_fails_requests_and_recovers(tmp_path):
    home = tmp_path / "home"
    train(home)
    # The prediction folder is a file: every write fails, as on a read-only or full volume
    # (tests run as root, for whom permission bits do not stop a write).
    (home / "predictions").rmdir()  # made, empty, by the training run
    (home / "predictions").write_text("in the way\n")
    server = Server("http", home, tmp_path).start()
    try:
        url = server.url
        for _ in range(5):
            assert http("POST", url + "/predict", {"instances": RECORDS[:4]})[0] == 200
        wait_for(lambda: _dropped(url) >= 20, 10, what="dropped records counted")
        # ... and said at start, naming the folder and the user (served all the same)
        assert f"not a writable folder: {home / 'predictions'} for uid" in server.log_path.read_text()
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
    finally:
        server.stop()


def _worker_pids(server: Server) -> set[int]:
    return {p.pid for p in psutil.Process(server.proc.pid).children(recursive=True)}


def _log_by_worker(home, pids: set[int]) -> dict[int, list[tuple[float, str]]]:
    """(wall time, model) of every prediction-log line, per worker process."""
    import datetime as dt

    out: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for path in (home / "predictions").glob("*.jsonl"):
        pid = int(path.name.split("-")[-3])
        if pid not in pids:
            continue
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():
            entry = json.loads(line)
            when = dt.datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
            out[pid].append((when, entry["model"]))
    return out


def test_promote_and_rollback_reach_every_worker_within_the_interval_under_load(servers, first_model):
    home, started = servers
    v1, _ = first_model
    v2 = train(home, "--seed", "3", "--promote", "never")["tag"]
    seen: list[tuple[float, str, str]] = []  # (wall clock at send, transport, model)
    failures: list[str] = []

    def http_client(i: int, n: int):
        sent = time.time()
        status, body, _ = http("POST", started["http"].url + "/predict", {"instances": RECORDS[i : i + 3]})
        if status == 200:
            seen.append((sent, "http", body["model"]))
        else:
            failures.append(f"http {status} {body}")
        return status

    def grpc_client(i: int, n: int):
        sent = time.time()
        code, body = predict_grpc(started["grpc"].address, RECORDS[:3])
        if code == "OK":
            seen.append((sent, "grpc", body["model"]))
        else:
            failures.append(f"grpc {code} {body}")
        return code

    # Every exception counts as a failure; each client must live to the end and send its share.
    loads = [LoadClients(4, http_client).start(), LoadClients(2, grpc_client).start()]
    switches: dict[str, float] = {}  # action -> when the registry changed (wall clock)
    took: dict[str, dict[str, float]] = {}  # action -> transport -> first new answer after the change
    try:
        time.sleep(2)
        env = state_env(home)
        for action, args, new, old in (("promote", (v2,), v2, v1), ("rollback", (), v1, v2)):
            assert run_cli("training.registry", action, *args, env=env).returncode == 0
            changed = switches[action] = _registry_time(home, action, new)  # names `new` from here on
            time.sleep(max(0.0, changed + RELOAD + MARGIN + 2 - time.time()))
            late = [(t, tr, m) for t, tr, m in seen if t > changed + RELOAD + MARGIN]
            assert {tr for _, tr, _ in late} == {"http", "grpc"}
            assert [x for x in late if x[2] != new] == [], f"{old} answered after the switch"
            took[action] = {
                tr: round(min(t for t, x, m in seen if x == tr and t > changed and m == new) - changed, 2)
                for tr in ("http", "grpc")
            }
    finally:
        for load in loads:
            load.stop(30)
    print(f"\nfirst answer from the new version after the registry changed (s): {took}")
    assert failures == [] and all(load.failures == [] for load in loads), loads[0].errors + loads[1].errors
    for load in loads:
        load.check()
    assert {m for *_, m in seen} == {v1, v2}
    # Every worker of both servers served, and none with the old version once the bound had passed.
    for kind, server in started.items():
        by_worker = _log_by_worker(home, _worker_pids(server))
        assert len(by_worker) == 2, f"{kind}: expected both workers in the prediction log"
        for pid, lines in by_worker.items():
            for action, new in (("promote", v2), ("rollback", v1)):
                start = switches[action] + RELOAD + MARGIN
                end = switches["rollback"] if action == "promote" else float("inf")
                window = [m for when, m in lines if start < when < end]
                assert window and set(window) == {new}, f"{kind} worker {pid} after {action}: {set(window)}"
