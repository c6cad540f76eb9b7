"""Training and the registry CLI, end to end: real data, a real BentoML store under tmp_path."""

import json
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from churn.model import REFERENCE_KEY, get_store_model, load_model
from churn.model_registry import Registry
from churn.schema import FEATURE_NAMES
from churn.settings import settings_from_env
from tests.support import DATA, ROOT, last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlops")
    proc = run_cli("training.train", env=state_env(home))
    assert proc.returncode == 0, proc.stderr
    return home, proc


def settings_for(home):
    return settings_from_env(state_env(home))


def test_training_prints_json_last_line_and_promotes_the_first_model(trained):
    home, proc = trained
    out = last_json_line(proc.stdout)
    assert out["tag"].startswith("churn_model:") and out["promoted"] is True
    assert out["metrics"]["roc_auc"] >= 0.84
    for key in ("roc_auc", "pr_auc", "f1", "brier", "log_loss", "cv_roc_auc_mean"):
        assert 0 <= out["metrics"][key] <= 1 or key == "log_loss"
    assert "roc_auc" in proc.stderr  # progress goes to stderr
    current = run_cli("training.registry", "current", env=state_env(home))
    assert current.returncode == 0 and current.stdout.strip() == out["tag"]


def test_model_is_saved_richly_with_its_drift_reference(trained):
    home, proc = trained
    tag = last_json_line(proc.stdout)["tag"]
    model = get_store_model(settings_for(home), tag)
    md = model.info.metadata
    assert md["metrics"]["roc_auc"] >= 0.84 and 0 < md["threshold"] < 1
    assert md["data"]["rows"] == 7043
    assert md["data"]["sha256"] == "88be4b93fbe0cc83421af1c503794c97c342eca914c1576db7c276e61d61358a"
    assert md["seed"] == 42 and md["hyperparameters"]["C"] == 1.0
    assert [f["name"] for f in md["feature_schema"]["features"]] == list(FEATURE_NAMES)
    assert {"scikit-learn", "pandas", "numpy", "bentoml"} <= set(md["package_versions"])
    assert md["trained_at"].endswith("Z")
    assert "predict_proba" in model.info.signatures
    reference = model.custom_objects[REFERENCE_KEY]
    assert isinstance(reference, pd.DataFrame) and list(reference.columns) == list(FEATURE_NAMES)
    assert len(reference) == md["data"]["train_rows"] == 5634
    loaded = load_model(settings_for(home), tag)
    assert loaded.tag == tag and loaded.threshold == md["threshold"]


def test_same_seed_same_metrics_other_seed_other_metrics(trained, tmp_path):
    home, proc = trained
    first = last_json_line(proc.stdout)["metrics"]
    again = train(tmp_path)["metrics"]
    assert again == first
    other = train(tmp_path, "--seed", "7", "--promote", "never")
    assert other["metrics"] != first and other["promoted"] is False


def test_promotion_gate_and_registry_cli(tmp_path):
    env = state_env(tmp_path)
    assert run_cli("training.registry", "current", env=env).returncode == 1  # nothing yet
    a = train(tmp_path)
    b = train(tmp_path, "--seed", "3", "--promote", "never")
    assert run_cli("training.registry", "current", env=env).stdout.strip() == a["tag"]
    listing = run_cli("training.registry", "list", env=env).stdout
    assert f"* {a['tag']}" in listing and f"  {b['tag']}" in listing
    assert run_cli("training.registry", "promote", b["tag"], env=env).returncode == 0
    assert run_cli("training.registry", "current", env=env).stdout.strip() == b["tag"]
    rb = run_cli("training.registry", "rollback", env=env)
    assert rb.returncode == 0 and a["tag"] in rb.stdout
    assert run_cli("training.registry", "current", env=env).stdout.strip() == a["tag"]
    show = json.loads(run_cli("training.registry", "show", a["tag"], env=env).stdout)
    assert show["current"] is True and show["store"]["metadata"]["metrics"]["roc_auc"] >= 0.84
    bad = run_cli("training.registry", "promote", "churn_model:doesnotexist", env=env)
    assert bad.returncode == 2 and "not in the model store" in bad.stderr
    assert run_cli("training.registry", "show", "churn_model:nope", env=env).returncode == 2
    # With a current model, `auto` only registers (the champion here even looks excellent).
    reg = Registry(tmp_path / "registry.json", "churn_model")
    data = reg.read()
    data["versions"][a["tag"]]["metrics"]["roc_auc"] = 0.99  # pretend the champion is excellent
    (tmp_path / "registry.json").write_text(json.dumps(data))
    c = train(tmp_path, "--seed", "5")
    assert c["promoted"] is False and c["current"] == a["tag"]


def test_auto_never_replaces_a_champion_on_its_own_test_rows(tmp_path):
    """Issue 21.1: `--promote auto` used to promote a model up to 0.005 ROC AUC worse than the
    current one. Replacing a champion takes the gate, on outcomes neither model was trained on;
    training.train has none, so with a champion it only registers (the first model it promotes)."""
    a = train(tmp_path)
    assert a["promoted"] is True
    path = tmp_path / "registry.json"
    data = json.loads(path.read_text())
    # The same data and seed give the same metrics: make the champion 0.003 better than the rerun.
    data["versions"][a["tag"]]["metrics"]["roc_auc"] = a["metrics"]["roc_auc"] + 0.003
    path.write_text(json.dumps(data))
    b = train(tmp_path)
    assert b["promoted"] is False and b["current"] == a["tag"]
    assert "training.retrain" in b["reason"] and "training.decide" in b["reason"]


