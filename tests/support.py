"""Helpers shared by the test suites: real processes on free loopback ports, CLI runs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.servers import Server, free_port, http, state_env  # noqa: F401 - the tests' imports

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "telco_churn.csv"


def run_cli(
    module: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_json_line(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def train(mlops_home: Path, *args: str) -> dict[str, Any]:
    proc = run_cli("training.train", *args, env=state_env(mlops_home))
    assert proc.returncode == 0, proc.stderr
    return last_json_line(proc.stdout)


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class LoadClients:
    """`clients` threads, each calling `call(i, n)` (client i, its n-th request) until stopped.
    `call` returns an outcome (an HTTP status, a gRPC code name); an exception of any kind is
    recorded as an outcome too (its class name, the message in `errors`), never lost with a dead
    thread. `check()` then asserts that every client lived to the end and sent its share."""

    def __init__(self, clients: int, call: Callable[[int, int], Any], ok: tuple = (200, "OK")):
        self.call, self.ok = call, ok
        self.results: list[tuple[float, float, Any]] = []  # (sent at, took, outcome), monotonic s
        self.errors: list[str] = []
        self.sent = [0] * clients
        self.lived = [False] * clients
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, i: int) -> None:
        try:
            n = 0
            while not self.stopped.is_set():
                sent = time.monotonic()
                try:
                    outcome = self.call(i, n)
                except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
                    outcome = type(exc).__name__
                    self.errors.append(f"client {i}: {outcome}: {str(exc)[:200]}")
                self.results.append((sent, time.monotonic() - sent, outcome))
                self.sent[i] += 1
                n += 1
            self.lived[i] = True
        except BaseException as exc:  # what even the loop above cannot survive: recorded
            self.errors.append(f"client {i} died: {type(exc).__name__}: {exc}")
            raise

    def start(self) -> LoadClients:
        for t in self.threads:
            t.start()
        return self

    def stop(self, timeout: float = 60) -> LoadClients:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout)
        return self

    def run(self, seconds: float) -> LoadClients:
        self.start()
        time.sleep(seconds)
        return self.stop()

    @property
    def failures(self) -> list[Any]:
        return [o for _, _, o in self.results if o not in self.ok]

    def check(self, min_share: float = 0.25) -> None:
        """Every client lived until stopped and sent at least `min_share` of the mean count."""
        hung = [i for i, t in enumerate(self.threads) if t.is_alive()]
        assert not hung, f"clients {hung} still running (hung) after the stop"
        assert all(self.lived), (
            f"clients died: {[i for i, x in enumerate(self.lived) if not x]} {self.errors[-3:]}"
        )
        mean = sum(self.sent) / len(self.sent)
        assert min(self.sent) >= max(1.0, min_share * mean), f"a client sent less than its share: {self.sent}"
