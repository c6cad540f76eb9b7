"""Safe rollout through the registry: shadow and canary candidates on real servers (HTTP with two
workers, and gRPC), without restarts, and training.decide on real outcomes.

The module's models: v1 knows only one- and two-year contracts (current at the start of every
test); v2 also learned real outcomes of month-to-month customers (better on them); v3 learned
the same customers' outcomes shuffled (no better, and worse calibrated)."""

from __future__ import annotations

import json
import time

import bentoml
import numpy as np
import pandas as pd
import pytest

from churn.client import predict_grpc, records_from_csv
from churn.model import get_store_model
from churn.model_registry import Registry
from churn.schema import records_to_frame
from churn.settings import settings_from_env
from tests.support import DATA, LoadClients, Server, http, last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow

RELOAD = 1.0
MARGIN = 2.0
BOUND = RELOAD + MARGIN


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rollout")
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    contracts = raw[raw["Contract"] != "Month-to-month"]
    monthly = raw[raw["Contract"] == "Month-to-month"].sample(frac=1.0, random_state=3)
    known, fresh = monthly.iloc[:2000], monthly.iloc[2000:]
    shuffled = known.assign(Churn=known["Churn"].sample(frac=1.0, random_state=4).to_numpy())
    for name, frame in (
        ("v1", contracts),
        ("v2", pd.concat([contracts, known])),
        ("v3", pd.concat([contracts, shuffled])),
    ):
        frame.to_csv(folder / f"{name}.csv", index=False)
    fresh.to_csv(folder / "fresh.csv", index=False)
    home = folder / "home"
    tags = {"v1": train(home, "--data", str(folder / "v1.csv"))["tag"]}
    for name in ("v2", "v3"):
        tags[name] = train(home, "--data", str(folder / f"{name}.csv"), "--promote", "never")["tag"]
    servers = {
        "http": Server("http", home, folder, workers=2, RELOAD_INTERVAL_SECONDS=str(RELOAD)).start(),
        "grpc": Server("grpc", home, folder, RELOAD_INTERVAL_SECONDS=str(RELOAD)).start(),
    }
    yield {"home": home, "tags": tags, "servers": servers, "fresh": fresh, "folder": folder}
    for server in servers.values():
        server.stop()


def registry(world) -> Registry:
    return Registry(world["home"] / "registry.json", "churn_model")


def cli(world, *args: str):
    return run_cli("training.registry", *args, env=state_env(world["home"]))


def settle() -> None:
    time.sleep(BOUND)  # every worker of every server has re-read the registry


@pytest.fixture
def clean(world):
    """Each test starts from v1 current and no candidate."""
    reg = registry(world)
    if reg.candidate() is not None:
        reg.unstage("test reset")
    if reg.current() != world["tags"]["v1"]:
        reg.promote(world["tags"]["v1"], "test reset")
    settle()
    return world


CUSTOMERS = records_from_csv(str(DATA), limit=2000)


def score_http(world, records):
    out = []
    for start in range(0, len(records), 500):
        status, body, _ = http(
            "POST", world["servers"]["http"].url + "/predict", {"instances": records[start : start + 500]}
        )
        assert status == 200, body
        out += body["predictions"]
    return out


def test_stage_and_unstage_are_in_the_registry_and_checked(clean, tmp_path):
    world = clean
    v1, v2 = world["tags"]["v1"], world["tags"]["v2"]
    assert cli(world, "stage", v1, "--mode", "canary").returncode == 2  # already current
    assert "already the current model" in cli(world, "stage", v1, "--mode", "shadow").stderr
    assert cli(world, "stage", "churn_model:nope", "--mode", "shadow").returncode == 2
    bad = cli(world, "stage", v2, "--mode", "shadow", "--fraction", "0.2")
    assert bad.returncode == 2 and "applies to canary only" in bad.stderr
    assert cli(world, "stage", v2, "--mode", "canary", "--fraction", "0").returncode == 2
    assert cli(world, "unstage").returncode == 2  # nothing staged
    proc = cli(world, "stage", v2, "--mode", "canary")
    assert proc.returncode == 0 and "0.1 of customers" in proc.stdout  # the default fraction
    listing = cli(world, "list").stdout
    assert f"~ {v2}" in listing and "candidate: canary, 0.1 of customers" in listing
    show = json.loads(cli(world, "show", v2).stdout)
    assert show["candidate"]["mode"] == "canary" and show["candidate"]["fraction"] == 0.1
    # the sequential test that will decide it is recorded with it (issue 20.2)
    assert (
        show["candidate"]["design"]["alpha"] == 0.05
        and "mixture SPRT" in show["candidate"]["design"]["method"]
    )
    assert show["history"][-1]["action"] == "stage"
    assert cli(world, "unstage", "--reason", "test").returncode == 0
    events = [e["action"] for e in registry(world).read()["history"]]
    assert events[-2:] == ["stage", "unstage"]


