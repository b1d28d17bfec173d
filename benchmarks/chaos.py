"""A chaos soak: several workers, killed, stalled and restarted while runs execute.

Run: ``python benchmarks/chaos.py [--url URL] [--minutes 3] [--workers 4] [--runs 400]
[--kill-every 5] [--stop-every 0] [--skew 0]``.

Real ``durable.Worker`` processes (``tests/workers/worker_proc.py``) with fixed ids
execute runs of plain and transactional steps that write to an application ledger.
Every ``--kill-every`` seconds one worker gets SIGKILL and is started again under its
name; every ``--stop-every`` seconds one is SIGSTOPped past its lease and let go on.
Runs are started in waves over the chaos. Then the fleet finishes alone, and the log
and the ledger are read to print: runs started and completed, kills, stalls, restarts,
takeovers, recovery time after a kill (until the victim's last run is claimed
again), and what was lost or done twice. It uses a fresh schema and drops it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "workers")]

from tests.chaos.harness import ChaosPlan, run_chaos  # noqa: E402

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> None:
    """Parse the options, run the soak, print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of chaos")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pause", type=float, default=0.05, help="seconds per plain step")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--kill-every", type=float, default=5.0, help="0: no kills")
    parser.add_argument("--stop-every", type=float, default=0.0, help="0: no stalls")
    parser.add_argument("--skew", type=float, default=0.0, help="pod-0's clock, s ahead")
    parser.add_argument("--seed", type=int, default=20261201)
    args = parser.parse_args()
    duration = args.minutes * 60
    plan = ChaosPlan(
        workers=args.workers,
        runs=args.runs,
        steps=args.steps,
        pause=args.pause,
        lease=args.lease,
        kill_every=args.kill_every or None,
        stop_every=args.stop_every or None,
        stop_for=args.lease * 2,
        duration=duration,
        settle=max(60.0, duration),
        skew=args.skew,
        waves=max(1, int(duration // 5)),
        seed=args.seed,
    )
    print(
        f"chaos soak: {args.workers} workers, {args.runs} runs of {args.steps} steps "
        f"(every third transactional), {args.minutes} min, kill every {args.kill_every}s, "
        f"stall every {args.stop_every}s, lease {args.lease}s, skew {args.skew}s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = run_chaos(args.url, plan, Path(tmp))
    width = max(len(k) for k in report.figures())
    for name, value in report.figures().items():
        print(f"  {name:<{width}}  {value}")
    for problem in report.problems[:20]:
        print(f"  PROBLEM: {problem}")
    bad = (
        report.lost
        + report.steps_recorded_twice
        + report.tx_effects_duplicated
        + report.plain_repeated_outside_a_kill
        + len(report.problems)
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
