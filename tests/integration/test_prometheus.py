"""A real Prometheus (Debian's package) scrapes `make run`'s two servers and evaluates the alert
rules: the no-model alert goes from pending to firing, and back once a good model is current."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request

import pytest
import yaml

from tests.integration.test_run import run_sh
from tests.support import ROOT, free_port, http, run_cli, state_env, train, wait_for

pytestmark = pytest.mark.slow

# The rules as shipped, with every `for:` cut to this, so that pending -> firing takes seconds.
FOR = "3s"


class _Broken:
    def __reduce__(self):
        return (int, ())  # unpickles to 0: not a model, so the smoke test fails


def _alert_states(port: int, name: str) -> dict[str, str]:
    """job -> state of one alert (pending, firing; absent = inactive)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/alerts", timeout=5) as resp:
        alerts = json.loads(resp.read())["data"]["alerts"]
    return {a["labels"]["job"]: a["state"] for a in alerts if a["labels"]["alertname"] == name}


class AlertWatch(threading.Thread):
    """Records every change of an alert's state, per job, from before the servers start."""

    def __init__(self, port: int, name: str, jobs: tuple[str, ...]):
        super().__init__(daemon=True)
        self.port, self.name, self.jobs = port, name, jobs
        self.history: dict[str, list[str]] = {job: ["inactive"] for job in jobs}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                states = _alert_states(self.port, self.name)
            except OSError:
                continue
            for job in self.jobs:
                state = states.get(job, "inactive")
                if self.history[job][-1] != state:
                    self.history[job].append(state)

    def now(self) -> dict[str, str]:
        return {job: h[-1] for job, h in self.history.items()}


def test_no_model_alert_goes_pending_firing_and_back_on_make_run(tmp_path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing: `make prometheus-install` (make test runs it)")
    home = tmp_path / "home"
    tag = train(home)["tag"]
    name, version = tag.split(":")
    (home / "bentoml" / "models" / name / version / "saved_model.pkl").write_bytes(pickle.dumps(_Broken()))

    ports = {"HTTP_PORT": free_port(), "GRPC_PORT": free_port(), "GRPC_METRICS_PORT": free_port()}
    rules = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "rules.yaml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(tmp_path / "rules.yaml")],
        "scrape_configs": [
            {"job_name": "churn-api", "static_configs": [{"targets": [f"127.0.0.1:{ports['HTTP_PORT']}"]}]},
            {
                "job_name": "churn-api-grpc",
                "metrics_path": "/",  # BentoML's gRPC metrics server answers at "/" only
                "static_configs": [{"targets": [f"127.0.0.1:{ports['GRPC_METRICS_PORT']}"]}],
            },
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    servers = None
    watch = AlertWatch(prom_port, "ChurnNoModelLoaded", ("churn-api", "churn-api-grpc"))
    try:
        wait_for(lambda: _reachable(f"http://127.0.0.1:{prom_port}/-/ready"), 60, what="Prometheus ready")
        watch.start()  # from before the servers' first scrape
        servers = run_sh(home, **ports)
        url = f"http://127.0.0.1:{ports['HTTP_PORT']}"
        wait_for(lambda: _reachable(url + "/health"), 120, what="make run's HTTP server")
        assert http("GET", url + "/startup")[0] == 503  # serving no model
        both_firing = {"churn-api": "firing", "churn-api-grpc": "firing"}
        wait_for(lambda: watch.now() == both_firing, 90, what="ChurnNoModelLoaded firing for both servers")
        # A good model becomes current: the servers load it and the alert resolves.
        good = run_cli("training.train", "--seed", "3", "--promote", "always", env=state_env(home))
        assert good.returncode == 0, good.stderr
        resolved = {"churn-api": "inactive", "churn-api-grpc": "inactive"}
        wait_for(lambda: watch.now() == resolved, 90, what="ChurnNoModelLoaded resolved")
        print(f"\nChurnNoModelLoaded, per server: {watch.history}")
        for job, history in watch.history.items():
            assert history == ["inactive", "pending", "firing", "inactive"], (job, history)
        assert re.search(r"^churn_model_loaded 1.0$", http("GET", url + "/metrics")[1], re.M)
    finally:
        watch.stop.set()
        for proc in (p for p in (prom, servers) if p is not None):
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(0.5)


def _reachable(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False
