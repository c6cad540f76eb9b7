"""Inspect and drive the model registry.

    python -m training.registry list
    python -m training.registry current
    python -m training.registry show TAG
    python -m training.registry promote TAG [--reason TEXT]
    python -m training.registry rollback [--reason TEXT]
    python -m training.registry wait [--timeout SECONDS]
    python -m training.registry stage TAG --mode shadow|canary [--fraction F] [--reason TEXT]
    python -m training.registry unstage [--reason TEXT]

Exit codes: 0 done; 1 `current` with no current model, or `wait` timed out; 2 bad input (unknown
tag, nothing to roll back to, a tag missing from the model store or not loadable, a tag that is
already current, no candidate to unstage, a damaged registry file).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from churn.cli import fraction, positive_seconds
from churn.model import ModelUnavailable, get_store_model, list_store_models, load_model, tag_in_store
from churn.model_registry import CANDIDATE_MODES, Registry, RegistryError, current_stack
from churn.settings import Settings, settings_or_exit


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _candidate_note(candidate) -> str:
    if candidate["mode"] == "canary":
        return f"candidate: canary, {candidate['fraction']:g} of customers"
    return "candidate: shadow"


def cmd_list(settings: Settings, registry: Registry, _args) -> int:
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


def cmd_current(_settings: Settings, registry: Registry, _args) -> int:
    current = registry.current()
    if current is None:
        return _fail(f"no current model: the registry {registry.path} names none yet (train one first)", 1)
    print(current)
    return 0


def cmd_show(settings: Settings, registry: Registry, args) -> int:
    data = registry.read()
    if args.tag not in data["versions"]:
        return _fail(f"{args.tag} is not a registered version (see `python -m training.registry list`)")
    candidate = data.get("candidate")
    out = {
        "tag": args.tag,
        "current": data["current"] == args.tag,
        "candidate": candidate if candidate and candidate["tag"] == args.tag else None,
        "registry": data["versions"][args.tag],
        "history": [e for e in data["history"] if e["tag"] == args.tag],
    }
    try:
        info = get_store_model(settings, args.tag).info
        metadata = dict(info.metadata)
        metadata.pop("feature_schema", None)
        out["store"] = {"path": str(settings.model_store_path), "metadata": metadata}
    except Exception as exc:  # shown, not fatal: `show` is how one finds out what is wrong
        out["store"] = {"error": str(exc)}
    print(json.dumps(out, indent=2, default=str))
    return 0


def cmd_promote(settings: Settings, registry: Registry, args) -> int:
    if not tag_in_store(settings, args.tag):
        return _fail(f"{args.tag} is not in the model store {settings.model_store_path}; refusing")
    event = registry.promote(args.tag, args.reason)
    print(f"current: {event['tag']} (was {event['previous']})")
    return 0


def cmd_stage(settings: Settings, registry: Registry, args) -> int:
    """A candidate must load as a server would load it: refuse it here rather than let every
    server try and fail."""
    from churn.gate import sequential_design  # scipy: not for `wait`, the init containers' command

    if args.tag not in registry.read()["versions"]:
        return _fail(f"{args.tag} is not a registered version (see `python -m training.registry list`)")
    try:
        load_model(settings, args.tag)
    except ModelUnavailable as exc:
        return _fail(f"{args.tag} cannot be staged: {exc}")
    event = registry.stage(
        args.tag, args.mode, args.fraction, args.reason, sequential_design(settings.gate_min_class_count)
    )
    share = f", {event['details']['fraction']:g} of customers" if args.mode == "canary" else ""
    print(f"candidate: {args.tag} ({args.mode}{share}); current: {event['previous']}")
    return 0


def cmd_unstage(_settings: Settings, registry: Registry, args) -> int:
    event = registry.unstage(args.reason)
    print(f"no candidate (was {event['tag']}, {event['details']['mode']}); current: {event['previous']}")
    return 0


def cmd_rollback(settings: Settings, registry: Registry, args) -> int:
    stack = current_stack(registry.read()["history"])
    if len(stack) >= 2 and not tag_in_store(settings, stack[-2]):
        return _fail(f"cannot roll back to {stack[-2]}: it is no longer in the model store")
    event = registry.rollback(args.reason)
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


def cmd_wait(settings: Settings, registry: Registry, args) -> int:
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
        if now - started >= args.timeout:
            return _fail(f"gave up after {args.timeout:.0f} s: {why}", 1)
        if now - reported >= WAIT_REPORT_SECONDS:
            print(
                f"waiting ({now - started:.0f} s): {why}; {_newest_training_log(settings)}", file=sys.stderr
            )
            reported = now
        time.sleep(WAIT_POLL_SECONDS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training.registry", description="The churn model registry."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every version: tag, created, test ROC AUC, current marker")
    sub.add_parser("current", help="print the current tag (exit 1 if none)")
    show = sub.add_parser("show", help="one version's registry entry, history and store metadata")
    show.add_argument("tag")
    promote = sub.add_parser("promote", help="make TAG the current model")
    promote.add_argument("tag")
    promote.add_argument("--reason", default="manual promote")
    rollback = sub.add_parser("rollback", help="back to the previous current model")
    rollback.add_argument("--reason", default="manual rollback")
    stage = sub.add_parser(
        "stage", help="make TAG the candidate: a shadow, or a canary for a share of customers"
    )
    stage.add_argument("tag")
    stage.add_argument("--mode", choices=CANDIDATE_MODES, required=True)
    stage.add_argument("--fraction", type=fraction, help="canary: share of customers in (0, 1] (default 0.1)")
    stage.add_argument("--reason", default="manual stage")
    unstage = sub.add_parser("unstage", help="no candidate any more")
    unstage.add_argument("--reason", default="manual unstage")
    wait = sub.add_parser("wait", help="block until a current model exists in the store (exit 1 on timeout)")
    wait.add_argument(
        "--timeout", type=positive_seconds, default=1800.0, help="seconds (default %(default)s)"
    )
    return parser.parse_args(argv)


COMMANDS = {
    "list": cmd_list,
    "current": cmd_current,
    "show": cmd_show,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "wait": cmd_wait,
    "stage": cmd_stage,
    "unstage": cmd_unstage,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_or_exit()
    registry = Registry(settings.registry_path, settings.model_name)
    try:
        return COMMANDS[args.command](settings, registry, args)
    except RegistryError as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
