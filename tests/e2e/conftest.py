"""Run the real image the way the rendered manifests declare it, with Docker standing in for the
kubelet (no cluster can run here). What is translated, and how:

- a container's image, args, workingDir, env (ConfigMap and Secret data resolved from the
  rendered objects), runAsUser/runAsGroup, readOnlyRootFilesystem, dropped capabilities and
  allowPrivilegeEscalation: false -> the matching `docker run` flags;
- its resource limits -> `--cpus` and `--memory` (with swap off), so that a too-small limit shows
  up here as it would in the cluster: an OOM kill, or (BentoML runs one API worker per CPU of the
  limit) the worker count the pod really gets;
- a pod's initContainers -> run to completion, in order, before its main container starts;
- the PersistentVolumeClaim -> one Docker volume shared by every container; an emptyDir -> a
  tmpfs at the same path;
- the pod's fsGroup -> a one-off `chown` of the fresh volume to that group (the kubelet's job;
  left out to play a ReadWriteMany driver that ignores fsGroup);
- host networking: containerPorts are host ports on 127.0.0.1, so one replica per Deployment runs.

Test instrumentation added to every container, and only here: a read-only mount of
tests/e2e/netaudit on PYTHONPATH whose sitecustomize records each Python process's name lookups
and connections (test_container.py proves nothing leaves the pod), and a sampler of the
container's memory (cgroup v1 usage minus inactive file cache: the kubelet's working set).

Everything started here is stopped and removed at the end of the session.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s.checks import cpu_cores, memory_bytes
from tests.k8s.conftest import render
from tests.support import ROOT

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# The image under test: `make image e2e IMAGE=...` passes another tag (the manifests keep theirs).
IMAGE = os.environ.get("CHURN_IMAGE") or f"churn-service:{VERSION}"
IMAGE_REPOSITORY = "churn-service"  # the overlay's image name, whatever its tag
NETAUDIT = Path(__file__).resolve().parent / "netaudit"
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory/docker")


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {proc.stderr[-2000:]}")
    return proc


class MemorySampler:
    """Peak working set (bytes) of running containers, sampled every 0.2 s from their cgroup."""

    def __init__(self):
        self.peaks: dict[str, int] = {}  # working set
        self.rss_peaks: dict[str, int] = {}  # anonymous memory only (no page cache)
        self._watch: dict[str, tuple[str, Path]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, cname: str, label: str) -> None:
        cid = docker("inspect", "-f", "{{.Id}}", cname, check=False).stdout.strip()
        if cid:
            with self._lock:
                self._watch[cname] = (label, CGROUP_MEMORY / cid)

    @contextlib.contextmanager
    def exec_phase(self, cname: str):
        """While a command runs inside a container (`kubectl exec`), count its memory apart: under
        `<label>+exec`, since the pod's request is for the server, its limit for both."""
        with self._lock:
            label, folder = self._watch[cname]
            self._watch[cname] = (label + "+exec", folder)
        try:
            yield
        finally:
            time.sleep(0.5)  # let the exec'd process's memory leave the cgroup first
            with self._lock:
                self._watch[cname] = (label, folder)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                watched = list(self._watch.values())
            for label, folder in watched:
                try:
                    usage = int((folder / "memory.usage_in_bytes").read_text())
                    stat = (folder / "memory.stat").read_text()
                except OSError:
                    continue  # gone, or no cgroup v1 here
                inactive = int(re.search(r"^total_inactive_file (\d+)$", stat, re.M).group(1))
                rss = int(re.search(r"^total_rss (\d+)$", stat, re.M).group(1))
                self.peaks[label] = max(self.peaks.get(label, 0), usage - inactive)
                self.rss_peaks[label] = max(self.rss_peaks.get(label, 0), rss)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class PodRun:
    """One pod of a rendered workload (its init containers, then its first container), ready to
    be started with docker."""

    name: str
    pod: dict[str, Any]
    env_of: Any  # container -> env dict
    volume: str
    audit_dir: Path
    sampler: MemorySampler
    started: list[str] = field(default_factory=list)

    @property
    def container(self) -> dict[str, Any]:
        return self.pod["containers"][0]

    def run_args(self, container: dict | None = None, args: list[str] | None = None) -> list[str]:
        """`docker run` arguments for a container of this pod; `args` replaces its args."""
        c, pod = container or self.container, self.pod
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        docker_args = [
            "--network",
            "host",
            "--user",
            f"{psc['runAsUser']}:{psc.get('runAsGroup', psc['runAsUser'])}",
        ]
        limits = c.get("resources", {}).get("limits", {})
        if "cpu" in limits:
            docker_args += ["--cpus", f"{cpu_cores(limits['cpu']):g}"]
        if "memory" in limits:
            mem = int(memory_bytes(limits["memory"]))
            docker_args += ["--memory", str(mem), "--memory-swap", str(mem)]
        if csc.get("readOnlyRootFilesystem"):
            docker_args.append("--read-only")
        if csc.get("capabilities", {}).get("drop") == ["ALL"]:
            docker_args += ["--cap-drop", "ALL"]
        if csc.get("allowPrivilegeEscalation") is False:
            docker_args += ["--security-opt", "no-new-privileges"]
        if c.get("workingDir"):
            docker_args += ["-w", c["workingDir"]]
        for key, value in self.env_of(c).items():
            docker_args += ["-e", f"{key}={value}"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in c.get("volumeMounts", []):
            vol = volumes[mount["name"]]
            if "persistentVolumeClaim" in vol:
                docker_args += ["-v", f"{self.volume}:{mount['mountPath']}"]
            elif "emptyDir" in vol:
                # emptyDir is world-writable (0777); --mount's tmpfs-mode is ignored by some engines
                docker_args += ["--tmpfs", f"{mount['mountPath']}:mode=1777"]
            else:
                raise AssertionError(f"{self.name}: no stand-in for volume {vol}")
        if c.get("command"):
            raise AssertionError("the manifests use args with the image's entrypoint, not command")
        audit = f"/netaudit/{self.name}-{c['name']}-{uuid.uuid4().hex[:6]}.jsonl"
        docker_args += [
            "-v", f"{NETAUDIT}:/netaudit-code:ro", "-v", f"{self.audit_dir}:/netaudit",
            "-e", "PYTHONPATH=/netaudit-code", "-e", f"CHURN_NET_AUDIT={audit}",
        ]  # fmt: skip
        return [*docker_args, c["image"], *(c.get("args", []) if args is None else args)]

    def _to_completion(self, container: dict, args: list[str] | None, label: str, timeout: float):
        """Run one container to its end, its memory sampled under `label`; fail on an OOM kill."""
        cname = f"churn-e2e-{self.name}-{uuid.uuid4().hex[:6]}"
        proc = subprocess.Popen(
            ["docker", "run", "--name", cname, *self.run_args(container, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if docker("inspect", cname, check=False).returncode == 0:
                self.sampler.watch(cname, label)
                break
            time.sleep(0.05)
        out, err = proc.communicate(timeout=timeout)
        oom = docker("inspect", "-f", "{{.State.OOMKilled}}", cname, check=False).stdout.strip()
        docker("rm", "-f", cname, check=False)
        assert oom != "true", f"{label} was killed for exceeding its memory limit"
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def _init(self) -> None:
        for init in self.pod.get("initContainers", []):
            proc = self._to_completion(init, None, f"{self.name}/{init['name']}", 300)
            assert proc.returncode == 0, f"{self.name}: init container {init['name']}: {proc.stderr[-2000:]}"

    def run(self, args: list[str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        """Run the pod to completion (a Job's): init containers, then the container; its memory
        is sampled under the workload's name."""
        self._init()
        return self._to_completion(self.container, args, self.name, timeout)

    def start(self) -> str:
        self._init()
        cname = f"churn-e2e-{self.name}-{uuid.uuid4().hex[:6]}"
        docker("run", "-d", "--name", cname, *self.run_args())
        self.started.append(cname)
        self.sampler.watch(cname, self.name)
        return cname


class Manifests:
    def __init__(self, docs: list[dict], volume: str, audit_dir: Path):
        self.docs = docs
        self.volume = volume
        self.audit_dir = audit_dir
        self.sampler = MemorySampler()
        self.data = {
            d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] in ("ConfigMap", "Secret")
        }
        self.runs: list[PodRun] = []

    def env_of(self, container: dict) -> dict[str, str]:
        import base64

        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            values = self.data[ref["name"]]
            if "secretRef" in source:
                values = {k: base64.b64decode(v).decode() for k, v in values.items()}
            env.update(values)
        for item in container.get("env", []):
            env[item["name"]] = item["value"]
        return env

    def workload(self, kind: str, name: str) -> PodRun:
        doc = next(d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name)
        tpl = doc["spec"]["jobTemplate"]["spec"]["template"] if kind == "CronJob" else doc["spec"]["template"]
        run = PodRun(name, tpl["spec"], self.env_of, self.volume, self.audit_dir, self.sampler)
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


def use_image(docs: list[dict], image: str) -> None:
    """Every container of ours runs the image under test (IMAGE / CHURN_IMAGE), not the overlay's
    tag: otherwise `make e2e IMAGE=...` would run whatever image holds the manifests' tag."""
    repo = IMAGE_REPOSITORY
    for doc in docs:
        spec = doc.get("spec", {})
        pod = (spec.get("jobTemplate", {}).get("spec", spec)).get("template", {}).get("spec", {})
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            if c["image"].split("@")[0].rsplit(":", 1)[0] == repo:
                c["image"] = image


@contextlib.contextmanager
def fresh_manifests(image: str, audit_dir: Path, fs_group_applied: bool = True):
    """The rendered manifests, with a fresh state volume (what the PVC gives a new namespace),
    and everything started on it removed at the end. `fs_group_applied=False`: the volume stays
    root's, as on a ReadWriteMany driver that ignores the pod's fsGroup."""
    docs = [d for d in yaml.safe_load_all(render()) if d]
    use_image(docs, image)
    volume = f"churn-e2e-state-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", volume)
    audit_dir.chmod(0o777)  # written by the containers' user, 1034
    m = Manifests(docs, volume, audit_dir)
    if fs_group_applied:  # the kubelet's part; here a one-off chown
        train = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]["securityContext"]
        owner = f"{train['runAsUser']}:{train['fsGroup']}"
        docker(
            "run",
            "--rm",
            "--user",
            "0",
            "--entrypoint",
            "chown",
            "-v",
            f"{volume}:/mlops",
            image,
            owner,
            "/mlops",
        )
    try:
        yield m
    finally:
        m.sampler.stop()
        stop_started(m)
        docker("volume", "rm", "-f", volume, check=False)


def stop_started(m: Manifests) -> None:
    for run in m.runs:
        for cname in run.started:
            docker("rm", "-f", cname, check=False)
        run.started.clear()


def copy_to_volume(m: Manifests, image: str, path: str, data: bytes) -> None:
    """What `kubectl cp` into a pod does: a file onto the volume, owned by the pods' user."""
    uid = next(d for d in m.docs if d["kind"] == "Job")["spec"]["template"]["spec"]["securityContext"][
        "runAsUser"
    ]
    proc = subprocess.run(
        ["docker", "run", "--rm", "-i", "--user", str(uid), "--entrypoint", "sh", "-v", f"{m.volume}:/mlops",
         image, "-c", f"mkdir -p $(dirname {path}) && cat > {path}"],
        input=data, capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="session")
def manifests(image, tmp_path_factory):
    with fresh_manifests(image, tmp_path_factory.mktemp("netaudit")) as m:
        yield m


def wait_until(predicate, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
