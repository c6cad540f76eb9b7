"""Train a churn model, save it to the BentoML store, register it and (per --promote) make it current.

    python -m training.train [--data PATH] [--promote auto|always|never] [--seed N]

Progress goes to stderr; the last line of stdout is one JSON object:
    {"tag": "churn_model:<version>", "promoted": true, "metrics": {...}, ...}
Exit codes: 0 done, 2 bad input or settings (nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from churn.cli import options_from
from churn.fitting import DEFAULT_DATA, TrainOptions, train_and_register
from churn.logs import setup_logging
from churn.model_registry import RegistryError
from churn.promotion import OVERRIDES
from churn.schema import DataValidationError
from churn.settings import settings_or_exit


def parse_options(argv: list[str] | None) -> TrainOptions:
    parser = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="training CSV (default: %(default)s)")
    parser.add_argument(
        "--promote",
        choices=OVERRIDES,
        default="auto",
        help="auto: promote if there is no current model, else only register (churn.promotion; default)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--if-no-current",
        action="store_true",
        help="train only if the registry has no current model (the first-training Job); else exit 0",
    )
    return options_from(TrainOptions, parser.parse_args(argv))


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    settings = settings_or_exit()
    log = setup_logging(settings, "training").getChild("train")
    try:
        summary = train_and_register(settings, options, log)
    except (DataValidationError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
