"""Retrain on the base data plus the outcomes that came back, and promote only a better model.

    python -m training.retrain [--data PATH] [--min-labels 200] [--promote auto|always|never]
                               [--seed 42] [--stage shadow|canary [--fraction F]]

Labelled examples are the stored outcomes joined with their predictions (monitoring.feedback);
outcomes of customers never scored carry no features and are not used. The newest part of them
by observed_at, EVAL_FRACTION (ties in random order, from --seed), is the evaluation window: never
trained on (nor are the same customers' rows of the base data). The challenger is trained on the
rest of the examples and the base data, exactly as training.train trains; then the current model
(champion) and the challenger are scored on the window, the same rows, and the gate of
churn.gate decides. `auto` promotes on the gate's "promote"; `always`/`never` register the
challenger and promote it or not whatever the gate says. `--stage MODE` registers it and, unless
the gate rejects it, makes it the candidate (shadow or canary) instead of promoting it. Both
models' metrics on the window and the decision go into the registry history. It promotes only if
the champion it compared against is still current when it is done (a rollback or a manual promote
meanwhile stands, recorded as a conflict: "promoted": false).

The last line of stdout is JSON: {"tag": str or null, "promoted": bool, "skipped": bool,
"reason": str, "evaluation": {"n", "champion": {"tag", "roc_auc", "log_loss", ...},
"challenger": {...}, ...}}.
Exit codes: 0 it ran (promoted or not, or skipped: fewer than --min-labels examples); 2 bad input
(data, settings, no current model); the registry and the store are untouched by a failed run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from churn.cli import fraction, options_from, positive_int
from churn.fitting import DEFAULT_DATA
from churn.logs import setup_logging
from churn.model_registry import CANDIDATE_MODES, RegistryError
from churn.promotion import OVERRIDES
from churn.retraining import RetrainOptions, retrain
from churn.schema import DataValidationError
from churn.settings import settings_or_exit


def parse_options(argv: list[str] | None) -> RetrainOptions:
    parser = argparse.ArgumentParser(prog="python -m training.retrain", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="the base data set (default: %(default)s)"
    )
    parser.add_argument(
        "--min-labels",
        type=positive_int,
        default=200,
        help="labelled examples needed; fewer: exit 0 with skipped (default %(default)s)",
    )
    parser.add_argument(
        "--promote",
        choices=OVERRIDES,
        default="auto",
        help="auto: promote if the gate says the challenger is better on the evaluation window (default)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--stage",
        choices=CANDIDATE_MODES,
        help="stage the challenger as a shadow or canary candidate instead of promoting it",
    )
    parser.add_argument(
        "--fraction", type=fraction, help="with --stage canary: share of customers (default 0.1)"
    )
    args = parser.parse_args(argv)
    if args.fraction is not None and args.stage != "canary":
        parser.error("--fraction needs --stage canary")
    if args.stage and args.promote != "auto":
        parser.error("--stage and --promote always/never exclude each other")
    return options_from(RetrainOptions, args)


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    settings = settings_or_exit()
    log = setup_logging(settings, "training").getChild("retrain")
    try:
        summary = retrain(settings, options, log)
    except (DataValidationError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
