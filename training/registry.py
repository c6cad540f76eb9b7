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
import sys

from churn.cli import fraction, options_from, positive_seconds
from churn.model_registry import CANDIDATE_MODES
from churn.registry_commands import (
    CurrentOptions,
    ListOptions,
    PromoteOptions,
    RegistryCommandOptions,
    RollbackOptions,
    ShowOptions,
    StageOptions,
    UnstageOptions,
    WaitOptions,
    run_registry_command,
)


def parse_options(argv: list[str] | None) -> RegistryCommandOptions:
    """The options of the sub-command given, as its own dataclass; SystemExit (code 2) on a bad one."""
    parser = argparse.ArgumentParser(
        prog="python -m training.registry", description="The churn model registry."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every version: tag, created, test ROC AUC, current marker").set_defaults(
        kind=ListOptions
    )
    sub.add_parser("current", help="print the current tag (exit 1 if none)").set_defaults(kind=CurrentOptions)
    show = sub.add_parser("show", help="one version's registry entry, history and store metadata")
    show.set_defaults(kind=ShowOptions)
    show.add_argument("tag")
    promote = sub.add_parser("promote", help="make TAG the current model")
    promote.set_defaults(kind=PromoteOptions)
    promote.add_argument("tag")
    promote.add_argument("--reason", default="manual promote")
    rollback = sub.add_parser("rollback", help="back to the previous current model")
    rollback.set_defaults(kind=RollbackOptions)
    rollback.add_argument("--reason", default="manual rollback")
    stage = sub.add_parser(
        "stage", help="make TAG the candidate: a shadow, or a canary for a share of customers"
    )
    stage.set_defaults(kind=StageOptions)
    stage.add_argument("tag")
    stage.add_argument("--mode", choices=CANDIDATE_MODES, required=True)
    stage.add_argument("--fraction", type=fraction, help="canary: share of customers in (0, 1] (default 0.1)")
    stage.add_argument("--reason", default="manual stage")
    unstage = sub.add_parser("unstage", help="no candidate any more")
    unstage.set_defaults(kind=UnstageOptions)
    unstage.add_argument("--reason", default="manual unstage")
    wait = sub.add_parser("wait", help="block until a current model exists in the store (exit 1 on timeout)")
    wait.set_defaults(kind=WaitOptions)
    wait.add_argument(
        "--timeout", type=positive_seconds, default=1800.0, help="seconds (default %(default)s)"
    )
    args = parser.parse_args(argv)
    return options_from(args.kind, args)


def main(argv: list[str] | None = None) -> int:
    return run_registry_command(parse_options(argv))


if __name__ == "__main__":
    sys.exit(main())
