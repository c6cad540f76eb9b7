import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from churn.model_registry import Registry, RegistryError, current_tag


def info(auc):
    return {"created": "now", "metrics": {"roc_auc": auc}, "threshold": 0.5}


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "registry.json", "churn_model")


def test_empty_registry_has_no_current(reg):
    assert reg.current() is None
    assert current_tag(reg.path, "churn_model") is None


PROMOTE = (True, "test")


def test_register_applies_the_callers_decision_if_the_current_model_is_unchanged(reg):
    # The rule lives in churn.promotion (tests/unit/test_policy.py); the registry records.
    assert reg.register("m:1", info(0.84), PROMOTE, if_current=None) == PROMOTE
    assert reg.register("m:2", info(0.99)) == (False, "registered only")
    assert reg.current() == "m:1"
    promoted, reason = reg.register("m:3", info(0.90), PROMOTE, if_current=None)  # m:1 is current
    assert promoted is False and "promote refused" in reason and reg.current() == "m:1"
    assert reg.register("m:4", info(0.10), PROMOTE)[0] is True  # no comparison asked
    assert reg.current() == "m:4"
    assert list(reg.read()["versions"]) == ["m:1", "m:2", "m:3", "m:4"]


def test_registering_twice_is_refused(reg):
    reg.register("m:1", info(0.8))
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("m:1", info(0.8))


def test_promote_unknown_tag_is_refused(reg):
    with pytest.raises(RegistryError, match="not a registered version"):
        reg.promote("m:404")


def test_rollback_walks_back_the_chain_of_current_models(reg):
    for i, auc in enumerate([0.80, 0.81, 0.82], start=1):
        reg.register(f"m:{i}", info(auc), PROMOTE)
    assert reg.current() == "m:3"
    assert reg.rollback()["tag"] == "m:2"
    assert reg.rollback()["tag"] == "m:1"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    reg.promote("m:3")
    assert reg.rollback()["tag"] == "m:1"
    actions = [e["action"] for e in reg.read()["history"]]
    assert actions.count("rollback") == 3  # the history only grows


def test_damaged_file_is_reported_not_overwritten(reg):
    reg.path.write_text("{not json")
    with pytest.raises(RegistryError, match="not valid JSON"):
        reg.current()
    with pytest.raises(RegistryError):
        reg.register("m:1", info(0.8))
    assert reg.path.read_text() == "{not json"


def _register_many(path, worker, count):
    reg = Registry(path, "churn_model")
    for i in range(count):
        reg.register(f"m:{worker}-{i}", info(0.8 + random.random() / 100), (i % 2 == 0, "test"))


def test_concurrent_processes_lose_no_entry(tmp_path):
    path = tmp_path / "registry.json"
    procs = [mp.get_context("fork").Process(target=_register_many, args=(path, w, 15)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = json.loads(path.read_text())
    assert len(data["versions"]) == 90
    assert sum(e["action"] == "register" for e in data["history"]) == 90
    assert data["current"] in data["versions"]


WRITER = """
import sys
from churn.model_registry import Registry
reg = Registry(sys.argv[1], "churn_model")
i = 0
while True:
    reg.register(f"m:{sys.argv[2]}-{i}", {"metrics": {"roc_auc": 0.8}, "blob": "x" * 20000}, (True, "test"))
    if i == 0:
        print("writing", flush=True)
    i += 1
"""


def test_writer_killed_at_random_points_leaves_a_valid_registry(tmp_path):
    path = tmp_path / "registry.json"
    rng = random.Random(7)
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(round_)],
            cwd=os.getcwd(),
            stdout=subprocess.PIPE,
            text=True,
        )
        # Killed while it writes, not while Python starts (which took over 0.3 s on a loaded machine).
        assert proc.stdout.readline() == "writing\n"
        time.sleep(rng.random() * 0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        data = Registry(path, "churn_model").read()  # raises if half-written
        assert data["current"] in data["versions"]
        registered = [e["tag"] for e in data["history"] if e["action"] == "register"]
        assert registered == list(data["versions"])
        assert any(t.startswith(f"m:{round_}-") for t in data["versions"])  # this round did write
    # The next writer clears temporary files that killed writers left behind.
    Registry(path, "churn_model").register("m:final", {"metrics": {"roc_auc": 0.8}})
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
