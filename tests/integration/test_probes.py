"""The probes under load: a busy pod must stay ready and alive. 48 clients send 5,000-record
requests for 20 s while a separate process polls the probes as the kubelet does (every 0.5 s, with
the manifests' 5-s timeout); every poll must answer 200 (or SERVING) within 1 s. Were readiness to
queue behind predictions, every busy pod would leave the Service together: an outage."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from churn.client import records_from_csv
from tests.support import DATA, ROOT, LoadClients, Server, http, train, wait_for

pytestmark = pytest.mark.slow

CLIENTS = 48
RECORDS_PER_REQUEST = 5_000
SECONDS = 20.0
PERIOD, PROBE_TIMEOUT = 0.5, 5.0  # the manifests' periodSeconds is larger; timeoutSeconds is 5
BOUND = 1.0

# The kubelet is another process: so is the poller, so that the load's client threads do not slow
# the measurement. It prints one JSON line per poll: probe, answer (or error), seconds taken.
POLLER = """
import json, sys, threading, time
from churn.client import grpc_health
from tests.support import http
target, probes = sys.argv[1], sys.argv[5:]
seconds, period, timeout = map(float, sys.argv[2:5])
end = time.monotonic() + seconds
lock = threading.Lock()

def poll(probe):  # one prober per probe, as the kubelet has: the next poll at the next period
    while time.monotonic() < end:
        tick = t = time.monotonic()
        try:
            if probe == "grpc":
                answer = grpc_health(target, timeout=timeout)
            else:
                answer = http("GET", target + probe, timeout=timeout)[0]
        except Exception as exc:
            answer = type(exc).__name__
        line = json.dumps([probe, answer, time.monotonic() - t]) + "\\n"
        with lock:  # print() writes the line and its newline apart: two probers' lines could merge
            sys.stdout.write(line)
            sys.stdout.flush()
        time.sleep(max(0.0, period - (time.monotonic() - tick)))

threads = [threading.Thread(target=poll, args=(p,)) for p in probes]
print("started", flush=True)
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("probes")
    train(home)
    return home


def _body() -> bytes:
    records = records_from_csv(str(DATA))
    batch = [records[i % len(records)] for i in range(RECORDS_PER_REQUEST)]
    return json.dumps({"instances": batch}).encode()


def _poll_under_load(target: str, probes: list[str], load: LoadClients) -> list[tuple[str, object, float]]:
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER, target, str(SECONDS), str(PERIOD), str(PROBE_TIMEOUT), *probes],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert poller.stdout.readline().strip() == "started"
    load.start()
    out, _ = poller.communicate(timeout=SECONDS + 60)
    load.stop(120)
    return [tuple(json.loads(line)) for line in out.splitlines() if line]


def _report(polls, load: LoadClients, what: str) -> None:
    slowest = {p: max(took for q, _, took in polls if q == p) for p in {p for p, _, _ in polls}}
    answers = sorted({str(a) for _, a, _ in polls})
    print(
        f"\n{what}: {len(load.results)} requests of {RECORDS_PER_REQUEST:,} records from {CLIENTS} "
        f"clients in {SECONDS:.0f} s ({len(load.failures)} failed: {sorted(set(map(str, load.failures)))}); "
        f"{len(polls)} probe polls, answers {answers}, slowest (s) {json.dumps(slowest)}"
    )


def test_http_probes_answer_within_a_second_under_load(home, tmp_path):
    srv = Server("http", home, tmp_path, workers=2).start()
    try:
        wait_for(lambda: http("GET", srv.url + "/ready")[0] == 200, 60, what="ready")
        body = _body()
        load = LoadClients(CLIENTS, lambda i, n: http("POST", srv.url + "/predict", raw=body, timeout=120)[0])
        polls = _poll_under_load(srv.url, ["/ready", "/health"], load)
        _report(polls, load, "HTTP")
        late = [(p, a, round(took, 2)) for p, a, took in polls if a != 200 or took > BOUND]
        assert late == [], f"{len(late)} of {len(polls)} polls failed or took over {BOUND} s: {late[:10]}"
        assert len(polls) >= 2 * (SECONDS / PERIOD) * 0.8  # the poller really polled throughout
        load.check()
        assert load.failures == [], sorted(set(map(str, load.failures)))
    finally:
        srv.stop()


def test_grpc_health_answers_within_a_second_under_load(home, tmp_path):
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb
    from bentoml.grpc.v1 import service_pb2_grpc

    from churn.client import grpc_health

    srv = Server("grpc", home, tmp_path, workers=2).start()
    request = pb.Request(api_name="predict", serialized_bytes=_body())
    # A connection per client (grpc shares one between channels unless told not to), so that both
    # workers are busy.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 64 << 20)]
    channels = [grpc.insecure_channel(srv.address, options=options) for _ in range(CLIENTS)]
    stubs = [(c, service_pb2_grpc.BentoServiceStub(c)) for c in channels]

    def call(i: int, n: int) -> str:
        try:
            stubs[i][1].Call(request, timeout=120)
            return "OK"
        except grpc.RpcError as exc:
            return exc.code().name

    try:
        wait_for(lambda: grpc_health(srv.address) == "SERVING", 60, what="SERVING")
        load = LoadClients(CLIENTS, call)
        polls = _poll_under_load(srv.address, ["grpc"], load)
        _report(polls, load, "gRPC")
        late = [(p, a, round(took, 2)) for p, a, took in polls if a != "SERVING" or took > BOUND]
        assert late == [], f"{len(late)} of {len(polls)} polls failed or took over {BOUND} s: {late[:10]}"
        assert len(polls) >= (SECONDS / PERIOD) * 0.8
        load.check()
        assert load.failures == [], sorted(set(map(str, load.failures)))
    finally:
        for channel, _ in stubs:
            channel.close()
        srv.stop()
