"""monitoring.scheduled, the monitoring CronJob's command: drift then performance, the worse exit code."""

from __future__ import annotations

import pytest

from tests.support import last_json_line, run_cli, state_env, train

pytestmark = pytest.mark.slow


def test_nothing_to_check_yet_is_not_a_failure(tmp_path):
    train(tmp_path)  # a model, but no prediction yet: neither check has a verdict
    proc = run_cli("monitoring.scheduled", env=state_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc.stdout)
    assert summary["drift"]["verdict"] is False and summary["performance"]["verdict"] is False


def test_bad_input_in_one_check_fails_the_run_and_the_other_still_runs(tmp_path):
    train(tmp_path)
    (tmp_path / "predictions" / "h-1-20261130-0000.jsonl").write_text("garbage\n" * 60)
    proc = run_cli("monitoring.scheduled", env=state_env(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("60 of 60 lines are not prediction-log records") == 2  # both ran
    assert last_json_line(proc.stdout) == {"drift": None, "performance": None}
    assert run_cli("monitoring.scheduled", "--now", env=state_env(tmp_path)).returncode == 2
