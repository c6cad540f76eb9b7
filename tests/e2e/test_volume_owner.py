"""A volume left to root, as a ReadWriteMany driver that ignores the pod's fsGroup leaves it: the
programs do not fail half-way or lose anything; they stop at start with exit 2 and a message that
names the folder and the user (the fix: the storage class's uid/gid options, docs/kubernetes.md)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import fresh_manifests

pytestmark = pytest.mark.slow


def test_a_volume_the_pods_user_cannot_write_stops_every_program_naming_it(image, tmp_path_factory):
    with fresh_manifests(image, tmp_path_factory.mktemp("netaudit"), fs_group_applied=False) as m:
        train = m.workload("Job", "churn-train").run(timeout=120)
        assert train.returncode == 2, train.stderr[-2000:]
        assert "MLOPS_HOME=/mlops: not a writable folder: /mlops for uid 1034 gid 1034" in train.stderr
        api = m.workload("Deployment", "churn-api")
        wait = api.pod["initContainers"][0]
        proc = api._to_completion(wait, None, "churn-api/wait-for-model", 120)
        assert proc.returncode == 2 and "for uid 1034 gid 1034" in proc.stderr, proc.stderr[-2000:]
