"""The pre-positioning planner: which edge of an ISP fills which titles or files. Pure: no IO.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control.steering import hrw_order

__all__ = ["TitleDemand", "EdgeSpace", "PlacementPlan", "plan_placement", "target_replicas",
           "FileDemand", "FileSpace", "FilePlacement", "plan_files", "file_values", "edge_budget", "file_key",
           "split_file_key", "rendition_shares", "forecast_values", "RENDITION_SHARE", "NO_ROOM", "ALL_SPACE_PINNED"]


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


# ====================================================================== files
#
# Open Connect places *files*: one rendition of one title (its media playlist and every
# segment) is one unit, valued on its own. The rules of the file planner:
#
# F1. Budget (`edge_budget`): an edge can give a plan
#         capacity - pinned - in_flight            (a new job), or
#         capacity - pinned - in_flight + placed   (a refresh, which may unpin `placed`),
#     never less than 0, times (1 - headroom). Unpinned cached objects are evictable and
#     do not count: filling a plan evicts them through the policy, as any fill does.
# F2. Value (`file_values`): the predicted popularity of the file in the ISP, bytes
#     streamed from it over a window divided by its size, i.e. how many times over the
#     file would be read. A popularity mapping keyed by "title/rendition" is taken as that
#     value directly (the event pipeline's per-file view); keys that are plain titles (the
#     catalog's popularity, or plays per title) are split over the title's renditions by
#     RENDITION_SHARE (what share of viewing settles on each rung of the ladder).
#     With a measurement (`forecast_values`), a file's value is what it streamed plus the
#     catalog's prior for it scaled to the measured total, so a file nobody has streamed
#     yet (a new release) still ranks by the catalog, below the files that did stream.
# F3. Most valuable first (ties by key); replicas in proportion to value (rule 1 above,
#     over the file's value), onto the edges in the rendezvous order of the *title*, so
#     that all of a title's files go where steering sends the title's viewers first.
# F4. A held file (`FileSpace.holds`) counts as a replica. On a refresh a held file costs
#     its size against the budget; held files not kept (no longer valuable enough, or
#     beyond their target replica count) are unpinned before the fills.
# F5. A file with no copy is left out, with a reason: "no-room" (no edge had room left
#     for it), or "all-space-pinned" (every edge's budget was 0 to begin with).

# Share of viewing on each rung of the default ladder, lowest first (the simulator's
# session workload draws rungs with the same weights, sim.workload._RUNG_WEIGHTS).
RENDITION_SHARE: tuple[float, ...] = (0.05, 0.10, 0.20, 0.30, 0.35)
NO_ROOM, ALL_SPACE_PINNED = "no-room", "all-space-pinned"


def file_key(title: str, rendition: int) -> str:
    return f"{title}/{rendition}"


def split_file_key(key: str) -> tuple[str, int]:
    title, _, rendition = key.rpartition("/")
    return title, int(rendition)


def rendition_shares(ladder: Sequence[int], share: Sequence[float] = RENDITION_SHARE) -> dict[int, float]:
    """Each rendition's share of viewing. A ladder as long as `share` uses it rung by rung
    (lowest bitrate first); any other ladder shares equally. Sums to 1."""
    rungs = sorted(ladder)
    if not rungs:
        return {}
    weights = list(share) if len(rungs) == len(share) else [1.0] * len(rungs)
    total = sum(weights)
    return {r: w / total for r, w in zip(rungs, weights)}


def file_values(popularity: Mapping[str, float], ladders: Mapping[str, Sequence[int]],
                share: Sequence[float] = RENDITION_SHARE) -> dict[str, float]:
    """Rule F2: the value of every file of the titles in `ladders` (title -> renditions).

    `popularity` maps a title id or a file key ("title/rendition") to a finite number
    >= 0; a file key wins over its title's. Missing entries are 0. Pure."""
    for k, v in popularity.items():
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
            raise ValueError(f"popularity[{k!r}] must be a finite number >= 0")
    out: dict[str, float] = {}
    for title, ladder in ladders.items():
        shares = rendition_shares(ladder, share)
        per_title = float(popularity.get(title, 0.0))
        for r in ladder:
            key = file_key(title, r)
            out[key] = float(popularity[key]) if key in popularity else per_title * shares[r]
    return out


