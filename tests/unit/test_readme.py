"""The README's checkable promises: the ports it names are the defaults, every `make` target and
`python -m` program it names exists, every link to docs/ lands on a file and a heading, its Layout
names every module where it lives and no module that is gone, its Training group is the set the
layout test keeps out of serving's reach, and the versions, registry sub-commands, overlays and
topologies it names are the real ones. (The curl answer is checked against a real server in
tests/integration/test_run.py.)"""

from __future__ import annotations

import re
import subprocess
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.support import ROOT

README = (ROOT / "README.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _make_targets() -> set[str]:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return {line.split()[1] for line in out.splitlines() if line.startswith("  make ")}


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_the_ports_it_names_are_the_defaults():
    makefile = (ROOT / "Makefile").read_text()
    run_sh = (ROOT / "scripts" / "run.sh").read_text()
    named = re.search(r"make run +# .*HTTP :(\d+) and gRPC :(\d+)", README)
    assert named, "the README's first line no longer names the ports"
    http, grpc = named.groups()
    assert re.search(rf"^HTTP_PORT +\?= {http}$", makefile, flags=re.M)
    assert re.search(rf"^GRPC_PORT +\?= {grpc}$", makefile, flags=re.M)
    assert f'HTTP_PORT="${{HTTP_PORT:-{http}}}"' in run_sh and f'GRPC_PORT="${{GRPC_PORT:-{grpc}}}"' in run_sh


def test_every_make_target_it_names_exists():
    named = set(re.findall(r"`make ([a-z][a-z0-9-]*)", README))
    assert named, "no make target found: the pattern no longer matches the README"
    assert sorted(named - _make_targets()) == []


def test_every_program_it_names_exists():
    named = set(re.findall(r"python -m ([a-z_]+\.[a-z_]+)", README))
    assert len(named) >= 8
    assert sorted(m for m in named if find_spec(m) is None) == []


@pytest.mark.parametrize("source", [ROOT / "README.md", *DOCS], ids=lambda p: p.name)
def test_every_link_to_docs_lands_on_a_file_and_a_heading(source):
    text = source.read_text()
    broken = []
    for target, anchor in re.findall(r"\]\(((?:docs/)?[a-z_-]+\.md)(?:#([^)]+))?\)", text):
        path = (source.parent / target).resolve()
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(path):
            broken.append(f"{target}#{anchor}: no such heading")
    assert broken == []


def test_the_layout_names_every_module_where_it_lives():
    """Each module of churn/, training/, monitoring/ and scoring/ is named in its folder's row."""
    rows = {
        folder: m.group(2)
        for m in re.finditer(r"^\| (.+?) \| (.+) \|$", README, flags=re.M)
        for folder in re.findall(r"`([a-z_]+)/`", m.group(1))
    }
    missing = [
        f"{path.parent.name}/{path.name}"
        for folder in ("churn", "training", "monitoring", "scoring")
        for path in sorted((ROOT / folder).glob("*.py"))
        if path.name != "__init__.py" and f"`{path.name}`" not in rows.get(folder, "")
    ]
    assert missing == []


def _churn_group(name: str) -> set[str]:
    row = re.search(r"^\| `churn/` \| (.+) \|$", README, flags=re.M)
    assert row, "the Layout has no churn/ row"
    group = re.search(rf"\*\*{name}\*\*:? (.+?)(?:\*\*|$)", row.group(1))
    assert group, f"the churn/ row has no {name} group"
    return {f"churn.{m}" for m in re.findall(r"`([a-z_]+)\.py`", group.group(1))}


def test_the_training_group_is_what_serving_monitoring_and_scoring_may_not_reach():
    from tests.unit.test_layout import TRAINING_LOGIC

    assert _churn_group("Training") == TRAINING_LOGIC


def test_the_layout_names_no_module_that_does_not_exist():
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"^\| (`(?:churn|training|monitoring|scoring)/`.*?) \| (.+) \|$", README, flags=re.M
        )
    }
    folders = {cell: re.findall(r"`([a-z_]+)/`", cell) for cell in rows}
    stale = [
        f"{name} ({cell})"
        for cell, text in rows.items()
        for name in re.findall(r"`([a-z_]+\.py)`", text)
        if not any((ROOT / folder / name).exists() for folder in folders[cell])
    ]
    assert stale == []


def test_the_versions_it_names_are_the_pinned_ones():
    pyproject = (ROOT / "pyproject.toml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    go_needed = max(
        (
            line.split()[1]
            for mod in (ROOT / "tools" / "cluster").glob("*/go.mod")
            for line in mod.read_text().splitlines()
            if line.startswith("go ")
        ),
        key=lambda v: tuple(int(x) for x in v.split(".")),
    )
    k8s = re.search(
        r"^require k8s.io/kubernetes (v[\d.]+)$",
        (ROOT / "tools/cluster/kubernetes/go.mod").read_text(),
        flags=re.M,
    )
    assert re.search(r'requires-python = "[^"]*3\.11', pyproject) and "**Python 3.11**" in README
    assert f"**Go {'.'.join(go_needed.split('.')[:2])} or newer" in README
    assert k8s and f"Kubernetes {k8s.group(1)}" in README
    image = re.search(r"^IMAGE\s*\?=\s*(\S+)\$\(VERSION\)$", makefile, flags=re.M)
    version = re.search(r'^version = "(.+)"$', pyproject, flags=re.M)
    assert image and version, "the Makefile's IMAGE or pyproject's version moved"
    assert f"`{image.group(1)}{version.group(1)}`" in README


def test_the_registry_sub_commands_it_lists_are_the_parser_s():
    from training.registry import parse_options

    listed = re.search(r"the registry: ([a-z, ]+) \(", README)
    assert listed, "the README's registry line moved"
    named = {w.strip() for w in listed.group(1).replace(" and ", ", ").split(",")} - {""}
    unknown = []
    for name in named:
        try:
            parse_options(
                [name]
                + (["some-tag"] if name in {"show", "promote", "stage"} else [])
                + (["--mode", "shadow"] if name == "stage" else [])
            )
        except SystemExit:
            unknown.append(name)
    assert len(named) >= 8 and unknown == []


def test_the_overlays_and_topologies_it_names_exist():
    overlays = re.search(r"make render \[OVERLAY=([a-z|\\]+)\]", README)
    topologies = re.search(r"make cluster-up \[TOPOLOGY=([a-z|\\]+)\]", README)
    assert overlays and topologies
    for names, place in (
        (overlays, "kustomize/overlays/{}"),
        (topologies, "tools/cluster/topologies/{}.yaml"),
    ):
        for name in names.group(1).replace("\\", "").split("|"):
            assert (ROOT / place.format(name)).exists(), place.format(name)
