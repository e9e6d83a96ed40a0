"""Validate the simulator's LRU and Belady against libCacheSim on the same trace.

Generates the IRM Zipf trace with ``sim.workload.zipf_trace``, writes it in
libCacheSim's ``oracleGeneral`` binary format (uint32 time, uint64 id, uint32 size,
int64 next-access index; -1 = never), replays it with libCacheSim's LRU and Belady
and with ``sim.replay``, and prints the miss ratios side by side. Fails (exit 1) if a
pair differs by more than the tolerance (0.5 percentage points by default).

    .venv/bin/python bench/libcachesim_check.py [--alpha 0.8] [--objects 100000]
        [--requests 2000000] [--cache-fraction 0.05] [--policies lru,belady,...]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.belady import NEVER, next_uses  # noqa: E402
from sim.replay import replay  # noqa: E402
from sim.trace import Trace  # noqa: E402
from sim.workload import zipf_trace  # noqa: E402

_RECORD = struct.Struct("<IQIq")


def write_oracle_general(trace: Trace, path: str) -> None:
    future = next_uses(trace.keys)
    with open(path, "wb") as out:
        pack = _RECORD.pack
        out.write(b"".join(
            pack(int(t), int(key) + 1, size, -1 if nxt == NEVER else nxt)
            for t, key, size, nxt in zip(trace.times, trace.keys, trace.sizes, future)))


def libcachesim_miss_ratios(path: str, policy: str, capacity: int) -> tuple[float, float]:
    import libcachesim as lcs

    cls = {"lru": lcs.LRU, "belady": lcs.Belady, "s3fifo": lcs.S3FIFO,
           "sieve": lcs.Sieve, "wtinylfu": lcs.WTinyLFU}[policy]
    reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
    obj_miss, byte_miss = cls(capacity).process_trace(reader)
    return obj_miss, byte_miss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.8)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2_000_000)
    parser.add_argument("--object-size", type=int, default=4000)
    parser.add_argument("--cache-fraction", type=float, default=0.05)
    parser.add_argument("--policies", default="lru,belady")
    parser.add_argument("--tolerance-pp", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    trace = zipf_trace(args.objects, args.requests, args.alpha, args.object_size, seed=args.seed)
    capacity = int(args.cache_fraction * args.objects) * args.object_size
    print(f"IRM Zipf alpha={args.alpha}, {args.objects} objects x {args.object_size} B, "
          f"{args.requests} requests, cache {capacity} B ({args.cache_fraction:.1%} of catalog)")
    print(f"{'policy':<10} {'ocsim miss':>11} {'libCacheSim':>12} {'diff (pp)':>10}")
    failed = False
    fd, path = tempfile.mkstemp(suffix=".oracleGeneral.bin")
    os.close(fd)
    try:
        write_oracle_general(trace, path)
        for policy in args.policies.split(","):
            ours = replay(trace, policy, capacity).total.to_dict()["object_miss_ratio"]
            theirs, _ = libcachesim_miss_ratios(path, policy, capacity)
            diff = 100 * (ours - theirs)
            bad = abs(diff) > args.tolerance_pp and policy in ("lru", "belady")
            failed |= bad
            print(f"{policy:<10} {ours:>11.4f} {theirs:>12.4f} {diff:>+10.2f}{'  MISMATCH' if bad else ''}")
    finally:
        os.unlink(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
