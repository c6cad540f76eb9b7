"""Security scan of the rendered manifests with checkov (in its own venv: .venv-checkov)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support import ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CONFIG = ROOT / "tests" / "k8s" / "checkov.yaml"


def scan(folder) -> dict:
    assert CHECKOV.exists(), "checkov is not installed: run `make checkov-install` (make test does)"
    proc = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "-d", str(folder), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(proc.stdout)
    return (
        report
        if isinstance(report, dict)
        else {"summary": {"failed": sum(r["summary"]["failed"] for r in report)}}
    )


@pytest.fixture(scope="module")
def rendered_dir(tmp_path_factory, rendered_text):
    folder = tmp_path_factory.mktemp("rendered")
    (folder / "rendered.yaml").write_text(rendered_text)
    return folder


def test_rendered_manifests_have_zero_checkov_failures(rendered_dir):
    report = scan(rendered_dir)
    failed = [(c["check_id"], c["resource"]) for c in report.get("results", {}).get("failed_checks", [])]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["passed"] > 200
    assert report["summary"]["skipped"] == 0


def test_checkov_catches_a_privileged_container(tmp_path, rendered_text):
    bad = rendered_text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", 1)
    bad = bad.replace(
        "readOnlyRootFilesystem: true", "privileged: true\n          readOnlyRootFilesystem: true", 1
    )
    (tmp_path / "rendered.yaml").write_text(bad)
    report = scan(tmp_path)
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_16"} <= failed  # privilege escalation, privileged
