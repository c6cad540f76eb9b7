"""`make demo`: the model lifecycle on real data, end to end, in a few minutes.

The first model learns from customers with one- or two-year contracts only. Then month-to-month
customers arrive as traffic (a first wave), and their real outcomes come back. The performance
report shows the model is wrong about them; training.retrain learns from the outcomes and the gate
promotes the challenger; both servers (make run's: HTTP and gRPC) switch to it under load without
a failed request; a second wave of new month-to-month customers, and their outcomes, show the
recovery. With --shuffled-outcomes the outcomes are shuffled among the customers: the challenger
learns nothing real and must be refused.

    .venv/bin/python scripts/demo.py [--home .mlops-demo] [--shuffled-outcomes] [--json]

It prints a table (version, realized and estimated F1 and ROC AUC, drift verdict, decision) and
the reports' paths; with --json, the last line of stdout is the whole story as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.servers import free_port  # noqa: E402
from churn.client import predict_grpc, records_from_csv  # noqa: E402

PY = sys.executable
DATA = ROOT / "data" / "telco_churn.csv"
RELOAD = 1  # seconds: the demo's servers re-read the registry every second
MARKER = ".churn-demo"


def step(text: str) -> None:
    print(f"==> {text}", file=sys.stderr, flush=True)


def run(module: str, *args: str, env: dict) -> dict:
    proc = subprocess.run([PY, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{module} {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def post(url: str, records: list[dict]) -> tuple[int, dict]:
    body = json.dumps({"instances": records}).encode()
    req = urllib.request.Request(url + "/predict", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except OSError:
        return 0, {}


def wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def split(folder: Path, seed: int) -> tuple[Path, list[dict], list[dict], pd.DataFrame]:
    """Contract customers (the first model's data), and two waves of month-to-month customers."""
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    contracts = raw[raw["Contract"] != "Month-to-month"]
    monthly = raw[raw["Contract"] == "Month-to-month"].sample(frac=1.0, random_state=seed)
    path = folder / "contracts.csv"
    contracts.to_csv(path, index=False)
    waves_path = folder / "month-to-month.csv"
    monthly.to_csv(waves_path, index=False)
    records = records_from_csv(str(waves_path))
    cut = int(len(records) * 0.6)
    return path, records[:cut], records[cut:], monthly.set_index("customerID")


def outcomes(
    folder: Path, name: str, wave: list[dict], truth: pd.DataFrame, shuffled: bool, seed: int
) -> Path:
    ids = [r["customerID"] for r in wave]
    labels = truth.loc[ids, "Churn"].tolist()
    if shuffled:
        random.Random(seed).shuffle(labels)
    when = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    path = folder / name
    pd.DataFrame({"customerID": ids, "Churn": labels, "observed_at": when}).to_csv(path, index=False)
    return path


def send(http_url: str, grpc_address: str, wave: list[dict]) -> str:
    """The wave as traffic: most over HTTP in batches, some over gRPC; returns the version."""
    models = set()
    for start in range(0, len(wave), 400):
        batch = wave[start : start + 400]
        if start // 400 % 4 == 3:
            code, body = predict_grpc(grpc_address, batch)
            assert code == "OK", body
        else:
            status, body = post(http_url, batch)
            assert status == 200, body
        models.add(body["model"])
    assert len(models) == 1, models
    return models.pop()


class Load(threading.Thread):
    """Steady traffic on both transports while the model changes: every failure is counted."""

    def __init__(self, http_url: str, grpc_address: str, records: list[dict]):
        super().__init__(daemon=True)
        self.http_url, self.grpc_address, self.records = http_url, grpc_address, records
        self.stop, self.sent, self.failed = threading.Event(), 0, []
        self.seen: list[tuple[float, str, str]] = []  # (time, transport, model)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            batch = self.records[i % len(self.records) : i % len(self.records) + 3]
            sent = time.time()
            if i % 2:
                code, body = predict_grpc(self.grpc_address, batch)
                ok, transport = code == "OK", "grpc"
            else:
                status, body = post(self.http_url, batch)
                ok, transport = status == 200, "http"
            self.sent += 1
            if ok:
                self.seen.append((sent, transport, body["model"]))
            else:
                self.failed.append(str(body)[:200])
            i += 1


def _stage(name: str, drift: dict, perf: dict) -> dict:
    return {
        "stage": name,
        "drift": drift["drift"],
        "drift_report": drift["html"],
        "performance": perf["models"],
        "performance_report": perf["html"],
        "performance_json": perf["report"],
    }


def demo_env(home: Path) -> dict:
    """The commands' environment: this shell's, without its BentoML and monitoring settings, on `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "MONITORING_"))}
    env |= {"MLOPS_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    env |= {"RELOAD_INTERVAL_SECONDS": str(RELOAD)}
    return env


@dataclass
class Servers:
    """make run's servers (one process group), and where they answer."""

    process: subprocess.Popen
    http_url: str
    grpc_address: str

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)


