"""Steering: rank the edges a client should play a title from. Pure: no IO, no clocks.

DESIGN.md (Steering): "Candidates are the healthy edges of that ISP, ranked so that one
title concentrates on the same edge of a cluster (rendezvous hashing with bounded load),
preferring edges that already hold the title; then edges of other ISPs as fallback;
never the origin unless configured."

Rules, in the order they decide:

1. Health (control/health.py). `up` and `suspect` edges are steerable, every `suspect`
   edge after every `up` edge of its section. `down`, `draining`, `admin_down` (and any
   state this module does not know) never appear among the candidates: they are listed in
   `Ranking.rejected` with their state as the reason.
2. Sections. The client's ISP's edges first, then the edges of every other ISP as the
   fallback. An unknown client ISP (None) gets the fallback ranking over all edges.
   `max_candidates` bounds the number of edges; the origin (only if `origin_url` is set)
   is appended after them, always last.
3. Within a section the order is: up before suspect; within the load bound before over
   it; holders of the title before non-holders; then rendezvous (highest random weight,
   Thaler & Ravishankar, "Using Name-Based Mappings to Increase Hit Rates", IEEE/ACM ToN
   1998) on (title, edge id), so one title concentrates on the same edge of a cluster and
   removing an edge only moves the titles whose first choice it was.
4. Bounded load (Mirrokni, Thorup & Zadimoghaddam, "Consistent Hashing with Bounded
   Loads", SODA 2018). `record()` counts each answer's first choice against that edge over
   a sliding window of `window_s`. With T the recent assignments of an ISP's steerable
   edges, W their summed weights and c = 1 + epsilon, an edge of weight w is over the
   bound when its recent count is >= ceil(c * (T + 1) * w / W): giving it this client too
   would take it past c times its weighted fair share. Such an edge is moved behind the
   others of its section (never dropped) and listed as "over-load-bound". The sum of the
   capacities is >= c * (T + 1) > T, so some edge of the ISP always has room, and (while
   the ISP's edges are all `up`: a suspect edge is never preferred to an up one, even an
   overloaded one) no edge ever ends above ceil(c * fair share) assignments per window.
5. The rendezvous hash (`hrw_score`) is shared with the placement planner so titles are
   pre-positioned exactly where steering sends clients first. It is deterministic across
   processes (blake2b of the title and of the edge id, combined by the splitmix64
   finalizer; never Python's salted `hash()`). Weights only shape the load bound, not the
   hash, so placement (which knows no weights) and steering agree.

`Ranking.rejected` explains what steering passed over, for content-miss vs health-miss
metrics: every edge whose state keeps it out ("down", "draining", "admin_down"), every
demoted edge ("suspect", "over-load-bound": these may still appear lower in the
candidates), and, when the client's ISP is known, every other healthy edge of another ISP
that did not make the list ("other-isp"). An edge appears there at most once.

Speed: edge and title hashes are memoized; the per-fleet index (edges grouped by ISP,
health split out) is reused while `rank()` is called with the very same tuple object, so
callers should keep one tuple of EdgeViews per fleet version. The fallback section is
only scored when the client's ISP cannot fill `max_candidates`.
"""
from __future__ import annotations

import collections
import hashlib
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from common.tokens import NO_ISP
from control.health import ADMIN_DOWN, DOWN, DRAINING, SUSPECT, UP

__all__ = [
    "EdgeView",
    "Candidate",
    "Ranking",
    "SteeringRanker",
    "hrw_score",
    "hrw_order",
    "ORIGIN_ID",
    "REASON_ISP_HOLDS_TITLE",
    "REASON_ISP_RENDEZVOUS",
    "REASON_FALLBACK",
    "REASON_ORIGIN",
    "REJECT_OVER_LOAD",
    "REJECT_OTHER_ISP",
]

ORIGIN_ID = "origin"
REASON_ISP_HOLDS_TITLE = "isp-holds-title"
REASON_ISP_RENDEZVOUS = "isp-rendezvous"
REASON_FALLBACK = "fallback-other-isp"
REASON_ORIGIN = "origin"
REJECT_OVER_LOAD = "over-load-bound"
REJECT_OTHER_ISP = "other-isp"
REJECT_SUSPECT: str = SUSPECT
_KNOWN_EXCLUDED: frozenset[str] = frozenset({DOWN, DRAINING, ADMIN_DOWN})