def test_canary_answers_its_share_of_customers_and_each_keeps_its_version(clean):
    world = clean
    v1, v2 = world["tags"]["v1"], world["tags"]["v2"]
    assert cli(world, "stage", v2, "--mode", "canary", "--fraction", "0.3").returncode == 0
    settle()
    first = score_http(world, CUSTOMERS)
    share = sum(p["model"] == v2 for p in first) / len(first)
    print(f"\ncanary 0.3: {share:.3f} of 2,000 customers answered by the candidate")
    assert abs(share - 0.3) <= 0.05 and {p["model"] for p in first} == {v1, v2}
    again = score_http(world, list(reversed(CUSTOMERS)))[::-1]  # another order, other batches
    assert [p["model"] for p in again] == [p["model"] for p in first]  # sticky per customer
    code, reply = predict_grpc(world["servers"]["grpc"].address, CUSTOMERS[:300])
    assert code == "OK" and [p["model"] for p in reply["predictions"]] == [p["model"] for p in first[:300]]
    assert reply["model"] is None  # the request was split between the versions
    # each prediction is its version's own answer, against its own threshold
    for tag in (v1, v2):
        idx = [i for i, p in enumerate(first) if p["model"] == tag]
        model = get_store_model(settings_from_env(state_env(world["home"])), tag)
        pipeline, threshold = bentoml.sklearn.load_model(model), model.info.metadata["threshold"]
        frame = records_to_frame([{k: v for k, v in CUSTOMERS[i].items() if k != "customerID"} for i in idx])
        expected = pipeline.predict_proba(frame)[:, 1]
        served = np.array([first[i]["churn_probability"] for i in idx])
        assert np.abs(served - expected).max() <= 1e-9
        assert [first[i]["churn"] for i in idx] == list(expected >= threshold)
    info = http("GET", world["servers"]["http"].url + "/model")[1]
    assert info["candidate"] == {
        "model": v2,
        "mode": "canary",
        "fraction": 0.3,
        "loaded": True,
        "error": None,
    }
    metrics = http("GET", world["servers"]["http"].url + "/metrics")[1]
    assert f'churn_predictions_total{{model="{v2}",outcome=' in metrics
    assert f'churn_candidate_info{{mode="canary",model="{v2}"}} 1.0' in metrics


def test_shadow_never_changes_a_response_and_logs_the_candidate_for_every_record(clean):
    world = clean
    v1, v2 = world["tags"]["v1"], world["tags"]["v2"]
    records = [dict(r, customerID=f"shadow-{i}") for i, r in enumerate(CUSTOMERS[:400])]
    before = score_http(world, records)
    assert cli(world, "stage", v2, "--mode", "shadow").returncode == 0
    settle()
    during = score_http(world, records)
    assert during == before  # the same answers, to the last digit, all from v1
    code, reply = predict_grpc(world["servers"]["grpc"].address, records[:50])
    assert code == "OK" and reply["model"] == v1 and reply["predictions"] == before[:50]
    time.sleep(1)  # the log writer
    lines = [
        json.loads(x)
        for p in (world["home"] / "predictions").glob("*.jsonl")
        for x in p.read_text().splitlines()
        if x
    ]
    shadowed = {
        ln["record"]["customerID"]: ln for ln in lines if ln["record"]["customerID"].startswith("shadow-")
    }
    logged = [ln for ln in lines if "shadow" in ln and ln["record"]["customerID"].startswith("shadow-")]
    assert len({ln["record"]["customerID"] for ln in logged}) == 400  # every record of the HTTP pass
    assert all(ln["model"] == v1 and ln["shadow"]["model"] == v2 for ln in logged)
    model = get_store_model(settings_from_env(state_env(world["home"])), v2)
    frame = records_to_frame([{k: v for k, v in r.items() if k != "customerID"} for r in records])
    expected = bentoml.sklearn.load_model(model).predict_proba(frame)[:, 1]
    got = np.array(
        [
            next(ln for ln in logged if ln["record"]["customerID"] == r["customerID"])["shadow"][
                "churn_probability"
            ]
            for r in records
        ]
    )
    assert np.abs(got - expected).max() <= 1e-9 and len(shadowed) == 400


