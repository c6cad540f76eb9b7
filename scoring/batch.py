"""Score a customers file with the current model (or --model), in chunks; optionally with reasons.

    python -m scoring.batch --input customers.csv|.parquet --output scores.csv|.parquet
                            [--model TAG] [--reasons K|all] [--shard INDEX/COUNT]
                            [--max-bad-fraction F]

Writes customerID, churn_probability, churn, risk_percentile, model (and with --reasons K:
baseline and the K largest contributions towards churn) to --output, and the rows that failed
validation, with their row number and reason, to <output name>.rejects.csv beside it. Both appear
complete or not at all. A progress bar on a terminal; the last line of stdout is JSON:
{"rows_in", "rows_scored", "rows_rejected", "model", "output", "rejects", "seconds", "rows_per_second"}.

Exit codes: 0 scored; 1 the model cannot be had now (no current model yet, the store unreadable) or
a file cannot be written; 2 bad input (a missing or unreadable file, missing or unknown columns,
more bad rows than --max-bad-fraction, an unknown --model, --reasons for a model that cannot be
explained exactly), nothing written.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from churn.batch_scoring import MAX_BAD_ROWS_FRACTION, BatchInputError, Shard, run_batch
from churn.cli import options_from, reasons_count, shard_spec, share
from churn.logs import setup_logging
from churn.model import ModelUnavailable
from churn.settings import settings_or_exit


@dataclass(frozen=True)
class BatchOptions:
    """The command's options, checked (see the module's docstring)."""

    input: Path
    output: Path
    model: str | None  # None: the registry's current model
    reasons: int  # 0: none
    shard: Shard
    max_bad_fraction: float


def parse_options(argv: list[str] | None) -> BatchOptions:
    """SystemExit (code 2, the problem on stderr) on a bad option, as argparse does."""
    parser = argparse.ArgumentParser(prog="python -m scoring.batch", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="customers: .csv, .csv.gz or .parquet")
    parser.add_argument("--output", type=Path, required=True, help="scores: .csv or .parquet")
    parser.add_argument("--model", help="a version (name:version) instead of the registry's current one")
    parser.add_argument(
        "--reasons", type=reasons_count, default=0, help='the top K reasons of each customer (1-19, or "all")'
    )
    parser.add_argument(
        "--shard", type=shard_spec, default=(0, 1), help="score only rows whose number is INDEX modulo COUNT"
    )
    parser.add_argument(
        "--max-bad-fraction",
        type=share,
        default=MAX_BAD_ROWS_FRACTION,
        help="tolerated share of rows that fail validation (default %(default)s)",
    )
    args = parser.parse_args(argv)
    return options_from(BatchOptions, args, shard=Shard(*args.shard))


def run(options: BatchOptions) -> int:
    """The command but its option parsing. SystemExit on bad settings."""
    settings = settings_or_exit()
    log = setup_logging(settings, "batch").getChild("batch")
    # A Job deleted or evicted gets SIGTERM: exit through the cleanup, which leaves no partial file.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        summary = run_batch(
            settings,
            options.input,
            options.output,
            tag=options.model,
            reasons=options.reasons,
            shard=options.shard,
            max_bad_fraction=options.max_bad_fraction,
            progress_stream=sys.stderr,
        )
    except BatchInputError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 2
    except (ModelUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log.info(
        "scored %d of %d rows (%d rejected) with %s into %s in %.1f s",
        summary.rows_scored,
        summary.rows_in,
        summary.rows_rejected,
        summary.model,
        summary.output,
        summary.seconds,
    )
    print(json.dumps(summary.as_dict()))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_options(argv))


if __name__ == "__main__":
    sys.exit(main())
