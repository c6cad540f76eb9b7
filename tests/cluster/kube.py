"""The real kubectl against the control plane of tools/cluster (real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler; kwok plays the nodes and the pods' lifecycle)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.support import ROOT

CLUSTER_SH = ROOT / "tools" / "cluster" / "cluster.sh"
BUILD_SH = ROOT / "tools" / "cluster" / "build.sh"
NS = "churn-mlops"
# How a test says that the program in a Job's pod has ended, and with which exit code (kwok's
# pod-complete and pod-fail stages, tools/cluster/kwok.yaml); and that a pod never becomes ready.
EXIT_CODE = "tests.churn-mlops/exit-code"
UNREADY = "tests.churn-mlops/unready"

T = TypeVar("T")


class KubectlError(AssertionError):
    pass


def built_bin() -> Path:
    """The control plane's binaries, kubectl v1.34.0 among them (tools/cluster/build.sh builds
    them once per machine and prints the folder)."""
    return Path(subprocess.check_output([str(BUILD_SH)], text=True).strip())


class Kube:
    def __init__(self, cluster_dir: Path, topology: str, kubectl: Path, custom_kinds: str = ""):
        self.dir = cluster_dir
        self.kubectl = kubectl
        self.topology = topology
        self.kubeconfig = cluster_dir / "kubeconfig"
        self.custom_kinds = custom_kinds  # those of installed CRDs, for reset()

    def run(self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120):
        proc = subprocess.run(
            [str(self.kubectl), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise KubectlError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get(self, *args: str, ns: str | None = NS) -> dict[str, Any]:
        return json.loads(self.run("get", *args, "-o", "json", *(["-n", ns] if ns else [])).stdout)

    def items(self, kind: str, selector: str | None = None, ns: str | None = NS) -> list[dict[str, Any]]:
        return self.get(kind, *(["-l", selector] if selector else []), ns=ns)["items"]

    def pods(self, selector: str | None = None) -> list[dict[str, Any]]:
        return self.items("pods", selector)

    def events(self, reason: str | None = None, uid: str | None = None) -> list[dict[str, Any]]:
        """Events in the namespace, by reason and by the uid of the object they are about."""
        return [
            e
            for e in self.items("events")
            if (reason is None or e["reason"] == reason)
            and (uid is None or e["involvedObject"].get("uid") == uid)
        ]

    def finish(self, job: str, exit_code: int = 0) -> None:
        """The running pods of a Job end, their program having exited with `exit_code`."""
        pods = until(f"a running pod of Job {job}", lambda: self._running(f"job-name={job}"))
        for pod in pods:
            self.run("annotate", "-n", NS, "pod", pod["metadata"]["name"], f"{EXIT_CODE}={exit_code}")

    def _running(self, selector: str) -> list[dict[str, Any]]:
        return [p for p in self.pods(selector) if p["status"].get("phase") == "Running"]

    def set_node_cpu(self, node: str, cpu: str) -> None:
        patch = {"status": {"capacity": {"cpu": cpu}, "allocatable": {"cpu": cpu}}}
        self.run("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(patch))

    def reset(self) -> None:
        """The cluster as `up` left it: nothing of the project's, the topology's nodes and volumes as
        declared (a released volume cannot be bound again, so it is made afresh)."""
        # What the overlays create, and their events. (Deleting the namespace itself waits out the
        # API pods' 30-s grace period, and the claim's protection finalizer goes a few seconds
        # after its last pod: about 15 s a test, against 3 s this way.)
        delete = ("delete", "-n", NS, "--all", "--ignore-not-found")
        self.run(*delete, "all", "--wait=true", "--timeout=90s", timeout=120)
        unprotect = '{"metadata": {"finalizers": null}}'
        self.run("patch", "-n", NS, "pvc/churn-state", "--type=merge", "-p", unprotect, check=False)
        self.run(*delete, "pvc", "--wait=true", "--timeout=60s", timeout=90)
        kinds = ",".join(filter(None, ["configmaps,secrets,pdb,networkpolicies,events", self.custom_kinds]))
        self.run(*delete, kinds, "--wait=false", timeout=90)
        self.run("delete", "pv", "--all", "--wait=true", "--timeout=60s", timeout=90)
        topology = ROOT / "tools" / "cluster" / "topologies" / f"{self.topology}.yaml"
        self.run("apply", "-f", str(topology))
        for node in (d for d in yaml.safe_load_all(topology.read_text()) if d and d["kind"] == "Node"):
            name = node["metadata"]["name"]
            self.run(
                "patch",
                "node",
                name,
                "--type=json",
                "-p",
                '[{"op": "replace", "path": "/spec", "value": {}}]',
            )
            status = {"status": {k: node["status"][k] for k in ("capacity", "allocatable")}}
            self.run("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))


def until(what: str, probe: Callable[[], T], timeout: float = 60, interval: float = 0.3) -> T:
    """The first truthy value of probe(), or a failure naming `what`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {str(last)[:2000]})")
