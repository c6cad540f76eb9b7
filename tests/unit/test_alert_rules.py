"""The alert rules, checked and unit-tested by Debian's real promtool (`make test` installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

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
    assert "SUCCESS: 16 rules found" in proc.stdout


def test_rules_pass_their_unit_tests():
    proc = promtool("test", "rules", "rules_test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("> 0.05", "> 0.5"),  # an error-ratio threshold too lax to see 10 % failures
        ("== 0\n        for: 2m", "== 0\n        for: 10m"),  # the no-model alert too slow
        ("> 2 * 6 * 3600", "> 24 * 3600"),  # a stale drift report unnoticed
        (
            "performance_report_timestamp_seconds) > 2 * 6 * 3600",
            "performance_report_timestamp_seconds) > 1e10",
        ),
        ('condition="true"}) == 1', 'condition="false"}) == 1'),  # failed Jobs unnoticed
        ("unless on (namespace, job_name)\n", "and on (namespace, job_name)\n"),  # ... or never cleared
        ('{cronjob=~"churn-.*"}) > 3600\n', '{cronjob=~"churn-.*"}) > 86400\n'),  # a failed daily run
        ("> 3600\n          )\n", "> 86400 * 7\n          )\n"),  # a run never started
        ('container="wait-for-model"', 'container="wait"'),  # no first model unnoticed
        ('up{job=~".*churn-api.*"} == 0', 'up{job=~".*churn-api.*"} == 2'),  # a down target unnoticed
        ("> 1\n        for: 2m", "> 1\n        for: 10m"),  # servers on two versions for minutes
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


def test_every_cronjob_of_the_base_is_watched():
    """ChurnCronJobNotSucceeding selects CronJobs by name, whatever their period: every CronJob in
    kustomize/base must match it and appear in its promtool test."""
    rules = yaml.safe_load((RULES / "rules.yaml").read_text())
    expr = next(
        r["expr"]
        for g in rules["groups"]
        for r in g["rules"]
        if r.get("alert") == "ChurnCronJobNotSucceeding"
    )
    selectors = set(re.findall(r'cronjob=~"([^"]+)"', expr))
    assert len(selectors) == 1, selectors
    pattern = re.compile(selectors.pop())
    names = [
        doc["metadata"]["name"]
        for path in sorted((ROOT / "kustomize" / "base").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CronJob"
    ]
    assert {"churn-drift", "churn-retention", "churn-retrain"} <= set(names)
    tests = (RULES / "rules_test.yaml").read_text()
    for name in names:
        assert pattern.fullmatch(name), f"CronJob {name} is not watched by ChurnCronJobNotSucceeding"
        assert f'cronjob="{name}"' in tests, f"CronJob {name} has no case in rules_test.yaml"
