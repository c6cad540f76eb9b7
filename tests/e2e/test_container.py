"""The container end to end: the real image, run as the rendered manifests declare, in the order a
cluster would (training Job, API Deployments behind their probes, drift CronJob). Tests run in
file order and share the state volume."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from churn.client import grpc_health, predict_grpc, records_from_csv
from tests.e2e.conftest import docker, wait_until
from tests.support import DATA, http

pytestmark = pytest.mark.slow

PROBE_WAIT_CAP = 180  # seconds: the manifests allow 15 min, a test must not
state: dict = {}


def _port(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def probe_ok(container: dict, probe: dict) -> bool:
    """Evaluate one Kubernetes probe the way the kubelet does, on 127.0.0.1."""
    if "httpGet" in probe:
        url = f"http://127.0.0.1:{_port(container, probe['httpGet']['port'])}{probe['httpGet']['path']}"
        try:
            with urllib.request.urlopen(url, timeout=probe.get("timeoutSeconds", 1)) as resp:
                return 200 <= resp.status < 400
        except (urllib.error.URLError, OSError):
            return False
    if "grpc" in probe:
        address = f"127.0.0.1:{probe['grpc']['port']}"
        return (
            grpc_health(address, probe["grpc"].get("service", ""), timeout=probe.get("timeoutSeconds", 1))
            == "SERVING"
        )
    if "tcpSocket" in probe:
        with socket.socket() as s:
            s.settimeout(probe.get("timeoutSeconds", 1))
            return s.connect_ex(("127.0.0.1", _port(container, probe["tcpSocket"]["port"]))) == 0
    raise AssertionError(f"unknown probe {probe}")


def test_training_job_trains_registers_and_promotes(manifests):
    job = manifests.workload("Job", "churn-train")
    proc = job.run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["promoted"] is True and summary["metrics"]["roc_auc"] >= 0.84
    state["tag"] = summary["tag"]
    state["outputs"] = [proc.stdout, proc.stderr]


@pytest.mark.parametrize("name", ["churn-api", "churn-api-grpc"])
def test_api_deployments_pass_their_declared_probes(manifests, name):
    run = manifests.workload("Deployment", name)
    container = run.container
    for p in container["ports"]:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p["containerPort"])) != 0, f"port {p['containerPort']} is taken"
    started = time.monotonic()
    cname = run.start()
    state.setdefault("containers", []).append(cname)
    startup = container["startupProbe"]
    budget = min(startup["periodSeconds"] * startup["failureThreshold"], PROBE_WAIT_CAP)

    def started_or_dead():
        running = docker("inspect", "-f", "{{.State.Running}}", cname, check=False).stdout.strip() == "true"
        return probe_ok(container, startup) or not running

    ok = wait_until(started_or_dead, budget, interval=0.25) and probe_ok(container, startup)
    assert ok, (
        docker("logs", cname, check=False).stdout[-3000:] + docker("logs", cname, check=False).stderr[-3000:]
    )
    state.setdefault("startup_seconds", {})[name] = round(time.monotonic() - started, 1)
    assert probe_ok(container, container["livenessProbe"])
    assert wait_until(lambda: probe_ok(container, container["readinessProbe"]), 30)


def test_predictions_over_http_and_grpc(manifests):
    records = records_from_csv(str(DATA), limit=80)
    status, body, _ = http("POST", "http://127.0.0.1:3000/predict", {"instances": records})
    assert status == 200, body
    assert body["model"] == state["tag"] and len(body["predictions"]) == 80
    assert body["predictions"][0]["customerID"] == records[0]["customerID"]
    code, reply = predict_grpc("127.0.0.1:50051", records[:10])
    assert code == "OK", reply
    assert reply["model"] == state["tag"] and len(reply["predictions"]) == 10
    bad = http("POST", "http://127.0.0.1:3000/predict", {"instances": [{"tenure": -1}]})
    assert bad[0] == 400


def test_containers_run_as_1034_with_a_read_only_root(manifests):
    for cname in state["containers"]:
        assert docker("exec", cname, "id", "-u").stdout.strip() == "1034"
        denied = docker("exec", cname, "touch", "/home/bentoml/probe", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        assert docker("exec", cname, "touch", "/mlops/logs/.probe", check=False).returncode == 0


def test_read_only_containers_log_and_follow_a_new_model(manifests):
    """A retraining (the Job run again) promotes a new version: both running containers switch to
    it within 30 s, with no restart, on a read-only root."""
    job = manifests.workload("Job", "churn-train")
    proc = job.run()
    assert proc.returncode == 0, proc.stderr[-2000:]
    new = json.loads(proc.stdout.strip().splitlines()[-1])
    assert new["promoted"] is True and new["tag"] != state["tag"]
    assert wait_until(lambda: http("GET", "http://127.0.0.1:3000/model")[1].get("model") == new["tag"], 30)
    assert wait_until(
        lambda: (
            predict_grpc("127.0.0.1:50051", records_from_csv(str(DATA), limit=1))[1].get("model")
            == new["tag"]
        ),
        30,
    )
    state["tag"] = new["tag"]
    state["outputs"] += [proc.stdout, proc.stderr]
    logs = docker("exec", state["containers"][0], "sh", "-c", "ls /mlops/logs/").stdout.split()
    assert any(name.startswith("api-") for name in logs) and any(
        name.startswith("training-") for name in logs
    )


def test_drift_cronjob_writes_its_report_to_the_volume(manifests, image):
    time.sleep(1)  # the prediction log is written by a background thread
    drift = manifests.workload("CronJob", "churn-drift")
    proc = drift.run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["n_current"] >= 90 and summary["model"] == state["tag"]
    # the development webhook never resolves: the alert is reported, not fatal (if drift was found)
    if summary["drift"]:
        assert summary["alert"]["sent"] is False
    listing = docker(
        "run",
        "--rm",
        "--entrypoint",
        "ls",
        "-v",
        f"{manifests.volume}:/mlops:ro",
        image,
        "/mlops/reports/latest/",
    ).stdout.split()
    assert sorted(listing) == ["drift_metrics.prom", "drift_report.html", "drift_report.json"]
    state["outputs"] += [proc.stdout, proc.stderr]


def test_drift_runs_inside_a_running_api_pod(manifests):
    """`kubectl exec deploy/churn-api -- python -m monitoring.drift`, as the README shows."""
    api = state["containers"][0]
    proc = docker("exec", api, "python", "-m", "monitoring.drift", check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n_current"] >= 90
    registry = docker("exec", api, "python", "-m", "training.registry", "current", check=False)
    assert registry.returncode == 0 and registry.stdout.strip() == state["tag"]


def test_secret_values_reach_no_log_report_or_output(manifests, image):
    secrets = manifests.secret_values()
    assert secrets and all(len(s) > 8 for s in secrets)
    texts = list(state["outputs"])
    for cname in state["containers"]:
        logs = docker("logs", cname, check=False)
        texts += [logs.stdout, logs.stderr]
    files = docker(
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        "-v",
        f"{manifests.volume}:/mlops:ro",
        image,
        "-c",
        "cat /mlops/logs/* /mlops/reports/*/* /mlops/registry.json 2>/dev/null",
    )
    texts.append(files.stdout)
    assert len("".join(texts)) > 1000
    for secret in secrets:
        assert all(secret not in t for t in texts), "a Secret value leaked"


def test_report_figures(manifests, image):
    """Not an assertion of speed: prints the figures the README quotes."""
    size = int(docker("image", "inspect", image, "--format", "{{.Size}}").stdout.strip())
    print(f"\nimage {image}: {size / 1e9:.2f} GB; docker run -> startup 200: {state['startup_seconds']}")
    assert size > 0