def start_servers(home: Path, env: dict) -> Servers:
    ports = {"HTTP_PORT": free_port(), "GRPC_PORT": free_port(), "GRPC_METRICS_PORT": free_port()}
    step(f"make run on {home} (HTTP :{ports['HTTP_PORT']}, gRPC :{ports['GRPC_PORT']})")
    server_env = {k: v for k, v in env.items() if k != "BENTOML_HOME"} | {k: str(v) for k, v in ports.items()}
    process = subprocess.Popen(
        ["scripts/run.sh"], cwd=ROOT, env=server_env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=open(home / "servers.log", "w"),  # noqa: SIM115
    )  # fmt: skip
    return Servers(process, f"http://127.0.0.1:{ports['HTTP_PORT']}", f"127.0.0.1:{ports['GRPC_PORT']}")


def feedback_and_reports(labels: Path, stage: str, env: dict) -> tuple[dict, dict]:
    """The outcomes ingested, then the drift and performance reports of the last hour (a stage)."""
    feedback = run("monitoring.feedback", "--labels", str(labels), env=env)
    drift = run("monitoring.drift", "--since", "1h", env=env)
    perf = run("monitoring.performance", "--since", "1h", env=env)
    return feedback, _stage(stage, drift, perf)


def _promotion_time(home: Path, tag: str) -> float:
    """When the registry promoted `tag` (epoch seconds): the switch is measured from then."""
    registry = json.loads((home / "registry.json").read_text())
    changed = next(
        e["time"] for e in reversed(registry["history"]) if e["action"] == "promote" and e["tag"] == tag
    )
    return dt.datetime.fromisoformat(changed.replace("Z", "+00:00")).timestamp()


def measure_switch(home: Path, load: Load, new: str) -> dict:
    """How long each transport took to answer with the promoted model, and how many answers
    still came from the old one once every server should have reloaded."""
    changed_at = _promotion_time(home, new)

    def switched() -> bool:
        return {tr for t, tr, m in load.seen if m == new and t > changed_at} == {"http", "grpc"}

    wait(switched, 30, "the switch")
    time.sleep(RELOAD + 2)
    switch_seconds = {
        tr: round(min(t for t, x, m in load.seen if x == tr and m == new and t > changed_at) - changed_at, 2)
        for tr in ("http", "grpc")
    }
    late = [m for t, _, m in load.seen if t > changed_at + RELOAD + 2]
    return {"switch_seconds": switch_seconds, "old_version_after_switch": sum(m != new for m in late)}


def retrain_under_load(home: Path, contracts: Path, servers: Servers, records: list[dict], env: dict) -> dict:
    """training.retrain while both servers answer steady traffic: its result, the switch (when
    it promoted) and the load's count of requests and failures."""
    load = Load(servers.http_url, servers.grpc_address, records)
    load.start()
    time.sleep(1)
    retrained = run("training.retrain", "--data", str(contracts), "--min-labels", "200", env=env)
    result: dict = {"retrain": retrained}
    if retrained["promoted"]:
        result |= measure_switch(home, load, retrained["tag"])
    else:
        time.sleep(RELOAD + 2)
    load.stop.set()
    load.join(30)
    result["load"] = {"requests": load.sent, "failed": len(load.failed), "failures": load.failed[:5]}
    return result


