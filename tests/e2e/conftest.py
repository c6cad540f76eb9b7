"""Run the real image the way the rendered manifests declare it, with Docker standing in for the
kubelet (no cluster can run here). What is translated, and how:

- a container's image, args, workingDir, env (ConfigMap and Secret data resolved from the
  rendered objects), runAsUser/runAsGroup, readOnlyRootFilesystem, dropped capabilities and
  allowPrivilegeEscalation: false -> the matching `docker run` flags;
- the PersistentVolumeClaim -> one Docker volume shared by every container; an emptyDir -> a
  tmpfs at the same path;
- the pod's fsGroup -> a one-off `chown` of the fresh volume to that group (the kubelet's job);
  an emptyDir mounted inside the volume gets its mount point made world-writable first, as the
  kubelet presents every emptyDir (Docker would otherwise copy the mount point's 0755 onto the tmpfs);
- host networking: containerPorts are host ports on 127.0.0.1, so one replica per Deployment runs.

Everything started here is stopped and removed at the end of the session.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from tests.k8s.conftest import render
from tests.support import ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE = f"churn-service:{VERSION}"


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {proc.stderr[-2000:]}")
    return proc


@dataclass
class PodRun:
    """One container of a rendered workload, ready to be started with docker."""

    name: str
    container: dict[str, Any]
    pod: dict[str, Any]
    env: dict[str, str]
    volume: str
    started: list[str] = field(default_factory=list)

    def run_args(self) -> list[str]:
        c, pod = self.container, self.pod
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        args = [
            "--network",
            "host",
            "--user",
            f"{psc['runAsUser']}:{psc.get('runAsGroup', psc['runAsUser'])}",
        ]
        if csc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if csc.get("capabilities", {}).get("drop") == ["ALL"]:
            args += ["--cap-drop", "ALL"]
        if csc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if c.get("workingDir"):
            args += ["-w", c["workingDir"]]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            vol = volumes[mount["name"]]
            if "persistentVolumeClaim" in vol:
                args += ["-v", f"{self.volume}:{mount['mountPath']}"]
            elif "emptyDir" in vol:
                # emptyDir is world-writable (0777); --mount's tmpfs-mode is ignored by some engines
                args += ["--tmpfs", f"{mount['mountPath']}:mode=1777"]
            else:
                raise AssertionError(f"{self.name}: no stand-in for volume {vol}")
        if c.get("command"):
            raise AssertionError("the manifests use args with the image's entrypoint, not command")
        return [*args, c["image"], *c.get("args", [])]

    def run(self, timeout: float = 600) -> subprocess.CompletedProcess:
        return docker("run", "--rm", *self.run_args(), check=False, timeout=timeout)

    def start(self) -> str:
        cname = f"churn-e2e-{self.name}-{uuid.uuid4().hex[:6]}"
        docker("run", "-d", "--name", cname, *self.run_args())
        self.started.append(cname)
        return cname


class Manifests:
    def __init__(self, docs: list[dict], volume: str):
        self.docs = docs
        self.volume = volume
        self.data = {
            d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] in ("ConfigMap", "Secret")
        }
        self.runs: list[PodRun] = []

    def workload(self, kind: str, name: str) -> PodRun:
        doc = next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name)
        tpl = doc["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else doc["spec"]["template"]
        pod = tpl["spec"]
        container = pod["containers"][0]
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            values = self.data[ref["name"]]
            if "secretRef" in source:
                import base64

                values = {k: base64.b64decode(v).decode() for k, v in values.items()}
            env.update(values)
        for item in container.get("env", []):
            env[item["name"]] = item["value"]
        run = PodRun(name=name, container=container, pod=pod, env=env, volume=self.volume)
        self.runs.append(run)
        return run

    def secret_values(self) -> list[str]:
        import base64

        return [
            base64.b64decode(v).decode()
            for d in self.docs
            if d["kind"] == "Secret"
            for v in d["data"].values()
        ]


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("no Docker engine: run `make docker` (make test and make e2e start one)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} missing: run `make image` (make test and make e2e build it)")
    return IMAGE


@pytest.fixture(scope="session")
def manifests(image):
    docs = [d for d in yaml.safe_load_all(render()) if d]
    volume = f"churn-e2e-state-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", volume)
    m = Manifests(docs, volume)
    # The kubelet applies the pod's fsGroup to the volume; here a one-off chown does.
    train = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]["securityContext"]
    nested = sorted(
        {
            mount["mountPath"]
            for d in docs
            if d["kind"] == "Deployment"
            for c in d["spec"]["template"]["spec"]["containers"]
            for mount in c.get("volumeMounts", [])
            if mount["mountPath"].startswith("/mlops/")
        }
    )
    script = "".join(f"mkdir -p {p} && " for p in nested)
    script += f"chown -R {train['runAsUser']}:{train['fsGroup']} /mlops"
    script += "".join(f" && chmod 1777 {p}" for p in nested)
    docker("run", "--rm", "--user", "0", "--entrypoint", "sh", "-v", f"{volume}:/mlops", image, "-c", script)
    yield m
    for run in m.runs:
        for cname in run.started:
            docker("rm", "-f", cname, check=False)
    docker("volume", "rm", "-f", volume, check=False)


def wait_until(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
