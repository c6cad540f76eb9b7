"""The README's checkable promises: the ports it names are the defaults, every `make` target and
`python -m` program it names exists, every link to docs/ lands on a file and a heading, and its
Layout names every module where it lives. (The curl answer is checked against a real server in
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
