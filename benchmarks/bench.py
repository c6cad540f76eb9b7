"""Side-by-side benchmark, one run, one machine, the same trained model (`make bench`).

1. the limit: the pipeline's predict_proba in-process;  2. FastAPI + uvicorn (async def, same
validation), 2 workers;  3. MLServer 1.7.1 + mlserver-sklearn (own venv, adaptive batching 32 /
5 ms, 2 parallel workers, V2 REST with the pandas codec);  4. this service over HTTP;  5. over gRPC.
Loads (fixed duration after a warm-up): 1 record from 1 client, 1 record from 32 clients,
1,000 records from 4 clients. HTTP load comes from `hey` (Debian); gRPC from a small asyncio client.
Also: the drift check on 100,000 prediction-log records vs the same tests in scipy, training time, cold start.
Writes benchmarks/results/<UTC date>.json and prints a markdown table.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.servers import Server, free_port, http, state_env  # noqa: E402
from churn.client import records_from_csv  # noqa: E402
from churn.schema import FEATURES, records_to_frame  # noqa: E402

DURATION = float(os.environ.get("BENCH_SECONDS", "8"))
WARMUP = 2.0
DATA = ROOT / "data" / "telco_churn.csv"
RECORDS = records_from_csv(str(DATA))
SCRATCH = ROOT / "benchmarks" / "scratch"
MLSERVER_VENV = ROOT / ".venv-mlserver"
TAIL_RUNS = 3
LOADS = [("1 record, 1 client", 1, 1), ("1 record, 32 clients", 1, 32), ("1000 records, 4 clients", 1000, 4)]


class Sampler:
    """CPU seconds and peak RSS of a process tree while a load runs."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    def _procs(self):
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _cpu(self) -> float:
        total = 0.0
        for p in self._procs():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def __enter__(self):
        self.cpu0, self.t0 = self._cpu(), time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            rss = 0
            for p in self._procs():
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, rss)
            time.sleep(0.2)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.cores = (self._cpu() - self.cpu0) / (time.monotonic() - self.t0)


def hey(url: str, body: bytes, clients: int, seconds: float, *flags: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        fh.write(body)
    out = subprocess.run(
        [
            "hey",
            *flags,
            "-z",
            f"{seconds}s",
            "-c",
            str(clients),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            fh.name,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    ).stdout
    os.unlink(fh.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {q: float(s) * 1000 for q, s in re.findall(r"(\d+)%% in ([\d.]+) secs".replace("%%", "%"), out)}
    # hey prints no 99 % line below 100 answers (a short or slow load): the slowest answer stands in.
    slowest = re.search(r"Slowest:\s+([\d.]+) secs", out)
    if "99" not in lat and slowest:
        lat["99"] = float(slowest.group(1)) * 1000
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = sum(n for c, n in codes.items() if c != 200)
    err_block = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
    errors += sum(int(n) for n in re.findall(r"\[(\d+)\]", err_block))
    return {
        "rps": rps,
        "p50_ms": lat.get("50"),
        "p95_ms": lat.get("95"),
        "p99_ms": lat.get("99"),
        "errors": errors,
        "ok": codes.get(200, 0),
    }


def grpc_load(address: str, body: dict, clients: int, seconds: float, encoding: str = "json") -> dict:
    import grpc
    from bentoml.grpc.v1 import service_pb2 as pb
    from bentoml.grpc.v1 import service_pb2_grpc
    from google.protobuf import json_format, struct_pb2

    if encoding == "bytes":  # JSON text in serialized_bytes, answered the same way
        request = pb.Request(api_name="predict", serialized_bytes=json.dumps(body).encode())
    else:
        request = pb.Request(api_name="predict", json=json_format.ParseDict(body, struct_pb2.Value()))
    latencies: list[float] = []
    errors = 0

    async def run():
        stop = time.monotonic() + seconds

        async def worker():
            # A connection per client, as separate client processes would have (a local subchannel
            # pool, or gRPC shares one TCP connection, hence one server worker, among all channels).
            nonlocal errors
            options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
            async with grpc.aio.insecure_channel(address, options=options) as ch:
                stub = service_pb2_grpc.BentoServiceStub(ch)
                while time.monotonic() < stop:
                    t = time.perf_counter()
                    try:
                        await stub.Call(request, timeout=30)
                        latencies.append(time.perf_counter() - t)
                    except grpc.RpcError:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))

    started = time.monotonic()
    asyncio.run(run())
    elapsed = time.monotonic() - started
    ms = np.array(latencies) * 1000
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "errors": errors,
        "ok": len(latencies),
    }


