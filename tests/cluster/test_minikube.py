"""The minikube overlay on a real control plane shaped like the walkthrough's node
(tools/cluster/topologies/minikube.yaml): what `kubectl apply -k` and the walkthrough's next steps
do on a real API server, scheduler and controllers. Containers do not run here (kwok plays the
pods): what the programs do is the container e2e's part (tests/e2e)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.cluster.kube import NS, UNREADY, Kube, KubectlError, until
from tests.k8s.conftest import OVERLAY, parse, render
from tests.support import ROOT

pytestmark = pytest.mark.slow

RENDERED = parse(render(OVERLAY))
CRONJOBS = sorted(d["metadata"]["name"] for d in RENDERED if d["kind"] == "CronJob")
DEPLOYMENTS = sorted(d["metadata"]["name"] for d in RENDERED if d["kind"] == "Deployment")


def apply(kube: Kube, overlay: Path = OVERLAY) -> None:
    """The walkthrough's deploy step, with the API server's strict field validation."""
    kube.run("apply", "-k", str(overlay), "--validate=strict")


def uid(kube: Kube, ref: str) -> str:
    return kube.get(ref)["metadata"]["uid"]


def train_first_model(kube: Kube) -> None:
    """The first-training Job runs and completes; its TTL of 0 then deletes it."""
    job = uid(kube, "job/churn-train")
    kube.finish("churn-train", 0)
    until("the Job churn-train to complete", lambda: kube.events("Completed", job))
    until(
        "the finished Job churn-train to be deleted",
        lambda: not kube.items("jobs", "app.kubernetes.io/component=train"),
    )


def rollout(kube: Kube, deployment: str) -> None:
    kube.run("rollout", "status", "-n", NS, f"deploy/{deployment}", "--timeout=60s", timeout=90)


def unscheduled(kube: Kube) -> list[str]:
    return [p["metadata"]["name"] for p in kube.pods() if not p["spec"].get("nodeName")]


# A pod created in the second before the PV controller binds the claim (one apply creates both) is
# told so and retried once it binds: minikube does the same, and it says nothing of room.
CLAIM_NOT_YET_BOUND = "pod has unbound immediate PersistentVolumeClaims"


def failed_scheduling(kube: Kube) -> list[str]:
    """What the scheduler said of the pods that exist now, when it could not place them."""
    pods = {p["metadata"]["uid"] for p in kube.pods()}
    return [
        f"{e['involvedObject']['name']}: {e['message']}"
        for e in kube.events("FailedScheduling")
        if e["involvedObject"].get("uid") in pods and CLAIM_NOT_YET_BOUND not in e["message"]
    ]


def test_the_api_server_accepts_every_object_of_the_overlay(minikube):
    apply(minikube)
    for doc in RENDERED:
        name, ns = doc["metadata"]["name"], doc["metadata"].get("namespace")
        got = minikube.get(f"{doc['kind']}/{name}", ns=ns)
        assert got["metadata"]["name"] == name


def test_kubectl_is_within_its_supported_skew_of_the_api_server(minikube):
    """kubectl supports one minor version either side of the API server: the tests would otherwise
    prove a kubectl that no user of a v1.34 cluster is told to run."""
    versions = json.loads(minikube.run("version", "-o", "json").stdout)
    client, server = (int(versions[k]["minor"].rstrip("+")) for k in ("clientVersion", "serverVersion"))
    assert versions["serverVersion"]["gitVersion"] == "v1.34.0"
    assert abs(client - server) <= 1, f"kubectl 1.{client} against an API server 1.{server}"


def test_walkthrough_train_then_serve_then_every_cronjob_on_demand(minikube):
    apply(minikube)
    assert minikube.get("pvc/churn-state")["status"]["phase"] == "Bound"
    train_first_model(minikube)
    for deployment in DEPLOYMENTS:
        rollout(minikube, deployment)
        got = minikube.get(f"deploy/{deployment}")
        assert got["status"]["readyReplicas"] == got["spec"]["replicas"]
    assert CRONJOBS, "no CronJob rendered"
    for cronjob in CRONJOBS:
        minikube.run("create", "job", "-n", NS, f"--from=cronjob/{cronjob}", f"{cronjob}-now")
        minikube.finish(f"{cronjob}-now", 0)
        until(
            f"Job {cronjob}-now to complete",
            lambda c=cronjob: minikube.get(f"job/{c}-now")["status"].get("succeeded") == 1,
        )
    assert failed_scheduling(minikube) == []


def fill_the_node(kube: Kube, cronjobs_first: bool) -> None:
    """Everything that can run at once: the training Job (still running), both Deployments in
    the middle of a rollout (each new pod never ready, so its surge pod stays), and one Job of each
    CronJob (concurrencyPolicy Forbid). Created in the order given."""

    def start_cronjobs():
        for cronjob in CRONJOBS:
            kube.run("create", "job", "-n", NS, f"--from=cronjob/{cronjob}", f"{cronjob}-now")

    def start_rollouts():
        for deployment in DEPLOYMENTS:
            patch = {"spec": {"template": {"metadata": {"annotations": {UNREADY: "true"}}}}}
            kube.run("patch", "-n", NS, f"deploy/{deployment}", "--type=merge", "-p", json.dumps(patch))

    apply(kube)
    for step in (start_cronjobs, start_rollouts) if cronjobs_first else (start_rollouts, start_cronjobs):
        step()
    replicas = sum(d["spec"]["replicas"] for d in RENDERED if d["kind"] == "Deployment")
    expected = 1 + replicas + len(DEPLOYMENTS) + len(CRONJOBS)  # training + replicas + surges + CronJobs
    until(f"{expected} pods", lambda: len(kube.pods()) >= expected)


@pytest.mark.parametrize("cronjobs_first", [True, False], ids=["cronjobs-first", "rollouts-first"])
def test_everything_that_can_run_at_once_is_scheduled_in_any_order(minikube, cronjobs_first):
    fill_the_node(minikube, cronjobs_first)
    until("every pod to have a node", lambda: not unscheduled(minikube), timeout=30)
    assert failed_scheduling(minikube) == []
    node = minikube.run("describe", "node", "minikube").stdout
    print("\n" + node[node.index("Allocated resources") :].split("Events")[0])


def test_with_half_a_cpu_less_the_scheduler_leaves_a_pod_pending(minikube):
    minikube.set_node_cpu("minikube", "1500m")
    fill_the_node(minikube, cronjobs_first=True)
    pending = until("a pod refused for want of CPU", lambda: failed_scheduling(minikube), timeout=30)
    assert any("Insufficient cpu" in p for p in pending), pending
    assert unscheduled(minikube)


def _changed_copy(tmp_path: Path, log_level: str, tag: str, job_ttl: int | None = None) -> Path:
    """The minikube overlay as a user re-applies it after editing a setting and the image tag
    (and, for the counter-example, with the first-training Job kept after it finishes)."""
    copy_dir = tmp_path / "kustomize"
    shutil.copytree(ROOT / "kustomize", copy_dir)
    kust = copy_dir / "overlays" / "minikube" / "kustomization.yaml"
    data = yaml.safe_load(kust.read_text())
    data.setdefault("configMapGenerator", []).append(
        {"name": "churn-config", "behavior": "merge", "literals": [f"LOG_LEVEL={log_level}"]}
    )
    data["images"][0]["newTag"] = tag
    if job_ttl is not None:
        data.setdefault("patches", []).append(
            {
                "target": {"kind": "Job", "name": "churn-train"},
                "patch": json.dumps(
                    [{"op": "replace", "path": "/spec/ttlSecondsAfterFinished", "value": job_ttl}]
                ),
            }
        )
    kust.write_text(yaml.safe_dump(data))
    return kust.parent


def test_reapplying_a_changed_setting_and_tag_rolls_the_api_and_does_not_retrain(minikube, tmp_path):
    apply(minikube)
    train_first_model(minikube)
    before = {d: minikube.get(f"deploy/{d}")["metadata"]["generation"] for d in DEPLOYMENTS}
    apply(minikube, _changed_copy(tmp_path, "DEBUG", "0.1.1"))
    for deployment in DEPLOYMENTS:
        rollout(minikube, deployment)
        got = minikube.get(f"deploy/{deployment}")
        assert got["metadata"]["generation"] > before[deployment]
        assert got["spec"]["template"]["spec"]["containers"][0]["image"] == "churn-service:0.1.1"
        pods = minikube.pods(
            f"app.kubernetes.io/component={got['metadata']['labels']['app.kubernetes.io/component']}"
        )
        assert {
            p["spec"]["containers"][0]["image"] for p in pods if not p["metadata"].get("deletionTimestamp")
        } == {"churn-service:0.1.1"}
    # The Job is created afresh (the old one deleted itself), and its run is the no-op
    # `--if-no-current` (that the program does nothing then is tests/e2e's part).
    job = minikube.get("job/churn-train")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "churn-service:0.1.1"
    assert "--if-no-current" in container["args"]


def test_a_first_training_job_kept_after_it_finishes_would_refuse_the_reapply(minikube, tmp_path):
    apply(minikube, _changed_copy(tmp_path / "a", "INFO", "0.1.0", job_ttl=86400))
    minikube.finish("churn-train", 0)
    until("the Job to complete", lambda: minikube.get("job/churn-train")["status"].get("succeeded") == 1)
    with pytest.raises(KubectlError, match="field is immutable"):
        apply(minikube, _changed_copy(tmp_path / "b", "DEBUG", "0.1.1", job_ttl=86400))


def test_pod_security_restricted_refuses_a_privileged_pod(minikube):
    apply(minikube)
    proc = minikube.run(
        "run",
        "-n",
        NS,
        "privileged",
        "--image=churn-service:0.1.0",
        "--restart=Never",
        "--overrides",
        json.dumps(
            {
                "spec": {
                    "containers": [
                        {
                            "name": "privileged",
                            "image": "churn-service:0.1.0",
                            "securityContext": {"privileged": True},
                        }
                    ]
                }
            }
        ),
        check=False,
    )
    assert proc.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in proc.stderr
    assert "privileged" in proc.stderr


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda cj: cj["spec"].update(timeZone="Mars/Olympus_Mons"), "unknown time zone"),
        (
            lambda cj: cj["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"][0][
                "onExitCodes"
            ].update(containerName="not-a-container"),
            "must be one of the container or initContainer names",
        ),
    ],
    ids=["timeZone", "podFailurePolicy"],
)
def test_the_api_server_validates_what_offline_checks_cannot(minikube, change, message):
    """The counter-examples: what the API server refuses and our rendered CronJobs must not do."""
    apply(minikube)
    for name in CRONJOBS:
        cronjob = copy.deepcopy(
            next(d for d in RENDERED if d["kind"] == "CronJob" and d["metadata"]["name"] == name)
        )
        cronjob["metadata"]["name"] = f"{name}-broken"
        change(cronjob)
        proc = minikube.run(
            "apply", "--validate=strict", "-f", "-", stdin=yaml.safe_dump(cronjob), check=False
        )
        assert proc.returncode != 0 and message in proc.stderr, (name, proc.stderr)


@pytest.mark.parametrize("exit_code, retried", [(2, False), (1, True)])
def test_every_job_fails_at_once_on_bad_input_and_retries_otherwise(minikube, exit_code, retried):
    """podFailurePolicy as the Job controller applies it: exit 2 (bad data or settings) fails the
    Job at once; any other failure is retried up to backoffLimit."""
    apply(minikube)
    for cronjob in CRONJOBS:
        minikube.run("create", "job", "-n", NS, f"--from=cronjob/{cronjob}", f"{cronjob}-now")
    # Events outlive a Job that deletes itself when it finishes (churn-train).
    jobs = {job: uid(minikube, f"job/{job}") for job in ["churn-train"] + [f"{c}-now" for c in CRONJOBS]}
    for job in jobs:
        minikube.finish(job, exit_code)
    for job, job_uid in jobs.items():
        if retried:
            until(
                f"Job {job} to start a second pod",
                lambda u=job_uid: len(minikube.events("SuccessfulCreate", u)) >= 2,
            )
        else:
            until(
                f"Job {job} to fail by its podFailurePolicy",
                lambda u=job_uid: minikube.events("PodFailurePolicy", u),
            )
            assert len(minikube.events("SuccessfulCreate", job_uid)) == 1, job


def _with_batch_scoring(tmp_path: Path) -> Path:
    """The minikube overlay with the batch-scoring component added, as its docs say to."""
    copy_dir = tmp_path / "kustomize"
    shutil.copytree(ROOT / "kustomize", copy_dir)
    kust = copy_dir / "overlays" / "minikube" / "kustomization.yaml"
    data = yaml.safe_load(kust.read_text())
    data["components"] = [*data.get("components", []), "../../components/batch-scoring"]
    kust.write_text(yaml.safe_dump(data))
    return kust.parent


@pytest.mark.parametrize("exit_code", [0, 2])
def test_the_batch_scoring_indexed_job_runs_one_pod_per_shard(minikube, tmp_path, exit_code):
    """The component's Indexed Job: one pod per completion index, the index handed to the pod; the
    Job completes when every shard ends well, and fails at once when one exits 2 (bad input)."""
    apply(minikube, _with_batch_scoring(tmp_path))
    job = minikube.get("job/churn-score")
    assert job["spec"]["completionMode"] == "Indexed"
    shards = job["spec"]["completions"]
    pods = until(
        f"{shards} pods",
        lambda: (
            len(minikube.pods("job-name=churn-score")) == shards and minikube.pods("job-name=churn-score")
        ),
    )
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == [str(i) for i in range(shards)]
    assert all(p["spec"].get("nodeName") for p in pods)
    minikube.finish("churn-score", exit_code)
    reason = "Completed" if exit_code == 0 else "PodFailurePolicy"
    until(f"the Job to end ({reason})", lambda: minikube.events(reason, job["metadata"]["uid"]))
    assert len(minikube.events("SuccessfulCreate", job["metadata"]["uid"])) == shards  # nothing retried
