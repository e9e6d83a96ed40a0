"""The default-policy study: byte miss ratio of every policy vs LRU and Belady.

IRM Zipf, 100,000 equal-size objects, 2,000,000 requests, cache = 5% of the catalog,
alpha 0.6 / 0.8 / 1.0, plus the session-shaped synthetic workload as a sanity check.
"% gap" is the share of the LRU-to-Belady byte-miss-ratio gap a policy closes.

    .venv/bin/python bench/sim_study.py [--requests 2000000] [--objects 100000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.policy import DEFAULT_POLICY, POLICIES  # noqa: E402
from sim.replay import BELADY, replay  # noqa: E402
from sim.trace import Trace  # noqa: E402
from sim.workload import SessionWorkload, session_trace, zipf_trace  # noqa: E402


def study(label: str, trace: Trace, capacity: int) -> None:
    ratios = {name: replay(trace, name, capacity).total.to_dict()["byte_miss_ratio"]
              for name in ("lru", BELADY) + tuple(p for p in POLICIES if p != "lru")}
    gap = ratios["lru"] - ratios[BELADY]
    print(f"\n{label}: cache {capacity} B; default policy = {DEFAULT_POLICY}")
    print(f"{'policy':<10} {'byte miss':>10} {'% gap closed':>13}")
    for name, ratio in ratios.items():
        closed = 100 * (ratios["lru"] - ratio) / gap if gap > 0 else float("nan")
        print(f"{name:<10} {ratio:>10.4f} {closed:>12.1f}%", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--alphas", default="0.6,0.8,1.0")
    parser.add_argument("--session-requests", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    size = 4000
    for alpha in (float(a) for a in args.alphas.split(",")):
        trace = zipf_trace(args.objects, args.requests, alpha, size, seed=args.seed)
        study(f"IRM Zipf alpha={alpha}, {args.objects} objects, {args.requests} requests",
              trace, int(0.05 * args.objects) * size)
    if args.session_requests:
        trace = session_trace(SessionWorkload(requests=args.session_requests, seed=args.seed))
        study(f"sessions (500 titles, alpha 0.9, {args.session_requests} requests), cache 5% of unique bytes",
              trace, int(0.05 * trace.unique_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