def mlserver_body(records: list[dict]) -> dict:
    inputs = []
    for f in FEATURES:
        values = [r[f.name] for r in records]
        if f.is_categorical and not f.integer_codes:
            inputs.append({"name": f.name, "shape": [len(values), 1], "datatype": "BYTES", "data": values})
        elif f.kind == "numeric":
            inputs.append({"name": f.name, "shape": [len(values), 1], "datatype": "FP64", "data": values})
        else:
            inputs.append({"name": f.name, "shape": [len(values), 1], "datatype": "INT64", "data": values})
    return {"parameters": {"content_type": "pd"}, "inputs": inputs, "outputs": [{"name": "predict_proba"}]}


def wait_http(url: str, timeout: float = 120, method: str = "GET") -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if http(method, url, timeout=2)[0] == 200:
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def stop_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def run_loads(name: str, pid: int, url_for, body_for) -> dict:
    out = {}
    for label, n, clients in LOADS:
        records = (RECORDS * 2)[:n] if n > 1 else RECORDS[:1]
        body = body_for(records)
        url = url_for()

        def load(b, c, s, url=url):
            if name.startswith("bentoml_grpc"):
                return grpc_load(url, b, c, s, "bytes" if name.endswith("_bytes") else "json")
            return hey(url, json.dumps(b).encode(), c, s)

        load(body, clients, WARMUP)
        runs = []
        with Sampler(pid) as sampler:
            # The 32-client load three times: the tail must be stable from run to run.
            for _ in range(TAIL_RUNS if clients == 32 else 1):
                runs.append(load(body, clients, DURATION))
        result = sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]  # the median run by p99
        result |= {
            "rows_per_s": result["rps"] * n,
            "cpu_cores": round(sampler.cores, 2),
            "peak_rss_mb": round(sampler.peak / 1e6),
            "errors": sum(r["errors"] for r in runs),
        }
        if len(runs) > 1:
            p99 = [r["p99_ms"] for r in runs]
            result["runs"] = [{k: r[k] for k in ("rps", "p50_ms", "p99_ms", "errors")} for r in runs]
            result["p99_spread"] = (max(p99) - min(p99)) / min(p99)  # (max - min) / min
        out[label] = result
        print(
            f"  {name:14s} {label:24s} {result['rps']:8.1f} req/s  p99 {result['p99_ms']:7.1f} ms  "
            f"errors {result['errors']}",
            file=sys.stderr,
        )
    return out


def in_process(model) -> dict:
    one = records_to_frame(RECORDS[:1])
    thousand = records_to_frame((RECORDS * 2)[:1000])
    for _ in range(20):
        model.predict_proba(one)
    t = time.perf_counter()
    n1 = 400
    for _ in range(n1):
        model.predict_proba(one)
    one_ms = (time.perf_counter() - t) / n1 * 1000
    t = time.perf_counter()
    n2 = 40
    for _ in range(n2):
        model.predict_proba(thousand)
    thousand_s = (time.perf_counter() - t) / n2
    return {
        "1 record": {"ms": one_ms, "rows_per_s": 1000 / one_ms},
        "1000 records": {"ms": thousand_s * 1000, "rows_per_s": 1000 / thousand_s},
    }


def write_prediction_log(folder: Path, n: int, model: str) -> None:
    """`n` prediction-log records as the service writes them (churn/jsonio.py's json_bytes), real
    customers drawn with replacement, one millisecond apart."""
    from churn.jsonio import json_bytes

    rng = np.random.default_rng(0)
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    folder.mkdir(parents=True)
    with open(folder / "bench-1-20261101-0.jsonl", "wb") as fh:
        for i, k in enumerate(rng.integers(0, len(RECORDS), n)):
            stamp = (start + dt.timedelta(milliseconds=i)).isoformat(timespec="milliseconds")
            entry = {
                "time": stamp.replace("+00:00", "Z"),
                "request_id": f"bench-{i}",
                "model": model,
                "record": RECORDS[k],
                "churn_probability": 0.25,
                "churn": False,
            }
            fh.write(json_bytes(entry) + b"\n")


