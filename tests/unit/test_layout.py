"""The layout's rules (README, Layout; churn/__init__.py): imports go one way, and no two modules or
top-level names of the project share a name with different meanings."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from tests.support import ROOT

STAGES = ("churn", "training", "monitoring", "scoring")
# The two entry points every command has (test_commands_are_argument_parsing_plus_one_call).
COMMAND_CONVENTION = {"main", "parse_options"}


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
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id] if node.target.id.isupper() else []
            for name in names:
                if name not in COMMAND_CONVENTION:
                    by_name[name].append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}


# What only training needs (fitting, the gate, the promotion rule). Serving and monitoring must not
# reach it, however indirectly: `churn/` holds the logic of every stage, so the one-way rule between
# stages is checked on what each entry point imports, module by module.
TRAINING_LOGIC = {
    "churn.fitting",
    "churn.retraining",
    "churn.decision",
    "churn.gate",
    "churn.promotion",
    "churn.threshold",
    "churn.registry_commands",
}
COMMAND_PLACES = ("training", "monitoring", "scoring")
COMMAND_FUNCTIONS = {"main", "parse_options"}
MAIN_MAX_LINES = 30


def _project_imports(path: Path) -> set[str]:
    """The `churn` modules a file imports, as dotted names, wherever the import stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {
        name
        for name in found
        if name.startswith("churn.") and (ROOT / (name.replace(".", "/") + ".py")).exists()
    }


def _reached(start: Path) -> set[str]:
    seen: set[str] = set()
    todo = list(_project_imports(start))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_project_imports(ROOT / (name.replace(".", "/") + ".py")))
    return seen


@pytest.mark.parametrize("entry", ["service.py", "monitoring", "scoring"])
def test_serving_monitoring_and_scoring_never_reach_training_logic(entry):
    reached = {str(p.relative_to(ROOT)): sorted(_reached(p) & TRAINING_LOGIC) for p in _modules(entry)}
    assert {k: v for k, v in reached.items() if v} == {}


def test_training_logic_modules_exist():
    """The rule above checks names; a rename must not make it pass by emptying the set."""
    missing = sorted(n for n in TRAINING_LOGIC if not (ROOT / (n.replace(".", "/") + ".py")).exists())
    assert missing == []


def _command_problems(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    problems = [
        f"{name}() is logic, not argument parsing" for name in functions if name not in COMMAND_FUNCTIONS
    ]
    problems += [
        f"class {n.name} is not an options dataclass"
        for n in tree.body
        if isinstance(n, ast.ClassDef) and not n.name.endswith("Options")
    ]
    if "main" not in functions:
        problems.append("no main()")
    elif (lines := functions["main"].end_lineno - functions["main"].lineno + 1) > MAIN_MAX_LINES:
        problems.append(f"main() has {lines} lines (at most {MAIN_MAX_LINES}: parse, one call, exit code)")
    return problems


def test_commands_are_argument_parsing_plus_one_call():
    """`python -m training.X`, `monitoring.X` and `scoring.X` parse their options and make one call
    into `churn/`, where the logic lives (README, Layout)."""
    found = {
        str(p.relative_to(ROOT)): problems
        for p in _modules(*COMMAND_PLACES)
        if p.name != "__init__.py" and (problems := _command_problems(p))
    }
    assert found == {}
