"""The manifests, proven without a cluster: rendered by the real kubectl, validated against the
official schemas, and checked for what the system relies on. Each check also gets a broken copy
to prove it can fail."""

from __future__ import annotations

import copy
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from churn.settings import ENV_VARS
from tests.k8s import checks
from tests.k8s.conftest import OVERLAY, render
from tests.support import ROOT

KUBERNETES_VERSION = "1.34.0"  # the version the README tells minikube users to start


def test_overlay_renders_every_resource(rendered):
    def short(d):  # generated ConfigMap/Secret names carry a content hash suffix
        name = d["metadata"]["name"]
        return name.rsplit("-", 1)[0] if d["kind"] in ("ConfigMap", "Secret") else name

    kinds = sorted(f"{d['kind']}/{short(d)}" for d in rendered)
    assert kinds == sorted(
        [
            "Namespace/churn-mlops",
            "ConfigMap/churn-config",
            "Secret/churn-monitoring",
            "Service/churn-api",
            "PersistentVolumeClaim/churn-state",
            "Deployment/churn-api",
            "Deployment/churn-api-grpc",
            "CronJob/churn-drift",
            "Job/churn-train",
            "PodDisruptionBudget/churn-api",
            "NetworkPolicy/churn-default-deny",
            "NetworkPolicy/churn-api-ingress",
            "NetworkPolicy/churn-drift-egress",
        ]
    )
    assert all(d["metadata"].get("namespace") == "churn-mlops" for d in rendered if d["kind"] != "Namespace")