def drift_bench(home: Path, tag: str) -> dict:
    """The drift command over 100,000 prediction-log records (a process, imports included) vs the
    floor: the same records read (orjson), checked and encoded, and the 19 tests done in scipy,
    in this process with everything imported."""
    import orjson
    import pandas as pd
    from scipy.stats import chi2_contingency, ks_2samp

    from churn.detector import encode
    from churn.model import load_reference
    from churn.monitoring_inputs import normalise
    from churn.schema import ID_COLUMN
    from churn.settings import settings_from_env

    folder = SCRATCH / "log-100k"
    write_prediction_log(folder, 100_000, tag)
    env = state_env(home)
    out = SCRATCH / "drift-report"
    cmd = [sys.executable, "-m", "monitoring.drift", "--current", str(folder), "--output-dir", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    drift_s = time.perf_counter() - t
    assert proc.returncode == 0, proc.stderr
    reference = normalise(load_reference(settings_from_env(env), tag), "ref")
    t = time.perf_counter()
    with open(next(folder.glob("*.jsonl")), "rb") as fh:
        rows = [orjson.loads(line)["record"] for line in fh]
    current = normalise(pd.DataFrame.from_records(rows).drop(columns=[ID_COLUMN]), "cur")
    x_ref, _ = encode(reference)
    x_cur, _ = encode(current)
    for i, f in enumerate(FEATURES):
        if f.is_categorical:
            cats = np.union1d(x_ref[:, i], x_cur[:, i])
            table = np.array([[np.sum(x[:, i] == c) for c in cats] for x in (x_ref, x_cur)])
            chi2_contingency(table)
        else:
            ks_2samp(x_ref[:, i], x_cur[:, i])
    floor_s = time.perf_counter() - t
    return {"drift_command_s": drift_s, "scipy_floor_s": floor_s, "ratio": drift_s / floor_s}


def train_for_bench(env: dict) -> tuple[str, float]:
    """The model every server loads, trained in a process of its own: its tag, and the seconds taken."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "training.train"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    training_s = time.perf_counter() - t
    return json.loads(out.stdout.strip().splitlines()[-1])["tag"], training_s


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
    }


@dataclass
class ServerRuns:
    """The servers' loads by server name, how each server scores: "pipeline" (sklearn pipeline on
    a DataFrame) or "fast" (the verified fast scorer of churn/fastpath.py), and this service's
    cold start."""

    loads: dict[str, dict] = field(default_factory=dict)
    scoring: dict[str, str] = field(default_factory=lambda: {"mlserver": "pipeline"})
    cold_start_s: float | None = None


def bench_fastapi(name: str, scoring: str, env: dict) -> dict:
    """FastAPI + uvicorn, 2 workers, scoring through the sklearn pipeline or the fast scorer."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.fastapi_app:app",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env | {"BENCH_SCORING": scoring},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/docs")
        return run_loads(
            name,
            proc.pid,
            lambda port=port: f"http://127.0.0.1:{port}/predict",
            lambda r: {"instances": r},
        )
    finally:
        stop_tree(proc)


def write_mlserver_settings(mdir: Path) -> int:
    """MLServer's settings (adaptive batching 32 / 5 ms, 2 parallel workers); its HTTP port."""
    mport, gport, metrics = free_port(), free_port(), free_port()
    (mdir / "settings.json").write_text(
        json.dumps({"http_port": mport, "grpc_port": gport, "metrics_port": metrics, "parallel_workers": 2})
    )
    (mdir / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "churn",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib", "version": "v1"},
                "max_batch_size": 32,
                "max_batch_time": 0.005,
            }
        )
    )
    return mport


