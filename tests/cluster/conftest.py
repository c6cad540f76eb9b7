"""A real control plane per topology (tools/cluster/cluster.sh), started once per session in a
folder of its own (so a cluster of `make cluster-up` is left alone) and stopped at the end."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.cluster.kube import CLUSTER_SH, Kube, built_bin


def _cluster(topology: str, tmp_path_factory, custom_kinds: str = "") -> Iterator[Kube]:
    cluster_dir = tmp_path_factory.mktemp(f"cluster-{topology}") / "state"
    kubectl = built_bin() / "kubectl"
    env = {**os.environ, "CLUSTER_DIR": str(cluster_dir), "KUBECTL": str(kubectl)}
    up = subprocess.run(
        [str(CLUSTER_SH), "up", topology], env=env, capture_output=True, text=True, timeout=1800
    )
    try:
        assert up.returncode == 0, f"cluster.sh up {topology} failed:\n{up.stderr[-3000:]}"
        yield Kube(cluster_dir, topology, kubectl, custom_kinds)
    finally:
        subprocess.run([str(CLUSTER_SH), "down"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def minikube_cluster(tmp_path_factory) -> Iterator[Kube]:
    yield from _cluster("minikube", tmp_path_factory)


@pytest.fixture(scope="session")
def production_cluster(tmp_path_factory) -> Iterator[Kube]:
    """With the Prometheus Operator's CRDs (PodMonitor, PrometheusRule), which the production
    overlay's prometheus-operator component needs."""
    for kube in _cluster("production", tmp_path_factory, custom_kinds="podmonitors,prometheusrules"):
        crds = built_bin() / "crds"
        for kind in ("podmonitors", "prometheusrules"):
            kube.run("apply", "--server-side", "-f", str(crds / f"monitoring.coreos.com_{kind}.yaml"))
        kube.run(
            "wait",
            "--for=condition=Established",
            "crd/podmonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
            "--timeout=60s",
        )
        yield kube


@pytest.fixture
def minikube(minikube_cluster) -> Kube:
    """The minikube-shaped cluster, with no trace of an earlier test."""
    minikube_cluster.reset()
    return minikube_cluster


@pytest.fixture
def production(production_cluster) -> Kube:
    production_cluster.reset()
    return production_cluster
