"""The manifests, proven without a cluster: rendered by the real kubectl, validated against the
official schemas, and checked for what the system relies on, object by object and as a whole
(what the scheduler and the controllers would do with them). Every overlay goes through every
check; each check also gets a broken copy to prove it can fail."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from churn.settings import ENV_VARS
from tests.k8s import checks
from tests.k8s.conftest import OVERLAY, OVERLAYS, parse, render
from tests.support import ROOT

KUBERNETES_VERSION = "1.34.0"  # the version docs/kubernetes.md tells minikube users to start
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# The walkthrough's node: `minikube start --cpus=2 --memory=6g` (VM driver). minikube reserves
# nothing for the system and sets no memory eviction threshold, so allocatable = capacity; the
# guest kernel keeps part of the 6 GiB, taken here as 0.5 GiB.
MINIKUBE_NODE = {"cpu": 2.0, "memory": 5.5 * 2**30}
# What minikube's own pods request on that node (kube-system, one CoreDNS replica): kube-apiserver
# 250m, kube-controller-manager 200m, kube-scheduler 100m, etcd 100m + 100Mi, CoreDNS 100m + 70Mi,
# calico-node 250m; kube-proxy, calico-kube-controllers and storage-provisioner request nothing.
# Sources (upstream manifests) in docs/kubernetes.md, "Sizing".
MINIKUBE_SYSTEM = {"cpu": 1.0, "memory": 170 * 2**20}
# The production overlay's reference cluster: 3 nodes of 4 CPUs and 16 GiB, 0.5 CPU and 1 GiB of
# each taken by the system (kubelet reservations, DaemonSets).
PRODUCTION_CLUSTER = {"cpu": 3 * 4.0, "memory": 3 * 16 * 2**30}
PRODUCTION_SYSTEM = {"cpu": 3 * 0.5, "memory": 3 * 2**30}
SIZING = {"minikube": (MINIKUBE_NODE, MINIKUBE_SYSTEM), "production": (PRODUCTION_CLUSTER, PRODUCTION_SYSTEM)}


def _short(d):  # generated ConfigMap/Secret names carry a content hash suffix
    name = d["metadata"]["name"]
    return name.rsplit("-", 1)[0] if d["kind"] in ("ConfigMap", "Secret") else name


COMMON = [
    "Namespace/churn-mlops",
    "ConfigMap/churn-config",
    "Service/churn-api",
    "PersistentVolumeClaim/churn-state",
    "Deployment/churn-api",
    "Deployment/churn-api-grpc",
    "CronJob/churn-drift",
    "CronJob/churn-retention",
    "CronJob/churn-retrain",
    "CronJob/churn-feedback",
    "Job/churn-train",
    "PodDisruptionBudget/churn-api",
    "NetworkPolicy/churn-default-deny",
    "NetworkPolicy/churn-api-ingress",
    "NetworkPolicy/churn-drift-egress",
]
EXPECTED = {
    "minikube": COMMON + ["Secret/churn-monitoring"],
    "production": COMMON
    + [
        "HorizontalPodAutoscaler/churn-api",
        "PodDisruptionBudget/churn-api-grpc",
        "Service/churn-api-grpc",
        "PodMonitor/churn-api",
        "PrometheusRule/churn",
    ],
}


def test_overlay_renders_every_resource(overlay):
    name, docs = overlay
    assert sorted(f"{d['kind']}/{_short(d)}" for d in docs) == sorted(EXPECTED[name])
    assert all(d["metadata"].get("namespace") == "churn-mlops" for d in docs if d["kind"] != "Namespace")


def _validate(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "rendered.yaml"
    path.write_text(text)
    tool = str(Path(sys.executable).parent / "kubernetes-validate")
    return subprocess.run(
        [tool, "--strict", "--quiet", "-k", KUBERNETES_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rendered_objects_pass_strict_schema_validation(overlay, rendered_texts, tmp_path):
    name, _ = overlay
    proc = _validate(tmp_path, rendered_texts[name])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Custom resources have no bundled schema (a warning): they get checks of their own below.
    for line in (proc.stdout + proc.stderr).splitlines():
        assert "PodMonitor" in line or "PrometheusRule" in line, line
    # and it does catch an unknown field
    bad = rendered_texts[name].replace(
        "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replicaz: 3\n", 1
    )
    proc = _validate(tmp_path, bad)
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
    images = {c["image"] for _, _, s in checks.pod_specs(rendered) for c in s["containers"]}
    assert images == {f"churn-service:{VERSION}"}  # the image tag is the project version
    cm = next(d for d in rendered if d["kind"] == "ConfigMap")
    assert cm["data"]["MLOPS_HOME"] == "/mlops" and cm["data"]["MODEL_STORE"] == "/mlops/bentoml/models"
    assert cm["data"]["BENTOML_HOME"] == "/tmp/bentoml"  # per pod: each start empties its metrics folder
    train = docs[("Job", "churn-train")]["spec"]
    assert train["backoffLimit"] <= 3 and train["activeDeadlineSeconds"] <= 1800
    assert train["ttlSecondsAfterFinished"] == 0
    for name in ("churn-api", "churn-api-grpc"):
        pod = docs[("Deployment", name)]["spec"]["template"]["spec"]
        # the pod waits for a model in its init container, as long as a first training may take ...
        wait = pod["initContainers"][0]["args"]
        assert wait[:4] == ["python", "-m", "training.registry", "wait"]
        assert float(wait[wait.index("--timeout") + 1]) >= train["activeDeadlineSeconds"]
        # ... so the startup probe only covers loading it
        startup = pod["containers"][0]["startupProbe"]
        assert 30 <= startup["periodSeconds"] * startup["failureThreshold"] <= 120
    cron = docs[("CronJob", "churn-drift")]["spec"]
    # the scheduled monitoring: drift then performance, both alerting (monitoring/scheduled.py)
    assert cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "python",
        "-m",
        "monitoring.scheduled",
    ]
    from monitoring.scheduled import DRIFT_ARGS, PERFORMANCE_ARGS

    assert "--alert" in DRIFT_ARGS and "--alert" in PERFORMANCE_ARGS
    # the outcomes join runs as its own scheduled Job on the drop folder, not in the API pods
    feedback = docs[("CronJob", "churn-feedback")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert feedback["containers"][0]["args"] == ["python", "-m", "monitoring.feedback", "--inbox"]
    retrain = docs[("CronJob", "churn-retrain")]["spec"]
    assert retrain["concurrencyPolicy"] == "Forbid"
    assert retrain["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "python",
        "-m",
        "training.retrain",
    ]


def test_production_overlay_contract(rendered_texts):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in parse(rendered_texts["production"])}
    pvc = docs[("PersistentVolumeClaim", "churn-state")]["spec"]
    assert pvc["accessModes"] == ["ReadWriteMany"]  # pods on several nodes share the one volume
    images = {c["image"] for _, _, s in checks.pod_specs(list(docs.values())) for c in s["containers"]}
    assert len(images) == 1 and images.pop().split("@")[1].startswith("sha256:")  # by digest
    hpa = docs[("HorizontalPodAutoscaler", "churn-api")]["spec"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300  # no flapping
    assert hpa["minReplicas"] >= 2
    assert docs[("Service", "churn-api-grpc")]["spec"]["clusterIP"] == "None"  # headless for gRPC
    assert [p["name"] for p in docs[("Service", "churn-api")]["spec"]["ports"]] == ["http"]
    for name in ("churn-api", "churn-api-grpc"):
        spread = docs[("Deployment", name)]["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert not any(kind == "Secret" for kind, _ in docs)  # created out of band, never in git


@pytest.fixture
def broken(rendered):
    return copy.deepcopy(rendered)


def _deploy(docs, name):
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)


def test_selectors_match(overlay, broken):
    assert checks.check_selectors(overlay[1]) == []
    _deploy(broken, "churn-api")["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] = (
        "x"
    )
    problems = checks.check_selectors(broken)
    assert any("Deployment/churn-api: selector" in p for p in problems)
    assert any("PodDisruptionBudget/churn-api" in p for p in problems)


def test_ports_and_probe_paths_exist(overlay, broken, served_routes):
    assert {"/predict", "/health", "/startup", "/ready"} <= served_routes
    assert checks.check_ports(overlay[1], served_routes) == []
    api = _deploy(broken, "churn-api")["spec"]["template"]["spec"]["containers"][0]
    api["ports"][0]["name"] = "web"
    api["readinessProbe"]["httpGet"]["path"] = "/readiness"
    problems = checks.check_ports(broken, served_routes)
    assert any("targetPort 'http'" in p for p in problems)
    assert any("readinessProbe path /readiness" in p for p in problems)
    assert any("startupProbe port 'http'" in p for p in problems)


def test_env_is_complete_and_every_key_used(overlay, broken):
    settings_vars = set(ENV_VARS)
    assert checks.check_env(overlay[1], settings_vars) == []
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


def test_every_pod_is_restricted(overlay, broken):
    assert checks.check_restricted(overlay[1]) == []
    spec = _deploy(broken, "churn-api-grpc")["spec"]["template"]["spec"]
    spec["securityContext"]["runAsUser"] = 0
    spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    spec["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    del spec["automountServiceAccountToken"]
    spec["containers"][0]["volumeMounts"].append({"name": "tmp", "mountPath": "/mlops/bentoml/metrics"})
    problems = checks.check_restricted(broken)
    assert len([p for p in problems if "churn-api-grpc" in p]) == 5
    assert any("/mlops/bentoml/metrics is mounted inside another mount" in p for p in problems)


def test_images_are_versioned_or_pinned(overlay, broken):
    name, docs = overlay
    assert checks.check_images(docs, by_digest=name == "production") == []
    _deploy(broken, "churn-api")["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "churn-service:latest"
    )
    _deploy(broken, "churn-api-grpc")["spec"]["template"]["spec"]["containers"][0]["image"] = "churn-service"
    assert len(checks.check_images(broken)) == 2
    assert len(checks.check_images(docs if name == "minikube" else broken, by_digest=True)) >= 4


def test_nodeports_in_range(overlay, broken):
    assert checks.check_nodeports(overlay[1]) == []
    next(d for d in broken if d["kind"] == "Service")["spec"]["ports"][0]["nodePort"] = 8080
    assert checks.check_nodeports(broken) == ["Service/churn-api: nodePort 8080 outside 30000-32767"]


def test_everything_fits_the_node_in_any_scheduling_order(overlay, broken):
    """The sum of every pod that can coexist (replicas + rollout surge or the HPA's maximum, the
    first-training Job, each CronJob once) plus the system's own pods fits the node. On the old
    manifests (API 2 x 250m, gRPC 250m, training 500m) minikube's 2 CPUs were overbooked."""
    name, docs = overlay
    node, system = SIZING[name]
    rows, _ = checks.coexisting_pods(docs)
    cpu = system["cpu"] + sum(n * c for _, n, c, _ in rows)
    mem = system["memory"] + sum(n * m for _, n, _, m in rows)
    print(f"\n{name}: {cpu:.2f} of {node['cpu']} CPUs, {mem / 2**30:.2f} of {node['memory'] / 2**30:.1f} GiB")
    assert checks.check_fits_node(docs, node, system) == []
    # the old requests no longer fit, and a pile-up of CronJob runs is refused
    for d in broken:
        for _, _, spec in checks.pod_specs([d]):
            for c in spec["containers"]:
                c["resources"]["requests"]["cpu"] = "500m" if d["kind"] == "Job" else "250m"
    next(d for d in broken if d["kind"] == "CronJob")["spec"]["concurrencyPolicy"] = "Allow"
    problems = checks.check_fits_node(broken, MINIKUBE_NODE, MINIKUBE_SYSTEM)
    assert any(p.startswith("CPU requests") for p in problems)
    assert any("concurrencyPolicy Allow" in p for p in problems)


