"""Check the simulator's policies against libCacheSim on the same trace.

Generates an IRM Zipf trace with ``sim.workload.zipf_trace`` (equal sizes, or with
``--sizes lognormal|pareto`` heavy-tailed ones), writes it in libCacheSim's
``oracleGeneral`` format (``sim.crosscheck``), replays it with libCacheSim and with
``sim.replay``, and prints object and byte miss ratios side by side. Fails (exit 1) if
LRU, SIEVE or S3-FIFO differ by more than the tolerance (0.5 points of byte miss ratio
by default); Belady and W-TinyLFU differ by design (see the README).

    .venv/bin/python bench/libcachesim_check.py [--alpha 0.8] [--objects 100000]
        [--requests 2000000] [--cache-fraction 0.05] [--sizes lognormal]
        [--policies lru,belady,s3fifo,sieve,wtinylfu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.crosscheck import libcachesim_miss_ratios, oracle_general_file  # noqa: E402
from sim.replay import replay  # noqa: E402
from sim.workload import SIZE_MODELS, zipf_trace  # noqa: E402

SAME_ALGORITHM = ("lru", "sieve", "s3fifo")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--object-size", type=int, default=4000)
    parser.add_argument("--sizes", choices=SIZE_MODELS, help="heavy-tailed object sizes")
    parser.add_argument("--cache-fraction", type=float, default=0.05, help="share of the unique bytes")
    parser.add_argument("--policies", default="lru,belady,s3fifo,sieve,wtinylfu")
    parser.add_argument("--tolerance-pp", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    trace = zipf_trace(args.objects, args.requests, args.alpha, args.object_size, seed=args.seed,
                       sizes=args.sizes)
    capacity = int(args.cache_fraction * trace.unique_bytes)
    print(f"IRM Zipf alpha={args.alpha}, {args.objects} objects ({args.sizes or args.object_size} B), "
          f"{args.requests} requests, cache {capacity} B ({args.cache_fraction:.1%} of unique bytes)")
    print(f"{'policy':<10} {'obj miss':>9} {'libCacheSim':>12} {'byte miss':>10} {'libCacheSim':>12} "
          f"{'diff (pp)':>10}")
    failed = False
    with oracle_general_file(trace) as path:
        for policy in args.policies.split(","):
            ours = replay(trace, policy, capacity).total.to_dict()
            obj, byte = libcachesim_miss_ratios(path, policy, capacity)
            diff = 100 * (ours["byte_miss_ratio"] - byte)
            bad = abs(diff) > args.tolerance_pp and policy in SAME_ALGORITHM
            failed |= bad
            print(f"{policy:<10} {ours['object_miss_ratio']:>9.4f} {obj:>12.4f} "
                  f"{ours['byte_miss_ratio']:>10.4f} {byte:>12.4f} {diff:>+10.2f}"
                  f"{'  MISMATCH' if bad else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
