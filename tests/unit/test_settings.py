import os
import shutil
import subprocess
import sys

import pytest

from churn.settings import SettingsError, settings_from_env
from tests.support import ROOT


def test_defaults(tmp_path):
    s = settings_from_env({"MLOPS_HOME": str(tmp_path)})
    assert s.model_name == "churn_model" and s.log_level == "INFO"
    assert s.bentoml_home_path == tmp_path / "bentoml"
    assert s.registry_path == tmp_path / "registry.json"
    assert s.predictions_dir == tmp_path / "predictions"


def test_relative_home_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = settings_from_env({})
    assert s.mlops_home == tmp_path / ".mlops" and s.mlops_home.is_absolute()


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"MODEL_NAME": "Bad Name!"}, "MODEL_NAME"),
        ({"RELOAD_INTERVAL_SECONDS": "0"}, "RELOAD_INTERVAL_SECONDS"),
        ({"RELOAD_INTERVAL_SECONDS": "abc"}, "RELOAD_INTERVAL_SECONDS"),
        ({"PREDICTION_LOG_ENABLED": "perhaps"}, "PREDICTION_LOG_ENABLED"),
        ({"HTTP_ACCEPT_BALANCING": "sometimes"}, "HTTP_ACCEPT_BALANCING"),
    ],
)
def test_invalid_values_name_the_variable(env, var):
    with pytest.raises(SettingsError) as info:
        settings_from_env(env)
    assert info.value.code == 2
    assert str(info.value).startswith(f"invalid setting {var}=")
    assert "\n" not in str(info.value)


def test_log_level_is_case_insensitive():
    assert settings_from_env({"LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert settings_from_env({"HTTP_ACCEPT_BALANCING": " Off"}).http_accept_balancing == "off"


def test_unwritable_home_names_the_variable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    s = settings_from_env({"MLOPS_HOME": str(blocker / "sub")})
    with pytest.raises(SettingsError, match=r"^MLOPS_HOME=.*not a writable folder"):
        s.ensure_dirs()


def test_secrets_never_echoed():
    with pytest.raises(SettingsError) as info:
        settings_from_env({"MONITORING_WEBHOOK_URL": "ftp://sentinel-secret-host/x"})
    assert "MONITORING_WEBHOOK_URL=<hidden>" in str(info.value)
    assert "sentinel" not in str(info.value)
    s = settings_from_env({"MONITORING_API_TOKEN": "sentinel-token-123"})
    assert s.monitoring_api_token.get_secret_value() == "sentinel-token-123"
    assert "sentinel" not in repr(s) and "sentinel" not in str(s)


# A root process without the capabilities that let root write anywhere: file permissions then
# apply to it as to a pod's user (the venv's python, under /root, is out of another user's reach).
AS_A_POD_USER = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
OTHER = 65534  # owner of the folders root may not write to


def _load(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "from churn.settings import settings_or_exit; settings_or_exit(); print('ok')"
    return subprocess.run(
        [*AS_A_POD_USER, sys.executable, "-c", code],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
@pytest.mark.parametrize("unwritable", ["mlops", "mlops/predictions", "store"])
def test_a_folder_the_user_cannot_write_is_named_with_the_uid(tmp_path, unwritable):
    """A volume whose owner is not the pod's user (an RWX driver that ignores fsGroup): every
    program stops at start with exit 2, naming the folder and the user, before it loses anything."""
    home, store = tmp_path / "mlops", tmp_path / "store"
    for folder in (home, home / "predictions", store):
        folder.mkdir()
    os.chown(tmp_path / unwritable, OTHER, OTHER)
    env = {"MLOPS_HOME": str(home), "BENTOML_HOME": str(tmp_path / "bentoml"), "MODEL_STORE": str(store)}
    proc = _load(env)
    assert proc.returncode == 2, proc.stderr
    var = "MODEL_STORE" if unwritable == "store" else "MLOPS_HOME"
    assert proc.stderr.startswith(f"error: {var}=")
    assert (
        f"not a writable folder: {tmp_path / unwritable} for uid 0 gid 0 (Permission denied)" in proc.stderr
    )
    os.chown(tmp_path / unwritable, 0, 0)
    assert _load(env).stdout.strip() == "ok"


def test_the_model_store_can_live_apart_from_bentoml_home(tmp_path):
    s = settings_from_env({"MLOPS_HOME": str(tmp_path), "MODEL_STORE": str(tmp_path / "shared" / "models")})
    assert s.model_store_path == tmp_path / "shared" / "models"
    assert (
        settings_from_env({"MLOPS_HOME": str(tmp_path)}).model_store_path == tmp_path / "bentoml" / "models"
    )
