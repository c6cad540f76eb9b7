"""The model lifecycle in the containers, on a volume of its own: outcomes reach the volume the way
docs/lifecycle.md shows (`kubectl cp` + `kubectl exec ... monitoring.feedback`), the retrain CronJob's
command runs exactly as the rendered manifests declare it, and the running API pods follow the
promotion. The first model is the training Job's command on contract customers only (so that the
outcomes of month-to-month customers really teach the challenger something)."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from churn.client import predict_grpc, records_from_csv
from tests.e2e.conftest import copy_to_volume, docker, fresh_manifests, wait_until
from tests.e2e.test_container import GRPC, HTTP, last_json, registry_current, start_apis
from tests.k8s.checks import memory_bytes
from tests.support import DATA, http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lifecycle(image, tmp_path_factory):
    raw = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    contracts = raw[raw["Contract"] != "Month-to-month"]
    monthly = raw[raw["Contract"] == "Month-to-month"]
    with fresh_manifests(image, tmp_path_factory.mktemp("netaudit")) as m:
        copy_to_volume(m, image, "/mlops/incoming/contracts.csv", contracts.to_csv(index=False).encode())
        job = m.workload("Job", "churn-train")
        args = [*job.container["args"], "--data", "/mlops/incoming/contracts.csv"]
        proc = job.run(args)
        assert proc.returncode == 0, proc.stderr[-2000:]
        first = last_json(proc.stdout)["tag"]
        apis = start_apis(m)
        try:
            yield m, apis, first, monthly
        finally:
            for api in apis.values():
                docker("rm", "-f", api["cname"], check=False)
                api["run"].started.remove(api["cname"])


def test_outcomes_retraining_and_the_api_following_the_promotion(lifecycle, image, tmp_path):
    m, apis, first, monthly = lifecycle
    api = apis["churn-api"]["cname"]
    monthly.to_csv(tmp_path / "monthly.csv", index=False)
    records = records_from_csv(str(tmp_path / "monthly.csv"))  # month-to-month customers as traffic
    for start in range(0, len(records), 1000):
        status, body, _ = http("POST", HTTP + "/predict", {"instances": records[start : start + 1000]})
        assert status == 200 and body["model"] == first, body
    # their outcomes reach the volume (kubectl cp) and are ingested inside an API pod (kubectl exec)
    outcomes = monthly[["customerID", "Churn"]].to_csv(index=False).encode()
    copy_to_volume(m, image, "/mlops/incoming/outcomes.csv", outcomes)
    time.sleep(2)  # the prediction log is written by a background thread
    proc = docker(
        "exec",
        api,
        "python",
        "-m",
        "monitoring.feedback",
        "--labels",
        "/mlops/incoming/outcomes.csv",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert last_json(proc.stdout) == {
        "accepted": len(monthly),
        "matched": len(monthly),
        "unmatched": 0,
        "duplicates": 0,
        "corrected": 0,
        "joined_late": 0,
        "pending": 0,
        "vanished_files": 0,
    }

    # the retrain CronJob, as declared: base data from the image, the outcomes from the volume
    retrain = m.workload("CronJob", "churn-retrain")
    assert retrain.container["args"] == ["python", "-m", "training.retrain"]
    proc = retrain.run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = last_json(proc.stdout)
    assert summary["promoted"] is True and summary["evaluation"]["decision"] == "promote", summary["reason"]
    new = summary["tag"]
    # the running API pods follow, over both transports, without a restart
    assert wait_until(lambda: http("GET", HTTP + "/model")[1].get("model") == new, 30)
    assert wait_until(lambda: predict_grpc(GRPC, records[:1])[1].get("model") == new, 30)
    assert registry_current(api) == new
    show = json.loads(docker("exec", api, "python", "-m", "training.registry", "show", new).stdout)
    assert any(e["action"] == "promote" and "gate: promote" in e["reason"] for e in show["history"])

    # the monitoring CronJob now reports realized metrics for the first model
    proc = m.workload("CronJob", "churn-drift").run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    realized = last_json(proc.stdout)["performance"]["models"][first]["realized"]
    assert realized is not None and realized["log_loss"] > 0.8  # the contracts model on new customers

    # the retrain pod stayed within its memory request
    peak = m.sampler.peaks["churn-retrain"] / 2**20
    request = memory_bytes(retrain.container["resources"]["requests"]["memory"]) / 2**20
    print(f"\nretrain: peak working set {peak:.0f} MiB (request {request:.0f} MiB); promoted {new}")
    assert peak <= request