def _render_changed(tmp_path, overlay: Path, log_level: str, tag: str) -> list[dict]:
    """The overlay as a user would re-apply it after editing a setting and the image tag."""
    copy_dir = tmp_path / "kustomize"
    shutil.copytree(ROOT / "kustomize", copy_dir)
    kust = copy_dir / "overlays" / overlay.name / "kustomization.yaml"
    data = yaml.safe_load(kust.read_text())
    data.setdefault("configMapGenerator", []).append(
        {"name": "churn-config", "behavior": "merge", "literals": [f"LOG_LEVEL={log_level}"]}
    )
    for image in data["images"]:
        image.pop("digest", None)
        image["newTag"] = tag
    kust.write_text(yaml.safe_dump(data))
    return parse(render(kust.parent))


def test_reapplying_after_a_config_or_version_change_is_accepted_and_does_not_retrain(overlay, tmp_path):
    name, before = overlay
    after = _render_changed(tmp_path, OVERLAYS[name], "DEBUG", "0.1.1")
    before_job = next(d for d in before if d["kind"] == "Job")["spec"]["template"]
    after_job = next(d for d in after if d["kind"] == "Job")["spec"]["template"]
    assert before_job != after_job  # the change does reach the Job's (immutable) pod template
    assert checks.check_reapply(before, after) == []
    # the old Job: kept for a day and training on every run
    old = copy.deepcopy(after)
    job = next(d for d in old if d["kind"] == "Job")
    job["spec"]["ttlSecondsAfterFinished"] = 86400
    job["spec"]["template"]["spec"]["containers"][0]["args"] = ["python", "-m", "training.train"]
    problems = checks.check_reapply(before, old)
    assert any("immutable field changes" in p for p in problems)
    assert any("it would retrain" in p for p in problems)


