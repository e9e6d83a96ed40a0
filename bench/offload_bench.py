"""Steady-state offload with pre-positioning and nightly refresh (issue 12), in the simulator.

    .venv/bin/python bench/offload_bench.py [--days 3 --titles 300 --requests-per-day 150000
                                             --edges 2 --capacity-share 0.7 --policy s3tinylfu]

A few days of the simulator's `sessions` workload (Zipf titles, new releases that start
hot and decay, a daily cycle) are replayed through the edge's own policy on `--edges`
edges, each `--capacity-share` of the catalog's bytes divided by the edges. Every night
at midnight a refresh runs the control plane's planner (`control.placement.plan_files`)
over files (a rendition of a title), valued by `control.placement.file_values`: the
first night from the catalog's popularity, later nights from the bytes each file
streamed the day before divided by its size (the per-file view the event pipeline will
give) plus the catalog's popularity scaled to the same total as a prior; one copy per file, on the title's rendezvous edge (the simulator steers to the
first choice only); 10 % of each edge stays unpinned for what is new. The refresh
unpins what is no longer valuable, then fills what is (`sim.replay.refresh_pins`).
Offload = bytes served from the edges / bytes requested, over the days after the first
(steady state), printed beside the same replay without pre-positioning.

The live half of the issue's offload figure (the same with `ocsim up`) is not built here.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from control.placement import FileDemand, FileSpace, edge_budget, file_values, plan_files  # noqa: E402
from edge.policy import DEFAULT_POLICY, EvictionPolicy, make_policy  # noqa: E402
from sim.replay import refresh_pins  # noqa: E402
from sim.steering import assign_edges, edge_ids  # noqa: E402
from sim.workload import LADDER_KBPS, SessionWorkload, segment_size, session_trace  # noqa: E402

DAY = 86_400.0


def title_segments(w: SessionWorkload) -> list[int]:
    """Segments per title, drawn exactly as `sim.workload.session_trace` draws them (its
    first use of its seeded generator), so a file is the whole rendition, not only what
    the trace happens to request."""
    rng = random.Random(w.seed)
    return [max(1, int(rng.expovariate(1.0 / (w.mean_title_minutes * 15)))) for _ in range(w.titles)]


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
    args = ap.parse_args()

    started = time.perf_counter()
    w = SessionWorkload(titles=args.titles, requests=args.requests_per_day * args.days,
                        duration_s=DAY * args.days, seed=args.seed)
    trace = session_trace(w)
    names = [f"t{i:04d}" for i in range(w.titles)]
    segs = title_segments(w)
    file_objects: dict[str, dict[str, int]] = {}
    for name, count in zip(names, segs):
        for kbps in LADDER_KBPS:
            file_objects[f"{name}/{kbps}"] = {f"/content/{name}/{kbps}/{n}.seg": segment_size(name, kbps, n)
                                              for n in range(count)}
    file_size = {k: sum(v.values()) for k, v in file_objects.items()}
    catalog_bytes = sum(file_size.values())
    capacity = int(args.capacity_share * catalog_bytes / args.edges)
    ids = edge_ids(args.edges)
    assignment = assign_edges(trace.keys, args.edges)
    ladders = {name: list(LADDER_KBPS) for name in names}
    catalog_popularity = {name: 1.0 / (rank ** w.alpha) for rank, name in enumerate(names, start=1)}

    def plan(popularity: dict[str, float]) -> list[dict[str, int]]:
        values = file_values(popularity, ladders)
        demands = [FileDemand(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]), v, file_size[k])
                   for k, v in values.items() if v > 0]
        budget = edge_budget(capacity, 0, 0, headroom=args.headroom)
        placed = plan_files(demands, [FileSpace(e, budget) for e in ids], max_replicas=1)
        return [{key: size for f in placed.fills[e] for key, size in file_objects[f].items()} for e in ids]

    prior = file_values(catalog_popularity, ladders)
    prior_total = sum(prior.values())

    def forecast(streamed: dict[str, float]) -> dict[str, float]:
        """Yesterday's per-file value (bytes streamed / size), with the catalog's
        popularity, scaled to the same total, as the prior for files not streamed."""
        measured = {k: b / file_size[k] for k, b in streamed.items()}
        scale = sum(measured.values()) / prior_total if prior_total else 0.0
        return {k: measured.get(k, 0.0) + scale * v for k, v in prior.items()}

    def run(preposition: bool) -> tuple[float, float, int]:
        caches: list[EvictionPolicy] = [make_policy(args.policy, capacity) for _ in ids]
        pinned: list[dict[str, int]] = [{} for _ in ids]
        streamed: dict[str, float] = defaultdict(float)
        req = hit = req_first = hit_first = 0
        filled = 0
        night = 0.0
        i = 0
        n = len(trace)
        while i < n:
            if preposition:
                popularity = catalog_popularity if night == 0.0 else forecast(streamed)
                for cache, have, want in zip(caches, pinned, plan(popularity)):
                    filled += refresh_pins(cache, have, want, night)
            streamed.clear()
            end = night + DAY
            while i < n and trace.times[i] < end:
                key, size, now, e = trace.keys[i], trace.sizes[i], trace.times[i], assignment[i]
                ok = caches[e].request(key, size, now)
                if night == 0.0:
                    req_first += size
                    hit_first += size if ok else 0
                else:
                    req += size
                    hit += size if ok else 0
                streamed[key.rsplit("/", 1)[0][len("/content/"):]] += size
                i += 1
            night = end
        return hit / max(req, 1), hit_first / max(req_first, 1), filled

    with_pp, with_first, filled = run(True)
    without, without_first, _ = run(False)
    print(f"sessions workload: {args.days} days, {len(trace):,} requests, {args.titles} titles, "
          f"catalog {catalog_bytes / 1e9:,.1f} GB; {args.edges} edges x {capacity / 1e9:,.1f} GB "
          f"({args.capacity_share:.0%} of the catalog), policy {args.policy}")
    print(f"steady-state offload (days 2-{args.days}): {100 * with_pp:.1f} % with pre-positioning and nightly "
          f"refresh, {100 * without:.1f} % without")
    print(f"first day (no history yet, catalog popularity): {100 * with_first:.1f} % with, "
          f"{100 * without_first:.1f} % without; pre-position fills {filled / 1e9:,.1f} GB in all")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
