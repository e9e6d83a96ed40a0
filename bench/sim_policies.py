"""Replay speed: requests/s of each policy through ``sim.replay`` on one core.

IRM Zipf(0.8), 100,000 equal-size objects, 1,000,000 requests, cache 5% of the catalog
(the best of ``--repeat`` runs is reported, so a busy machine doesn't understate it), as
requests per second of wall clock and per second of this process's CPU time, with the
load average before and after (the machine is shared: ratios within one run count).

    .venv/bin/python bench/sim_policies.py [--requests 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.policy import POLICIES  # noqa: E402
from sim.replay import BELADY, replay  # noqa: E402
from sim.workload import zipf_trace  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    trace = zipf_trace(args.objects, args.requests, args.alpha, 4000, seed=1)
    capacity = int(0.05 * args.objects) * 4000
    print(f"IRM Zipf alpha={args.alpha}, {args.objects} objects, {args.requests} requests, "
          f"cache 5% of the catalog, best of {args.repeat}; load average {_load()}")
    print(f"{'policy':<18} {'requests/s':>12} {'req/CPU-s':>12} {'miss ratio':>11}")
    for name in POLICIES + (BELADY,):
        runs = [replay(trace, name, capacity) for _ in range(args.repeat)]
        wall = max(r.requests_per_s for r in runs)
        cpu = max(r.requests_per_cpu_s for r in runs)
        print(f"{name:<18} {wall:>12,.0f} {cpu:>12,.0f} {runs[0].total.to_dict()['object_miss_ratio']:>11.4f}",
              flush=True)
    print(f"load average {_load()}")
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
