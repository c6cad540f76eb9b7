"""The production overlay's placeholders (an all-zero digest under registry.example.com, the
storage class `rwx`) cannot reach a cluster through `make render`: the release check names each."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from tests.support import ROOT

CHECK = [sys.executable, str(ROOT / "scripts" / "release_check.py")]


def test_the_committed_production_overlay_is_refused_naming_each_placeholder():
    proc = subprocess.run(CHECK, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "storageClassName 'rwx' is a placeholder" in proc.stderr
    assert "image registry.example.com/churn/churn-service@sha256:000" in proc.stderr
    assert "(2 placeholders)" in proc.stderr


def test_make_render_refuses_production_but_renders_minikube():
    production = subprocess.run(["make", "-s", "render", "OVERLAY=production"], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
    assert production.returncode != 0 and production.stdout == ""
    assert "placeholder" in production.stderr
    minikube = subprocess.run(["make", "-s", "render"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert minikube.returncode == 0 and "kind: Deployment" in minikube.stdout


def test_a_released_overlay_passes(tmp_path):
    shutil.copytree(ROOT / "kustomize", tmp_path / "kustomize")
    overlay = tmp_path / "kustomize" / "overlays" / "production"
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kust["images"] = [
        {"name": "churn-service", "newName": "ghcr.io/acme/churn-service", "digest": "sha256:" + "ab" * 32}
    ]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    storage = yaml.safe_load((overlay / "patch-storage.yaml").read_text())
    storage["spec"]["storageClassName"] = "efs-sc"
    (overlay / "patch-storage.yaml").write_text(yaml.safe_dump(storage))
    proc = subprocess.run([*CHECK, str(overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "no placeholders left" in proc.stdout