def test_disruption_budgets_cover_every_replicated_deployment(overlay, broken):
    assert checks.check_disruption(overlay[1]) == []
    _deploy(broken, "churn-api-grpc")["spec"]["replicas"] = 2  # no PDB for gRPC in minikube
    next(d for d in broken if d["kind"] == "PodDisruptionBudget")["spec"]["minAvailable"] = 2
    problems = checks.check_disruption(broken)
    assert any("churn-api-grpc: 2 replicas but no PodDisruptionBudget" in p for p in problems)
    assert any("blocks every drain of churn-api" in p for p in problems)


def test_batch_workloads_have_a_time_zone_and_fail_fast_on_bad_input(overlay, broken):
    assert checks.check_schedules(overlay[1]) == []
    cron = next(d for d in broken if d["kind"] == "CronJob" and d["metadata"]["name"] == "churn-drift")
    del cron["spec"]["timeZone"]
    del cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]
    problems = checks.check_schedules(broken)
    assert any("no timeZone" in p for p in problems)
    assert any("CronJob/churn-drift: exit code 2" in p for p in problems)


def test_network_policy_opens_every_declared_port_and_nothing_else(overlay, broken):
    assert checks.check_ingress_ports(overlay[1]) == []
    policy = next(d for d in broken if d["metadata"]["name"] == "churn-api-ingress")
    policy["spec"]["ingress"][0]["ports"] = [
        p for p in policy["spec"]["ingress"][0]["ports"] if p["port"] != 3001
    ]
    assert checks.check_ingress_ports(broken) == [
        "Deployment/churn-api-grpc: declares port 3001 but no NetworkPolicy lets anything reach it"
    ]


