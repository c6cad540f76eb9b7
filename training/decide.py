"""Decide about the staged candidate from the outcomes that came back since it was staged: promote
it when it beats the current model (churn.gate's sequential test, below), unstage it when it loses,
otherwise wait.

    python -m training.decide [--min-labels 100]

Shadow: both versions scored the same records (the current one answered, the candidate's score is
in the prediction log), so they are compared paired, on the outcomes of those records. Canary:
each version answered its own customers, so each is judged on its own outcomes, unpaired. Either
way only predictions made after the candidate was staged count, customers either version was
fitted on are left out (their training membership, stored with each version), and each side needs --min-labels
outcomes, and GATE_MIN_CLASS_COUNT of each class, before anything is decided.

It runs on a schedule and "wait" means "look again later", so it judges by the sequential test
recorded with the candidate when it was staged (churn.gate.sequential_decision: an always-valid
mixture SPRT), whose false-promotion rate holds however many times it looks.

The last line of stdout is JSON: {"candidate": tag or null, "mode", "decision":
"promote"|"unstage"|"wait"|"none"|"conflict", "reason", "evaluation": {...} or null}. The decision
and both sides' metrics go into the registry history. It promotes or unstages only if the
registry still holds the current model and candidate it compared (a rollback, a manual promote or
a new stage in the meantime stands): otherwise "conflict", recorded, and nothing changes.
Exit codes: 0 decided, waited, or nothing staged; 2 bad input (settings, a damaged registry).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass

from churn.cli import options_from, positive_int
from churn.decision import decide
from churn.logs import setup_logging
from churn.model_registry import RegistryError
from churn.settings import settings_or_exit


@dataclass(frozen=True)
class DecideOptions:
    """What `python -m training.decide` was asked to do."""

    min_labels: int


def parse_options(argv: list[str] | None) -> DecideOptions:
    parser = argparse.ArgumentParser(prog="python -m training.decide", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--min-labels", type=positive_int, default=100, help="outcomes each side needs (default %(default)s)"
    )
    return options_from(DecideOptions, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    settings = settings_or_exit()
    log = setup_logging(settings, "training").getChild("decide")
    try:
        summary = decide(settings, options.min_labels, log)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary["reason"], file=sys.stderr)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
