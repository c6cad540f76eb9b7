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

from churn import drift_check, performance_check
from monitoring import drift, performance

DRIFT_ARGS = ["--since", "24h", "--alert", "--allow-no-verdict"]
PERFORMANCE_ARGS = ["--since", "30d", "--alert", "--allow-no-verdict"]


def main(argv: list[str] | None = None) -> int:
    if argv:
        print(f"usage: python -m monitoring.scheduled (no arguments; got {argv})", file=sys.stderr)
        return 2
    codes, summaries = [], {}
    # Each command's options parsed just before it runs: --since counts back from then. Its summary
    # is churn.reports' DriftSummary or PerformanceSummary (or their no-verdict forms), None on bad
    # input; the second runs even if the first found none.
    for name, command, check, args in (
        ("drift", drift, drift_check.check_drift, DRIFT_ARGS),
        ("performance", performance, performance_check.check_performance, PERFORMANCE_ARGS),
    ):
        try:
            code, summary = check(command.parse_options(args))
        except SystemExit as exc:  # options or settings: a message is already on stderr
            code, summary = (exc.code if isinstance(exc.code, int) else 2), None
        if summary is not None:
            print(json.dumps(summary))  # the command's own last line
        codes.append(code)
        summaries[name] = summary
    print(json.dumps(summaries))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
