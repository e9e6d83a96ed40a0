"""The default-policy study: byte miss ratio of every policy, ocsim beside libCacheSim.

Workloads (all generated, seeded; none is a production trace):

* ``zipf A lognormal`` / ``zipf A pareto``: IRM Zipf(A) over ``--objects`` objects whose
  sizes are heavy-tailed (``sim.workload.SIZE_MODELS``), for each alpha of ``--alphas``;
* ``video A``: IRM Zipf(A) over a video catalog's objects of every kind (master and
  media playlists, init segments, the segments of every rung; ``video_objects_trace``);
* ``sessions``: the session-shaped generator (``session_trace``: sessions, new
  releases, a daily cycle).

Each is replayed at every cache size of ``--cache-sizes`` (shares of the trace's unique
bytes). With ``--trace FILE`` (CSV ``timestamp,object_id,size_bytes``) only that trace is
studied. For every policy the table shows ocsim's byte miss ratio, libCacheSim's on the
same trace where libCacheSim has the policy (``-`` if not, or if ``libcachesim`` cannot
be imported), the difference in points, the share of the LRU-to-Belady byte-miss gap
ocsim's policy closes (Belady = ocsim's), and ocsim's replay speed: requests per second
of wall clock and per second of this process's CPU time (on a shared machine the wall
clock counts the time other jobs hold the core; the load average is printed at the
start and the end). A summary of the gap closed, one row per workload and cache size,
follows; it flags the rows where the default closes less than 40 % of the gap or does
not beat LRU. The last table is each policy's slowest and median replay speed.

    .venv/bin/python bench/sim_study.py [--requests 500000] [--objects 50000]
        [--alphas 0.6,0.8,1.0] [--cache-sizes 0.01,0.05] [--trace FILE] [--no-libcachesim]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.policy import DEFAULT_POLICY, POLICIES  # noqa: E402
from sim.crosscheck import (  # noqa: E402
    LIBCACHESIM_POLICIES,
    libcachesim_available,
    libcachesim_miss_ratios,
    oracle_general_file,
)
from sim.replay import BELADY, replay  # noqa: E402
from sim.trace import Trace, read_trace  # noqa: E402
from sim.workload import SIZE_MODELS, SessionWorkload, session_trace, video_objects_trace, zipf_trace  # noqa: E402

NAMES: tuple[str, ...] = ("lru", BELADY) + tuple(p for p in POLICIES if p != "lru")
Row = dict[str, float]


SPEEDS: dict[str, list[tuple[float, float]]] = {}  # policy -> [(wall req/s, CPU req/s)]


def study(label: str, trace: Trace, fractions: list[float], with_lcs: bool) -> dict[str, Row]:
    """Per cache size, {policy: % of the gap closed}; prints one table per cache size."""
    out: dict[str, Row] = {}
    with oracle_general_file(trace) if with_lcs else _no_file() as path:
        for fraction in fractions:
            capacity = int(fraction * trace.unique_bytes)
            ours: Row = {}
            theirs: Row = {}
            speed: Row = {}
            cpu_speed: Row = {}
            for name in NAMES:
                result = replay(trace, name, capacity)
                ours[name] = result.total.to_dict()["byte_miss_ratio"]
                speed[name] = result.requests_per_s
                cpu_speed[name] = result.requests_per_cpu_s
                SPEEDS.setdefault(name, []).append((speed[name], cpu_speed[name]))
                if path and name in LIBCACHESIM_POLICIES:
                    theirs[name] = libcachesim_miss_ratios(path, name, capacity)[1]
            gap = ours["lru"] - ours[BELADY]
            closed = {name: 100 * (ours["lru"] - ratio) / gap if gap > 0 else float("nan")
                      for name, ratio in ours.items()}
            print(f"\n{label}, cache {fraction:.0%} of unique bytes ({capacity} B); "
                  f"default = {DEFAULT_POLICY}")
            print(f"{'policy':<18} {'ocsim':>8} {'libCacheSim':>12} {'diff pp':>8} "
                  f"{'% gap':>7} {'req/s':>10} {'req/CPU-s':>10}")
            for name in NAMES:
                lcs = theirs.get(name)
                lcs_text = f"{lcs:>12.4f} {100 * (ours[name] - lcs):>+8.2f}" if lcs is not None \
                    else f"{'-':>12} {'':>8}"
                print(f"{name:<18} {ours[name]:>8.4f} {lcs_text} {closed[name]:>6.1f}% "
                      f"{speed[name]:>10,.0f} {cpu_speed[name]:>10,.0f}", flush=True)
            out[f"{label} @{fraction:.0%}"] = closed
    return out


class _no_file:
    def __enter__(self) -> str:
        return ""

    def __exit__(self, *exc: object) -> None:
        return None


def workloads(args: argparse.Namespace) -> list[tuple[str, Callable[[], Trace]]]:
    if args.trace:
        return [(Path(args.trace).name, lambda: read_trace(args.trace))]
    made: list[tuple[str, Callable[[], Trace]]] = []
    for alpha in (float(a) for a in args.alphas.split(",")):
        for model in SIZE_MODELS:
            made.append((f"zipf {alpha} {model}",
                         lambda a=alpha, m=model: zipf_trace(args.objects, args.requests, a,
                                                             seed=args.seed, sizes=m)))
        made.append((f"video {alpha}", lambda a=alpha: video_objects_trace(
            args.titles, args.requests, a, seed=args.seed)))
    made.append(("sessions", lambda: session_trace(SessionWorkload(requests=args.requests,
                                                                   seed=args.seed))))
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", metavar="FILE", help="study this CSV trace instead of the generated set")
    parser.add_argument("--requests", type=int, default=500_000)
    parser.add_argument("--objects", type=int, default=50_000, help="zipf: catalog size (objects)")
    parser.add_argument("--titles", type=int, default=200, help="video: catalog size (titles)")
    parser.add_argument("--alphas", default="0.6,0.8,1.0")
    parser.add_argument("--cache-sizes", default="0.01,0.05", help="shares of the unique bytes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-libcachesim", action="store_true", help="ocsim's policies only")
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.cache_sizes.split(",")]
    with_lcs = not args.no_libcachesim and libcachesim_available()
    if not with_lcs:
        print("libCacheSim columns off (--no-libcachesim, or `pip install -e '.[check]'`)")
    print(f"load average at start: {_load()}")
    rows: dict[str, Row] = {}
    for label, make in workloads(args):
        trace = make()
        print(f"\n== {label}: {len(trace)} requests, {len(trace.object_sizes())} objects, "
              f"{trace.unique_bytes} unique bytes")
        rows.update(study(label, trace, fractions, with_lcs))
    names = [name for name in NAMES if name not in ("lru", BELADY)]
    print(f"\nsummary: % of the LRU-to-Belady byte-miss gap closed (default = {DEFAULT_POLICY}; "
          "! = the default closes < 40 % or does not beat LRU)")
    print(f"{'workload':<26}" + "".join(f" {name:>17}" for name in names))
    failing = 0
    for workload, closed in rows.items():
        bad = not closed[DEFAULT_POLICY] >= 40.0
        failing += bad
        print(f"{workload:<26}" + "".join(f" {closed[name]:>16.1f}%" for name in names)
              + ("  !" if bad else ""))
    worst = {name: min(closed[name] for closed in rows.values()) for name in names}
    print(f"{'worst case':<26}" + "".join(f" {worst[name]:>16.1f}%" for name in names))
    print(f"\nreplay speed over the {len(rows)} runs (requests/s; load average at the end: {_load()})")
    print(f"{'policy':<18} {'slowest wall':>13} {'median wall':>12} {'slowest CPU':>12} {'median CPU':>11}")
    for name, runs in SPEEDS.items():
        wall = sorted(r[0] for r in runs)
        cpu = sorted(r[1] for r in runs)
        print(f"{name:<18} {wall[0]:>13,.0f} {wall[len(wall) // 2]:>12,.0f} "
              f"{cpu[0]:>12,.0f} {cpu[len(cpu) // 2]:>11,.0f}")
    return 1 if failing else 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
