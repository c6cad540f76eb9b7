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


# `make soak` sets CHURN_LOAD_SECONDS=600; `make test` runs the same test for 45 s.
LOAD_SECONDS = float(os.environ.get("CHURN_LOAD_SECONDS", "45"))
# Measured (README, reliability table): under this load the server tree's RSS climbs for about
# 3 minutes (allocator arenas, caches) and then stays flat. A run of 5 minutes or more must show
# the plateau: at most PLATEAU_MB of growth over its last 5 minutes. A shorter run sees only the
# climb, which must stay under RAMP_MB.
PLATEAU_MB = 25.0
RAMP_MB = 150.0


@pytest.mark.timeout(LOAD_SECONDS + 300)
def test_sustained_load_32_clients_no_errors_and_stable_memory(server):
    _load(server.url, 8, 3)  # warm-up
    step = min(60.0, LOAD_SECONDS / 5)
    curve: list[tuple[float, float]] = [(0.0, _server_rss(server) / 1e6)]
    done = threading.Event()

    def sample():
        started = time.monotonic()
        while not done.wait(step):
            curve.append((time.monotonic() - started, _server_rss(server) / 1e6))
            print(f"\n  RSS at {curve[-1][0]:.0f} s: {curve[-1][1]:.0f} MB", flush=True)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        codes, errors = _load(server.url, 32, LOAD_SECONDS)
    finally:
        done.set()
        sampler.join()
    curve.append((LOAD_SECONDS, _server_rss(server) / 1e6))
    growth = curve[-1][1] - curve[0][1]
    last5 = [mb for t, mb in curve if t >= LOAD_SECONDS - 300]
    print(
        f"\nload: 32 clients x {LOAD_SECONDS:.0f} s: {len(codes)} requests, {len(errors)} errors; "
        f"RSS (s, MB): {[(round(t), round(mb)) for t, mb in curve]}; growth {growth:+.1f} MB in all, "
        f"{last5[-1] - last5[0]:+.1f} MB over the last {min(LOAD_SECONDS, 300):.0f} s"
    )
    assert errors == [] and len(codes) > 20 * LOAD_SECONDS
    if LOAD_SECONDS >= 300:
        assert last5[-1] - last5[0] < PLATEAU_MB
    else:
        assert growth < RAMP_MB


def _workers(srv: Server, role: str) -> list[int]:
    """PIDs of the server's BentoML worker processes of one role: `http_api_server` or `runner`."""
    pids = []
    for p in psutil.Process(srv.proc.pid).children(recursive=True):
        try:
            if f"bentoml_cli.worker.{role}" in p.cmdline():
                pids.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


def _closed_loop(srv: Server, clients: int, results: list, stop: threading.Event, timeout: float = 30):
    """`clients` threads sending one record at a time; (sent, took, status or error name) each."""

    def client(i):
        while not stop.is_set():
            t = time.monotonic()
            try:
                status = http("POST", srv.url + "/predict", {"instances": [RECORDS[i]]}, timeout=timeout)[0]
            except OSError as exc:  # a dropped connection, or a hang until the client's timeout
                status = type(exc).__name__
            results.append((t, time.monotonic() - t, status))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    return threads


