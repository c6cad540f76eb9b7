"""Refuse a production overlay that still carries the repository's placeholders.

    python scripts/release_check.py [OVERLAY_DIR]     (default kustomize/overlays/production)

The committed production overlay names an image by an all-zero digest under registry.example.com
and a storage class called `rwx`: both render and pass schema checks, and both fail only on the
cluster, late (an image that cannot be pulled, a claim Pending for ever). A release sets them
first; `make render OVERLAY=production` runs this check before printing anything.
Exit codes: 0 ready; 2 placeholders left (each named, with how to set it).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = Path(sys.executable).parent / "kubectl"
PLACEHOLDER_REGISTRY = "registry.example.com/"
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
PLACEHOLDER_STORAGE_CLASS = "rwx"


def placeholders(docs: list[dict]) -> list[str]:
    problems = []
    images = set()
    for doc in docs:
        spec = doc.get("spec", {})
        pod = (
            spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
            or spec.get("template", {}).get("spec")
            or {}
        )
        images |= {c["image"] for c in pod.get("containers", []) + pod.get("initContainers", [])}
        if (
            doc["kind"] == "PersistentVolumeClaim"
            and spec.get("storageClassName") == PLACEHOLDER_STORAGE_CLASS
        ):
            problems.append(
                f"PersistentVolumeClaim/{doc['metadata']['name']}: storageClassName "
                f"{PLACEHOLDER_STORAGE_CLASS!r} is a placeholder: set your ReadWriteMany class in "
                "patch-storage.yaml"
            )
    for image in sorted(images):
        if image.startswith(PLACEHOLDER_REGISTRY) or image.endswith(PLACEHOLDER_DIGEST):
            problems.append(
                f"image {image} is a placeholder: set the pushed image's digest in kustomization.yaml "
                "(images: newName REGISTRY/churn-service, digest sha256:...)"
            )
    return problems


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python scripts/release_check.py [OVERLAY_DIR]", file=sys.stderr)
        return 2
    overlay = Path(argv[0]) if argv else ROOT / "kustomize" / "overlays" / "production"
    proc = subprocess.run([str(KUBECTL), "kustomize", str(overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"error: {overlay} does not render: {proc.stderr.strip()}", file=sys.stderr)
        return 2
    problems = placeholders([d for d in yaml.safe_load_all(proc.stdout) if d])
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"error: {overlay} is not ready for a release ({len(problems)} placeholders)", file=sys.stderr)
        return 2
    print(f"{overlay}: no placeholders left")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
