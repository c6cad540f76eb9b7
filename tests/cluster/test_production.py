"""The production overlay on a real control plane with three nodes in three zones
(tools/cluster/topologies/production.yaml) and the Prometheus Operator's CRDs: autoscaling, spread,
disruption budgets and a node drain as the real controllers, scheduler and eviction API do them."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.cluster.kube import NS, Kube, until
from tests.k8s.conftest import OVERLAYS
from tests.support import ROOT

pytestmark = pytest.mark.slow

PRODUCTION = OVERLAYS["production"]
DIGEST = "sha256:" + "5" * 64  # any digest but the placeholder's zeros
STORAGE_CLASS = "nfs-csi"  # the topology's ReadWriteMany class
API, GRPC = "app.kubernetes.io/component=api", "app.kubernetes.io/component=api-grpc"


def released(tmp_path: Path) -> Path:
    """The production overlay as a release sets it: the image by its digest, a storage class."""
    copy_dir = tmp_path / "kustomize"
    shutil.copytree(ROOT / "kustomize", copy_dir)
    overlay = copy_dir / "overlays" / "production"
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kust["images"] = [
        {"name": "churn-service", "newName": "registry.test/churn/churn-service", "digest": DIGEST}
    ]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kust))
    storage = yaml.safe_load((overlay / "patch-storage.yaml").read_text())
    storage["spec"]["storageClassName"] = STORAGE_CLASS
    (overlay / "patch-storage.yaml").write_text(yaml.safe_dump(storage))
    return overlay


def deploy(kube: Kube, tmp_path: Path) -> Path:
    """docs/kubernetes.md's production steps: the monitoring Secret first, then the overlay."""
    overlay = released(tmp_path)
    kube.run("apply", "-f", str(overlay / "namespace.yaml"))
    kube.run(
        "create", "secret", "generic", "churn-monitoring", "-n", NS,
        "--from-literal=MONITORING_WEBHOOK_URL=https://alerts.example.test/hook",
        "--from-literal=MONITORING_API_TOKEN=not-a-real-token",
    )  # fmt: skip
    kube.run("apply", "-k", str(overlay), "--validate=strict")
    return overlay


def ready(kube: Kube, selector: str) -> list[dict]:
    return [
        p
        for p in kube.pods(selector)
        if not p["metadata"].get("deletionTimestamp")
        and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]


def zones(kube: Kube, pods: list[dict]) -> collections.Counter:
    zone = {
        n["metadata"]["name"]: n["metadata"]["labels"]["topology.kubernetes.io/zone"]
        for n in kube.items("nodes", ns=None)
    }
    return collections.Counter(zone[p["spec"]["nodeName"]] for p in pods)


def test_applied_with_its_crds_the_autoscaler_resolves_and_pods_spread_over_zones(production, tmp_path):
    deploy(production, tmp_path)
    # what kube-prometheus-stack's default selectors (release: <its Helm release>) pick up
    selected = production.items("podmonitors,prometheusrules", "release=kube-prometheus-stack")
    assert sorted((o["kind"], o["metadata"]["name"]) for o in selected) == [
        ("PodMonitor", "churn-api"),
        ("PrometheusRule", "churn"),
    ]
    hpa = until(
        "the autoscaler to resolve its target",
        lambda: [
            c for c in production.get("hpa/churn-api")["status"].get("conditions", [])
            if c["type"] == "AbleToScale" and c["status"] == "True"
        ],
    )  # fmt: skip
    assert hpa[0]["reason"] in ("SucceededGetScale", "SucceededRescale")  # it read (and set) the scale
    minimum = production.get("hpa/churn-api")["spec"]["minReplicas"]
    api = until(
        f"{minimum} ready API pods (the autoscaler's minimum)", lambda: len(ready(production, API)) >= minimum
    )
    assert api
    assert sorted(zones(production, ready(production, API)).values()) == [1, 1, 1]
    grpc = production.get("deploy/churn-api-grpc")["spec"]["replicas"]
    until(f"{grpc} ready gRPC pods", lambda: len(ready(production, GRPC)) == grpc)
    assert sorted(zones(production, ready(production, GRPC)).values()) == [1] * grpc


def test_reapplying_keeps_the_replica_count_the_autoscaler_chose(production, tmp_path):
    overlay = deploy(production, tmp_path)
    until("the autoscaler's minimum", lambda: len(ready(production, API)) >= 3)
    production.run(
        "scale", "-n", NS, "deploy/churn-api", "--replicas=5"
    )  # as the autoscaler would under load
    until("5 API pods", lambda: len(ready(production, API)) == 5)
    production.run("apply", "-k", str(overlay), "--validate=strict")
    assert production.get("deploy/churn-api")["spec"]["replicas"] == 5


def test_a_tainted_node_does_not_cap_the_api_at_one_pod_per_node(production, tmp_path):
    """A node the API does not tolerate (tainted for another team, say) must not count as an empty
    domain of the spread, or the API could place only one pod on each other node."""
    production.run("taint", "node", "node-c", "dedicated=other-team:NoSchedule")
    deploy(production, tmp_path)
    until("3 ready API pods on the two untainted nodes", lambda: len(ready(production, API)) >= 3, timeout=30)
    assert {p["spec"]["nodeName"] for p in ready(production, API)} == {"node-a", "node-b"}


def test_a_node_drain_goes_through_and_every_pod_comes_back_elsewhere(production, tmp_path):
    deploy(production, tmp_path)
    until("3 ready API pods", lambda: len(ready(production, API)) >= 3)
    until("2 ready gRPC pods", lambda: len(ready(production, GRPC)) == 2)
    drain = production.run(
        "drain", "node-a", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=90s", timeout=120
    )
    assert "drained" in drain.stdout
    until("3 ready API pods, none on node-a", lambda: len(ready(production, API)) >= 3)
    until("2 ready gRPC pods", lambda: len(ready(production, GRPC)) == 2)
    on_a = [p["metadata"]["name"] for p in production.pods() if p["spec"].get("nodeName") == "node-a"]
    assert on_a == []


def evict(kube: Kube, pod: str):
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": pod, "namespace": NS}}
    return kube.run(
        "create", "--raw", f"/api/v1/namespaces/{NS}/pods/{pod}/eviction", "-f", "-",
        stdin=json.dumps(body), check=False,
    )  # fmt: skip


@pytest.mark.parametrize("selector", [API, GRPC], ids=["api", "grpc"])
def test_the_disruption_budget_lets_one_pod_go_at_a_time(production, tmp_path, selector):
    """With no room for replacements (every node cordoned), the eviction API lets one pod of a
    Deployment go and refuses the next: at most one unavailable, however many replicas there are."""
    deploy(production, tmp_path)
    want = 3 if selector == API else 2
    until(f"{want} ready pods", lambda: len(ready(production, selector)) >= want)
    for node in ("node-a", "node-b", "node-c"):
        production.run("cordon", node)
    pods = [p["metadata"]["name"] for p in ready(production, selector)]
    first = evict(production, pods[0])
    assert first.returncode == 0, first.stderr
    second = evict(production, pods[1])
    assert second.returncode != 0
    assert "disruption budget" in second.stderr
