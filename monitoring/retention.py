"""Delete state past its retention: prediction logs (by age and total size), reports and application
logs (by age), outcome files (by their own age). See churn.cleanup for the rules.

    python -m monitoring.retention

The last line of stdout is JSON: {"deleted": {"<kind>": files}, "freed_bytes": {"<kind>": bytes},
"premature": n} (prediction-log files the size cap deleted before LABEL_DELAY_DAYS).
Exit codes: 0 done; 2 bad settings.
"""

from __future__ import annotations

import json
import sys

from churn.cleanup import apply_retention
from churn.logs import setup_logging
from churn.settings import settings_or_exit


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(f"usage: python -m monitoring.retention (no arguments; got {argv})", file=sys.stderr)
        return 2
    settings = settings_or_exit()
    log = setup_logging(settings, "retention").getChild("retention")
    pruned = apply_retention(settings)
    log.info(
        "retention: deleted %s (%s bytes); prediction logs capped at %d bytes, %s days; outcomes %s days",
        pruned.files or "nothing",
        sum(pruned.bytes.values()),
        settings.prediction_log_max_total_bytes,
        settings.retention_days,
        settings.feedback_retention_days,
    )
    print(json.dumps({"deleted": pruned.files, "freed_bytes": pruned.bytes, "premature": pruned.premature}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
