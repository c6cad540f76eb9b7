"""A real Prometheus (Debian's package) scrapes real servers and evaluates the shipped alert rules:
the no-model alert goes from pending to firing on `make run`'s two servers, and back once a good
model is current; the report-staleness alerts fire on a server whose latest reports are older than
twice their schedule, and clear once fresh ones are written."""

from __future__ import annotations

import contextlib
import datetime as dt
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

from churn.report_files import point_latest, write_report_folder
from tests.integration.test_run import run_sh
from tests.support import ROOT, Server, free_port, http, run_cli, state_env, train, wait_for

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
    home = tmp_path / "home"
    tag = train(home)["tag"]
    name, version = tag.split(":")
    (home / "bentoml" / "models" / name / version / "saved_model.pkl").write_bytes(pickle.dumps(_Broken()))

    ports = {"HTTP_PORT": free_port(), "GRPC_PORT": free_port(), "GRPC_METRICS_PORT": free_port()}
    scrape_configs = [
        {"job_name": "churn-api", "static_configs": [{"targets": [f"127.0.0.1:{ports['HTTP_PORT']}"]}]},
        {
            "job_name": "churn-api-grpc",
            "metrics_path": "/",  # BentoML's gRPC metrics server answers at "/" only
            "static_configs": [{"targets": [f"127.0.0.1:{ports['GRPC_METRICS_PORT']}"]}],
        },
    ]
    with running_prometheus(tmp_path, scrape_configs) as prom_port:
        _no_model_alert_story(home, ports, prom_port)


@contextlib.contextmanager
def running_prometheus(tmp_path, scrape_configs: list[dict]):
    """A real Prometheus scraping every second, with the shipped rules (every `for:` cut to FOR);
    yields its port once it is ready."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is missing: `make prometheus-install` (make test runs it)")
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
        "scrape_configs": scrape_configs,
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
    try:
        wait_for(lambda: _reachable(f"http://127.0.0.1:{prom_port}/-/ready"), 60, what="Prometheus ready")
        yield prom_port
    finally:
        _stop_group(prom)


def _stop_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _no_model_alert_story(home, ports: dict[str, int], prom_port: int) -> None:
    servers = None
    watch = AlertWatch(prom_port, "ChurnNoModelLoaded", ("churn-api", "churn-api-grpc"))
    try:
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
        if servers is not None:
            _stop_group(servers)
        time.sleep(0.5)


def _write_reports(home, created: dt.datetime) -> None:
    """A drift and a performance report made at `created`, written and linked as the monitoring
    commands write them (a folder renamed into place, then `latest` / `latest-performance`)."""
    stamp = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    reports = home / "reports"
    folder = created.strftime("%Y%m%dT%H%M%S%fZ")
    drift = {"drift": False, "created": stamp, "features": {"tenure": {"p_value": 0.5, "drift": False}}}
    performance = {"created": stamp, "models": {}}
    point_latest(reports, write_report_folder({"drift_report.json": json.dumps(drift)}, reports / folder))
    target = write_report_folder(
        {"performance_report.json": json.dumps(performance)}, reports / f"{folder}-performance"
    )
    point_latest(reports, target, "latest-performance")


def test_stale_reports_fire_on_a_real_server_and_clear_with_fresh_ones(tmp_path):
    """Reports 13 hours old (the CronJob writes both every 6 hours: stale at 12) make both alerts
    go pending, then firing, from the server's own gauges; fresh reports clear them."""
    home = tmp_path / "home"
    train(home)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=13)
    _write_reports(home, old)
    server = Server("http", home, tmp_path, RELOAD_INTERVAL_SECONDS="1")
    scrape = [{"job_name": "churn-api", "static_configs": [{"targets": [server.address]}]}]
    names = ("ChurnDriftReportStale", "ChurnPerformanceReportStale")
    with running_prometheus(tmp_path, scrape) as prom_port:
        watches = {name: AlertWatch(prom_port, name, ("churn-api",)) for name in names}
        try:
            for watch in watches.values():
                watch.start()
            server.start()
            firing = {"churn-api": "firing"}
            wait_for(
                lambda: all(w.now() == firing for w in watches.values()), 90, what="both stale alerts firing"
            )
            metrics = http("GET", server.url + "/metrics")[1]
            for gauge in (
                "churn_drift_report_timestamp_seconds",
                "churn_performance_report_timestamp_seconds",
            ):
                value = float(re.search(rf"^{gauge} (\S+)$", metrics, re.M).group(1))
                assert value == pytest.approx(old.timestamp(), abs=1e-3), gauge
            _write_reports(home, dt.datetime.now(dt.UTC))  # the CronJob runs again
            inactive = {"churn-api": "inactive"}
            wait_for(
                lambda: all(w.now() == inactive for w in watches.values()), 90, what="stale alerts resolved"
            )
            print(f"\nper alert: { {name: w.history for name, w in watches.items()} }")
            for name, watch in watches.items():
                assert watch.history["churn-api"] == ["inactive", "pending", "firing", "inactive"], name
        finally:
            for watch in watches.values():
                watch.stop.set()
            server.stop()


def _reachable(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False
