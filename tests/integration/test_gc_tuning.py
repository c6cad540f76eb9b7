"""churn/tuning.py's garbage-collector settings, in a real ModelHolder process: after a model
change the collector is tuned, what is alive is frozen, and the model replaced is not kept."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support import ROOT, run_cli, state_env, train

pytestmark = pytest.mark.slow

PROBE = """
import gc, json, sys, weakref
from churn.serving import ModelHolder
from churn.settings import load_settings
from churn.tuning import GC_THRESHOLDS

holder = ModelHolder(load_settings())
holder.refresh()
first = weakref.ref(holder._serving.current)
after_first = {"frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold() == GC_THRESHOLDS}
print("ready", flush=True)
sys.stdin.readline()  # the test promotes the other version meanwhile
holder.refresh()
print(json.dumps({
    "first": after_first,
    "switched": holder._serving.current.tag,
    "replaced_model_alive": first() is not None,
    "frozen": gc.get_freeze_count(),
}), flush=True)
"""


def test_a_model_change_tunes_the_collector_and_frees_the_replaced_model(tmp_path):
    home = tmp_path / "mlops"
    first = train(home)["tag"]
    second = train(home, "--promote", "never")["tag"]
    env = state_env(home)
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    assert run_cli("training.registry", "promote", second, env=env).returncode == 0
    out, _ = proc.communicate("go\n", timeout=120)
    result = json.loads(out.strip().splitlines()[-1])
    assert first != second and result["switched"] == second
    assert result["first"]["thresholds"] and result["first"]["frozen"] > 100_000, result
    assert result["frozen"] > 100_000 and not result["replaced_model_alive"], result
