"""The pre-positioning planner: which edge of an ISP fills which titles. Pure: no IO.

DESIGN.md (Pre-positioning): "The placement planner decides which edge gets what within
capacity". The plan follows steering so that a placed title is where clients are sent:

1. Replicas in proportion to popularity (the most popular titles are copied onto more
   edges of the ISP, as Open Connect pre-positions its most popular titles widely):

       replicas_i = clamp(round(popularity_i / popularity_max * n_edges), 1, n_edges)

   further capped by `max_replicas` when given (round() is Python's, half to even). If no
   title has a positive popularity every title gets 1 replica. The target is monotone:
   a more popular title never targets fewer replicas than a less popular one.
2. Edges are tried in the rendezvous order of the title (`control.steering.hrw_order`,
   the very hash steering ranks with), so the first copy lands on the edge steering
   picks first for that title, further copies on the next edges steering falls back to.
3. An edge that already holds the title counts as a replica and gets no fill.
4. Capacity: the titles filled on an edge never sum to more than
   floor(free_bytes * (1 - headroom)). An edge without room is skipped for the next one
   in rendezvous order, so a title may get fewer replicas than its target, or none
   (then it is `unplaced`).
5. Titles are planned most popular first (ties: by id), so when space runs out it is the
   least popular titles that lose copies.

Deterministic: the same input gives the same plan, in any process.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from control.steering import hrw_order

__all__ = ["TitleDemand", "EdgeSpace", "PlacementPlan", "plan_placement", "target_replicas"]


@dataclass(frozen=True, slots=True)
class TitleDemand:
    title: str
    popularity: float
    size_bytes: int  # size of all the objects of the title to place


@dataclass(frozen=True, slots=True)
class EdgeSpace:
    edge_id: str
    free_bytes: int
    holds: frozenset[str] = frozenset()  # titles the edge already holds


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    assignments: dict[str, tuple[str, ...]]  # edge_id -> titles to fill (sorted); every edge has a key
    unplaced: tuple[str, ...]  # titles on no edge at all (sorted)
    replicas: dict[str, int]  # title -> edges holding it once the plan is done (0 if unplaced)


def target_replicas(popularity: float, popularity_max: float, n_edges: int,
                    max_replicas: int | None = None) -> int:
    """Rule 1: how many edges a title should be on."""
    if n_edges <= 0:
        return 0
    want = round(popularity / popularity_max * n_edges) if popularity_max > 0 else 1
    cap = n_edges if max_replicas is None else min(n_edges, max_replicas)
    return max(1, min(cap, want))


def plan_placement(titles: Sequence[TitleDemand], edges: Sequence[EdgeSpace], *,
                   max_replicas: int | None = None, headroom: float = 0.0) -> PlacementPlan:
    """Plan which edge fills which title (rules in the module docstring)."""
    if not (isinstance(headroom, (int, float)) and 0.0 <= headroom < 1.0):
        raise ValueError("headroom must be in [0, 1)")
    if max_replicas is not None and (isinstance(max_replicas, bool) or not isinstance(max_replicas, int)
                                     or max_replicas < 1):
        raise ValueError("max_replicas must be an integer >= 1")
    seen_titles: set[str] = set()
    for t in titles:
        if t.title in seen_titles:
            raise ValueError(f"title {t.title!r} listed twice")
        seen_titles.add(t.title)
        if not (isinstance(t.popularity, (int, float)) and math.isfinite(t.popularity) and t.popularity >= 0):
            raise ValueError(f"title {t.title!r}: popularity must be a finite number >= 0")
        if isinstance(t.size_bytes, bool) or not isinstance(t.size_bytes, int) or t.size_bytes < 0:
            raise ValueError(f"title {t.title!r}: size_bytes must be an integer >= 0")
    by_id: dict[str, EdgeSpace] = {}
    for e in edges:
        if e.edge_id in by_id:
            raise ValueError(f"edge {e.edge_id!r} listed twice")
        by_id[e.edge_id] = e

    budget = {e.edge_id: max(0, math.floor(e.free_bytes * (1.0 - headroom))) for e in edges}
    fills: dict[str, list[str]] = {e.edge_id: [] for e in edges}
    replicas: dict[str, int] = {}
    unplaced: list[str] = []
    n = len(edges)
    pmax = max((t.popularity for t in titles), default=0.0)
    ids = list(by_id)

    for t in sorted(titles, key=lambda t: (-t.popularity, t.title)):
        want = target_replicas(t.popularity, pmax, n, max_replicas)
        order = hrw_order(t.title, ids)
        have = sum(1 for eid in order if t.title in by_id[eid].holds)
        need = want - have
        for eid in order:
            if need <= 0:
                break
            if t.title in by_id[eid].holds or budget[eid] < t.size_bytes:
                continue
            budget[eid] -= t.size_bytes
            fills[eid].append(t.title)
            have += 1
            need -= 1
        replicas[t.title] = have
        if have == 0:
            unplaced.append(t.title)

    return PlacementPlan(
        assignments={eid: tuple(sorted(ts)) for eid, ts in fills.items()},
        unplaced=tuple(sorted(unplaced)),
        replicas=replicas,
    )
