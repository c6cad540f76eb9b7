"""Structural checks of rendered manifests. Each returns a list of problems (empty = fine), so a
test can assert both that the real manifests pass and that a broken copy is caught."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

Doc = dict[str, Any]

NODEPORT_RANGE = range(30000, 32768)
# Settings every program needs to find its state and model; the others have defaults.
REQUIRED_ENV = ("MLOPS_HOME", "BENTOML_HOME", "MODEL_NAME", "LOG_LEVEL")
# Read by libraries rather than by churn.settings, and documented in the base kustomization.
LIBRARY_ENV = ("MPLCONFIGDIR", "BENTOML_DO_NOT_TRACK")
SECRET_ENV = ("MONITORING_WEBHOOK_URL", "MONITORING_API_TOKEN")
RESTRICTED_UID = 1034


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc, dict]]:
    """(name, pod template metadata, pod spec) of every workload."""
    for d in docs:
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "Job"):
            tpl = d["spec"]["template"]
        elif d["kind"] == "CronJob":
            tpl = d["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        yield name, tpl.get("metadata", {}), tpl["spec"]


def _matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_selectors(docs: list[Doc]) -> list[str]:
    problems = []
    pods = [(n, m.get("labels", {}), s) for n, m, s in pod_specs(docs)]
    for d in by_kind(docs, "Deployment"):
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not _matches(sel, labels):
            problems.append(
                f"Deployment/{d['metadata']['name']}: selector {sel} does not match its pod labels"
            )
    for d in by_kind(docs, "Service") + by_kind(docs, "PodDisruptionBudget"):
        sel = d["spec"]["selector"] if d["kind"] == "Service" else d["spec"]["selector"]["matchLabels"]
        if not any(_matches(sel, labels) for _, labels, _ in pods):
            problems.append(f"{d['kind']}/{d['metadata']['name']}: selector {sel} matches no pod")
    return problems


def _containers(spec: dict) -> list[dict]:
    return spec.get("containers", [])


def check_ports(docs: list[Doc], served_routes: set[str]) -> list[str]:
    """Service targetPorts and probe ports exist on the containers; HTTP probe paths are real routes."""
    problems = []
    pods = list(pod_specs(docs))
    for svc in by_kind(docs, "Service"):
        sel = svc["spec"]["selector"]
        selected = [s for _, m, s in pods if _matches(sel, m.get("labels", {}))]
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            found = any(
                (p.get("name") == target if isinstance(target, str) else p["containerPort"] == target)
                for spec in selected
                for c in _containers(spec)
                for p in c.get("ports", [])
            )
            if not found:
                problems.append(
                    f"Service/{svc['metadata']['name']}: targetPort {target!r} is on no selected container"
                )
    for name, _, spec in pods:
        for c in _containers(spec):
            ports = c.get("ports", [])
            names = {p.get("name") for p in ports}
            numbers = {p["containerPort"] for p in ports}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                handler = probe.get("httpGet") or probe.get("grpc") or probe.get("tcpSocket")
                if handler is None:
                    continue
                port = handler["port"]
                if (isinstance(port, str) and port not in names) or (
                    isinstance(port, int) and port not in numbers
                ):
                    problems.append(f"{name}: {kind} port {port!r} is not a port of container {c['name']}")
                if "httpGet" in probe and probe["httpGet"]["path"] not in served_routes:
                    problems.append(
                        f"{name}: {kind} path {probe['httpGet']['path']} is not served by the API"
                    )
    return problems


def _env_of(container: dict, docs: list[Doc]) -> dict[str, str]:
    env: dict[str, str] = {}
    maps = {
        d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap") + by_kind(docs, "Secret")
    }
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef") or source.get("secretRef")
        env.update({k: "<from " + ref["name"] + ">" for k in maps.get(ref["name"], {})})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "<ref>")
    return env


def check_env(docs: list[Doc], settings_vars: set[str]) -> list[str]:
    """Every workload gets the settings it needs; every ConfigMap/Secret key is read by something;
    the Secret reaches only the drift job; MLOPS_HOME is where the volume is mounted."""
    problems = []
    used: set[str] = set()
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    for name, _, spec in pod_specs(docs):
        for c in _containers(spec):
            env = _env_of(c, docs)
            used |= set(env)
            missing = [v for v in REQUIRED_ENV if v not in env]
            if missing:
                problems.append(f"{name}: settings {missing} not set")
            # A Secret the overlay does not render (production creates it out of band) still counts.
            has_secret = any("secretRef" in source for source in c.get("envFrom", []))
            command = " ".join(c.get("args", []) + c.get("command", []))
            is_drift = "monitoring.drift" in command or "monitoring.scheduled" in command
            if has_secret and not is_drift:
                problems.append(f"{name}: gets the monitoring Secret but does not use it")
            rendered_keys = all(k in env for k in SECRET_ENV) or not any(d["kind"] == "Secret" for d in docs)
            if is_drift and not (has_secret and rendered_keys):
                problems.append(f"{name}: runs the drift alert without the monitoring Secret")
            home = next((cm["MLOPS_HOME"] for cm in configmaps.values() if "MLOPS_HOME" in cm), None)
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if home and home not in mounts:
                problems.append(f"{name}: MLOPS_HOME={home} is not a mounted volume")
    for d in by_kind(docs, "ConfigMap") + by_kind(docs, "Secret"):
        for key in d.get("data", {}):
            if key not in settings_vars and key not in LIBRARY_ENV:
                problems.append(f"{d['kind']}/{d['metadata']['name']}: key {key} is read by no program")
            elif key not in used:
                problems.append(f"{d['kind']}/{d['metadata']['name']}: key {key} reaches no container")
    return problems


def check_restricted(docs: list[Doc]) -> list[str]:
    """Pod Security Standard "restricted", plus the project's own rules (read-only root, no token)."""
    problems = []
    for name, _, spec in pod_specs(docs):
        pod = spec.get("securityContext", {})
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: service-account token is mounted")
        if pod.get("runAsNonRoot") is not True or pod.get("runAsUser") != RESTRICTED_UID:
            problems.append(f"{name}: must run as non-root UID {RESTRICTED_UID}")
        if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile must be RuntimeDefault")
        for c in _containers(spec) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{c['name']}: allowPrivilegeEscalation must be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{name}/{c['name']}: must drop ALL capabilities and add none")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}/{c['name']}: root filesystem must be read-only")
            if sc.get("privileged"):
                problems.append(f"{name}/{c['name']}: privileged")
            mounts = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", [])]
            if "/tmp" not in mounts:
                problems.append(f"{name}/{c['name']}: no writable /tmp with a read-only root")
            for inner in mounts:
                if any(inner.startswith(outer + "/") for outer in mounts):
                    problems.append(
                        f"{name}/{c['name']}: {inner} is mounted inside another mount, whose volume then "
                        "needs a mount point the runtime creates as root"
                    )
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                problems.append(f"{name}/{c['name']}: resource requests and limits must be set")
    return problems


