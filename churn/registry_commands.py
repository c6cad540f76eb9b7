"""What `python -m training.registry` does, one function per sub-command, each taking its typed
options; `run_registry_command` picks the one the options' type names.

Printed output and exit codes are the command's contract (docs/lifecycle.md, the init containers'
`wait`): 0 done; 1 `current` with no current model, or `wait` timed out; 2 bad input.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

from churn.model import ModelUnavailable, get_store_model, list_store_models, load_model, tag_in_store
from churn.model_registry import Registry, RegistryError, current_stack
from churn.settings import Settings, settings_or_exit


@dataclass(frozen=True)
class ListOptions:
    """`list`: every version."""


@dataclass(frozen=True)
class CurrentOptions:
    """`current`: the current tag."""


@dataclass(frozen=True)
class ShowOptions:
    tag: str


@dataclass(frozen=True)
class PromoteOptions:
    tag: str
    reason: str


@dataclass(frozen=True)
class RollbackOptions:
    reason: str


@dataclass(frozen=True)
class StageOptions:
    tag: str
    mode: str  # one of churn.model_registry.CANDIDATE_MODES
    fraction: float | None  # canary: None for the registry's default
    reason: str


@dataclass(frozen=True)
class UnstageOptions:
    reason: str


@dataclass(frozen=True)
class WaitOptions:
    timeout: float  # seconds


RegistryCommandOptions = (
    ListOptions
    | CurrentOptions
    | ShowOptions
    | PromoteOptions
    | RollbackOptions
    | StageOptions
    | UnstageOptions
    | WaitOptions
)


def _registry_failure(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _candidate_note(candidate) -> str:
    if candidate["mode"] == "canary":
        return f"candidate: canary, {candidate['fraction']:g} of customers"
    return "candidate: shadow"


def cmd_list(settings: Settings, registry: Registry, _options: ListOptions) -> int:
    data = registry.read()
    current, candidate = data["current"], data.get("candidate")
    in_store = {str(m.tag) for m in list_store_models(settings)}
    rows = []
    for tag, info in data["versions"].items():
        notes = [] if tag in in_store else ["MISSING FROM STORE"]
        if candidate and candidate["tag"] == tag:
            notes.append(_candidate_note(candidate))
        rows.append(
            (
                "*" if tag == current else ("~" if candidate and candidate["tag"] == tag else " "),
                tag,
                info.get("created", "?"),
                f"{info.get('metrics', {}).get('roc_auc', float('nan')):.4f}",
                "; ".join(notes),
            )
        )
    if not rows:
        print(f"no versions registered in {settings.registry_path}")
        return 0
    print(f"  {'tag':<36} {'created':<26} {'roc_auc':<8}")
    for mark, tag, created, auc, note in rows:
        print(f"{mark} {tag:<36} {created:<26} {auc:<8} {note}".rstrip())
    return 0


def cmd_current(_settings: Settings, registry: Registry, _options: CurrentOptions) -> int:
    current = registry.current()
    if current is None:
        return _registry_failure(
            f"no current model: the registry {registry.path} names none yet (train one first)", 1
        )
    print(current)
    return 0


def cmd_show(settings: Settings, registry: Registry, options: ShowOptions) -> int:
    data = registry.read()
    if options.tag not in data["versions"]:
        return _registry_failure(
            f"{options.tag} is not a registered version (see `python -m training.registry list`)"
        )
    candidate = data.get("candidate")
    out = {
        "tag": options.tag,
        "current": data["current"] == options.tag,
        "candidate": candidate if candidate and candidate["tag"] == options.tag else None,
        "registry": data["versions"][options.tag],
        "history": [e for e in data["history"] if e["tag"] == options.tag],
    }
    try:
        info = get_store_model(settings, options.tag).info
        metadata = dict(info.metadata)
        metadata.pop("feature_schema", None)
        out["store"] = {"path": str(settings.model_store_path), "metadata": metadata}
    except Exception as exc:  # shown, not fatal: `show` is how one finds out what is wrong
        out["store"] = {"error": str(exc)}
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_promote(settings: Settings, registry: Registry, options: PromoteOptions) -> int:
    if not tag_in_store(settings, options.tag):
        return _registry_failure(
            f"{options.tag} is not in the model store {settings.model_store_path}; refusing"
        )
    event = registry.promote(options.tag, options.reason)
    print(f"current: {event['tag']} (was {event['previous']})")
    return 0


def cmd_stage(settings: Settings, registry: Registry, options: StageOptions) -> int:
    """A candidate must load as a server would load it: refuse it here rather than let every
    server try and fail."""
    from churn.gate import sequential_design  # scipy: not for `wait`, the init containers' command

    if options.tag not in registry.read()["versions"]:
        return _registry_failure(
            f"{options.tag} is not a registered version (see `python -m training.registry list`)"
        )
    try:
        load_model(settings, options.tag)
    except ModelUnavailable as exc:
        return _registry_failure(f"{options.tag} cannot be staged: {exc}")
    event = registry.stage(
        options.tag,
        options.mode,
        options.fraction,
        options.reason,
        sequential_design(settings.gate_min_class_count),
    )
    share = f", {event['details']['fraction']:g} of customers" if options.mode == "canary" else ""
    print(f"candidate: {options.tag} ({options.mode}{share}); current: {event['previous']}")
    return 0


def cmd_unstage(_settings: Settings, registry: Registry, options: UnstageOptions) -> int:
    event = registry.unstage(options.reason)
    print(f"no candidate (was {event['tag']}, {event['details']['mode']}); current: {event['previous']}")
    return 0


def cmd_rollback(settings: Settings, registry: Registry, options: RollbackOptions) -> int:
    stack = current_stack(registry.read()["history"])
    if len(stack) >= 2 and not tag_in_store(settings, stack[-2]):
        return _registry_failure(f"cannot roll back to {stack[-2]}: it is no longer in the model store")
    event = registry.rollback(options.reason)
    print(f"current: {event['tag']} (rolled back from {event['previous']})")
    return 0


WAIT_POLL_SECONDS = 2.0
WAIT_REPORT_SECONDS = 30.0


def _newest_training_log(settings: Settings) -> str:
    """Where to look while waiting: the newest training log and its last line."""
    logs = sorted(settings.logs_dir.glob("training-*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return "no training log yet"
    lines = logs[-1].read_text(errors="replace").strip().splitlines()
    return f"newest training log {logs[-1]}: {lines[-1] if lines else '(empty)'}"


def cmd_wait(settings: Settings, registry: Registry, options: WaitOptions) -> int:
    """Block until the registry names a current model whose files are in the store: what an API
    pod's init container runs, so that the server starts only once there is a model to serve."""
    started = time.monotonic()
    reported = started
    while True:
        try:
            current = registry.current()
        except RegistryError as exc:
            current, why = None, str(exc)
        else:
            why = f"no current model in {registry.path} yet"
        if current is not None:
            if tag_in_store(settings, current):
                print(current)
                return 0
            why = f"{current} is current but not in the model store yet"
        now = time.monotonic()
        if now - started >= options.timeout:
            return _registry_failure(f"gave up after {options.timeout:.0f} s: {why}", 1)
        if now - reported >= WAIT_REPORT_SECONDS:
            print(
                f"waiting ({now - started:.0f} s): {why}; {_newest_training_log(settings)}", file=sys.stderr
            )
            reported = now
        time.sleep(WAIT_POLL_SECONDS)


_REGISTRY_COMMANDS = {
    ListOptions: cmd_list,
    CurrentOptions: cmd_current,
    ShowOptions: cmd_show,
    PromoteOptions: cmd_promote,
    RollbackOptions: cmd_rollback,
    StageOptions: cmd_stage,
    UnstageOptions: cmd_unstage,
    WaitOptions: cmd_wait,
}


def run_registry_command(options: RegistryCommandOptions) -> int:
    """The sub-command the options are for; SystemExit on bad settings. A damaged registry file or a
    refused transition (RegistryError) is exit code 2 with its message."""
    settings = settings_or_exit()
    registry = Registry(settings.registry_path, settings.model_name)
    try:
        return _REGISTRY_COMMANDS[type(options)](settings, registry, options)
    except RegistryError as exc:
        return _registry_failure(str(exc))
