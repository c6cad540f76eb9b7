"""The outcomes join at scale (issue 20.7): a generated prediction log, an outcomes file, and the
join (`python -m monitoring.feedback --labels`) beside the floor, reading the same files with
orjson alone, each in a fresh process; wall time and peak RSS (the kernel's ru_maxrss).

    .venv/bin/python benchmarks/join.py [--lines 10000000] [--customers 1000000] [--outcomes 100000]
                                        [--dir /tmp/churn-join-bench] [--keep]

Lines are written by the service's own encoder (churn.predictionlog.encode_lines), in files of
PREDICTION_LOG_MAX_BYTES as the service rotates them. Prints one JSON line with the figures and
the ratios; exits 1 if a target of issue 20.7 is missed (peak RSS <= 512 MiB, wall time <= 3x
the floor). The folder is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from churn.predictionlog import encode_lines  # noqa: E402
from churn.schema import EXAMPLE_RECORD  # noqa: E402

T0 = 1_788_000_000.0  # 2026-08-29: the log spans the 60 days after it
FILE_BYTES = 64 * 1024 * 1024
FLOOR = """
import sys, orjson
from pathlib import Path
n = 0
for path in sorted(Path(sys.argv[1]).glob("*.jsonl")):
    with open(path, "rb") as fh:
        for line in fh:
            orjson.loads(line)
            n += 1
print(n)
"""


def generate(folder: Path, lines: int, customers: int, outcomes: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    predictions = folder / "home" / "predictions"
    predictions.mkdir(parents=True)
    record = {k: v for k, v in EXAMPLE_RECORD.items() if k != "customerID"}
    batch, written, seq, fh, size = 1000, 0, 0, None, 0
    while written < lines:
        n = min(batch, lines - written)
        ids = [f"{c:07d}-BENCH" for c in rng.integers(0, customers, n)]
        when = T0 + written / lines * 60 * 86400
        proba = rng.random(n)
        payload = encode_lines(
            when, f"req-{written}", ["churn_model:bench"] * n, [record] * n, ids, proba, proba >= 0.35
        )
        if fh is None or size + len(payload) > FILE_BYTES:
            if fh is not None:
                fh.close()
            fh, size, seq = open(predictions / f"bench-1-{seq:04d}.jsonl", "wb"), 0, seq + 1  # noqa: SIM115
        fh.write(payload)
        size += len(payload)
        written += n
    if fh is not None:
        fh.close()
    chosen = rng.choice(customers, outcomes, replace=False)
    path = folder / "outcomes.csv"
    with open(path, "w") as out:
        out.write("customerID,Churn,observed_at\n")
        for c in chosen:
            out.write(f"{c:07d}-BENCH,{'Yes' if rng.random() < 0.27 else 'No'},2026-11-01T00:00:00Z\n")
    return path


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one fresh process, from the kernel's accounting."""
    out_path = Path(env["BENCH_OUT"])
    started = time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed ({os.waitstatus_to_exitcode(status)})")
    return wall, usage.ru_maxrss / 1024, out_path.read_text()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/join.py", description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/churn-join-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args(argv)
    if args.dir.exists():
        shutil.rmtree(args.dir)
    args.dir.mkdir(parents=True)
    try:
        started = time.perf_counter()
        outcomes = generate(args.dir, args.lines, args.customers, args.outcomes)
        generated = time.perf_counter() - started
        home = args.dir / "home"
        log_bytes = sum(p.stat().st_size for p in (home / "predictions").iterdir())
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTOML_", "MONITORING_"))}
        env |= {"MLOPS_HOME": str(home), "BENCH_OUT": str(args.dir / "stdout.txt")}
        # The page cache decides the wall time of a 6-GB read: read the files once unmeasured, then
        # floor, join, floor again, so that neither side pays for the disk alone.
        for path in sorted((home / "predictions").iterdir()):
            with open(path, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        floor_cmd = [sys.executable, "-c", FLOOR, str(home / "predictions")]
        floors = [run(floor_cmd, env)]
        join = run([sys.executable, "-m", "monitoring.feedback", "--labels", str(outcomes)], env)
        floors.append(run(floor_cmd, env))
        floor = (sum(f[0] for f in floors) / 2, max(f[1] for f in floors), "")
        counts = json.loads(join[2].strip().splitlines()[-1])
        result = {
            "lines": args.lines,
            "log_bytes": log_bytes,
            "customers": args.customers,
            "outcomes": args.outcomes,
            "generate_seconds": round(generated, 1),
            "floor_orjson": {
                "seconds": round(floor[0], 1),
                "runs_seconds": [round(f[0], 1) for f in floors],
                "peak_rss_mib": round(floor[1], 1),
            },
            "join": {"seconds": round(join[0], 1), "peak_rss_mib": round(join[1], 1), "counts": counts},
            "wall_ratio": round(join[0] / floor[0], 2),
            "targets": {"peak_rss_mib <= 512": join[1] <= 512, "wall_ratio <= 3": join[0] <= 3 * floor[0]},
            "load": os.getloadavg(),
        }
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    print(json.dumps(result))
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
