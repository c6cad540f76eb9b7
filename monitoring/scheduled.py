"""What the churn-drift CronJob runs: the drift check, then the performance report, each as its
own command would (same options, same exit codes, same lines), one after the other even if the
first found no verdict or bad input.

    python -m monitoring.scheduled

Drift: --since 24h --alert --allow-no-verdict. Performance: --since 30d --alert --allow-no-verdict.
The last line of stdout is JSON: {"drift": <its summary>, "performance": <its summary>}.
Exit code: the worse of the two (2 bad input > 1 > 0); "no verdict" is 0.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from churn.performance_check import check as check_performance
from monitoring import drift, performance

DRIFT_ARGS = ["--since", "24h", "--alert", "--allow-no-verdict"]
PERFORMANCE_ARGS = ["--since", "30d", "--alert", "--allow-no-verdict"]

# A command's check, its options parsed: its exit code and summary (churn.reports: DriftSummary,
# PerformanceSummary or their no-verdict forms; None on bad input).
Check = Callable[[], tuple[int, Mapping[str, Any] | None]]


def _run(check: Check) -> tuple[int, Mapping[str, Any] | None]:
    try:
        code, summary = check()
    except SystemExit as exc:  # options or settings: a message is already on stderr
        return (exc.code if isinstance(exc.code, int) else 2), None
    if summary is not None:
        print(json.dumps(summary))  # the command's own last line
    return code, summary


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(f"usage: python -m monitoring.scheduled (no arguments; got {argv})", file=sys.stderr)
        return 2
    # Each command's options parsed just before it runs: --since counts back from then.
    drift_code, drift_summary = _run(lambda: drift.check(drift.parse_options(DRIFT_ARGS)))
    perf_code, perf_summary = _run(lambda: check_performance(performance.parse_options(PERFORMANCE_ARGS)))
    print(json.dumps({"drift": drift_summary, "performance": perf_summary}))
    return max(drift_code, perf_code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
