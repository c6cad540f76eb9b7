"""Security scan of every rendered overlay with checkov (in its own venv: .venv-checkov)."""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.support import ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CONFIG = ROOT / "tests" / "k8s" / "checkov.yaml"
# The production overlay pins its image by digest, so the digest check applies there.
ENFORCED = {"production": {"CKV_K8S_43"}}


def scan(folder, overlay: str = "minikube") -> dict:
    assert CHECKOV.exists(), "checkov is not installed: run `make checkov-install` (make test does)"
    skips = set(yaml.safe_load(CONFIG.read_text())["skip-check"]) - ENFORCED.get(overlay, set())
    proc = subprocess.run(
        [str(CHECKOV), "--config-file", str(CONFIG), "-d", str(folder), "-o", "json"]
        + ["--skip-check", ",".join(sorted(skips))],
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


def test_rendered_overlays_have_zero_checkov_failures(overlay, rendered_texts, tmp_path):
    name, _ = overlay
    (tmp_path / "rendered.yaml").write_text(rendered_texts[name])
    report = scan(tmp_path, name)
    failed = [(c["check_id"], c["resource"]) for c in report.get("results", {}).get("failed_checks", [])]
    assert report["summary"]["failed"] == 0, failed
    assert report["summary"]["passed"] > 200
    assert report["summary"]["skipped"] == 0


def test_checkov_catches_a_privileged_container_and_an_unpinned_image(tmp_path, rendered_texts):
    bad = rendered_texts["production"].replace(
        "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", 1
    )
    bad = bad.replace(
        "readOnlyRootFilesystem: true", "privileged: true\n          readOnlyRootFilesystem: true", 1
    )
    bad = bad.replace("@sha256:" + "0" * 64, ":0.1.0")
    (tmp_path / "rendered.yaml").write_text(bad)
    report = scan(tmp_path, "production")
    failed = {c["check_id"] for c in report["results"]["failed_checks"]}
    assert {"CKV_K8S_20", "CKV_K8S_16", "CKV_K8S_43"} <= failed  # escalation, privileged, digest
