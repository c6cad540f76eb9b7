"""Reliability: garbage in, load, killed runners, SIGTERM, corrupt models, secrets. Real servers.

Figures (requests sent, failed, recovery time, memory growth) are printed with `-s` and quoted in
the reliability table of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import uuid

import psutil
import pytest

from churn.client import call_grpc, grpc_stub, predict_grpc, records_from_csv
from churn.schema import EXAMPLE_RECORD
from tests.support import DATA, LoadClients, Server, http, run_cli, state_env, train, wait_for

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
    ("instances not a list", b'{"instances": 5}', "application/json", {400}),
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


def _load(url: str, clients: int, seconds: float, timeout: float = 10) -> LoadClients:
    """Closed-loop load: `clients` threads, one record per request, for `seconds`."""

    def call(i: int, n: int) -> int:
        return http("POST", url + "/predict", {"instances": [RECORDS[(i * 31 + n) % 500]]}, timeout=timeout)[
            0
        ]

    return LoadClients(clients, call).run(seconds)


# `make soak` sets CHURN_LOAD_SECONDS=600; `make test` runs the same test for 45 s.
LOAD_SECONDS = float(os.environ.get("CHURN_LOAD_SECONDS", "45"))
# Measured (docs/reliability.md): under this load the server tree's RSS climbs for 3 to 6
# minutes (allocator arenas, caches; longer when the machine is busy) and then stays flat. The
# docs/reliability.md's bound, held by this test: at most PLATEAU_MB of growth over the second half of the run
# (over the last 5 minutes of a run of 10 minutes or more).
PLATEAU_MB = 25.0


def _late_growth(curve: list[tuple[float, float]], seconds: float) -> tuple[float, float]:
    """RSS growth (MB) over the run's bounded window (its second half, at most its last 5 minutes),
    and the window's length in seconds."""
    window = min(300.0, seconds / 2)
    late = [mb for t, mb in curve if t >= seconds - window]
    return late[-1] - late[0], window


def test_the_memory_bound_is_on_the_second_half():
    """A server that grows 30 MB over the second half of the 45-s run fails (the old bound, 150 MB
    over the whole run, let it pass); one that climbs early and then stays flat passes."""
    leaking = [(t, 600.0 + (30.0 * (t - 22.5) / 22.5 if t > 22.5 else 0.0)) for t in range(0, 46, 4)]
    settling = [(t, 600.0 + min(t, 15) * 6.0) for t in range(0, 46, 4)]
    assert _late_growth(leaking, 45)[0] >= PLATEAU_MB
    assert _late_growth(settling, 45)[0] < PLATEAU_MB


@pytest.mark.timeout(LOAD_SECONDS + 300)
def test_sustained_load_32_clients_no_errors_and_stable_memory(server):
    _load(server.url, 8, 3)  # warm-up
    step = min(60.0, LOAD_SECONDS / 10)
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
        load = _load(server.url, 32, LOAD_SECONDS)
    finally:
        done.set()
        sampler.join()
    curve.append((LOAD_SECONDS, _server_rss(server) / 1e6))
    late, window = _late_growth(curve, LOAD_SECONDS)
    print(
        f"\nload: 32 clients x {LOAD_SECONDS:.0f} s: {len(load.results)} requests "
        f"({len(load.results) / LOAD_SECONDS:.0f}/s), {len(load.failures)} errors "
        f"{sorted(set(map(str, load.failures)))}; RSS (s, MB): "
        f"{[(round(t), round(mb)) for t, mb in curve]}; {curve[-1][1] - curve[0][1]:+.1f} MB in all, "
        f"{late:+.1f} MB over the last {window:.0f} s"
    )
    assert load.failures == [] and len(load.results) > 20 * LOAD_SECONDS, load.errors[:5]
    load.check()
    assert late < PLATEAU_MB


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


