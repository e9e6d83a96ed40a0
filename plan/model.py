"""The simulator's model of one ISP's edges over a day of sessions. Pure: time is the day's.

What it does is what the live system does, call for call, through the same cores:

1. Pre-positioning (before the day): the control plane's planner. Files (a rendition of
   a title) are valued by `control.placement.file_values` over the catalog's popularity
   (what `popularity_view` gives before anything is played), the `top` most valuable are
   planned by `control.placement.plan_files` over budgets `edge_budget(capacity, 0, 0)`
   on edges named as `ocsim up` names them (`isp-1`, `isp-2`, ...: the rendezvous hash
   is over those ids), and every segment of a placed file is admitted pinned. `top` is
   the most files whose one-copy bytes fit `preposition_share` of the ISP's disks and
   what the fill window lets the NIC's fill share carry (`top_files`).
2. Steering, once per session (a player keeps the edge it was given): the control
   plane's own `SteeringRanker` (holders of the title first, rendezvous, bounded load)
   over `EdgeView`s whose `titles` are what each edge holds, refreshed once per
   heartbeat; the load window and the heartbeat are in the day's time, `time_scale`
   times the live seconds they last.
3. A warm-up day (`Day.warmup`, the day before, no release launched yet) is replayed the
   same way first and not counted, so the figures are of a steady-state day, not of a
   cold start (`ocsim plan --validate` runs without one, as its live run starts cold).
4. A request: the edge's policy `lookup`; on a miss the ISP's other edges are asked in
   order (`only-if-cached`: a `lookup` there), then the origin; the edge `admit`s what it
   filled, and its evictions leave its title summary.

Offload = 1 - origin bytes / bytes viewers got; hit ratio = requests the steered edge
answered from its own disk / requests.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.content import Catalog
from plan.workload import Day
from control.placement import FileDemand, FileSpace, edge_budget, file_values, plan_files, split_file_key
from control.steering import EdgeView, SteeringRanker
from edge.policy import EvictionPolicy, make_policy
from plan.inputs import Network

__all__ = ["IspRun", "edge_names", "placement_for", "simulate_isp", "top_files"]

LIVE_LOAD_WINDOW_S = 10.0  # control.steering.SteeringRanker's default window_s
LIVE_HEARTBEAT_S = 1.0


def edge_names(isp: str, n: int) -> list[str]:
    """The ids `ocsim up` gives the edges of an ISP declared with `edges = n`."""
    return [f"{isp}-{k}" for k in range(1, n + 1)]


@dataclass(slots=True)
class IspRun:
    isp: str
    edges: int
    capacity: int  # per edge, simulated bytes
    policy: str
    top: int
    requests: int = 0
    hits: int = 0
    bytes: int = 0
    origin_bytes: int = 0
    peer_bytes: int = 0
    pinned_bytes: int = 0
    origin_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    served_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    edge_peak_hour_bytes: int = 0  # the busiest edge's busiest hour
    startups: list[float] = field(default_factory=list)

    @property
    def offload(self) -> float:
        return 1 - self.origin_bytes / self.bytes if self.bytes else 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def startup_p90(self) -> float:
        if not self.startups:
            return 0.0
        s = sorted(self.startups)
        return s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)]


def _ladders(catalog: Catalog) -> dict[str, list[int]]:
    return {t.id: list(t.renditions) for t in catalog.titles.values()}


def ranked_files(day: Day) -> list[tuple[str, float, int]]:
    """(file key, value, bytes) most valuable first, as the control plane ranks a `top` job."""
    got = day.memo.get("ranked")
    if isinstance(got, list):
        return got
    catalog = day.catalog
    values = file_values({t.id: t.popularity for t in catalog.titles.values()}, _ladders(catalog))
    out = []
    for key in sorted(values, key=lambda k: (-values[k], k)):
        tid, rend = split_file_key(key)
        out.append((key, values[key], day.file_bytes(tid, rend)))
    day.memo["ranked"] = out
    return out


def top_files(day: Day, budget_bytes: int) -> int:
    """The most files, most valuable first, whose one-copy bytes fit `budget_bytes`."""
    used = n = 0
    for _, _, size in ranked_files(day):
        if used + size > budget_bytes:
            break
        used += size
        n += 1
    return n


def placement_for(day: Day, ids: Sequence[str], capacity: int, top: int) -> dict[str, tuple[str, ...]]:
    """Edge id -> file keys to fill: the control plane's `top` job on empty edges."""
    if top <= 0:
        return {e: () for e in ids}
    demands = []
    for key, value, size in ranked_files(day)[:top]:
        tid, rend = split_file_key(key)
        demands.append(FileDemand(tid, rend, value, size))
    placed = plan_files(demands, [FileSpace(e, edge_budget(capacity, 0, 0)) for e in ids])
    return dict(placed.fills)