def test_killed_api_worker_costs_at_most_its_requests_in_flight(home, tmp_path):
    """The shipped configuration: the model runs inside each of the two API workers."""
    srv = Server("http", home, tmp_path).start()
    try:
        wait_for(lambda: http("GET", srv.url + "/ready")[0] == 200, 60, what="ready")
        before = _workers(srv, "http_api_server")
        assert len(before) == 2
        results: list[tuple[float, float, object]] = []
        stop = threading.Event()
        threads = _closed_loop(srv, 8, results, stop)
        time.sleep(3)
        killed_at = time.monotonic()
        os.kill(before[0], signal.SIGKILL)
        replaced = wait_for(
            lambda: len(set(_workers(srv, "http_api_server")) - set(before)) == 1 and time.monotonic(),
            30,
            interval=0.1,
            what="a new API worker",
        )
        new_pid = (set(_workers(srv, "http_api_server")) - set(before)).pop()
        wait_for(
            lambda: any(f"-{new_pid}-" in p.name for p in (home / "predictions").glob("*.jsonl")),
            30,
            interval=0.2,
            what="the new worker serving",
        )
        serving_again = time.monotonic()
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join(40)
        after = [(t, took, s) for t, took, s in results if t + took >= killed_at]
        failed = [s for _, _, s in after if s != 200]
        ok_times = sorted(t + took for t, took, s in results if s == 200 and t + took >= killed_at - 1)
        gap = max(b - a for a, b in zip(ok_times, ok_times[1:], strict=False))
        print(
            f"\nAPI worker SIGKILL under load (8 clients): {len(after)} requests after the kill, "
            f"{len(failed)} failed ({sorted(set(map(str, failed)))}); longest pause between answers "
            f"{gap:.2f} s; replaced in {replaced - killed_at:.1f} s, serving again in "
            f"{serving_again - killed_at:.1f} s"
        )
        # Only requests the killed worker held can fail, and only as a dropped connection (clients
        # retry): never a 5xx, never a hang. The other worker answers throughout.
        assert len(failed) <= 8 and all(s in ("RemoteDisconnected", "ConnectionResetError") for s in failed)
        assert gap < 1.0
        assert serving_again - killed_at < 30
        assert srv.proc.poll() is None
    finally:
        srv.stop()


def test_killed_runners_answer_503_within_the_bound_and_recover(home, tmp_path):
    """Remote runner processes (RUNNER_EMBEDDED=false): requests caught while every runner is down
    get a clean 503 within RUNNER_TIMEOUT_SECONDS (+1 s), never a hang or a 500."""
    from service import RUNNER_TIMEOUT_SECONDS

    srv = Server("http", home, tmp_path, RUNNER_EMBEDDED="false").start()
    try:
        wait_for(lambda: http("GET", srv.url + "/ready")[0] == 200, 60, what="ready")
        runners = _workers(srv, "runner")
        assert runners, "no runner process found"
        results: list[tuple[float, float, object]] = []
        ready: list[tuple[float, int]] = []
        stop = threading.Event()
        threads = _closed_loop(srv, 8, results, stop)

        def watch_ready():
            while not stop.is_set():
                ready.append((time.monotonic(), http("GET", srv.url + "/ready", timeout=10)[0]))
                time.sleep(0.2)

        watcher = threading.Thread(target=watch_ready)
        watcher.start()
        time.sleep(3)
        killed_at = time.monotonic()
        for pid in runners:
            os.kill(pid, signal.SIGKILL)
        recovered = wait_for(
            lambda: any(t > killed_at and s == 200 for t, _, s in results[-20:]) and time.monotonic(),
            60,
            what="predictions succeed again",
        )
        time.sleep(3)
        stop.set()
        for t in [*threads, watcher]:
            t.join(40)
        after = [(t, took, s) for t, took, s in results if t + took >= killed_at]
        failed = [(took, s) for _, took, s in after if s != 200]
        slowest = max((took for took, _ in failed), default=0.0)
        print(
            f"\nrunner SIGKILL under load: {len(after)} requests after the kill, {len(failed)} failed "
            f"(codes {sorted({str(s) for _, s in failed})}, slowest {slowest:.1f} s), "
            f"recovered in {recovered - killed_at:.1f} s"
        )
        assert failed, "killing every runner must interrupt some requests"
        assert {s for _, s in failed} == {503}, "failures must be clean 503s, never hangs or 500s"
        assert slowest <= RUNNER_TIMEOUT_SECONDS + 1
        assert any(s == 503 for t, s in ready if t > killed_at), "readiness must report the gap"
        assert all(s == 200 for _, _, s in results[-16:])
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
    assert outcomes == ["200"] * 4
    assert srv.proc.returncode == 0  # a clean exit, not a crash


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
    # the sentinel really reached the serving processes (read from the kernel, not from the test)
    environs = [p.environ() for p in psutil.Process(server.proc.pid).children(recursive=True)]
    assert environs and all(env.get("MONITORING_API_TOKEN") == SENTINEL for env in environs)
