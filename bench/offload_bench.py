"""Steady-state offload with pre-positioning and nightly refresh (issue 12): the simulator
and a live run, each beside the same without pre-positioning.

    flock /tmp/ocsim-bench.lock .venv/bin/python bench/offload_bench.py            # both halves
    .venv/bin/python bench/offload_bench.py --no-live                              # the simulator only
    .venv/bin/python bench/offload_bench.py --no-sim --live-days 3 --day-seconds 40

Simulator (`bench/offload_sim.py`): `--days` of the simulator's `sessions` workload (Zipf
titles, new releases that start hot and decay, a daily cycle) over `--titles` titles,
replayed through the edge's own policy on `--edges` edges of `--capacity-share` of the
catalog's bytes in all; every midnight a refresh by the control plane's planner, valued
by the catalog the first night and by what each file streamed the day before after that
(`control.placement.forecast_values`, the live control plane's own forecast).

Live (`bench/offload_live.py`): `ocsim up --events` on 127.0.0.1 (origin, control plane,
nats-server, collector, `--edges` edges of one ISP), the same workload scaled down
(`--live-titles` short titles, the default ladder times `--bitrate-scale`,
`--live-requests-per-day`), each day compressed into `--day-seconds`, a refresh job every
midnight valued through the event pipeline, and the offload from the edges' counters:
1 - bytes filled from the origin during the day / bytes the players received. The
simulator is also run over the very trace the live run replays, as a cross-check.

Steady state = the days after the first (which has no history). Bounded: each live run
takes about days x day-seconds plus the refresh fills and start-up (`--live-timeout`
caps a refresh).
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.offload_live import DAY, run_live, scale_workload  # noqa: E402
from bench.offload_sim import simulate  # noqa: E402
from control.steering import hrw_order  # noqa: E402
from edge.policy import DEFAULT_POLICY  # noqa: E402
from sim.steering import edge_ids  # noqa: E402
from sim.workload import LADDER_KBPS, SessionWorkload, segment_size, session_trace  # noqa: E402


def title_segments(w: SessionWorkload) -> list[int]:
    """Segments per title, drawn exactly as `sim.workload.session_trace` draws them (its
    first use of its seeded generator), so a file is the whole rendition, not only what
    the trace happens to request."""
    rng = random.Random(w.seed)
    return [max(1, int(rng.expovariate(1.0 / (w.mean_title_minutes * 15)))) for _ in range(w.titles)]


def sim_half(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    w = SessionWorkload(titles=args.titles, requests=args.requests_per_day * args.days,
                        duration_s=DAY * args.days, seed=args.seed)
    trace = session_trace(w)
    names = [f"t{i:04d}" for i in range(w.titles)]
    file_objects: dict[str, dict[str, int]] = {}
    for name, count in zip(names, title_segments(w)):
        for kbps in LADDER_KBPS:
            file_objects[f"{name}/{kbps}"] = {f"/content/{name}/{kbps}/{n}.seg": segment_size(name, kbps, n)
                                              for n in range(count)}
    catalog_bytes = sum(sum(v.values()) for v in file_objects.values())
    capacity = int(args.capacity_share * catalog_bytes / args.edges)
    ladders = {name: list(LADDER_KBPS) for name in names}
    popularity = {name: 1.0 / (rank ** w.alpha) for rank, name in enumerate(names, start=1)}
    common = dict(policy=args.policy, headroom=args.headroom)
    ids = edge_ids(args.edges)
    with_pp = simulate(trace, file_objects, ids, capacity, popularity, ladders, preposition=True, **common)
    without = simulate(trace, file_objects, ids, capacity, popularity, ladders, preposition=False, **common)
    print(f"SIM  sessions workload: {args.days} days, {len(trace):,} requests, {args.titles} titles, "
          f"catalog {catalog_bytes / 1e9:,.1f} GB; {args.edges} edges x {capacity / 1e9:,.2f} GB "
          f"({args.capacity_share:.0%} of the catalog), policy {args.policy}, headroom {args.headroom:.0%}")
    print(f"SIM  steady-state offload (days 2-{args.days}): {100 * with_pp.offload():.1f} % with pre-positioning "
          f"and nightly refresh, {100 * without.offload():.1f} % without")
    print(f"SIM  first day (catalog popularity only): {100 * with_pp.day(0):.1f} % with, "
          f"{100 * without.day(0):.1f} % without; refreshes filled "
          f"{with_pp.filled_bytes / 1e9:,.1f} GB ({time.perf_counter() - started:.0f} s)")


def live_half(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    sw = SessionWorkload(titles=args.live_titles, requests=args.live_requests_per_day * args.live_days,
                         duration_s=DAY * args.live_days, mean_title_minutes=args.live_title_minutes,
                         mean_watch_minutes=args.live_watch_minutes, seed=args.seed)
    w = scale_workload(session_trace(sw), title_segments(sw), sw.alpha, args.bitrate_scale)
    capacity = int(args.capacity_share * w.catalog_bytes / args.edges)
    ids = [f"isp-a-{i + 1}" for i in range(args.edges)]  # the names `ocsim up` gives them
    ladders = {t.id: list(t.renditions) for t in w.titles}
    popularity = {t.id: t.popularity for t in w.titles}
    objects = w.file_objects()
    common = dict(policy=args.policy, headroom=args.headroom)
    sim_with = simulate(w.trace, objects, ids, capacity, popularity, ladders, preposition=True, **common)
    sim_without = simulate(w.trace, objects, ids, capacity, popularity, ladders, preposition=False, **common)
    print(f"LIVE ocsim up: {args.edges} edges of one ISP x {capacity / 1e6:,.1f} MB ({args.capacity_share:.0%} of "
          f"a {w.catalog_bytes / 1e6:,.0f} MB catalog), {args.live_titles} titles, ladder x{args.bitrate_scale:g}, "
          f"{len(w.trace):,} requests in {len(w.sessions):,} sessions over {args.live_days} days of "
          f"{args.day_seconds:g} s, policy {args.policy}, headroom {args.headroom:.0%}, origin +{args.origin_latency_ms:g} ms")
    print(f"LIVE (the simulator over this very trace: {100 * sim_with.offload():.1f} % with, "
          f"{100 * sim_without.offload():.1f} % without)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="ocsim-offload-") as tmp:
        for name, pp in (("with", True), ("without", False)):
            days = run_live(w, Path(tmp) / name, days=args.live_days, day_s=args.day_seconds, capacity=capacity,
                            policy=args.policy, headroom=args.headroom, edges=args.edges, preposition=pp,
                            job_timeout=args.live_timeout, origin_latency_ms=args.origin_latency_ms)
            results[name] = days
            for i, d in enumerate(days):
                job = d.job
                what = (f"; refresh {job.get('state')} by {job.get('popularity')}, "
                        f"{len(job.get('placed', {}))} files placed" if job else "")
                print(f"LIVE {name:7s} day {i + 1}: offload {100 * d.offload:.1f} % "
                      f"({d.to_players / 1e6:,.0f} MB to players, {d.origin / 1e6:,.1f} MB from the origin; "
                      f"edges sent {d.served / 1e6:,.0f} MB, {d.requests:,} segments, {d.sessions:,} sessions, "
                      f"{d.failed} failed){what}")

    def steady(days: list) -> float:  # type: ignore[type-arg]
        rest = days[1:] or days
        players = sum(d.to_players for d in rest)
        return 1.0 - sum(d.origin for d in rest) / players if players else 0.0
    span = "day 2" if args.live_days == 2 else f"days 2-{args.live_days}"
    print(f"LIVE steady-state offload ({span}): {100 * steady(results['with']):.1f} % with "
          f"pre-positioning and nightly refresh, {100 * steady(results['without']):.1f} % without "
          f"({time.perf_counter() - started:.0f} s)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--titles", type=int, default=300)
    ap.add_argument("--requests-per-day", type=int, default=150_000)
    ap.add_argument("--edges", type=int, default=2)
    ap.add_argument("--capacity-share", type=float, default=0.7, help="fleet capacity / catalog bytes")
    ap.add_argument("--headroom", type=float, default=0.1, help="share of each edge left unpinned")
    ap.add_argument("--policy", default=DEFAULT_POLICY)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-sim", dest="sim", action="store_false", help="skip the simulator half")
    ap.add_argument("--no-live", dest="live", action="store_false", help="skip the live half")
    ap.add_argument("--live-days", type=int, default=2)
    ap.add_argument("--day-seconds", type=float, default=40.0, help="wall seconds of one compressed day")
    ap.add_argument("--live-titles", type=int, default=120)
    ap.add_argument("--live-requests-per-day", type=int, default=10_000)
    ap.add_argument("--live-title-minutes", type=float, default=2.0, help="mean title length")
    ap.add_argument("--live-watch-minutes", type=float, default=0.75, help="mean viewing session")
    ap.add_argument("--bitrate-scale", type=float, default=0.02, help="live ladder = default ladder x this")
    ap.add_argument("--origin-latency-ms", type=float, default=5.0, help="the origin's added time to first byte")
    ap.add_argument("--live-timeout", type=float, default=180.0, help="seconds a refresh job may take")
    args = ap.parse_args()
    if args.sim:
        sim_half(args)
    if args.live:
        live_half(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