def _bad_csv(tmp_path, mutate):
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False).head(300)
    path = tmp_path / "bad.csv"
    mutate(raw).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.drop(columns=["tenure"]), "missing column(s) ['tenure']"),
        (lambda r: r.assign(Contract=r["Contract"].where(r.index != 41, "Lifetime")), "'Contract', row 42"),
        (
            lambda r: r.assign(MonthlyCharges=r["MonthlyCharges"].where(r.index != 7, "n/a")),
            "'MonthlyCharges', row 8",
        ),
    ],
)
def test_bad_data_exits_2_names_the_problem_and_writes_nothing(tmp_path, mutate, message):
    path = _bad_csv(tmp_path, mutate)
    home = tmp_path / "home"
    proc = run_cli("training.train", "--data", str(path), env=state_env(home))
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""
    assert not (home / "registry.json").exists()
    assert list((home / "bentoml" / "models").glob("*/*")) == []


def test_invalid_setting_exits_2_naming_the_variable(tmp_path):
    proc = run_cli("training.train", env=state_env(tmp_path, LOG_LEVEL="chatty"))
    assert proc.returncode == 2 and "LOG_LEVEL" in proc.stderr and proc.stderr.count("\n") == 1


def test_trainings_killed_at_random_points_and_racing_leave_a_valid_registry(tmp_path):
    env = state_env(tmp_path)
    first = train(tmp_path)
    rng = random.Random(11)
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-m", "training.train", "--promote", "always"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(2.0, 7.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = Registry(tmp_path / "registry.json", "churn_model").read()
        assert first["tag"] in data["versions"]
        load_model(settings_for(tmp_path), data["current"])  # current always names a loadable model
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "training.train", "--seed", str(s), "--promote", "always"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for s in (1, 2)
    ]
    tags = [last_json_line(p.communicate(timeout=300)[0])["tag"] for p in racers]
    data = Registry(tmp_path / "registry.json", "churn_model").read()
    assert set(tags) <= set(data["versions"]) and data["current"] in tags
    load_model(settings_for(tmp_path), data["current"])


def _broken(tmp_path, kind):
    text = DATA.read_bytes()
    path = tmp_path / f"{kind}.csv"
    data = {
        "truncated": text[: len(text) // 2],
        "semicolons": pd.read_csv(DATA, dtype=str).head(100).to_csv(sep=";", index=False).encode(),
        "binary": bytes(range(256)) * 64,
        "empty": b"",
        "header-only": text.splitlines(keepends=True)[0],
    }[kind]
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", ["truncated", "semicolons", "binary", "empty", "header-only"])
def test_broken_csv_exits_2_and_writes_nothing(tmp_path, kind):
    home = tmp_path / "home"
    proc = run_cli("training.train", "--data", str(_broken(tmp_path, kind)), env=state_env(home))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "\nerror: " in proc.stderr and "Traceback" not in proc.stderr
    assert not (home / "registry.json").exists()
    assert list((home / "bentoml" / "models").glob("*/*")) == []


def test_first_training_job_does_nothing_when_a_model_is_current(tmp_path):
    """The first-training Job runs again after every re-apply: it must never retrain."""
    env = state_env(tmp_path)
    first = last_json_line(run_cli("training.train", "--if-no-current", env=env).stdout)
    assert first["promoted"] is True and first["skipped"] is False
    again = run_cli("training.train", "--if-no-current", env=env)
    assert again.returncode == 0, again.stderr
    summary = last_json_line(again.stdout)
    assert summary["skipped"] is True and summary["tag"] is None and summary["current"] == first["tag"]
    assert "nothing to do" in summary["reason"]
    assert list(Registry(tmp_path / "registry.json", "churn_model").read()["versions"]) == [first["tag"]]


def test_registry_wait_blocks_until_a_model_is_current_and_in_the_store(tmp_path):
    env = state_env(tmp_path)
    gave_up = run_cli("training.registry", "wait", "--timeout", "2", env=env)
    assert gave_up.returncode == 1 and "gave up after 2 s: no current model" in gave_up.stderr
    assert run_cli("training.registry", "wait", "--timeout", "0", env=env).returncode == 2  # bad input
    waiter = subprocess.Popen(
        [sys.executable, "-m", "training.registry", "wait", "--timeout", "120"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    assert waiter.poll() is None  # still waiting: nothing trained yet
    tag = train(tmp_path)["tag"]
    out, _ = waiter.communicate(timeout=30)
    assert waiter.returncode == 0 and out.strip() == tag


def test_the_model_store_apart_from_bentoml_home_is_where_every_program_reads(tmp_path):
    """The manifests' layout: each pod has its own BENTOML_HOME (/tmp), the store is on the volume
    (MODEL_STORE). Training saves there, not in its BENTOML_HOME; another process finds it there."""
    home, store = tmp_path / "mlops", tmp_path / "volume-store"
    trainer = state_env(home, BENTOML_HOME=str(tmp_path / "trainer-home"), MODEL_STORE=str(store))
    proc = run_cli("training.train", env=trainer)
    assert proc.returncode == 0, proc.stderr
    tag = last_json_line(proc.stdout)["tag"]
    assert (store / tag.replace(":", "/")).is_dir()
    assert not (tmp_path / "trainer-home" / "models").exists()
    reader = state_env(home, BENTOML_HOME=str(tmp_path / "api-home"), MODEL_STORE=str(store))
    listing = run_cli("training.registry", "list", env=reader)
    assert listing.returncode == 0 and tag in listing.stdout
