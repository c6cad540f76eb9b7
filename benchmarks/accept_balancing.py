"""The HTTP workers' accept balancing (churn/tuning.py, HTTP_ACCEPT_BALANCING) measured on and off,
side by side in one run: `.venv/bin/python benchmarks/accept_balancing.py` (needs `hey`).

For 1 and 2 API workers, two servers, the balancing forced on in one and off in the other, taking
turns three times on each of three loads of one-record requests from 32 clients (`hey`, 8 s each
after a 2-s warm-up; the table shows the median run by req/s): keep-alive connections; a new
connection per request (`-disable-keepalive`: req/s = new connections/s); and a new connection per
request while 100 idle keep-alive connections stay open (the pause after each accept grows with the
connections a worker serves). Writes benchmarks/results/accept-balancing-<UTC date>.json.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import DURATION, RECORDS, ROOT, SCRATCH, WARMUP, hey, wait_http  # noqa: I001

from benchmarks.servers import Server, state_env

IDLE = 100
RUNS = 3
WORKERS = tuple(int(w) for w in os.environ.get("BENCH_WORKERS", "1 2").split())
LOADS = [
    ("keep-alive", ()),
    ("new connection per request", ("-disable-keepalive",)),
    (f"new connection per request, {IDLE} idle keep-alive connections open", ("-disable-keepalive",)),
]


class IdleConnections:
    """`n` keep-alive connections that each send a GET /health every 2 s (BentoML closes a
    connection idle for 5 s), otherwise idle."""

    def __init__(self, port: int, n: int):
        self.conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(n)]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for conn in self.conns:
                conn.request("GET", "/health")
                conn.getresponse().read()
            self.stop.wait(2)

    def __enter__(self):
        self.thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        for conn in self.conns:
            conn.close()


def median_run(runs: list[dict]) -> dict:
    """The run with the median req/s."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def train_model(home: Path) -> bool:
    """The model the servers load, trained into `home`; its stderr shown when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "training.train"],
        cwd=ROOT,
        env=state_env(home),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return False
    return True


def measure_load(srv: Server, body: bytes, label: str, flags: tuple[str, ...]) -> dict:
    """One measured run of a load on one server, after a warm-up (with the idle connections
    open during the measurement when the load asks for them)."""
    url = srv.url + "/predict"
    hey(url, body, 32, WARMUP, *flags)
    if "idle" in label:
        with IdleConnections(srv.port, IDLE):
            return hey(url, body, 32, DURATION, *flags)
    return hey(url, body, 32, DURATION, *flags)


def measure_workers(workers: int, home: Path, logs: Path, body: bytes) -> list[dict]:
    """Every load, RUNS times, on two servers of `workers` API workers, balancing on and off."""
    results = []
    # Both servers run together and take turns, RUNS times per load: a machine shared with
    # other work drifts less between the two halves of a comparison.
    servers = {
        mode: Server("http", home, logs, workers=workers, HTTP_ACCEPT_BALANCING=mode).start()
        for mode in ("on", "off")
    }
    try:
        for srv in servers.values():
            wait_http(srv.url + "/startup")
        for label, flags in LOADS:
            for rep in range(RUNS):
                for mode, srv in servers.items():
                    r = measure_load(srv, body, label, flags)
                    results.append({"workers": workers, "balancing": mode, "load": label, "run": rep} | r)
                    print(
                        f"{workers} worker(s), balancing {mode:3s}, {label}: {r['rps']:.0f} req/s, "
                        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}",
                        file=sys.stderr,
                    )
    finally:
        for srv in servers.values():
            srv.stop()
    return results


def comparison_table(results: list[dict]) -> list[str]:
    """The median runs side by side, balancing on and off, per worker count and load."""
    lines = [
        f"Accept balancing, {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end, 32 clients, "
        f"one record a request, {DURATION:.0f} s a load, median of {RUNS} runs",
        "",
        "| API workers | load | on: req/s | off: req/s | on / off | on: p50 / p99 ms | off: p50 / p99 ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for workers in WORKERS:
        for label, _ in LOADS:
            on, off = (
                median_run(
                    [r for r in results if (r["workers"], r["balancing"], r["load"]) == (workers, m, label)]
                )
                for m in ("on", "off")
            )
            ratio = on["rps"] / off["rps"]
            lines.append(
                f"| {workers} | {label} | {on['rps']:.0f} | {off['rps']:.0f} | {ratio:.2f} | "
                f"{on['p50_ms']:.1f} / {on['p99_ms']:.1f} | {off['p50_ms']:.1f} / {off['p99_ms']:.1f} |"
            )
    return lines


def main() -> int:
    if shutil.which("hey") is None:
        print("error: `hey` is missing (apt-get install hey)", file=sys.stderr)
        return 2
    scratch = SCRATCH / "accept-balancing"
    shutil.rmtree(scratch, ignore_errors=True)
    home = scratch / "mlops"
    if not train_model(home):
        return 1
    body = json.dumps({"instances": RECORDS[:1]}).encode()
    results = []
    logs = scratch / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for workers in WORKERS:
        results += measure_workers(workers, home, logs, body)
    lines = comparison_table(results)
    out = ROOT / "benchmarks" / "results" / f"accept-balancing-{dt.datetime.now(dt.UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
