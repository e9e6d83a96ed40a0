"""Replays a trace through N edges, each with its own byte-budgeted policy.

The policies are the edge's own classes (``edge.policy``), driven through
``EvictionPolicy.replay`` (one edge) or ``EvictionPolicy.request`` (several) — the same
lookup-then-admit sequence the edge performs on each request. Belady's MIN (``"belady"``) is the offline upper bound (see
``sim.belady`` for the variant). Pre-positioning pins, on each edge, the objects that
edge will be asked for most (by their request count in the trace, i.e. a perfect
popularity forecast) up to a fraction of its capacity, before the replay starts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from control.placement import EdgeSpace, TitleDemand, plan_placement
from edge.policy import EvictionPolicy, make_policy
from sim.belady import belady_hits
from sim.steering import assign_edges, title_of
from sim.trace import Trace

__all__ = ["BELADY", "EdgeStats", "ReplayResult", "preposition_sets", "replay"]

BELADY = "belady"


@dataclass(slots=True)
class EdgeStats:
    """Counters of one edge (or of the whole fleet, summed)."""

    requests: int = 0
    hits: int = 0
    bytes_requested: int = 0
    bytes_hit: int = 0
    preposition_bytes: int = 0

    def add(self, other: EdgeStats) -> None:
        self.requests += other.requests
        self.hits += other.hits
        self.bytes_requested += other.bytes_requested
        self.bytes_hit += other.bytes_hit
        self.preposition_bytes += other.preposition_bytes

    @property
    def origin_bytes(self) -> int:
        """Bytes fetched from the origin during the replay (every miss is a fill)."""
        return self.bytes_requested - self.bytes_hit

    def to_dict(self) -> dict[str, Any]:
        req, byt = max(self.requests, 1), max(self.bytes_requested, 1)
        return {
            "requests": self.requests,
            "object_hit_ratio": self.hits / req,
            "object_miss_ratio": 1 - self.hits / req if self.requests else 0.0,
            "byte_hit_ratio": self.bytes_hit / byt,
            "byte_miss_ratio": 1 - self.bytes_hit / byt if self.bytes_requested else 0.0,
            "bytes_requested": self.bytes_requested,
            "origin_bytes": self.origin_bytes,
            "offload": self.bytes_hit / byt,
            "preposition_bytes": self.preposition_bytes,
        }


@dataclass(slots=True)
class ReplayResult:
    policy: str
    capacity: int
    edges: list[EdgeStats]
    elapsed_s: float
    total: EdgeStats = field(default_factory=EdgeStats)
    cpu_s: float = 0.0  # this process's CPU time over the replay (a shared machine's wall clock overstates it)

    def __post_init__(self) -> None:
        for edge in self.edges:
            self.total.add(edge)

    @property
    def requests_per_s(self) -> float:
        return self.total.requests / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    @property
    def requests_per_cpu_s(self) -> float:
        return self.total.requests / self.cpu_s if self.cpu_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = self.total.to_dict()
        out["capacity_bytes"] = self.capacity
        out["requests_per_s"] = self.requests_per_s
        out["requests_per_cpu_s"] = self.requests_per_cpu_s
        out["elapsed_s"] = self.elapsed_s
        out["per_edge"] = [edge.to_dict() for edge in self.edges]
        return out


def preposition_sets(trace: Trace, assignment: list[int], edges: int, capacity: int,
                     fraction: float) -> list[dict[str, int]]:
    """Per edge, the objects pre-positioning pins there, within ``fraction`` of ``capacity``.

    The control plane's own planner (``control.placement.plan_placement``) decides, per
    edge, over the titles steering sends to that edge: a title is placed whole (every
    object of it the trace requests) or not at all, most requested first, never beyond
    the budget. The trace's request counts are the popularity (a perfect forecast). One
    copy per title, because the simulator steers each title to its first choice only."""
    budget = int(fraction * capacity)
    sizes = trace.object_sizes()
    requests: Counter[str] = Counter(trace.keys)
    objects_of: list[dict[str, list[str]]] = [{} for _ in range(edges)]
    plays: list[Counter[str]] = [Counter() for _ in range(edges)]
    seen: set[str] = set()
    for key, edge in zip(trace.keys, assignment):
        if key not in seen:
            seen.add(key)
            title = title_of(key)
            objects_of[edge].setdefault(title, []).append(key)
            plays[edge][title] += requests[key]
    chosen: list[dict[str, int]] = []
    for edge, (titles, counts) in enumerate(zip(objects_of, plays)):
        demands = [TitleDemand(t, float(counts[t]), sum(sizes[k] for k in keys)) for t, keys in titles.items()]
        edge_id = f"edge-{edge}"
        plan = plan_placement(demands, [EdgeSpace(edge_id, budget)], max_replicas=1)
        chosen.append({k: sizes[k] for t in plan.assignments.get(edge_id, ()) for k in titles[t]})
    return chosen


def replay(trace: Trace, policy: str, capacity: int, edges: int = 1,
           preposition: float = 0.0, assignment: list[int] | None = None) -> ReplayResult:
    """Replay ``trace`` with ``policy`` on ``edges`` edges of ``capacity`` bytes each."""
    if assignment is None:
        assignment = assign_edges(trace.keys, edges)
    pins = (preposition_sets(trace, assignment, edges, capacity, preposition)
            if preposition > 0 else [{} for _ in range(edges)])
    stats = [EdgeStats(preposition_bytes=sum(p.values())) for p in pins]
    if policy == BELADY:
        started, cpu_started = time.perf_counter(), time.process_time()
        _replay_belady(trace, capacity, edges, assignment, pins, stats)
    else:
        caches = [make_policy(policy, capacity) for _ in range(edges)]
        for cache, pinned in zip(caches, pins):
            for key, size in pinned.items():
                cache.admit(key, size, 0.0, pinned=True)
        started, cpu_started = time.perf_counter(), time.process_time()
        if edges == 1:
            _replay_one(trace, caches[0], stats[0])
        else:
            _replay_many(trace, caches, assignment, stats)
    return ReplayResult(policy, capacity, stats, time.perf_counter() - started,
                        cpu_s=time.process_time() - cpu_started)


def _replay_one(trace: Trace, cache: EvictionPolicy, stats: EdgeStats) -> None:
    hits, hit_bytes = cache.replay(trace.keys, trace.sizes)
    stats.requests += len(trace)
    stats.hits += hits
    stats.bytes_requested += trace.requested_bytes
    stats.bytes_hit += hit_bytes


def _replay_many(trace: Trace, caches: list[EvictionPolicy], assignment: list[int],
                 stats: list[EdgeStats]) -> None:
    requests = [cache.request for cache in caches]
    for key, size, now, edge in zip(trace.keys, trace.sizes, trace.times, assignment):
        s = stats[edge]
        s.requests += 1
        s.bytes_requested += size
        if requests[edge](key, size, now):
            s.hits += 1
            s.bytes_hit += size


def _replay_belady(trace: Trace, capacity: int, edges: int, assignment: list[int],
                   pins: list[dict[str, int]], stats: list[EdgeStats]) -> None:
    for edge in range(edges):
        if edges == 1:
            keys, sizes = trace.keys, trace.sizes
        else:
            mine = [i for i, e in enumerate(assignment) if e == edge]
            keys = [trace.keys[i] for i in mine]
            sizes = [trace.sizes[i] for i in mine]
        hits = belady_hits(keys, sizes, capacity, pinned=pins[edge])
        s = stats[edge]
        s.requests += len(keys)
        s.bytes_requested += sum(sizes)
        s.hits += sum(hits)
        s.bytes_hit += sum(size for size, hit in zip(sizes, hits) if hit)


def refresh_pins(cache: EvictionPolicy, pinned: dict[str, int], wanted: dict[str, int], now: float) -> int:
    """The pre-position hook of a nightly refresh, on one simulated edge, in the live
    agent's order: unpin what is no longer wanted (it stays cached, evictable), then
    fill-and-pin what is (evicting unpinned objects through the policy). `pinned` is
    updated in place; returns the bytes filled."""
    for key in [k for k in pinned if k not in wanted]:
        cache.unpin(key)
        del pinned[key]
    filled = 0
    for key, size in wanted.items():
        if key in pinned:
            continue
        if cache.lookup(key, now):
            cache.pin(key)
        else:
            if not cache.admit(key, size, now, pinned=True).admitted:
                continue
            filled += size
        pinned[key] = size
    return filled
