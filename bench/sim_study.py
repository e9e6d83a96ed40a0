"""The default-policy study: byte miss ratio of every policy vs LRU and Belady.

IRM Zipf, 100,000 equal-size objects, 2,000,000 requests, cache = 5% of the catalog,
alpha 0.6 / 0.8 / 1.0, plus the session-shaped synthetic workload (500,000 requests,
seed 1, cache 5% of its unique bytes). "% gap" is the share of the LRU-to-Belady
byte-miss-ratio gap a policy closes; a summary table (one row per workload) ends the
output. The default policy must close >= 50% on Zipf 0.8 and >= 40% on sessions.

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


def study(label: str, trace: Trace, capacity: int) -> dict[str, float]:
    ratios = {name: replay(trace, name, capacity).total.to_dict()["byte_miss_ratio"]
              for name in ("lru", BELADY) + tuple(p for p in POLICIES if p != "lru")}
    gap = ratios["lru"] - ratios[BELADY]
    print(f"\n{label}: cache {capacity} B; default policy = {DEFAULT_POLICY}")
    print(f"{'policy':<18} {'byte miss':>10} {'% gap closed':>13}")
    for name, ratio in ratios.items():
        closed = 100 * (ratios["lru"] - ratio) / gap if gap > 0 else float("nan")
        print(f"{name:<18} {ratio:>10.4f} {closed:>12.1f}%", flush=True)
    return {name: 100 * (ratios["lru"] - ratio) / gap if gap > 0 else float("nan")
            for name, ratio in ratios.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--alphas", default="0.6,0.8,1.0")
    parser.add_argument("--session-requests", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    size = 4000
    rows: dict[str, dict[str, float]] = {}
    for alpha in (float(a) for a in args.alphas.split(",")):
        trace = zipf_trace(args.objects, args.requests, alpha, size, seed=args.seed)
        rows[f"zipf {alpha}"] = study(
            f"IRM Zipf alpha={alpha}, {args.objects} objects, {args.requests} requests",
            trace, int(0.05 * args.objects) * size)
    if args.session_requests:
        trace = session_trace(SessionWorkload(requests=args.session_requests, seed=args.seed))
        rows["sessions"] = study(
            f"sessions (500 titles, alpha 0.9, {args.session_requests} requests, seed {args.seed}), "
            "cache 5% of unique bytes", trace, int(0.05 * trace.unique_bytes))
    names = [name for name in next(iter(rows.values())) if name not in ("lru", BELADY)]
    print(f"\nsummary: % of the LRU-to-Belady byte-miss gap closed (default = {DEFAULT_POLICY})")
    print(f"{'workload':<12}" + "".join(f" {name:>18}" for name in names))
    for workload, closed in rows.items():
        print(f"{workload:<12}" + "".join(f" {closed[name]:>17.1f}%" for name in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