def _title(key: str) -> str:
    return key.split("/", 3)[2]


def simulate_isp(day: Day, isp: str, edges: int, capacity: int, policy: str,
                 top: int, network: Network, time_scale: float) -> IspRun:
    """Replay `sessions` of `isp` (others are skipped) on `edges` edges of `capacity` bytes."""
    ids = edge_names(isp, edges)
    caches: list[EvictionPolicy] = [make_policy(policy, capacity) for _ in ids]
    holds: list[Counter[str]] = [Counter() for _ in ids]
    run = IspRun(isp, edges, capacity, policy, top)
    plan = placement_for(day, ids, capacity, top)
    for i, eid in enumerate(ids):
        for fkey in plan.get(eid, ()):
            tid, rend = split_file_key(fkey)
            for n, size in enumerate(day.segment_sizes(tid, rend)):
                if caches[i].admit(f"/content/{tid}/{rend}/{n}.seg", size, 0.0, pinned=True).admitted:
                    holds[i][tid] += 1
        run.pinned_bytes += caches[i].pinned_bytes

    ranker = SteeringRanker(window_s=LIVE_LOAD_WINDOW_S * time_scale)
    beat = LIVE_HEARTBEAT_S * time_scale

    def views() -> tuple[EdgeView, ...]:
        return tuple(EdgeView(eid, isp, "", "up", frozenset(t for t, c in h.items() if c > 0))
                     for eid, h in zip(ids, holds))

    # every segment request of the day, in time order; a session's first one steers it
    mine = [s for s in day.warmup if s.isp == isp] + [s for s in day.sessions if s.isp == isp]
    events: list[tuple[float, int, int]] = []
    for j, s in enumerate(mine):
        events.extend((s.start_s + k * 4.0, j, s.first + k) for k in range(s.count))
    events.sort()
    where = [0] * len(mine)
    fleet = views()
    next_beat = float("-inf")
    index = {eid: i for i, eid in enumerate(ids)}
    per_edge_hour = [[0] * 24 for _ in ids]
    rtt, o_rtt = network.edge_rtt_ms / 1000, network.origin_rtt_ms / 1000
    viewer_bps = network.viewer_mbps * 1e6
    for now, j, n in events:
        s = mine[j]
        if now >= next_beat:
            fleet = views()
            next_beat = now + beat
        first = n == s.first
        if first:
            ranking = ranker.rank(s.title, isp, fleet, now)
            ranker.record(ranking, now)
            where[j] = index.get(ranking.candidates[0].edge_id, 0) if ranking.candidates else 0
        e = where[j]
        key = f"/content/{s.title}/{s.kbps}/{n}.seg"
        size = day.segment_sizes(s.title, s.kbps)[n]
        if now < 0:  # the warm-up day: the caches live it, the figures do not count it
            cache = caches[e]
            if not cache.lookup(key, now):
                for p in range(len(ids)):  # the peers are asked as on a counted day
                    if p != e and caches[p].lookup(key, now):
                        break
                adm = cache.admit(key, size, now)
                if adm.admitted:
                    holds[e][s.title] += 1
                for k in adm.evicted:
                    holds[e][_title(k)] -= 1
            continue
        hour = int(now // 3600) % 24
        run.requests += 1
        run.bytes += size
        run.served_by_hour[hour] += size
        per_edge_hour[e][hour] += size
        cache = caches[e]
        extra = 0.0
        if cache.lookup(key, now):
            run.hits += 1
        else:
            peer = False
            for p in range(len(ids)):
                if p != e and caches[p].lookup(key, now):
                    peer = True
                    break
            if peer:
                run.peer_bytes += size
                extra = rtt
            else:
                run.origin_bytes += size
                run.origin_by_hour[hour] += size
                extra = o_rtt
            adm = cache.admit(key, size, now)
            if adm.admitted:
                holds[e][s.title] += 1
            for k in adm.evicted:
                holds[e][_title(k)] -= 1
        if first:
            # play answer, master and media playlists, then the first segment
            run.startups.append(4 * rtt + extra + size * 8 / viewer_bps)
    run.edge_peak_hour_bytes = max((max(h) for h in per_edge_hour), default=0)
    return run