def _closed_loop(srv: Server, clients: int, timeout: float = 30) -> LoadClients:
    """`clients` threads sending one record at a time; `.results` holds (sent, took, status or
    the error's name) of each request: a dropped connection, or a hang until the client's timeout."""

    def call(i: int, n: int) -> int:
        return http("POST", srv.url + "/predict", {"instances": [RECORDS[i]]}, timeout=timeout)[0]

    return LoadClients(clients, call).start()


# docs/reliability.md's bound: a killed API worker is replaced and serves again within this (measured 6.9 s).
WORKER_BACK_SECONDS = 15.0


def test_killed_api_worker_costs_at_most_its_requests_in_flight(home, tmp_path):
    """The shipped configuration: the model runs inside each of the two API workers."""
    srv = Server("http", home, tmp_path, workers=2).start()
    try:
        wait_for(lambda: http("GET", srv.url + "/ready")[0] == 200, 60, what="ready")
        before = _workers(srv, "http_api_server")
        assert len(before) == 2
        load = _closed_loop(srv, 8)
        results = load.results
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
        load.stop(40)
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
        assert serving_again - killed_at < WORKER_BACK_SECONDS
        assert srv.proc.poll() is None
        load.check()
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
        load = _closed_loop(srv, 8)
        results = load.results
        ready: list[tuple[float, int]] = []
        stop = threading.Event()

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
        load.stop(40)
        watcher.join(40)
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
        load.check()
    finally:
        srv.stop()


def _in_progress(srv: Server) -> float:
    """Requests to /predict the server is handling now (BentoML's gauge, summed over workers)."""
    text = http("GET", srv.url + "/metrics", timeout=5)[1]
    return sum(
        float(m.group(1))
        for m in re.finditer(
            r'^bentoml_api_server_request_in_progress\{[^}]*endpoint="/predict"[^}]*\} (\S+)$', text, re.M
        )
    )


def test_sigterm_lets_in_flight_requests_finish(home, tmp_path):
    """SIGTERM while the server itself reports the requests in progress: each is answered 200
    after the signal, then the server exits 0."""
    srv = Server("http", home, tmp_path, workers=2).start()
    try:
        wait_for(lambda: http("GET", srv.url + "/ready")[0] == 200, 60, what="ready")
        n = 6
        big = json.dumps({"instances": RECORDS * 20}).encode()  # 10,000 records: long enough to be in flight
        answers: list[tuple[float, object]] = []  # (answered at, status or error)

        def one():
            try:
                status = http("POST", srv.url + "/predict", raw=big, timeout=60)[0]
            except Exception as exc:  # noqa: BLE001 - a dropped request is what this test looks for
                status = type(exc).__name__
            answers.append((time.monotonic(), status))

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        wait_for(
            lambda: _in_progress(srv) >= n or answers, 30, interval=0.01, what="the requests in progress"
        )
        in_flight = _in_progress(srv)
        signalled = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)
        for t in threads:
            t.join(60)
        srv.proc.wait(60)
        after = sorted(round(at - signalled, 2) for at, _ in answers)
        print(
            f"\nSIGTERM with {in_flight:.0f} x 10,000-record requests in progress: "
            f"{sorted(str(s) for _, s in answers)}, answered {after} s after the signal; "
            f"exit code {srv.proc.returncode}"
        )
        assert in_flight >= n, "the signal must come while the server handles every request"
        assert [s for _, s in answers] == [200] * n
        assert all(at > signalled for at, _ in answers), "answered before the signal: not in flight"
        assert srv.proc.returncode == 0  # a clean exit, not a crash
    finally:
        srv.stop()  # nothing left running if the test fails before its SIGTERM


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

            # Each worker reloads on its own 1-s interval: the one that answered /startup may be a
            # second ahead of the other (seen once: a 503 right after a 200). Six answers in a row
            # from v1, new connections each, reach both.
            def every_worker_serves_v1() -> bool:
                answers = [http("POST", fresh.url + "/predict", {"instances": RECORDS[:1]}) for _ in range(6)]
                return all(status == 200 and body["model"] == v1 for status, body, _ in answers)

            wait_for(every_worker_serves_v1, 10, what="every worker serving v1 after the rollback")
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