def test_rendered_objects_pass_strict_schema_validation(rendered_text, tmp_path):
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered_text)
    tool = str(Path(sys.executable).parent / "kubernetes-validate")
    proc = subprocess.run(
        [tool, "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # and it does catch an unknown field
    bad = rendered_text.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n", 1)
    path.write_text(bad)
    proc = subprocess.run(
        [tool, "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "replicaz" in proc.stdout + proc.stderr


def test_minikube_overlay_contract(rendered):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    ns = docs[("Namespace", "churn-mlops")]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    svc = docs[("Service", "churn-api")]
    assert svc["spec"]["type"] == "NodePort"
    assert {p["name"]: p["nodePort"] for p in svc["spec"]["ports"]} == {"http": 30080, "grpc": 30051}
    assert docs[("Deployment", "churn-api")]["spec"]["replicas"] == 2
    assert docs[("PersistentVolumeClaim", "churn-state")]["spec"]["storageClassName"] == "standard"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {c["image"] for _, _, s in checks.pod_specs(rendered) for c in s["containers"]}
    assert images == {f"churn-service:{version}"}  # the image tag is the project version
    cm = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert cm["data"]["MLOPS_HOME"] == "/mlops" and cm["data"]["BENTOML_HOME"] == "/mlops/bentoml"
    train = docs[("Job", "churn-train")]["spec"]
    assert train["backoffLimit"] <= 3 and train["activeDeadlineSeconds"] <= 1800
    api = docs[("Deployment", "churn-api")]["spec"]["template"]["spec"]["containers"][0]
    budget = api["startupProbe"]["periodSeconds"] * api["startupProbe"]["failureThreshold"]
    assert budget >= train["activeDeadlineSeconds"]  # a pod waits for the first model, no crash loop
    cron = docs[("CronJob", "churn-drift")]["spec"]
    assert "--alert" in cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.fixture
def broken(rendered):
    return copy.deepcopy(rendered)


def _deploy(docs, name):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def test_selectors_match(rendered, broken):
    assert checks.check_selectors(rendered) == []
    _deploy(broken, "churn-api")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = (
        "x"
    )
    problems = checks.check_selectors(broken)
    assert any("Deployment/churn-api: selector" in p for p in problems)
    assert any("PodDisruptionBudget/churn-api" in p for p in problems)


def test_ports_and_probe_paths_exist(rendered, broken, served_routes):
    assert {"/predict", "/health", "/startup", "/ready"} <= served_routes
    assert checks.check_ports(rendered, served_routes) == []
    api = _deploy(broken, "churn-api")["spec"]["template"]["spec"]["containers"][0]
    api["ports"][0]["name"] = "web"
    api["readinessProbe"]["httpGet"]["path"] = "/readiness"
    problems = checks.check_ports(broken, served_routes)
    assert any("targetPort 'http'" in p for p in problems)
    assert any("readinessProbe path /readiness" in p for p in problems)
    assert any("startupProbe port 'http'" in p for p in problems)


def test_env_is_complete_and_every_key_used(rendered, broken):
    settings_vars = set(ENV_VARS)
    assert checks.check_env(rendered, settings_vars) == []
    cm = next(d for d in broken if d["kind"] == "ConfigMap")
    del cm["data"]["MODEL_NAME"]
    cm["data"]["UNUSED_KNOB"] = "1"
    api = _deploy(broken, "churn-api")["spec"]["template"]["spec"]["containers"][0]
    api["envFrom"].append(
        {"secretRef": {"name": next(d for d in broken if d["kind"] == "Secret")["metadata"]["name"]}}
    )
    problems = checks.check_env(broken, settings_vars)
    assert any("settings ['MODEL_NAME'] not set" in p for p in problems)
    assert any("UNUSED_KNOB is read by no program" in p for p in problems)
    assert any("Deployment/churn-api: gets the monitoring Secret" in p for p in problems)


def test_every_pod_is_restricted(rendered, broken):
    assert checks.check_restricted(rendered) == []
    spec = _deploy(broken, "churn-api-grpc")["spec"]["template"]["spec"]
    spec["securityContext"]["runAsUser"] = 0
    spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del spec["automountServiceAccountToken"]
    problems = checks.check_restricted(broken)
    assert len([p for p in problems if "churn-api-grpc" in p]) == 3


def test_images_are_versioned(rendered, broken):
    assert checks.check_images(rendered) == []
    _deploy(broken, "churn-api")["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "churn-service:latest"
    )
    _deploy(broken, "churn-api-grpc")["spec"]["template"]["spec"]["containers"][0]["image"] = "churn-service"
    assert len(checks.check_images(broken)) == 2


def test_nodeports_in_range(rendered, broken):
    assert checks.check_nodeports(rendered) == []
    next(d for d in broken if d["kind"] == "Service")["spec"]["ports"][0]["nodePort"] = 8080
    assert checks.check_nodeports(broken) == ["Service/churn-api: nodePort 8080 outside 30000-32767"]


def test_no_deprecated_kustomize_fields():
    for path in (ROOT / "kustomize").rglob("kustomization.yaml"):
        assert checks.check_no_deprecated_kustomize(path.read_text()) == [], path
    assert checks.check_no_deprecated_kustomize("commonLabels:\n  a: b\n") != []


def test_network_policy_denies_by_default_and_opens_only_serving_ports(rendered):
    policies = {d["metadata"]["name"]: d["spec"] for d in rendered if d["kind"] == "NetworkPolicy"}
    deny = policies["churn-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    ingress = policies["churn-api-ingress"]
    assert sorted(p["port"] for rule in ingress["ingress"] for p in rule["ports"]) == [3000, 50051]
    egress = policies["churn-drift-egress"]
    assert egress["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "drift"
    assert sorted({p["port"] for rule in egress["egress"] for p in rule["ports"]}) == [53, 443]
    # nothing selects the training Job's pods except the default deny
    train_labels = {"app.kubernetes.io/name": "churn", "app.kubernetes.io/component": "train"}
    for name, spec in policies.items():
        if name != "churn-default-deny":
            sel = spec["podSelector"]["matchLabels"]
            assert not all(train_labels.get(k) == v for k, v in sel.items()), name


def test_no_real_secret_in_git():
    text = (OVERLAY / "secret.dev.env").read_text()
    assert "DEVELOPMENT VALUES ONLY" in text and ".invalid" in text


def test_rendered_output_is_not_committed():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    for path in tracked:
        if path.endswith((".yaml", ".yml")) and (ROOT / path).is_file():
            text = (ROOT / path).read_text()
            assert "churn-config-" not in text or "kustomization" in path, (
                f"{path} looks like rendered output"
            )


def test_yaml_files_parse():
    for path in (ROOT / "kustomize").rglob("*.yaml"):
        list(yaml.safe_load_all(path.read_text()))


def test_render_is_deterministic():
    assert render() == render()