def _median_latency(url: str, n: int = 300) -> float:
    record = {"instances": CUSTOMERS[:1]}
    for _ in range(20):
        http("POST", url + "/predict", record)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        http("POST", url + "/predict", record)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


@pytest.fixture(scope="module")
def slow_candidate(world):
    """A version the fast path refuses (tests/models.py; test_model_serving.py shows it is served
    through the sklearn pipeline): scoring it costs milliseconds a call, not microseconds, so a
    shadow of it on the response path would show."""
    proc = run_cli("tests.models", "unsupported", env=state_env(world["home"]))
    assert proc.returncode == 0, proc.stderr
    tag = proc.stdout.strip().splitlines()[-1]
    registry(world).promote(world["tags"]["v1"], "test: the slow version is a candidate only")
    return tag


def test_shadow_scoring_stays_off_the_response_path(clean, slow_candidate):
    """Measured: median latency of one-record requests, one client, without and with a shadow
    that the fast path refuses."""
    world = clean
    url = world["servers"]["http"].url
    without = _median_latency(url)
    assert cli(world, "stage", slow_candidate, "--mode", "shadow").returncode == 0
    settle()
    with_shadow = _median_latency(url)
    info = http("GET", url + "/model")[1]
    assert info["candidate"]["model"] == slow_candidate and info["candidate"]["loaded"] is True
    time.sleep(1)  # the log writer
    shadowed = [
        json.loads(x)
        for p in (world["home"] / "predictions").glob("*.jsonl")
        for x in p.read_text().splitlines()
        if x and slow_candidate in x
    ]
    print(
        f"\nmedian one-record latency: {without * 1000:.2f} ms alone, "
        f"{with_shadow * 1000:.2f} ms with a shadow scored through the pipeline "
        f"({len(shadowed)} records logged with its score)"
    )
    assert len(shadowed) >= 300  # the shadow really scored (the prediction log may drop past its bound)
    assert with_shadow - without <= 0.002  # docs/lifecycle.md's bound: 2 ms


def test_unstage_stops_the_candidate_within_the_interval(clean):
    world = clean
    v1, v2 = world["tags"]["v1"], world["tags"]["v2"]
    assert cli(world, "stage", v2, "--mode", "canary", "--fraction", "0.5").returncode == 0
    settle()
    assert v2 in {p["model"] for p in score_http(world, CUSTOMERS[:200])}
    assert cli(world, "unstage").returncode == 0
    settle()
    assert {p["model"] for p in score_http(world, CUSTOMERS[:500])} == {v1}
    code, reply = predict_grpc(world["servers"]["grpc"].address, CUSTOMERS[:200])
    assert code == "OK" and reply["model"] == v1
    assert http("GET", world["servers"]["http"].url + "/model")[1]["candidate"] is None


def test_a_candidate_that_cannot_load_changes_nothing(clean):
    world = clean
    v1, v3 = world["tags"]["v1"], world["tags"]["v3"]
    name, version = v3.split(":")
    pkl = world["home"] / "bentoml" / "models" / name / version / "saved_model.pkl"
    good = pkl.read_bytes()
    pkl.write_bytes(b"not a pickle")
    try:
        refused = cli(world, "stage", v3, "--mode", "canary", "--fraction", "1")
        assert refused.returncode == 2 and "cannot be staged" in refused.stderr
        registry(world).stage(v3, "canary", 1.0, "files broke after the check")  # what the CLI refused
        settle()
        assert {p["model"] for p in score_http(world, CUSTOMERS[:300])} == {v1}
        info = http("GET", world["servers"]["http"].url + "/model")[1]
        assert info["model"] == v1 and info["candidate"]["loaded"] is False
        assert v3 in info["candidate"]["error"] and "unreadable" in info["candidate"]["error"]
    finally:
        pkl.write_bytes(good)


