"""The alert rules, checked and unit-tested by Debian's real promtool (`make test` installs it)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ROOT

RULES = ROOT / "monitoring" / "prometheus"


def promtool(*args: str, cwd=RULES) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail(
            "promtool is missing: `make prometheus-install` (make test runs it) installs Debian's prometheus"
        )
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_are_valid():
    proc = promtool("check", "rules", "rules.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 8 rules found" in proc.stdout


def test_rules_pass_their_unit_tests():
    proc = promtool("test", "rules", "rules_test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("> 0.05", "> 0.5"),  # an error-ratio threshold too lax to see 10 % failures
        ("== 0\n        for: 2m", "== 0\n        for: 10m"),  # the no-model alert too slow
        ("> 8 * 3600", "> 24 * 3600"),  # a stale drift report unnoticed
        # gRPC read from BentoML's own series, recorded before the handler (every call 200, ~0 s)
        (
            'churn_grpc_requests_total{api_name="predict", http_response_code=~"5.."}',
            'bentoml_api_server_request_total{api_name="predict", http_response_code=~"5.."}',
        ),
        (
            'churn_grpc_request_duration_seconds_bucket{api_name="predict"}',
            'bentoml_api_server_request_duration_seconds_bucket{api_name="predict"}',
        ),
    ],
)
def test_the_unit_tests_catch_a_weakened_rule(tmp_path, old, new):
    text = (RULES / "rules.yaml").read_text()
    assert old in text
    (tmp_path / "rules.yaml").write_text(text.replace(old, new, 1))
    shutil.copy(RULES / "rules_test.yaml", tmp_path)
    proc = promtool("test", "rules", "rules_test.yaml", cwd=tmp_path)
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr
