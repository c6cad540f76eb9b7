import pytest

from churn.settings import SettingsError, settings_from_env


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