def check_images(docs: list[Doc], by_digest: bool = False) -> list[str]:
    """Local images (minikube): an explicit version tag, never `latest`, pulled IfNotPresent (no
    registry holds them). Registry images (`by_digest`): pinned by sha256 digest, which no push
    can move."""
    problems = []
    for name, _, spec in pod_specs(docs):
        for c in _containers(spec) + spec.get("initContainers", []):
            image = c.get("image", "")
            if by_digest:
                if not re.search(r"@sha256:[0-9a-f]{64}$", image):
                    problems.append(f"{name}/{c['name']}: image {image!r} must be pinned by digest")
                continue
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest":
                problems.append(f"{name}/{c['name']}: image {image!r} must carry an explicit version tag")
            if c.get("imagePullPolicy") not in ("IfNotPresent", "Never"):
                problems.append(f"{name}/{c['name']}: imagePullPolicy must be IfNotPresent for local images")
    return problems


def check_nodeports(docs: list[Doc]) -> list[str]:
    problems = []
    for svc in by_kind(docs, "Service"):
        for port in svc["spec"].get("ports", []):
            if "nodePort" in port and port["nodePort"] not in NODEPORT_RANGE:
                problems.append(
                    f"Service/{svc['metadata']['name']}: nodePort {port['nodePort']} outside 30000-32767"
                )
    return problems


def check_no_deprecated_kustomize(text: str) -> list[str]:
    return [
        f"deprecated kustomize field {f}"
        for f in ("commonLabels", "bases", "patchesStrategicMerge")
        if re.search(rf"^{f}:", text, re.M)
    ]


# ------------------------------------------------------------------------------------------------
# What the scheduler and the controllers would do with the rendered objects as a whole
# ------------------------------------------------------------------------------------------------

_MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(quantity: str | int) -> float:
    text = str(quantity)
    for unit, factor in sorted(_MEMORY_UNITS.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def pod_requests(spec: dict) -> tuple[float, float]:
    """What the scheduler reserves for one pod: the larger of its biggest init container and the
    sum of its containers (Kubernetes' effective request), in cores and bytes."""

    def req(c: dict) -> tuple[float, float]:
        r = c.get("resources", {}).get("requests", {})
        return cpu_cores(r.get("cpu", 0)), memory_bytes(r.get("memory", 0))

    main = [req(c) for c in spec.get("containers", [])]
    init = [req(c) for c in spec.get("initContainers", [])]
    cpu = max([sum(c for c, _ in main)] + [c for c, _ in init])
    mem = max([sum(m for _, m in main)] + [m for _, m in init])
    return cpu, mem


def _surge(deployment: dict) -> int:
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") == "Recreate":
        return 0
    surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    replicas = deployment["spec"].get("replicas", 1)
    if isinstance(surge, str) and surge.endswith("%"):
        return -(-replicas * int(surge[:-1]) // 100)  # rounded up, as the controller does
    return int(surge)


def coexisting_pods(docs: list[Doc]) -> tuple[list[tuple[str, int, float, float]], list[str]]:
    """Every pod that can run at the same time, whatever order things happen in: each Deployment
    at its most replicas (an HPA's maximum) plus its rollout surge, each Job at its parallelism,
    each CronJob once (concurrencyPolicy Forbid or Replace). (name, count, cpu, memory) rows, and
    the problems that make the count unbounded."""
    rows, problems = [], []
    hpa_max = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in by_kind(docs, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    for name, _, spec in pod_specs(docs):
        kind, short = name.split("/", 1)
        doc = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == short)
        if kind == "Deployment":
            count = hpa_max.get(short, doc["spec"].get("replicas", 1)) + _surge(doc)
        elif kind == "Job":
            count = doc["spec"].get("parallelism", 1)
        else:
            if doc["spec"].get("concurrencyPolicy", "Allow") == "Allow":
                problems.append(f"{name}: concurrencyPolicy Allow lets runs pile up without bound")
            count = 1
        cpu, mem = pod_requests(spec)
        rows.append((name, count, cpu, mem))
    return rows, problems


def check_fits_node(docs: list[Doc], node: dict[str, float], system: dict[str, float]) -> list[str]:
    """Everything that can coexist, plus the node's own pods, fits the node's allocatable CPU and
    memory: then no order of scheduling can leave a pod Pending for want of room."""
    rows, problems = coexisting_pods(docs)
    cpu = system["cpu"] + sum(n * c for _, n, c, _ in rows)
    mem = system["memory"] + sum(n * m for _, n, _, m in rows)
    if cpu > node["cpu"] + 1e-9:
        problems.append(f"CPU requests {cpu:.2f} cores (incl. {system['cpu']} system) > node {node['cpu']}")
    if mem > node["memory"]:
        problems.append(
            f"memory requests {mem / 2**20:.0f}Mi (incl. {system['memory'] / 2**20:.0f}Mi system) "
            f"> node {node['memory'] / 2**20:.0f}Mi"
        )
    for name, _, c, m in rows:
        if c > node["cpu"] - system["cpu"] or m > node["memory"] - system["memory"]:
            problems.append(f"{name}: one pod alone does not fit beside the system pods")
    return problems


# Fields the API server refuses to change on `kubectl apply` (a Job's whole pod template among them).
def _immutable(doc: Doc) -> dict[str, Any]:
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind == "Job":
        return {"template": spec.get("template"), "selector": spec.get("selector")}
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        return {"selector": spec.get("selector")}
    if kind == "PersistentVolumeClaim":
        return {k: v for k, v in spec.items() if k != "resources"}
    if kind == "Service":
        return {"clusterIP": spec.get("clusterIP"), "type_is_headless": spec.get("clusterIP") == "None"}
    return {}


def check_reapply(before: list[Doc], after: list[Doc]) -> list[str]:
    """`kubectl apply` of `after` over `before` changes no immutable field. A Job whose template
    changed is acceptable only if it deletes itself when finished (ttlSecondsAfterFinished: 0:
    the next apply then creates it afresh) and does nothing when a model exists (--if-no-current)."""
    problems = []
    old = {(d["kind"], d["metadata"]["name"]): d for d in before}
    for doc in after:
        key = (doc["kind"], doc["metadata"]["name"])
        if key not in old or _immutable(old[key]) == _immutable(doc):
            continue
        spec = doc["spec"]
        args = (
            " ".join(c for c in spec["template"]["spec"]["containers"][0].get("args", []))
            if key[0] == "Job"
            else ""
        )
        if key[0] == "Job" and spec.get("ttlSecondsAfterFinished") == 0 and "--if-no-current" in args:
            continue
        problems.append(f"{key[0]}/{key[1]}: an immutable field changes, so a re-apply would be refused")
    for doc in after:  # a Job that would run again on every apply must not retrain
        if doc["kind"] == "Job" and doc["spec"].get("ttlSecondsAfterFinished") is not None:
            args = " ".join(doc["spec"]["template"]["spec"]["containers"][0].get("args", []))
            if "training.train" in args and "--if-no-current" not in args:
                problems.append(f"Job/{doc['metadata']['name']}: re-created by every apply, it would retrain")
    return problems


def check_disruption(docs: list[Doc]) -> list[str]:
    """Every Deployment that can run more than one replica has a PodDisruptionBudget, and no budget
    blocks a node drain outright (minAvailable at or above the replica count)."""
    problems = []
    hpa_min = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"].get("minReplicas", 1)
        for h in by_kind(docs, "HorizontalPodAutoscaler")
    }
    pdbs = by_kind(docs, "PodDisruptionBudget")
    for d in by_kind(docs, "Deployment"):
        name = d["metadata"]["name"]
        replicas = hpa_min.get(name, d["spec"].get("replicas", 1))
        labels = d["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in pdbs if _matches(p["spec"]["selector"]["matchLabels"], labels)]
        if replicas > 1 and not mine:
            problems.append(f"Deployment/{name}: {replicas} replicas but no PodDisruptionBudget")
        for p in mine:
            if p["spec"].get("minAvailable", 0) >= replicas or p["spec"].get("maxUnavailable", 1) == 0:
                problems.append(f"PodDisruptionBudget/{p['metadata']['name']}: blocks every drain of {name}")
    return problems


def check_schedules(docs: list[Doc]) -> list[str]:
    """CronJobs run in a stated time zone and never pile up; batch pods fail fast on bad input."""
    problems = []
    for cj in by_kind(docs, "CronJob"):
        name = f"CronJob/{cj['metadata']['name']}"
        if not cj["spec"].get("timeZone"):
            problems.append(f"{name}: no timeZone (the schedule would follow the controller's zone)")
        if cj["spec"].get("concurrencyPolicy") != "Forbid":
            problems.append(f"{name}: concurrencyPolicy must be Forbid")
    jobs = [(f"Job/{j['metadata']['name']}", j["spec"]) for j in by_kind(docs, "Job")]
    jobs += [
        (f"CronJob/{c['metadata']['name']}", c["spec"]["jobTemplate"]["spec"])
        for c in by_kind(docs, "CronJob")
    ]
    for name, spec in jobs:
        rules = spec.get("podFailurePolicy", {}).get("rules", [])
        fails_on_bad_input = any(
            r["action"] == "FailJob" and 2 in r.get("onExitCodes", {}).get("values", []) for r in rules
        )
        if spec.get("backoffLimit", 6) > 0 and not fails_on_bad_input and "retention" not in name:
            # (retention has no bad input: it only deletes by age and size)
            problems.append(f"{name}: exit code 2 (bad input) would be retried: add a podFailurePolicy")
    return problems


def check_ingress_ports(docs: list[Doc]) -> list[str]:
    """Every port a serving container declares (metrics included) is opened by some NetworkPolicy,
    and nothing else is: the default deny covers the rest."""
    problems = []
    policies = [
        p["spec"] for p in by_kind(docs, "NetworkPolicy") if "Ingress" in p["spec"].get("policyTypes", [])
    ]
    for name, meta, spec in pod_specs(docs):
        labels = meta.get("labels", {})
        opened = {
            port["port"]
            for p in policies
            if p.get("podSelector") and _matches(p["podSelector"].get("matchLabels", {}), labels)
            for rule in p.get("ingress", [])
            for port in rule.get("ports", [])
        }
        declared = {port["containerPort"] for c in spec.get("containers", []) for port in c.get("ports", [])}
        for port in sorted(declared - opened):
            problems.append(f"{name}: declares port {port} but no NetworkPolicy lets anything reach it")
    return problems


def check_no_telemetry(docs: list[Doc]) -> list[str]:
    """Every container gets BENTOML_DO_NOT_TRACK=true: egress is denied, and BentoML's usage
    tracking would otherwise try to resolve its host at every start."""
    problems = []
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind(docs, "ConfigMap")}
    for name, _, spec in pod_specs(docs):
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            env = {}
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    env.update(configmaps.get(source["configMapRef"]["name"], {}))
            env.update({e["name"]: e.get("value") for e in c.get("env", [])})
            if str(env.get("BENTOML_DO_NOT_TRACK", "")).lower() != "true":
                problems.append(f"{name}/{c['name']}: BENTOML_DO_NOT_TRACK is not true")
    return problems