def test_no_request_fails_through_stage_unstage_promote_and_rollback(clean):
    world = clean
    v1, v2 = world["tags"]["v1"], world["tags"]["v2"]
    failures = []

    def client(transport: str):
        def call(i: int, n: int):
            batch = CUSTOMERS[(i + n) * 7 % 1990 : (i + n) * 7 % 1990 + 5]
            if transport == "http":
                url = world["servers"]["http"].url + "/predict"
                status, body, _ = http("POST", url, {"instances": batch})
                ok = status == 200
            else:
                status, body = predict_grpc(world["servers"]["grpc"].address, batch)
                ok = status == "OK"
            if not ok:
                failures.append(f"{transport}: {str(body)[:200]}")
            return status

        return call

    # Every exception counts as a failure; each client must live to the end and send its share.
    loads = [LoadClients(3, client("http")).start(), LoadClients(2, client("grpc")).start()]
    try:
        steps = [
            ("stage", v2, "--mode", "canary", "--fraction", "0.5"),
            ("stage", v2, "--mode", "shadow"),
            ("unstage",),
            ("stage", v2, "--mode", "canary", "--fraction", "0.2"),
            ("promote", v2),
            ("rollback",),
        ]
        for args in steps:
            assert cli(world, *args).returncode == 0, args
            settle()
    finally:
        for load in loads:
            load.stop(30)
    sent = sum(len(load.results) for load in loads)
    failed = [f for load in loads for f in load.failures]
    print(
        f"\nstage, shadow, unstage, canary, promote, rollback under load: {sent} requests, "
        f"{len(failed)} failed"
    )
    assert failures == [] and failed == [] and sent > 100, loads[0].errors + loads[1].errors
    for load in loads:
        load.check()
    assert registry(world).current() == v1 and registry(world).candidate() is None


def _outcomes(world, name: str, customers: pd.DataFrame) -> None:
    path = world["folder"] / name
    customers[["customerID", "Churn"]].to_csv(path, index=False)
    proc = run_cli("monitoring.feedback", "--labels", str(path), env=state_env(world["home"]))
    assert proc.returncode == 0, proc.stderr


def test_decide_promotes_a_better_canary_and_unstages_a_worse_shadow(clean):
    """v3 (shuffled month-to-month outcomes) ranks month-to-month customers much worse than v2
    (their real outcomes): large enough a gap for a canary's unpaired comparison on a few hundred
    customers a side, whichever customers its hash draws."""
    world = clean
    v2, v3 = world["tags"]["v2"], world["tags"]["v3"]
    fresh = world["fresh"]
    first, second = fresh.iloc[: len(fresh) // 2], fresh.iloc[len(fresh) // 2 :]
    env = state_env(world["home"])
    assert last_json_line(run_cli("training.decide", env=env).stdout)["decision"] == "none"
    assert cli(world, "promote", v3).returncode == 0
    # a canary for half of the customers; month-to-month customers come, then their outcomes
    assert cli(world, "stage", v2, "--mode", "canary", "--fraction", "0.5").returncode == 0
    settle()
    waiting = last_json_line(run_cli("training.decide", env=env).stdout)
    assert waiting["decision"] == "wait" and "each side needs 100" in waiting["reason"]
    records = [r for r in records_from_csv(str(DATA)) if r["customerID"] in set(first["customerID"])]
    score_http(world, records)
    time.sleep(1)
    _outcomes(world, "first.csv", first)
    decided = last_json_line(run_cli("training.decide", env=env).stdout)
    print(f"\ncanary: {decided['decision']} ({decided['reason']})")
    assert decided["decision"] == "promote" and decided["evaluation"]["paired"] is False
    assert registry(world).current() == v2 and registry(world).candidate() is None
    settle()
    # a worse candidate in shadow: both score the same records; it loses
    assert cli(world, "stage", v3, "--mode", "shadow").returncode == 0
    settle()
    records = [r for r in records_from_csv(str(DATA)) if r["customerID"] in set(second["customerID"])]
    assert {p["model"] for p in score_http(world, records)} == {v2}
    time.sleep(1)
    _outcomes(world, "second.csv", second)
    decided = last_json_line(run_cli("training.decide", env=env).stdout)
    print(f"shadow: {decided['decision']} ({decided['reason']})")
    assert decided["decision"] == "unstage" and decided["evaluation"]["paired"] is True
    assert registry(world).current() == v2 and registry(world).candidate() is None
    history = registry(world).read()["history"]
    assert history[-1]["action"] == "unstage" and history[-1]["details"]["challenger"]["tag"] == v3
    # the performance report puts them side by side: each shadow record scored by both
    report = last_json_line(run_cli("monitoring.performance", env=env).stdout)
    assert report["models"][f"shadow:{v3}"]["n_labelled"] == len(second)
