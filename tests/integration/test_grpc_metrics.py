"""The gRPC server's request metrics tell the truth: refused requests are counted by their real
status, a slow call is observed with its real duration, and the alert rules fire on a real
server's series scraped by a real Prometheus. (BentoML 1.4.40's own gRPC interceptor records the
status and the duration before the handler runs: every call counted as 200, in about 0 s.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from churn.client import call_grpc, records_from_csv
from churn.schema import EXAMPLE_RECORD
from tests.integration.test_prometheus import AlertWatch, _reachable
from tests.support import DATA, ROOT, LoadClients, Server, free_port, http, train, wait_for

pytestmark = pytest.mark.slow

# The series the alert rules read for gRPC (monitoring/prometheus/rules.yaml).
REQUESTS = "churn_grpc_requests"
DURATION = "churn_grpc_request_duration_seconds"
SLOW_RECORDS = 10_000


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("grpc-metrics")
    train(home)
    return home


def _samples(srv: Server, name: str) -> list:
    """Every sample of one metric family on the gRPC server's metrics port."""
    text = http("GET", f"http://127.0.0.1:{srv.metrics_port}/", timeout=10)[1]
    return [s for f in text_string_to_metric_families(text) if f.name == name for s in f.samples]


def _slow_request():
    from bentoml.grpc.v1 import service_pb2 as pb
    from google.protobuf import json_format, struct_pb2

    records = records_from_csv(str(DATA))
    body = {"instances": [records[i % len(records)] for i in range(SLOW_RECORDS)]}
    return pb.Request(api_name="predict", json=json_format.ParseDict(body, struct_pb2.Value()))


def _call(srv: Server, request, timeout: float = 60) -> str:
    import grpc

    from churn.client import grpc_stub

    channel, stub = grpc_stub(srv.address)
    try:
        stub.Call(request, timeout=timeout)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name
    finally:
        channel.close()


def test_refused_and_slow_grpc_calls_are_recorded_as_they_ended(home, tmp_path):
    srv = Server("grpc", home, tmp_path).start()
    try:
        wait_for(lambda: _call(srv, _ping()) == "OK", 60, what="serving")
        for _ in range(40):
            assert (
                call_grpc(srv.address, {"instances": [dict(EXAMPLE_RECORD, tenure=-1)]})[0]
                == "INVALID_ARGUMENT"
            )
        request = _slow_request()
        took = []
        for _ in range(3):
            t = time.monotonic()
            assert _call(srv, request) == "OK"
            took.append(time.monotonic() - t)
        counts = {
            (s.labels.get("api_name"), s.labels.get("http_response_code")): s.value
            for s in _samples(srv, REQUESTS)
            if s.name.endswith("_total")
        }
        buckets = {
            (s.labels.get("http_response_code"), s.labels["le"]): s.value
            for s in _samples(srv, DURATION)
            if s.name.endswith("_bucket") and s.labels.get("api_name") == "predict"
        }
        print(f"\ngRPC request counts {counts}; 10,000-record calls took {[round(x, 2) for x in took]} s")
        non_2xx = sum(v for (api, code), v in counts.items() if api == "predict" and not code.startswith("2"))
        assert non_2xx >= 40 and counts.get(("predict", "400"), 0) >= 40, counts
        # 1 ping and 3 slow calls answered OK; none of the slow ones in the 5-ms bucket
        assert counts.get(("predict", "200")) == 4, counts
        assert buckets[("200", "0.005")] <= 1 and buckets[("200", "+Inf")] == 4, buckets
        assert min(took) > 0.005
    finally:
        srv.stop()


def _ping():
    from bentoml.grpc.v1 import service_pb2 as pb
    from google.protobuf import json_format, struct_pb2

    body = {"instances": [EXAMPLE_RECORD]}
    return pb.Request(api_name="predict", json=json_format.ParseDict(body, struct_pb2.Value()))


def _prometheus(tmp_path, targets: dict[str, int]) -> tuple[subprocess.Popen, int]:
    """A real Prometheus evaluating the shipped rules (every `for:` cut to 3 s), scraping each
    job's gRPC metrics port every second."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing: `make prometheus-install` (make test runs it)")
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "3s"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [
            {
                "job_name": job,
                "metrics_path": "/",  # BentoML's gRPC metrics server answers at "/" only
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
            for job, metrics_port in targets.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _reachable(f"http://127.0.0.1:{port}/-/ready"), 60, what="Prometheus")
    except BaseException:
        _stop(proc)
        raise
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_grpc_error_and_latency_alerts_fire_from_real_servers(home, tmp_path):
    """One gRPC server holds no model (every prediction UNAVAILABLE, a 5xx); another answers slow
    10,000-record calls. The real Prometheus sees each alert fire for its server."""
    jobs = ("churn-api-grpc-failing", "churn-api-grpc-slow")
    with contextlib.ExitStack() as cleanup:  # whatever started is stopped, even if a start fails
        failing = Server("grpc", tmp_path / "empty", tmp_path)
        cleanup.callback(failing.stop)
        slow = Server("grpc", home, tmp_path)
        cleanup.callback(slow.stop)
        failing.start()
        slow.start()
        prom, port = _prometheus(
            tmp_path, dict(zip(jobs, (failing.metrics_port, slow.metrics_port), strict=True))
        )
        cleanup.callback(_stop, prom)
        errors = AlertWatch(port, "ChurnHighErrorRatio", jobs)
        latency = AlertWatch(port, "ChurnHighLatencyP99", jobs)
        cleanup.callback(errors.stop.set)
        cleanup.callback(latency.stop.set)
        request, ping = _slow_request(), _ping()
        loads = [
            LoadClients(2, lambda i, n: _call(failing, ping), ok=("UNAVAILABLE",)),
            LoadClients(4, lambda i, n: _call(slow, request)),
        ]
        for load in loads:
            cleanup.callback(load.stop, 120)
        wait_for(lambda: _call(slow, ping) == "OK", 60, what="serving")
        errors.start()
        latency.start()
        for load in loads:
            load.start()
        wait_for(
            lambda: errors.now()[jobs[0]] == "firing" and latency.now()[jobs[1]] == "firing",
            90,
            interval=1,
            what="ChurnHighErrorRatio for the failing server and ChurnHighLatencyP99 for the slow one",
        )
        print(f"\nChurnHighErrorRatio: {errors.history}; ChurnHighLatencyP99: {latency.history}")
        # each alert for its own server only
        assert errors.now()[jobs[1]] == "inactive"
        assert latency.now()[jobs[0]] == "inactive"
    for load in loads:
        load.check()
    assert loads[0].failures == [] and loads[1].failures == []
