"""`make run` (scripts/run.sh): the README's first command, on a fresh MLOPS_HOME."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from churn.client import grpc_health, predict_grpc, records_from_csv
from tests.support import DATA, ROOT, free_port, http, state_env, wait_for

README = (ROOT / "README.md").read_text()

pytestmark = pytest.mark.slow


def run_sh(home, **ports: int | str) -> subprocess.Popen:
    env = state_env(home) | {k: str(v) for k, v in ports.items()}
    env.pop("BENTOML_HOME")  # run.sh sets one per server
    return subprocess.Popen(
        ["scripts/run.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_make_run_trains_serves_both_transports_and_stops_cleanly(tmp_path):
    ports = {"HTTP_PORT": free_port(), "GRPC_PORT": free_port(), "GRPC_METRICS_PORT": free_port()}
    proc = run_sh(tmp_path, **ports)
    try:
        http_url = f"http://127.0.0.1:{ports['HTTP_PORT']}"
        grpc_address = f"127.0.0.1:{ports['GRPC_PORT']}"

        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            try:
                return http("GET", http_url + "/startup", timeout=2)[0] == 200
            except OSError:
                return False

        wait_for(up, 180, what="make run serving HTTP")
        wait_for(lambda: grpc_health(grpc_address) == "SERVING", 60, what="make run serving gRPC")
        assert (tmp_path / "registry.json").exists()  # it trained a first model
        records = records_from_csv(str(DATA), limit=3)
        status, body, _ = http("POST", http_url + "/predict", {"instances": records})
        assert status == 200 and body["model"].startswith("churn_model:")
        assert predict_grpc(grpc_address, records)[1]["model"] == body["model"]
        # BentoML's gRPC metrics server answers at "/" only (a scrape of /metrics gets a 500).
        metrics = http("GET", f"http://127.0.0.1:{ports['GRPC_METRICS_PORT']}/")
        assert metrics[0] == 200 and "churn_model_loaded 1.0" in metrics[1]
        assert 'bentoml_api_server_request_total{api_name="predict",http_response_code="200"' in metrics[1]
        wait_for(
            lambda: "churn_model_loaded 1.0" in http("GET", http_url + "/metrics")[1], 10, what="model gauge"
        )
        _readme_curl_answers_as_shown(http_url, body["model"])
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the README says it stops both
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # both servers (the whole process group) are gone
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("servers still running 30 s after make run was stopped")


def _readme_curl_answers_as_shown(http_url: str, model: str) -> None:
    """The Quick start's curl request, sent as written, gets the answer the README shows (the
    model's tag aside: each training run names its own)."""
    request = re.search(r"curl -s -X POST http://127\.0\.0\.1:3000/predict .*? -d '(.+)'\n", README)
    shown = re.search(r"```json\n(\{\"model\".+\})\n```", README)
    assert request and shown, "the README's curl example or its answer is missing"
    status, answer, _ = http("POST", http_url + "/predict", json.loads(request.group(1)))
    expected = json.loads(shown.group(1).replace(json.loads(shown.group(1))["model"], model))
    assert status == 200 and answer == expected


@pytest.mark.parametrize("which", ["HTTP_PORT", "GRPC_PORT", "GRPC_METRICS_PORT"])
def test_make_run_names_a_busy_port_and_how_to_move_it(tmp_path, which):
    ports = {"HTTP_PORT": free_port(), "GRPC_PORT": free_port(), "GRPC_METRICS_PORT": free_port()}
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports[which]))
        holder.listen()
        proc = run_sh(tmp_path, **ports)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"port {ports[which]} ({which}) is in use" in err and f"make run {which}=" in err
    assert not (tmp_path / "registry.json").exists()  # nothing trained, nothing started


def test_make_run_refuses_a_port_that_is_not_a_number(tmp_path):
    proc = run_sh(tmp_path, HTTP_PORT="http")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "HTTP_PORT='http' is not a port number" in err
