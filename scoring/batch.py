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
import sys
from pathlib import Path

from churn.batch_scoring import MAX_BAD_ROWS_FRACTION, BatchInputError, BatchOptions, Shard, score_batch
from churn.cli import options_from, reasons_count, shard_spec, share
from churn.model import ModelUnavailable


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


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        summary = score_batch(options)
    except BatchInputError as exc:
        print(f"error: {exc}; nothing written", file=sys.stderr)
        return 2
    except (ModelUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
