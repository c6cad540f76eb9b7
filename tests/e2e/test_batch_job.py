"""The batch-scoring component's Indexed Job, run with two shards by the real image as the rendered
manifests declare it (Docker standing in for the kubelet and the Job controller, as in
conftest.py): both parts on the volume, disjoint and complete, with reasons."""

from __future__ import annotations

import copy
import io
import os
import re
import threading

import pandas as pd
import pytest
import yaml

from churn.settings import ENV_VARS
from tests.e2e.conftest import PodRun, copy_to_volume, docker, fresh_manifests, use_image
from tests.k8s import checks
from tests.k8s.checks import memory_bytes
from tests.k8s.conftest import KUBECTL, OVERLAY, parse
from tests.support import DATA, ROOT

pytestmark = pytest.mark.slow

COMPONENT = ROOT / "kustomize" / "components" / "batch-scoring"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def render_with_component(tmp_path) -> list[dict]:
    """The minikube overlay with the component added, as a user adds it (`components:` in the
    overlay): a copy of the overlay in a temporary folder whose paths lead back to this checkout."""
    import subprocess

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    for f in OVERLAY.iterdir():
        (overlay / f.name).write_bytes(f.read_bytes())
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    kustomization["resources"] = [
        os.path.relpath((OVERLAY / r).resolve(), overlay) if (OVERLAY / r).is_dir() else r
        for r in kustomization["resources"]
    ]
    kustomization["components"] = [os.path.relpath(COMPONENT, overlay)]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    proc = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return parse(proc.stdout)


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of a container's args."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def shard_pod(job: dict, index: int) -> dict:
    """The pod the Job controller makes for a completion index: the index annotation, which the
    downward API gives the container as JOB_COMPLETION_INDEX."""
    spec = copy.deepcopy(job["spec"]["template"]["spec"])
    container = spec["containers"][0]
    for item in container["env"]:
        if item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == INDEX_ANNOTATION:
            del item["valueFrom"]
            item["value"] = str(index)
    return spec


def read_volume(m, image: str, path: str) -> str:
    return docker("run", "--rm", "--entrypoint", "cat", "-v", f"{m.volume}:/mlops", image, path).stdout


def test_the_component_passes_the_manifest_checks(tmp_path):
    docs = render_with_component(tmp_path)
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "churn-score")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 2
    env = {e["name"]: e for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["SCORE_SHARDS"]["value"] == str(spec["completions"])
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == INDEX_ANNOTATION
    assert job["metadata"]["namespace"] == "churn-mlops"
    assert spec["template"]["spec"]["containers"][0]["image"].startswith("churn-service:")
    for problems in (
        checks.check_selectors(docs),
        checks.check_env(docs, set(ENV_VARS)),
        checks.check_restricted(docs),
        checks.check_images(docs),
        checks.check_schedules(docs),
        checks.check_no_telemetry(docs),
        checks.check_ingress_ports(docs),
        checks.check_fits_node(
            docs, {"cpu": 2.0, "memory": 5.5 * 2**30}, {"cpu": 1.0, "memory": 170 * 2**20}
        ),
    ):
        assert problems == []


@pytest.fixture(scope="module")
def manifests(image, tmp_path_factory):
    """A volume of its own: the session's volume is test_container.py's, which must train first."""
    with fresh_manifests(image, tmp_path_factory.mktemp("netaudit-batch")) as m:
        yield m


def test_indexed_job_scores_two_disjoint_complete_shards(manifests, image, tmp_path):
    assert manifests.workload("Job", "churn-train").run().returncode == 0  # the first model
    docs = render_with_component(tmp_path)
    use_image(docs, image)
    job = next(d for d in docs if d["kind"] == "Job" and d["metadata"]["name"] == "churn-score")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    customers = DATA.read_bytes()
    header, *rows = customers.splitlines(keepends=True)
    copy_to_volume(manifests, image, env["SCORE_INPUT"], header + b"".join(rows * 20))  # 140,860 rows
    count = int(env["SCORE_SHARDS"])
    runs, results = [], {}

    def run(index: int) -> None:
        pod = PodRun("churn-score", shard_pod(job, index), manifests.env_of, manifests.volume,
                     manifests.audit_dir, manifests.sampler)  # fmt: skip
        args = [expand(a, manifests.env_of(pod.container) | {"JOB_COMPLETION_INDEX": str(index)})
                for a in pod.container["args"]]  # fmt: skip
        runs.append(pod)
        results[index] = pod.run(args)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]  # parallelism: 2
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    manifests.runs.extend(runs)  # stopped and removed with the volume
    parts, rows_in = [], 0
    for index in range(count):
        proc = results[index]
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = yaml.safe_load(proc.stdout.strip().splitlines()[-1])
        assert summary["output"] == f"{env['SCORE_OUTPUT_DIR']}/part-{index}.csv"
        assert summary["rows_rejected"] == 0
        rows_in += summary["rows_in"]
        part = pd.read_csv(io.StringIO(read_volume(manifests, image, summary["output"])), dtype=str)
        assert len(part) == summary["rows_scored"] and "reason_3_contribution" in part.columns
        parts.append(part)
    assert rows_in == 20 * len(rows)
    # disjoint and complete: every (customer, copy) exactly once, counted by customer
    together = pd.concat(parts)
    assert len(together) == 20 * len(rows)
    assert (together["customerID"].value_counts() == 20).all()
    assert len(together["customerID"].unique()) == len(rows)
    # the shard split is the rows' number modulo 2: copies of one customer fall on both sides
    assert set(parts[0]["customerID"]) == set(parts[1]["customerID"])
    peak = manifests.sampler.peaks["churn-score"] / 2**20
    request = memory_bytes(container["resources"]["requests"]["memory"]) / 2**20
    limit = memory_bytes(container["resources"]["limits"]["memory"]) / 2**20
    print(f"\nchurn-score: {rows_in} rows in {count} shards, peak working set {peak:.0f} MiB")
    assert peak <= request and peak <= limit / 1.5