def story(home: Path, shuffled: bool, seed: int) -> dict:
    folder = home / "demo-data"
    folder.mkdir(parents=True)
    env = demo_env(home)
    contracts, wave_a, wave_b, truth = split(folder, seed)
    out: dict = {"shuffled_outcomes": shuffled, "wave_a": len(wave_a), "wave_b": len(wave_b), "stages": []}

    step(f"train the first model on {contracts.name}: customers with one- or two-year contracts only")
    first = run("training.train", "--data", str(contracts), env=env)
    out["first_model"] = first["tag"]

    servers = start_servers(home, env)
    http_url, grpc_address = servers.http_url, servers.grpc_address
    try:
        wait(lambda: get(http_url + "/ready")[0] == 200, 180, "make run's servers")
        wait(lambda: predict_grpc(grpc_address, wave_a[:1])[0] == "OK", 60, "the gRPC server")

        step(f"wave 1: {len(wave_a)} month-to-month customers scored")
        out["wave_a_model"] = send(http_url, grpc_address, wave_a)
        time.sleep(1.5)  # the prediction log is written by a background thread
        step("their real outcomes come back" + (" (shuffled among them)" if shuffled else ""))
        labels = outcomes(folder, "outcomes-1.csv", wave_a, truth, shuffled, seed)
        out["feedback_a"], stage = feedback_and_reports(labels, "after wave 1", env)
        out["stages"].append(stage)

        step("retrain with the outcomes; the gate compares champion and challenger on the newest outcomes")
        out |= retrain_under_load(home, contracts, servers, wave_a[:300], env)

        step(f"wave 2: {len(wave_b)} new month-to-month customers scored, and their outcomes")
        out["wave_b_model"] = send(http_url, grpc_address, wave_b)
        time.sleep(1.5)
        labels = outcomes(folder, "outcomes-2.csv", wave_b, truth, shuffled, seed + 1)
        out["feedback_b"], stage = feedback_and_reports(labels, "after wave 2", env)
        out["stages"].append(stage)
        out["current"] = json.loads((home / "registry.json").read_text())["current"]
    finally:
        servers.stop()
    return out


def table(story_: dict) -> str:
    def f(x):
        return "" if x is None else f"{x:.3f}"

    rows = [
        "| stage | version | predictions | outcomes | F1 realized | F1 estimated | ROC AUC realized "
        "| ROC AUC estimated | drift |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for stage in story_["stages"]:
        for tag, m in stage["performance"].items():
            real, est = m["realized"] or {}, m["estimated"] or {}
            rows.append(
                f"| {stage['stage']} | {tag} | {m['n_predictions']} | {m['n_labelled']} "
                f"| {f(real.get('f1'))} "
                f"| {f(est.get('f1'))} | {f(real.get('roc_auc'))} | {f(est.get('roc_auc'))} "
                f"| {'yes' if stage['drift'] else 'no'} |"
            )
    r = story_["retrain"]
    ev = r.get("evaluation") or {}
    lines = rows + [
        "",
        f"retrain: {'PROMOTED' if r['promoted'] else 'not promoted'} {r['tag']} — {r['reason']}",
        f"evaluation window: {ev.get('n')} outcomes; champion ROC AUC "
        f"{ev.get('champion', {}).get('roc_auc')}, challenger {ev.get('challenger', {}).get('roc_auc')}",
        f"under load during the change: {story_['load']['requests']} requests, "
        f"{story_['load']['failed']} failed"
        + (
            f"; switch after the registry changed (s): {story_['switch_seconds']}"
            if "switch_seconds" in story_
            else ""
        ),
        f"current model at the end: {story_['current']}",
        "reports: " + ", ".join(s["performance_report"] for s in story_["stages"]),
        "drift reports: " + ", ".join(s["drift_report"] for s in story_["stages"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".mlops-demo", help="state folder (made afresh)")
    parser.add_argument("--shuffled-outcomes", action="store_true", help="the challenger must be refused")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="last line of stdout: the story as JSON")
    args = parser.parse_args(argv)
    home = args.home.absolute()
    if home.exists():
        if not (home / MARKER).exists():
            print(f"error: {home} exists and is not a demo folder: pick another --home", file=sys.stderr)
            return 2
        shutil.rmtree(home)
    home.mkdir(parents=True)
    (home / MARKER).write_text("made by scripts/demo.py; deleted by its next run\n")
    result = story(home, args.shuffled_outcomes, args.seed)
    print(table(result))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