_MASK64 = (1 << 64) - 1
_HASH_CACHE_MAX = 1 << 16


@dataclass(frozen=True, slots=True)
class EdgeView:
    """What steering needs to know about one edge (built by the service from the registry)."""

    edge_id: str
    isp: str
    url: str
    state: str  # a control.health.HealthState (the simulator passes the same words as plain str)
    titles: frozenset[str] = frozenset()  # titles the edge reports holding
    weight: float = 1.0  # capacity weight for the fair share of the load bound


@dataclass(frozen=True, slots=True)
class Candidate:
    edge_id: str
    url: str
    isp: str
    reason: str  # "isp-holds-title" | "isp-rendezvous" | "fallback-other-isp" | "origin"


@dataclass(frozen=True, slots=True)
class Ranking:
    title: str
    isp: str | None  # the client's ISP, None if unknown
    candidates: tuple[Candidate, ...]
    # (edge_id, reason): "down" | "draining" | "admin_down" | "suspect" | "over-load-bound" | "other-isp"
    rejected: tuple[tuple[str, str], ...]
    content_miss: bool = False  # the first edge offered does not report holding the title
    health_miss: bool = False   # an edge of the client's ISP (any, if unknown) was passed over for health


# ------------------------------------------------------------------ rendezvous hash

_edge_hashes: dict[str, int] = {}
_title_hashes: dict[str, int] = {}


def _digest64(tag: bytes, text: str) -> int:
    return int.from_bytes(hashlib.blake2b(tag + text.encode(), digest_size=8).digest(), "big")


def _edge_hash(edge_id: str) -> int:
    h = _edge_hashes.get(edge_id)
    if h is None:
        if len(_edge_hashes) >= _HASH_CACHE_MAX:
            _edge_hashes.clear()
        h = _edge_hashes[edge_id] = _digest64(b"ocsim-hrw-edge/1\n", edge_id)
    return h


def _title_hash(title: str) -> int:
    h = _title_hashes.get(title)
    if h is None:
        if len(_title_hashes) >= _HASH_CACHE_MAX:
            _title_hashes.clear()
        h = _title_hashes[title] = _digest64(b"ocsim-hrw-title/1\n", title)
    return h


