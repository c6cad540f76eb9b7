"""tools/cluster/build.sh refuses a Go older than its modules need, naming both versions, before it
downloads or compiles anything (a fake `go` stands in: the real build is tests/cluster's)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

BUILD_SH = ROOT / "tools" / "cluster" / "build.sh"
FAKE_GO = """#!/bin/sh
case "$1" in
  version) echo "go version go{v} linux/amd64" ;;
  env) echo "go{v}" ;;
  *) echo "fake go asked to: $*" >&2; exit 99 ;;
esac
"""


def _build_with_go(tmp_path: Path, version: str | None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if version is not None:
        (bin_dir / "go").write_text(FAKE_GO.format(v=version))
        (bin_dir / "go").chmod(0o755)
    tools = {
        t: Path(p).resolve()
        for t in (
            "bash",
            "sed",
            "sort",
            "head",
            "tail",
            "cat",
            "sha256sum",
            "cut",
            "mkdir",
            "rm",
            "date",
            "dirname",
            "printf",
        )
        if (p := subprocess.run(["which", t], capture_output=True, text=True).stdout.strip())
    }
    for name, path in tools.items():
        (bin_dir / name).symlink_to(path)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "CLUSTER_BIN_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [str(bin_dir / "bash"), str(BUILD_SH)], env=env, capture_output=True, text=True, timeout=60
    )


def _newest_go_directive() -> str:
    found = [
        line.split()[1]
        for mod in sorted((ROOT / "tools" / "cluster").glob("*/go.mod"))
        for line in mod.read_text().splitlines()
        if line.startswith("go ")
    ]
    return max(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def test_an_older_go_is_refused_naming_both_versions(tmp_path):
    need = _newest_go_directive()
    major, minor = need.split(".")[:2]
    older = f"{major}.{int(minor) - 1}.9"
    done = _build_with_go(tmp_path, older)
    assert done.returncode == 2, done.stderr
    assert f"Go {need} or newer builds the control plane" in done.stderr and f"has Go {older}" in done.stderr
    assert "fake go asked to" not in done.stderr  # refused before any build
    assert not (tmp_path / "cache").exists()


def test_a_missing_go_is_named(tmp_path):
    done = _build_with_go(tmp_path, None)
    assert done.returncode == 2
    assert f"go not found (Go {_newest_go_directive()} or newer" in done.stderr
    assert "command not found" not in done.stderr  # checked before anything runs go


@pytest.mark.parametrize("newer", [False, True])
def test_a_recent_enough_go_goes_on_to_build(tmp_path, newer):
    need = _newest_go_directive()
    version = need if not newer else f"{need.split('.')[0]}.{int(need.split('.')[1]) + 1}.0"
    done = _build_with_go(tmp_path, version)
    assert done.returncode == 99 and "fake go asked to: build" in done.stderr, done.stderr
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # the partial folder removed
