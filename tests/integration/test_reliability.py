"""Reliability: garbage in, load, killed runners, SIGTERM, corrupt models, secrets. Real servers.

Figures (requests sent, failed, recovery time, memory growth) are printed with `-s` and quoted in
the README's reliability table.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from churn.client import call_grpc, grpc_stub, predict_grpc, records_from_csv
from churn.schema import EXAMPLE_RECORD
from tests.support import DATA, Server, http, run_cli, state_env, train, wait_for

pytestmark = pytest.mark.slow

RECORDS = records_from_csv(str(DATA), limit=500)
SENTINEL = f"sentinel-{uuid.uuid4().hex}"  # made at run time: it cannot be in git or the image


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("reliability")
    train(home)
    return home


@pytest.fixture(scope="module")
def server(home, tmp_path_factory):
    srv = Server(
        "http",
        home,
        tmp_path_factory.mktemp("logs"),
        MONITORING_API_TOKEN=SENTINEL,
        MONITORING_WEBHOOK_URL=f"https://hooks.example.invalid/{SENTINEL}",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def grpc_server(home, tmp_path_factory):
    srv = Server("grpc", home, tmp_path_factory.mktemp("logs")).start()
    yield srv
    srv.stop()


def _still_serves(url: str) -> None:
    status, body, _ = http("POST", url + "/predict", {"instances": RECORDS[:2]})
    assert status == 200, body


HOSTILE = [
    ("deeply nested", ("[" * 100_000 + "]" * 100_000).encode(), "application/json", {400}),
    ("10 MB of garbage", b"x" * (10 * 1024 * 1024), "application/json", {400}),
    (
        "10 MB valid but too many records",
        json.dumps({"instances": [EXAMPLE_RECORD] * 20_000}).encode(),
        "application/json",
        {400},
    ),
    ("NaN", b'{"instances": [{"tenure": NaN}]}', "application/json", {400}),
    (
        "Infinity",
        json.dumps({"instances": [dict(EXAMPLE_RECORD, TotalCharges=1.0)]})
        .replace("1.0", "Infinity")
        .encode(),
        "application/json",
        {400},
    ),
    (
        "huge integer",
        json.dumps({"instances": [dict(EXAMPLE_RECORD, tenure=10**400)]}).encode(),
        "application/json",
        {400},
    ),
    (
        "huge float",
        json.dumps({"instances": [dict(EXAMPLE_RECORD, MonthlyCharges=1e308)]}).encode(),
        "application/json",
        {400},
    ),
    (
        "unicode category",
        json.dumps({"instances": [dict(EXAMPLE_RECORD, Contract="Month-to-month\u202e\u0000")]}).encode(),
        "application/json",
        {400},
    ),
    ("invalid utf-8", b'{"instances": ["\xff\xfe"]}', "application/json", {400}),
    (
        "duplicate keys (the last wins, as in JSON parsers generally)",
        json.dumps({"instances": [EXAMPLE_RECORD]})[:-3].encode() + b', "tenure": 3}]}',
        "application/json",
        {200},
    ),
    ("form content type", b"instances=1", "application/x-www-form-urlencoded", {415}),
    ("no content type", json.dumps({"instances": [EXAMPLE_RECORD]}).encode(), "", {415}),
    ("empty body", b"", "application/json", {400}),
]


@pytest.mark.parametrize(("name", "raw", "ctype", "expected"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_http_bodies_get_clean_answers(server, name, raw, ctype, expected):
    status, body, _ = http("POST", server.url + "/predict", raw=raw, content_type=ctype, timeout=60)
    assert status in expected, (status, str(body)[:300])
    if status >= 400:
        assert isinstance(body, dict) and body["error"] and body["message"]
    _still_serves(server.url)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("just a string", "INVALID_ARGUMENT"),
        (None, "INVALID_ARGUMENT"),
        ({"instances": [[1, 2, 3]]}, "INVALID_ARGUMENT"),
        ({"instances": [dict(EXAMPLE_RECORD, tenure=float("nan"))]}, "INVALID_ARGUMENT"),
        ({"instances": [EXAMPLE_RECORD] * 10_001}, "INVALID_ARGUMENT"),
    ],
)
def test_hostile_grpc_messages_get_clean_status_codes(grpc_server, body, code):
    assert call_grpc(grpc_server.address, body)[0] == code
    assert predict_grpc(grpc_server.address, RECORDS[:2])[0] == "OK"


def test_oversized_grpc_message_is_refused_cleanly(grpc_server):
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb
    from google.protobuf import struct_pb2

    channel, stub = grpc_stub(grpc_server.address)
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.Call(
                pb.Request(api_name="predict", json=struct_pb2.Value(string_value="x" * (40 << 20))),
                timeout=60,
            )
        assert info.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
    finally:
        channel.close()
    assert predict_grpc(grpc_server.address, RECORDS[:2])[0] == "OK"


def _server_rss(srv: Server) -> int:
    proc = psutil.Process(srv.proc.pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _load(url: str, clients: int, seconds: float, timeout: float = 10):
    """Closed-loop load: `clients` threads, one record per request, for `seconds`."""
    codes: list[int] = []
    errors: list[str] = []
    stop = time.monotonic() + seconds

    def client(i):
        n = 0
        while time.monotonic() < stop:
            try:
                status, body, _ = http(
                    "POST", url + "/predict", {"instances": [RECORDS[(i * 31 + n) % 500]]}, timeout=timeout
                )
                codes.append(status)
                if status != 200:
                    errors.append(f"{status} {str(body)[:120]}")
            except OSError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            n += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return codes, errors


def test_sustained_load_32_clients_no_errors_and_stable_memory(server):
    _load(server.url, 8, 3)  # warm-up
    before = _server_rss(server)
    codes, errors = _load(server.url, 32, 45)
    after = _server_rss(server)
    growth_mb = (after - before) / 1e6
    print(
        f"\nload: 32 clients x 45 s: {len(codes)} requests, {len(errors)} errors; "
        f"RSS {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB ({growth_mb:+.1f} MB)"
    )
    assert errors == [] and len(codes) > 500
    assert growth_mb < 150


def _runner_pids(srv: Server) -> list[int]:
    pids = []
    for p in psutil.Process(srv.proc.pid).children(recursive=True):
        try:
            if "runner" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def test_killed_runner_recovers_by_itself_with_clean_503s(home, tmp_path):
    # Remote runner processes (RUNNER_EMBEDDED=false): the mode with a runner process to kill.
    srv = Server("http", home, tmp_path, RUNNER_EMBEDDED="false").start()
    try:
        pids = _runner_pids(srv)
        assert pids, "no runner process found"
        results: list[tuple[float, int]] = []
        ready: list[tuple[float, int]] = []
        stop = threading.Event()

        def client(i):
            while not stop.is_set():
                t = time.monotonic()
                try:
                    # 30 s: the bound on a request's wait; circus restarts the runners well within it
                    status = http("POST", srv.url + "/predict", {"instances": [RECORDS[i]]}, timeout=30)[0]
                except OSError:
                    status = -1  # a hang (client timeout) or a dropped connection: what must not happen
                results.append((t, status))

        def watch_ready():
            while not stop.is_set():
                ready.append((time.monotonic(), http("GET", srv.url + "/ready", timeout=10)[0]))
                time.sleep(0.2)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)] + [
            threading.Thread(target=watch_ready)
        ]
        for t in threads:
            t.start()
        time.sleep(3)
        killed_at = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        recovered = wait_for(
            lambda: any(t > killed_at and s == 200 for t, s in results[-20:]) and time.monotonic(),
            60,
            what="predictions succeed again",
        )
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(30)
        after = [(t, s) for t, s in results if t >= killed_at]
        failed = [s for _, s in after if s != 200]
        print(
            f"\nrunner SIGKILL under load: {len(after)} requests after the kill, {len(failed)} failed "
            f"(codes {sorted(set(failed))}), recovered in {recovered - killed_at:.1f} s"
        )
        assert set(failed) <= {503}, "failures must be clean 503s, never hangs or 500s"
        assert any(s == 503 for _, s in ready if s != 200) or not failed  # readiness saw the gap
        assert all(s == 200 for _, s in results[-16:])
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_sigterm_lets_in_flight_requests_finish(home, tmp_path):
    srv = Server("http", home, tmp_path).start()
    big = {"instances": RECORDS * 20}  # 10,000 records: long enough to be in flight
    outcomes: list[str] = []

    def one():
        try:
            status = http("POST", srv.url + "/predict", big, timeout=60)[0]
            outcomes.append(str(status))
        except OSError as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the requests are sent
    os.kill(srv.proc.pid, signal.SIGTERM)
    for t in threads:
        t.join(60)
    srv.proc.wait(60)
    print(f"\nSIGTERM with 4 x 10,000-record requests in flight: {outcomes}")
    assert outcomes.count("200") == 4
    assert srv.proc.returncode is not None


def test_corrupt_model_files_are_reported_not_served_and_rollback_restores(tmp_path):
    home = tmp_path / "home"
    v1 = train(home)["tag"]
    v2 = train(home, "--seed", "3", "--promote", "always")["tag"]
    # Two API workers, set explicitly: each must hold v2 before the files break (a worker that
    # starts later is a new server in all but name). Each logs "serving <tag>" once it holds it.
    running = Server(
        "http", home, tmp_path, RELOAD_INTERVAL_SECONDS="1", BENTOML_CONFIG_OPTIONS="api_server.workers=2"
    ).start()
    try:
        wait_for(lambda: running.log_text().count(f"serving {v2}") >= 2, 60, what="v2 held by both workers")
        name, version = v2.split(":")
        model_file = home / "bentoml" / "models" / name / version / "saved_model.pkl"
        model_file.write_bytes(b"this is not a pickle")
        fresh = Server("http", home, tmp_path, RELOAD_INTERVAL_SECONDS="1").start()
        try:
            status, body, _ = http("GET", fresh.url + "/startup")
            assert status == 503 and v2 in body["reason"] and "unreadable" in body["reason"]
            assert http("POST", fresh.url + "/predict", {"instances": RECORDS[:1]})[0] == 503
            # the server that already held v2 keeps serving it
            status, body, _ = http("POST", running.url + "/predict", {"instances": RECORDS[:1]})
            assert status == 200 and body["model"] == v2
            assert run_cli("training.registry", "rollback", env=state_env(home)).returncode == 0
            wait_for(
                lambda: http("GET", fresh.url + "/startup")[0] == 200, 30, what="rollback restores service"
            )
            status, body, _ = http("POST", fresh.url + "/predict", {"instances": RECORDS[:1]})
            assert status == 200 and body["model"] == v1
        finally:
            fresh.stop()
    finally:
        running.stop()


def test_secret_values_never_reach_logs_metrics_or_error_bodies(server, home):
    texts = []
    for route in ("/metrics", "/model", "/docs.json", "/startup", "/nope"):
        texts.append(str(http("GET", server.url + route)[1]))
    for body in ({"instances": [{"MONITORING_API_TOKEN": 1}]}, {"x": 1}, "garbage"):
        texts.append(str(http("POST", server.url + "/predict", body)[1]))
    texts.append(server.log_text())
    for path in (home / "logs").rglob("*"):
        texts.append(path.read_text(errors="replace"))
    assert sum(map(len, texts)) > 10_000
    assert all(SENTINEL not in t for t in texts)
    # the sentinel really was in the server's environment
    assert SENTINEL in server.env["MONITORING_API_TOKEN"]
