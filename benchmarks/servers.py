"""Real servers on free loopback ports, for the benchmarks and the tests (tests/support.py uses
them): a `bentoml serve` / `serve-grpc` process with its own state, and plain HTTP calls to it."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port BELOW the kernel's ephemeral range. A port from that range (what binding port 0
    returns) can be taken by any outgoing connection before the server binds it, and a client
    polling it before the server listens can even connect to itself (TCP self-connect): seen here
    as a gRPC worker failing with 'Address already in use'."""
    lo, _ = _ephemeral_range()
    for _ in range(500):
        port = random.randint(max(1024, lo - 12000), lo - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def state_env(mlops_home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "MONITORING_"))}
    env.update(MLOPS_HOME=str(mlops_home), BENTOML_HOME=str(mlops_home / "bentoml"), LOG_LEVEL="INFO")
    env.update(BENTOML_DO_NOT_TRACK="true")
    env.update(extra)
    return env


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    timeout: float = 30,
) -> tuple[int, Any, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            payload = resp.read()
            status, headers = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        payload, status, headers = exc.read(), exc.code, dict(exc.headers)
    try:
        parsed = json.loads(payload)
    except ValueError:
        parsed = payload.decode(errors="replace")
    return status, parsed, headers


class Server:
    """A real `bentoml serve` / `serve-grpc` process with its own BENTOML_HOME whose `models` is
    the shared store (BentoML empties $BENTOML_HOME/prometheus_multiproc_dir at every start)."""

    def __init__(self, kind: str, mlops_home: Path, log_dir: Path, workers: int | None = None, **env: str):
        """`workers`: API worker processes (BentoML's default is one per CPU: a test that counts on
        two must say so, or it passes only on a machine with two cores)."""
        assert kind in ("http", "grpc")
        self.kind = kind
        self.workers = workers
        self.port = free_port()
        self.metrics_port = free_port()
        home = mlops_home / "servers" / f"{kind}-{self.port}"
        home.mkdir(parents=True)
        (mlops_home / "bentoml" / "models").mkdir(parents=True, exist_ok=True)
        (home / "models").symlink_to(mlops_home / "bentoml" / "models")
        self.env = state_env(mlops_home, BENTOML_HOME=str(home), **env)
        self.log_path = log_dir / f"{kind}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> Server:
        cmd = [
            str(VENV_BIN / "bentoml"),
            "serve" if self.kind == "http" else "serve-grpc",
            "service:svc",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        options = [self.env.get("BENTOML_CONFIG_OPTIONS", "")]
        if self.workers is not None:
            options.append(f"api_server.workers={self.workers}")
        if self.kind == "grpc":
            options.append(
                f"api_server.grpc.metrics.port={self.metrics_port} api_server.grpc.metrics.host=127.0.0.1"
            )
            # As scripts/run.sh and the gRPC Deployment do (BentoML 1.4.40 omits it for the metrics
            # process of serve-grpc, which then fails every scrape).
            self.env["PROMETHEUS_MULTIPROC_DIR"] = self.env["BENTOML_HOME"] + "/prometheus_multiproc_dir"
        self.env["BENTOML_CONFIG_OPTIONS"] = " ".join(o for o in options if o)
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log_path.read_text()[-3000:]}")
            if self._listening():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"{self.kind} server did not start in {timeout}s: {self.log_path.read_text()[-3000:]}"
        )

    def _listening(self) -> bool:
        if self.kind == "http":
            try:
                return http("GET", self.url + "/health", timeout=2)[0] == 200
            except OSError:
                return False
        from churn.client import grpc_health

        return grpc_health(self.address, timeout=2) in ("SERVING", "NOT_SERVING")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
