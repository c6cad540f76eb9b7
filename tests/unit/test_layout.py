"""The layout's rules (README, Layout; churn/__init__.py): imports go one way, and no two modules or
top-level names of the project share a name with different meanings."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support import ROOT

STAGES = ("churn", "training", "monitoring", "scoring")
# A command's entry points share their names by convention, as `main` does.
COMMAND_CONVENTION = {"main", "log", "parse_args", "parse_options", "check", "run"}


def _modules(*places: str) -> list[Path]:
    """The Python files of each place: a folder's modules, or a file itself."""
    return sorted(
        p
        for place in places
        for p in ((ROOT / place).glob("*.py") if (ROOT / place).is_dir() else [ROOT / place])
    )


def _imported(path: Path) -> set[str]:
    """The project packages a file imports (top-level package names), wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & {*STAGES, "service", "tests", "benchmarks", "scripts"}


@pytest.mark.parametrize(
    ("folders", "forbidden"),
    [
        (("churn",), {"training", "monitoring", "scoring", "service", "tests", "benchmarks", "scripts"}),
        (("monitoring", "scoring", "service.py"), {"training", "service", "tests", "benchmarks", "scripts"}),
        (("training",), {"monitoring", "scoring", "service", "tests", "benchmarks", "scripts"}),
        (("benchmarks", "scripts"), {"tests"}),
    ],
)
def test_imports_go_one_way(folders, forbidden):
    files = _modules(*folders)
    wrong = {str(p.relative_to(ROOT)): sorted(_imported(p) & forbidden) for p in files}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_module_names_are_unique_across_the_stages():
    by_name = defaultdict(list)
    for path in _modules(*STAGES):
        if path.name != "__init__.py":
            by_name[path.stem].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}


def test_top_level_names_are_unique_across_the_stages():
    by_name = defaultdict(list)
    for path in _modules(*STAGES, "service.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper()]
            for name in names:
                if name not in COMMAND_CONVENTION:
                    by_name[name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