def test_no_container_sends_usage_telemetry(overlay, broken):
    assert checks.check_no_telemetry(overlay[1]) == []
    del next(d for d in broken if d["kind"] == "ConfigMap")["data"]["BENTOML_DO_NOT_TRACK"]
    assert len(checks.check_no_telemetry(broken)) >= 6


def test_scrape_targets_exist(overlay):
    """The PodMonitor's ports are ports of the pods it selects (production only)."""
    name, docs = overlay
    monitors = checks.by_kind(docs, "PodMonitor")
    if name == "minikube":
        assert monitors == []
        return
    ports = {
        p.get("name")
        for _, meta, spec in checks.pod_specs(docs)
        if checks._matches(monitors[0]["spec"]["selector"]["matchLabels"], meta.get("labels", {}))
        for c in spec["containers"]
        for p in c.get("ports", [])
    }
    endpoints = monitors[0]["spec"]["podMetricsEndpoints"]
    assert {e["port"] for e in endpoints} <= ports
    # BentoML's gRPC metrics server answers at "/" only
    assert {e["port"]: e["path"] for e in endpoints}["grpc-metrics"] == "/"


def test_prometheus_rule_carries_the_tested_rules(rendered_texts):
    rule = next(d for d in parse(rendered_texts["production"]) if d["kind"] == "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "monitoring" / "prometheus" / "rules.yaml").read_text())


def test_no_deprecated_kustomize_fields():
    for path in (ROOT / "kustomize").rglob("kustomization.yaml"):
        assert checks.check_no_deprecated_kustomize(path.read_text()) == [], path
    assert checks.check_no_deprecated_kustomize("commonLabels:\n  a: b\n") != []


def test_network_policy_denies_by_default(overlay):
    policies = {d["metadata"]["name"]: d["spec"] for d in overlay[1] if d["kind"] == "NetworkPolicy"}
    deny = policies["churn-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    ingress = policies["churn-api-ingress"]
    assert sorted(p["port"] for rule in ingress["ingress"] for p in rule["ports"]) == [3000, 3001, 50051]
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
    for path in OVERLAYS.values():
        assert render(path) == render(path)