def bench_mlserver(pipeline, logs: Path) -> dict:
    """MLServer + mlserver-sklearn from its own venv, serving the same pipeline (V2 REST, pandas codec)."""
    import joblib

    mdir = SCRATCH / "mlserver"
    mdir.mkdir()
    joblib.dump(pipeline, mdir / "model.joblib")
    mport = write_mlserver_settings(mdir)
    log_file = open(logs / "mlserver.log", "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(mdir)],
        cwd=mdir,
        start_new_session=True,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{mport}/v2/models/churn/ready", timeout=180)
        url = f"http://127.0.0.1:{mport}/v2/models/churn/infer"
        status, body, _ = http("POST", url, mlserver_body(RECORDS[:2]))
        assert status == 200, body
        return run_loads("mlserver", proc.pid, lambda: url, mlserver_body)
    finally:
        stop_tree(proc)


def bench_service(kind: str, home: Path, logs: Path, runs: ServerRuns) -> None:
    """This service on one transport; the HTTP server's start is the cold start measured."""
    srv = Server(kind, home, logs)
    t = time.perf_counter()
    srv.start()
    if kind == "http":
        wait_http(srv.url + "/startup")
        runs.cold_start_s = time.perf_counter() - t
        scoring = http("GET", srv.url + "/model")[1]["scoring"]
        for name in ("bentoml_http", "bentoml_grpc", "bentoml_grpc_bytes"):
            runs.scoring[name] = scoring
    try:
        # gRPC twice: a protobuf Struct body (`json`), and JSON text in `serialized_bytes`.
        for name in ("bentoml_http",) if kind == "http" else ("bentoml_grpc", "bentoml_grpc_bytes"):
            runs.loads[name] = run_loads(
                name,
                srv.proc.pid,
                (lambda s=srv: s.url + "/predict") if kind == "http" else (lambda s=srv: s.address),
                lambda r: {"instances": r},
            )
    finally:
        srv.stop()


def bench_servers(env: dict, home: Path, logs: Path, model) -> ServerRuns:
    """Every server under the same loads, one after the other."""
    runs = ServerRuns()
    # FastAPI, 2 workers (as many API workers as the BentoML service runs here): once scoring
    # through the sklearn pipeline as its users would, once through this service's fast scorer.
    for scoring in ("pipeline", "fast"):
        name = "fastapi" if scoring == "pipeline" else "fastapi_fast"
        runs.loads[name] = bench_fastapi(name, scoring, env)
        runs.scoring[name] = scoring
    if (MLSERVER_VENV / "bin" / "mlserver").exists():
        runs.loads["mlserver"] = bench_mlserver(model.pipeline, logs)
    else:
        print("MLServer venv missing: skipped (make bench installs it)", file=sys.stderr)
    for kind in ("http", "grpc"):
        bench_service(kind, home, logs, runs)
    return runs


def main(only_batch: bool = False) -> int:
    if shutil.which("hey") is None:
        print("error: `hey` is missing (make bench installs it)", file=sys.stderr)
        return 2
    shutil.rmtree(SCRATCH, ignore_errors=True)
    SCRATCH.mkdir(parents=True)
    home = SCRATCH / "mlops"
    env = state_env(home)
    tag, training_s = train_for_bench(env)
    if only_batch:
        return batch_only(home, tag)
    os.environ.update(MLOPS_HOME=str(home), BENTOML_HOME=str(home / "bentoml"))
    from churn.model import load_current_model
    from churn.settings import settings_from_env

    model = load_current_model(settings_from_env(env))
    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "model": tag,
        "duration_s": DURATION,
        "training_s": training_s,
        "in_process": in_process(model),
        # filled in by bench_servers below: here they keep their place in the results file
        "servers": {},
        "scoring": {},
    }
    print(f"in-process: {results['in_process']}", file=sys.stderr)
    logs = SCRATCH / "logs"
    logs.mkdir()
    runs = bench_servers(env, home, logs, model)
    results |= {"servers": runs.loads, "scoring": runs.scoring, "cold_start_s": runs.cold_start_s}

    results["drift"] = drift_bench(home, tag)
    results["batch"], results["explain"] = batch_bench(home, tag), explain_bench(home)  # issue #22
    results["image_bytes"] = image_bytes()
    results["targets"] = targets(results) + batch_targets(results["batch"], results["explain"])
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(exist_ok=True)
    results["missed"] = verdict(results["targets"])
    (out_dir / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    return conclude(results)


# Every target docs/performance.md states ("target (issue #14)"), as `targets()` names them.
README_TARGETS = (
    "1,000-record rows/s over HTTP / in-process limit",
    "1,000-record rows/s, gRPC (Struct) / HTTP",
    "1,000-record rows/s, gRPC (serialized_bytes) / HTTP",
    "p99 / own p50 (HTTP, 32 clients)",
    "p99 spread over 3 runs, (max - min) / min",
    "p99 / MLServer's p99 (32 clients)",
    "req/s / MLServer's (32 clients), 0 errors",
    "drift command / scipy floor (100,000 log records)",
    "cold start to /startup 200, s (bentoml serve)",
    "image size, GB (docker image inspect)",
)
# Issue #22's (docs/performance.md, "Batch scoring and reasons"), as batch_targets() names them.
BATCH_TARGETS = (
    "batch rows/s / plain pandas, 1M rows",
    "batch --reasons 3 rows/s / plain pandas, 1M rows",
    "peak RSS MiB, batch, 5M rows",
    "peak RSS MiB, batch --reasons 3, 5M rows",
    "explain 3 p50 / without, 1 record, 1 client",
    "explain 3 p50 / without, 1000 records, 4 clients",
)


def verdict(measured: list[dict], names: tuple[str, ...] = README_TARGETS + BATCH_TARGETS) -> list[str]:
    """Each target of docs/performance.md this run missed, or could not measure (no MLServer venv,
    no image)."""
    by_name = {t["what"]: t for t in measured}
    missed = []
    for name in names:
        t = by_name.get(name)
        if t is None:
            missed.append(f"{name}: not measured in this run")
        elif not t["met"]:
            missed.append(f"{name}: {t['value']:.2f}, goal {t['goal']}")
    return missed


def conclude(results: dict) -> int:
    """Print the table; exit status 1, naming each target missed, unless every target was met."""
    print(markdown(results))
    if "batch" in results:  # runs before issue #22 have no batch section
        print(batch_markdown(results["batch"], results["explain"]))
    missed = verdict(results["targets"])
    for line in missed:
        print(f"target missed: {line}", file=sys.stderr)
    if missed:
        print(
            f"make bench: {len(missed)} of {len(README_TARGETS + BATCH_TARGETS)} targets missed",
            file=sys.stderr,
        )
        return 1
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"Benchmark {r['date']} — {r['machine']['cpus']} cores, {r['machine']['memory_gb']} GiB, "
        f"Python {r['machine']['python']}, {DURATION:.0f} s per load, model {r['model']}",
        "",
        "| server | scoring | load | req/s | rows/s | p50 ms | p95 ms | p99 ms | errors | CPU cores "
        "| peak RSS MB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    ip = r["in_process"]
    lines.append(
        f"| in-process predict_proba | pipeline | 1 record | {1000 / ip['1 record']['ms']:.0f} | "
        f"{ip['1 record']['rows_per_s']:.0f} | {ip['1 record']['ms']:.2f} | | | | 1 | |"
    )
    lines.append(
        f"| in-process predict_proba | pipeline | 1000 records | {1000 / ip['1000 records']['ms']:.1f} | "
        f"{ip['1000 records']['rows_per_s']:.0f} | {ip['1000 records']['ms']:.1f} | | | | 1 | |"
    )
    for name, loads in r["servers"].items():
        for label, x in loads.items():
            lines.append(
                f"| {name} | {r['scoring'].get(name, '?')} | {label} | {x['rps']:.1f} | "
                f"{x['rows_per_s']:.0f} | {x['p50_ms']:.1f} | "
                f"{x['p95_ms']:.1f} | {x['p99_ms']:.1f} | {x['errors']} | {x['cpu_cores']} | "
                f"{x['peak_rss_mb']} |"
            )
    s = r["servers"]
    key = "1 record, 32 clients"
    ratios = []
    if "bentoml_http" in s:
        h = s["bentoml_http"][key]["rps"]
        if "mlserver" in s:
            ratios.append(f"HTTP vs MLServer (32 clients): {h / s['mlserver'][key]['rps']:.2f}x")
        ratios.append(f"HTTP vs FastAPI, pipeline scoring (32 clients): {h / s['fastapi'][key]['rps']:.2f}x")
        ratios.append(
            f"HTTP vs FastAPI, same fast scorer (32 clients; the framework alone): "
            f"{h / s['fastapi_fast'][key]['rps']:.2f}x"
        )
        ratios.append(f"gRPC vs HTTP (32 clients): {s['bentoml_grpc'][key]['rps'] / h:.2f}x")
        rows = s["bentoml_http"]["1000 records, 4 clients"]["rows_per_s"]
        ratios.append(
            f"1000-record rows/s vs in-process limit: {rows / ip['1000 records']['rows_per_s']:.2f}"
        )
    ratios.append(
        f"drift check vs scipy floor (100,000 log records): {r['drift']['ratio']:.2f}x "
        f"({r['drift']['drift_command_s']:.1f} s vs {r['drift']['scipy_floor_s']:.1f} s)"
    )
    ratios.append(
        f"training: {r['training_s']:.1f} s; cold start to /startup 200: {r.get('cold_start_s', 0):.1f} s"
    )
    goals = ["", "| target (issue #14) | measured | goal | met |", "| --- | ---: | --- | --- |"]
    for t in r.get("targets", []):
        goals.append(f"| {t['what']} | {t['value']:.2f} | {t['goal']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines + [""] + [f"- {x}" for x in ratios] + goals)


def target(what: str, value: float, goal: str, met: bool) -> dict:
    return {"what": what, "value": value, "goal": goal, "met": bool(met)}


def serving_targets(s: dict, ip: dict) -> list[dict]:
    """The targets of this service's HTTP and gRPC servers, against the in-process limit, their
    own runs and MLServer (when it ran)."""
    over_http, key, batch = s["bentoml_http"], "1 record, 32 clients", "1000 records, 4 clients"
    out = [
        target(
            "1,000-record rows/s over HTTP / in-process limit",
            over_http[batch]["rows_per_s"] / ip["1000 records"]["rows_per_s"],
            ">= 0.5",
            over_http[batch]["rows_per_s"] / ip["1000 records"]["rows_per_s"] >= 0.5,
        )
    ]
    for name, body in (("bentoml_grpc", "Struct"), ("bentoml_grpc_bytes", "serialized_bytes")):
        if name in s:
            ratio = s[name][batch]["rows_per_s"] / over_http[batch]["rows_per_s"]
            out.append(target(f"1,000-record rows/s, gRPC ({body}) / HTTP", ratio, ">= 1.0", ratio >= 1.0))
    tail = over_http[key]
    out.append(
        target(
            "p99 / own p50 (HTTP, 32 clients)",
            tail["p99_ms"] / tail["p50_ms"],
            "<= 3",
            tail["p99_ms"] <= 3 * tail["p50_ms"],
        )
    )
    out.append(
        target(
            "p99 spread over 3 runs, (max - min) / min",
            tail["p99_spread"],
            "<= 0.2",
            tail["p99_spread"] <= 0.2,
        )
    )
    if "mlserver" in s:
        ml = s["mlserver"][key]
        out.append(
            target(
                "p99 / MLServer's p99 (32 clients)",
                tail["p99_ms"] / ml["p99_ms"],
                "<= 1",
                tail["p99_ms"] <= ml["p99_ms"],
            )
        )
        out.append(
            target(
                "req/s / MLServer's (32 clients), 0 errors",
                tail["rps"] / ml["rps"],
                ">= 1.3",
                tail["rps"] >= 1.3 * ml["rps"] and not tail["errors"],
            )
        )
    return out


def targets(r: dict) -> list[dict]:
    """The issue's targets, each as a ratio measured in this run (the image's size if it is built)."""
    s = r["servers"]
    out = serving_targets(s, r["in_process"]) if s.get("bentoml_http") and s.get("bentoml_grpc") else []
    out.append(
        target(
            "drift command / scipy floor (100,000 log records)",
            r["drift"]["ratio"],
            "<= 3",
            r["drift"]["ratio"] <= 3,
        )
    )
    if r.get("cold_start_s") is not None:
        out.append(
            target(
                "cold start to /startup 200, s (bentoml serve)",
                r["cold_start_s"],
                "<= 3",
                r["cold_start_s"] <= 3,
            )
        )
    if r.get("image_bytes"):
        out.append(
            target(
                "image size, GB (docker image inspect)",
                r["image_bytes"] / 1e9,
                "<= 1.2",
                r["image_bytes"] <= 1.2e9,
            )
        )
    return out


def image_bytes() -> int | None:
    """The size of the image `make image` built for this version, if there is one."""
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    try:
        out = subprocess.run(
            ["docker", "image", "inspect", f"churn-service:{version}", "--format", "{{.Size}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(out.stdout) if out.returncode == 0 else None


# ------------------------------------------------------------------------------------------------
# Batch scoring and online reasons (issue #22): `python benchmarks/bench.py batch` runs this alone
# ------------------------------------------------------------------------------------------------

PLAIN_BATCH = """
import sys, bentoml, pandas as pd
from churn.model import get_store_model
from churn.settings import load_settings
model = get_store_model(load_settings(), sys.argv[3])
pipeline = bentoml.sklearn.load_model(model)
df = pd.read_csv(sys.argv[1])
df["TotalCharges"] = pd.to_numeric(df["TotalCharges"], errors="coerce").fillna(0)  # the 11 blanks
p = pipeline.predict_proba(df.drop(columns=["customerID", "Churn"]))[:, 1]
out = pd.DataFrame({"customerID": df["customerID"], "churn_probability": p})
out["churn"] = p >= float(model.info.metadata["threshold"])
out.to_csv(sys.argv[2], index=False)
"""


def repeat_data_set(path: Path, rows: int) -> None:
    """The data set's customers repeated (header once) up to `rows` rows."""
    with open(DATA, "rb") as fh:
        header, *lines = fh.read().splitlines(keepends=True)
    with open(path, "wb") as fh:
        fh.write(header)
        for start in range(0, rows, len(lines)):
            fh.writelines(lines[: rows - start])


def timed_process(cmd: list[str], env: dict) -> dict:
    """Wall time and peak RSS (the kernel's ru_maxrss of that one child) of a whole process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024}


def batch_bench(home: Path, tag: str) -> dict:
    """File to file, whole processes (imports and model loading included), one after the other on
    the same files: the plain pandas script, scoring.batch, scoring.batch --reasons 3; on one
    million rows (speed) and five million (memory)."""
    env = state_env(home)
    out: dict = {}
    for rows in (1_000_000, 5_000_000):
        source = SCRATCH / f"customers-{rows}.csv"
        repeat_data_set(source, rows)
        runs = {
            "plain pandas": [sys.executable, "-c", PLAIN_BATCH, str(source), str(SCRATCH / "plain.csv"), tag],
            "scoring.batch": [sys.executable, "-m", "scoring.batch", "--input", str(source),
                              "--output", str(SCRATCH / "batch.csv")],
            "scoring.batch --reasons 3": [sys.executable, "-m", "scoring.batch", "--input", str(source),
                                          "--output", str(SCRATCH / "reasons.csv"), "--reasons", "3"],
        }  # fmt: skip
        out[rows] = {}
        for name, cmd in runs.items():
            result = timed_process(cmd, env)
            result["rows_per_s"] = rows / result["seconds"]
            out[rows][name] = result
            print(f"  batch {rows:>9,} rows  {name:26s} {result['seconds']:6.1f} s  "
                  f"{result['peak_rss_mib']:6.0f} MiB", file=sys.stderr)  # fmt: skip
        source.unlink()
    return out


EXPLAIN_ROUNDS = 4


def explain_bench(home: Path) -> dict:
    """p50 latency over HTTP with and without `"explain": 3`, 1-record (1 client) and
    1,000-record (4 clients) requests, the two loads alternated EXPLAIN_ROUNDS times on one server
    (the median of their p50s)."""
    srv = Server("http", home, SCRATCH)
    srv.start()
    out: dict = {}
    try:
        wait_http(srv.url + "/startup")
        for label, n, clients in (LOADS[0], LOADS[2]):
            records = (RECORDS * 2)[:n]
            bodies = {
                "without": json.dumps({"instances": records}).encode(),
                "explain 3": json.dumps({"instances": records, "explain": 3}).encode(),
            }
            for body in bodies.values():
                hey(srv.url + "/predict", body, clients, WARMUP)
            runs: dict = {k: [] for k in bodies}
            for _ in range(EXPLAIN_ROUNDS):  # alternated: a busy neighbour slows both alike
                for key, body in bodies.items():
                    runs[key].append(hey(srv.url + "/predict", body, clients, DURATION / 2))
            out[label] = {
                key: {
                    "p50_ms": float(np.median([r["p50_ms"] for r in rs])),
                    "rps": float(np.mean([r["rps"] for r in rs])),
                    "errors": sum(r["errors"] for r in rs),
                }
                for key, rs in runs.items()
            }
            out[label]["ratio"] = out[label]["explain 3"]["p50_ms"] / out[label]["without"]["p50_ms"]
            print(f"  explain {label:24s} p50 ratio {out[label]['ratio']:.2f}", file=sys.stderr)
    finally:
        srv.stop()
    return out


def batch_targets(batch: dict, explain: dict) -> list[dict]:
    """Issue #22's targets, in the shape of targets()'s, so that the verdict covers them too."""
    one, five = batch[1_000_000], batch[5_000_000]
    plain = one["plain pandas"]["rows_per_s"]
    goals = [
        ("batch rows/s / plain pandas, 1M rows", one["scoring.batch"]["rows_per_s"] / plain, ">= 1.0"),
        (
            "batch --reasons 3 rows/s / plain pandas, 1M rows",
            one["scoring.batch --reasons 3"]["rows_per_s"] / plain,
            ">= 0.5",
        ),
        ("peak RSS MiB, batch, 5M rows", five["scoring.batch"]["peak_rss_mib"], "<= 512"),
        (
            "peak RSS MiB, batch --reasons 3, 5M rows",
            five["scoring.batch --reasons 3"]["peak_rss_mib"],
            "<= 512",
        ),
    ] + [(f"explain 3 p50 / without, {label}", r["ratio"], "<= 1.2") for label, r in explain.items()]
    out = []
    for what, value, goal in goals:
        op, bound = goal.split()
        met = value >= float(bound) if op == ">=" else value <= float(bound)
        out.append({"what": what, "value": value, "goal": goal, "met": met})
    return out


def batch_markdown(batch: dict, explain: dict) -> str:
    lines = [
        "| rows | program | seconds | rows/s | vs plain pandas | peak RSS MiB |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for rows, runs in batch.items():
        plain = runs["plain pandas"]["rows_per_s"]
        for name, r in runs.items():
            lines.append(
                f"| {int(rows):,} | {name} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
                f"{r['rows_per_s'] / plain:.2f}x | {r['peak_rss_mib']:.0f} |"
            )
    lines += [
        "",
        "| request | p50 ms without | p50 ms explain 3 | ratio | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, r in explain.items():
        lines.append(
            f"| {label} | {r['without']['p50_ms']:.2f} | {r['explain 3']['p50_ms']:.2f} | {r['ratio']:.2f} | "
            f"{r['without']['errors'] + r['explain 3']['errors']} |"
        )
    lines += ["", "| target (issue #22) | measured | goal | met |", "| --- | ---: | --- | --- |"]
    for t in batch_targets(batch, explain):
        lines.append(f"| {t['what']} | {t['value']:.2f} | {t['goal']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def batch_only(home: Path, tag: str) -> int:
    """`python benchmarks/bench.py batch`: only this section, on main()'s freshly trained model."""
    batch, explain = batch_bench(home, tag), explain_bench(home)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    (ROOT / "benchmarks" / "results" / f"{stamp}-batch.json").write_text(
        json.dumps({"model": tag, "cpus": os.cpu_count(), "batch": batch, "explain": explain}, indent=2)
        + "\n"
    )
    print(batch_markdown(batch, explain))
    missed = verdict(batch_targets(batch, explain), BATCH_TARGETS)
    for line in missed:
        print(f"target missed: {line}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(only_batch=sys.argv[1:] == ["batch"]))
