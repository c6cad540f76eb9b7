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
LIBRARY_ENV = ("MPLCONFIGDIR", "NUMBA_CACHE_DIR")
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
            has_secret = any(k in env for k in SECRET_ENV)
            is_drift = "monitoring.drift" in " ".join(c.get("args", []) + c.get("command", []))
            if has_secret and not is_drift:
                problems.append(f"{name}: gets the monitoring Secret but does not use it")
            if is_drift and not all(k in env for k in SECRET_ENV):
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
            if "/tmp" not in {m["mountPath"] for m in c.get("volumeMounts", [])}:
                problems.append(f"{name}/{c['name']}: no writable /tmp with a read-only root")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                problems.append(f"{name}/{c['name']}: resource requests and limits must be set")
    return problems


def check_images(docs: list[Doc]) -> list[str]:
    problems = []
    for name, _, spec in pod_specs(docs):
        for c in _containers(spec) + spec.get("initContainers", []):
            image = c.get("image", "")
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