def _mix(x: int) -> int:
    """splitmix64's finalizer (Steele, Lea & Flood, OOPSLA 2014): a 64-bit bijection that
    makes the scores of one title over different edges look independent."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def hrw_score(title: str, edge_id: str) -> int:
    """The rendezvous weight of `edge_id` for `title` (higher wins); stable across processes."""
    return _mix(_title_hash(title) ^ _edge_hash(edge_id))


def hrw_order(title: str, edge_ids: Iterable[str]) -> list[str]:
    """`edge_ids` in rendezvous order for `title`, best first (ties: by edge id)."""
    th = _title_hash(title)
    return sorted(edge_ids, key=lambda e: (_MASK64 - _mix(th ^ _edge_hash(e)), e))


# ------------------------------------------------------------------ the ranker


_ORDER_CACHE_TITLES = 8192  # per group of edges
_ORDER_CACHE_GROUPS = 512


class _Entry:
    __slots__ = ("edge", "eid", "isp", "h", "up", "w", "titles")

    def __init__(self, edge: EdgeView) -> None:
        self.edge = edge
        self.eid = edge.edge_id
        self.isp = edge.isp
        self.h = _edge_hash(edge.edge_id)
        self.up = edge.state == UP
        self.titles = edge.titles
        w = edge.weight
        self.w = float(w) if isinstance(w, (int, float)) and math.isfinite(w) and w > 0 else 0.0


class _Section:
    """Some steerable edges, with their rendezvous order per title memoized.

    The memo is keyed by the edges' ids, not by the fleet version, so heartbeats that only
    change what edges hold or report keep it warm."""

    __slots__ = ("entries", "orders")

    def __init__(self, entries: list[_Entry], orders: dict[str, tuple[int, ...]]) -> None:
        self.entries = entries
        self.orders = orders

    def order(self, title: str) -> tuple[int, ...]:
        got = self.orders.get(title)
        if got is None:
            th = _title_hash(title)
            entries = self.entries
            got = tuple(sorted(range(len(entries)),
                               key=lambda i: (_MASK64 - _mix(th ^ entries[i].h), entries[i].eid)))
            if len(self.orders) >= _ORDER_CACHE_TITLES:
                self.orders.clear()
            self.orders[title] = got
        return got


class _Fleet:
    """The per-fleet-version index: steerable edges by ISP, and the health rejections."""

    __slots__ = ("home", "wsum", "by_isp", "everyone", "excluded", "suspect", "unhealthy_isps", "_others",
                 "_others_up", "_memo")

    def __init__(self, edges: Sequence[EdgeView], memo: dict[tuple[str, ...], dict[str, tuple[int, ...]]]) -> None:
        self._memo = memo
        self.by_isp: dict[str, list[_Entry]] = {}
        steerable: list[_Entry] = []
        excluded: list[tuple[str, str]] = []
        suspect: list[tuple[str, str]] = []
        seen: set[str] = set()
        unhealthy: set[str] = set()
        for edge in edges:
            if edge.edge_id in seen:
                continue  # the first view of an id wins
            seen.add(edge.edge_id)
            if edge.state != UP:
                unhealthy.add(edge.isp)
            if edge.state == UP or edge.state == SUSPECT:
                entry = _Entry(edge)
                self.by_isp.setdefault(edge.isp, []).append(entry)
                steerable.append(entry)
                if not entry.up:
                    suspect.append((edge.edge_id, REJECT_SUSPECT))
            else:
                excluded.append((edge.edge_id, edge.state if edge.state in _KNOWN_EXCLUDED else DOWN))
        self.wsum = {isp: sum(e.w for e in group) for isp, group in self.by_isp.items()}
        self.home = {isp: self._section(group) for isp, group in self.by_isp.items()}
        self.everyone = self._section(steerable)
        self.excluded = tuple(excluded)
        self.suspect = tuple(suspect)
        self.unhealthy_isps = frozenset(unhealthy)
        self._others: dict[str, _Section] = {}
        self._others_up: dict[str, tuple[_Entry, ...]] = {}

    def _section(self, entries: list[_Entry]) -> _Section:
        key = tuple(e.eid for e in entries)
        orders = self._memo.get(key)
        if orders is None:
            if len(self._memo) >= _ORDER_CACHE_GROUPS:
                self._memo.clear()
            orders = self._memo[key] = {}
        return _Section(entries, orders)

    def others(self, isp: str) -> _Section:
        """The fallback section of a client of `isp`: every steerable edge of another ISP."""
        got = self._others.get(isp)
        if got is None:
            got = self._others[isp] = self._section([e for e in self.everyone.entries if e.isp != isp])
        return got

    def others_up(self, isp: str) -> tuple[_Entry, ...]:
        got = self._others_up.get(isp)
        if got is None:
            got = self._others_up[isp] = tuple(e for e in self.everyone.entries if e.up and e.isp != isp)
        return got


class SteeringRanker:
    """Ranks edges for (title, client ISP); remembers recent first choices for the load bound."""

    def __init__(self, epsilon: float = 0.25, window_s: float = 10.0, max_candidates: int = 4,
                 origin_url: str | None = None) -> None:
        if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
            raise ValueError("epsilon must be a non-negative number")
        if not (isinstance(window_s, (int, float)) and math.isfinite(window_s) and window_s > 0):
            raise ValueError("window_s must be a positive number of seconds")
        if isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1:
            raise ValueError("max_candidates must be an integer >= 1")
        self.epsilon = float(epsilon)
        self.window_s = float(window_s)
        self.max_candidates = max_candidates
        self.origin_url = origin_url or None
        self._recent: collections.deque[tuple[float, str]] = collections.deque()
        self._loads: dict[str, int] = {}
        self._fleet_key: Sequence[EdgeView] | None = None
        self._fleet: _Fleet | None = None
        self._memo: dict[tuple[str, ...], dict[str, tuple[int, ...]]] = {}

    # ---------------------------------------------------------------- load window

    def record(self, ranking: Ranking, now: float) -> None:
        """Count `ranking`'s first choice toward its edge's load (sliding window of window_s)."""
        self._expire(now)
        if not ranking.candidates:
            return
        first = ranking.candidates[0]
        if first.reason == REASON_ORIGIN:
            return
        self._recent.append((now, first.edge_id))
        self._loads[first.edge_id] = self._loads.get(first.edge_id, 0) + 1

    def loads(self, now: float) -> dict[str, int]:
        """Recent first-choice counts per edge id (within the window ending at `now`)."""
        self._expire(now)
        return dict(self._loads)

    def _expire(self, now: float) -> None:
        recent = self._recent
        if not recent:
            return
        cutoff = now - self.window_s
        loads = self._loads
        while recent and recent[0][0] <= cutoff:
            _, eid = recent.popleft()
            n = loads[eid] - 1
            if n:
                loads[eid] = n
            else:
                del loads[eid]

    # ---------------------------------------------------------------- ranking

    def _index(self, edges: Sequence[EdgeView]) -> _Fleet:
        if edges is self._fleet_key and self._fleet is not None:
            return self._fleet
        fleet = _Fleet(edges, self._memo)
        if isinstance(edges, tuple):  # immutable: safe to reuse while the caller passes it again
            self._fleet_key, self._fleet = edges, fleet
        return fleet

    def rank(self, title: str, isp: str | None, edges: Sequence[EdgeView], now: float) -> Ranking:
        """The ranked candidates for a client of `isp` (None: unknown) playing `title`."""
        fleet = self._index(edges)
        self._expire(now)
        loads = self._loads
        factor: dict[str, float] = {}  # isp -> c * (T + 1) / W, computed on first need
        over_ids: list[str] = []
        c = 1.0 + self.epsilon

        def best(section: _Section, limit: int) -> list[_Entry]:
            """Rule 3: the `limit` best entries by (suspect, over bound, not holder, HRW)."""
            entries = section.entries
            order = section.order(title)
            picked: list[int] = []  # (class << 32) | HRW position
            class0 = 0
            for pos, i in enumerate(order):
                en = entries[i]
                cls = 0 if en.up else 4
                if loads and en.eid in loads:
                    f = factor.get(en.isp)
                    if f is None:
                        w_all = fleet.wsum[en.isp]
                        total = sum(loads.get(x.eid, 0) for x in fleet.by_isp[en.isp])
                        f = factor[en.isp] = c * (total + 1) / w_all if w_all > 0 else math.inf
                    if f != math.inf and loads[en.eid] >= math.ceil(f * en.w - 1e-9):
                        cls |= 2
                        over_ids.append(en.eid)
                if title not in en.titles:
                    cls |= 1
                picked.append((cls << 32) | pos)
                if cls == 0:
                    class0 += 1
                    if class0 == limit:
                        break  # nothing later can beat an up, in-bound holder earlier in HRW order
            picked.sort()
            return [entries[order[v & 0xFFFFFFFF]] for v in picked[:limit]]

        limit = self.max_candidates
        candidates: list[Candidate] = []
        first_holds: bool | None = None
        home = fleet.home.get(isp) if isp is not None else None
        if home is not None:
            for en in best(home, limit):
                edge = en.edge
                holds = title in en.titles
                first_holds = holds if first_holds is None else first_holds
                reason = REASON_ISP_HOLDS_TITLE if holds else REASON_ISP_RENDEZVOUS
                candidates.append(Candidate(edge.edge_id, edge.url, edge.isp, reason))
        room = limit - len(candidates)
        if room > 0:
            section = fleet.everyone if isp is None else fleet.others(isp)
            for en in best(section, room):
                edge = en.edge
                first_holds = (title in en.titles) if first_holds is None else first_holds
                candidates.append(Candidate(edge.edge_id, edge.url, edge.isp, REASON_FALLBACK))
        if self.origin_url:
            candidates.append(Candidate(ORIGIN_ID, self.origin_url, NO_ISP, REASON_ORIGIN))

        rejected = list(fleet.excluded)
        rejected.extend(fleet.suspect)
        over_set: set[str] = set()
        if over_ids:
            suspects = {eid for eid, _ in fleet.suspect}
            for eid in over_ids:
                if eid not in suspects and eid not in over_set:
                    over_set.add(eid)
                    rejected.append((eid, REJECT_OVER_LOAD))
        if isp is not None:
            chosen = {cand.edge_id for cand in candidates}
            for en in fleet.others_up(isp):
                if en.eid not in chosen and en.eid not in over_set:
                    rejected.append((en.eid, REJECT_OTHER_ISP))
        health_miss = isp in fleet.unhealthy_isps if isp is not None else bool(fleet.unhealthy_isps)
        return Ranking(title, isp, tuple(candidates), tuple(rejected),
                       content_miss=first_holds is False, health_miss=health_miss)