def forecast_values(measured: Mapping[str, float], prior: Mapping[str, float]) -> dict[str, float]:
    """Rule F2 with a measurement: per file key of `prior` (the catalog's `file_values`),

        value = measured[key] + prior[key] * sum(measured) / sum(prior)

    `measured` is bytes streamed / file size over the window (the event pipeline's view);
    keys of `measured` not in `prior` are dropped (files the catalog no longer has). With
    nothing measured this is 0 everywhere, so callers fall back to the prior instead. The
    offline bench (`bench/offload_bench.py`) forecasts with this very function. Pure."""
    for name, m in (("measured", measured), ("prior", prior)):
        for k, v in m.items():
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}[{k!r}] must be a finite number >= 0")
    prior_total = sum(prior.values())
    measured_total = sum(v for k, v in measured.items() if k in prior)
    scale = measured_total / prior_total if prior_total else 0.0
    return {k: float(measured.get(k, 0.0)) + scale * v for k, v in prior.items()}


def edge_budget(capacity: int, pinned: int, in_flight: int, placed: int = 0, *, refresh: bool = False,
                headroom: float = 0.0) -> int:
    """Rule F1: bytes a plan may fill on one edge."""
    room = capacity - pinned - in_flight + (placed if refresh else 0)
    return max(0, math.floor(max(0, room) * (1.0 - headroom)))


@dataclass(frozen=True, slots=True)
class FileDemand:
    title: str
    rendition: int
    value: float
    size_bytes: int

    @property
    def key(self) -> str:
        return file_key(self.title, self.rendition)


@dataclass(frozen=True, slots=True)
class FileSpace:
    edge_id: str
    budget_bytes: int  # edge_budget(...)
    holds: frozenset[str] = frozenset()  # file keys placed (pinned) on the edge


@dataclass(frozen=True, slots=True)
class FilePlacement:
    fills: dict[str, tuple[str, ...]]  # edge_id -> file keys to fill, most valuable first; every edge has a key
    unpins: dict[str, tuple[str, ...]]  # edge_id -> held file keys to unpin first (refresh only)
    placed: dict[str, tuple[str, ...]]  # file key -> edges holding it once done (rendezvous order)
    left_out: dict[str, str]  # file key -> reason (F5)


def plan_files(files: Sequence[FileDemand], edges: Sequence[FileSpace], *, refresh: bool = False,
               max_replicas: int | None = None) -> FilePlacement:
    """Plan which edge fills which file (rules F1-F5)."""
    if max_replicas is not None and (isinstance(max_replicas, bool) or not isinstance(max_replicas, int)
                                     or max_replicas < 1):
        raise ValueError("max_replicas must be an integer >= 1")
    seen: set[str] = set()
    for f in files:
        if f.key in seen:
            raise ValueError(f"file {f.key!r} listed twice")
        seen.add(f.key)
        if not (isinstance(f.value, (int, float)) and math.isfinite(f.value) and f.value >= 0):
            raise ValueError(f"file {f.key!r}: value must be a finite number >= 0")
        if isinstance(f.size_bytes, bool) or not isinstance(f.size_bytes, int) or f.size_bytes < 0:
            raise ValueError(f"file {f.key!r}: size_bytes must be an integer >= 0")
    by_id: dict[str, FileSpace] = {}
    for e in edges:
        if e.edge_id in by_id:
            raise ValueError(f"edge {e.edge_id!r} listed twice")
        by_id[e.edge_id] = e
    ids = list(by_id)
    budget = {e.edge_id: max(0, e.budget_bytes) for e in edges}
    all_pinned = all(b == 0 for b in budget.values())
    fills: dict[str, list[str]] = {e: [] for e in ids}
    kept: dict[str, set[str]] = {e: set() for e in ids}
    placed: dict[str, tuple[str, ...]] = {}
    left_out: dict[str, str] = {}
    vmax = max((f.value for f in files), default=0.0)
    for f in sorted(files, key=lambda f: (-f.value, f.key)):
        want = target_replicas(f.value, vmax, len(ids), max_replicas)
        where: list[str] = []
        order = hrw_order(f.title, ids)
        for eid in order:  # F4: held copies first, in rendezvous order
            if len(where) >= want:
                break
            if f.key in by_id[eid].holds:
                if refresh:
                    if budget[eid] < f.size_bytes:
                        continue
                    budget[eid] -= f.size_bytes
                kept[eid].add(f.key)
                where.append(eid)
        for eid in order:
            if len(where) >= want:
                break
            if eid in where or f.key in by_id[eid].holds or budget[eid] < f.size_bytes:
                continue
            budget[eid] -= f.size_bytes
            fills[eid].append(f.key)
            where.append(eid)
        if where:
            placed[f.key] = tuple(eid for eid in order if eid in where)
        else:
            left_out[f.key] = ALL_SPACE_PINNED if all_pinned else NO_ROOM
    unpins = {eid: tuple(sorted(by_id[eid].holds - kept[eid])) if refresh else () for eid in ids}
    return FilePlacement({e: tuple(v) for e, v in fills.items()}, unpins, placed, left_out)
