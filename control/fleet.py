"""The fleet registry: which edges exist, what they last told us, and whether to trust a message.

Each registration starts a fresh heartbeat sequence. A heartbeat is accepted only if it
names a registered edge (else 404, and the edge registers again), carries the `ts` of that
registration (`registration_ts`: a heartbeat captured before a re-registration is
refused after it, 409), its `seq` is greater
than the last accepted one of this registration, and its `ts` is within
MAX_CLOCK_SKEW_S of our clock (else 409): a captured message cannot be replayed later,
and a replayed registration (an older `ts` than the current one) cannot reset the
sequence. Signatures are checked by the caller before a message gets here.

Health (`control.health.EdgeHealth`) is fed from accepted heartbeats and operator
actions; steering reads `views(now)`. Time is passed in.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from common.errors import BadRequest, Conflict, NotFound
from common.wire import Heartbeat, Register
from control.health import DOWN, HEALTH_STATES, UP, EdgeHealth, HealthState, hold_partitioned
from control.steering import EdgeView
from common.ids import check_edge_id, is_isp

URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?(?:/[\x21-\x7e]*)?\Z")
MAX_CLOCK_SKEW_S = 30.0
MAX_TITLES = 100_000


class StaleMessage(Conflict):
    """A replayed, reordered or badly clocked message (409)."""


@dataclass(slots=True)
class EdgeRecord:
    edge_id: str
    isp: str
    url: str
    capacity_bytes: int
    registered_at: float
    register_ts: float
    health: EdgeHealth
    policy: str = ""
    version: str = ""
    last_seq: int = -1
    used_bytes: int = 0
    pinned_bytes: int = 0
    objects: int = 0
    req_rate: float = 0.0
    byte_rate: float = 0.0
    hit_ratio: float = 0.0
    titles: frozenset[str] = field(default_factory=frozenset)
    running_plans: frozenset[str] = field(default_factory=frozenset)  # plans the edge says it is running
    heartbeats: int = 0

    @property
    def free_bytes(self) -> int:
        return max(0, self.capacity_bytes - self.used_bytes)

    def to_json(self, now: float) -> dict[str, Any]:
        last = self.health.last_heartbeat
        return {
            "id": self.edge_id, "isp": self.isp, "url": self.url, "state": self.health.state_at(now),
            "admin_down": self.health.admin_down,
            "req_rate": self.req_rate, "byte_rate": self.byte_rate,
            "used_bytes": self.used_bytes, "pinned_bytes": self.pinned_bytes, "capacity_bytes": self.capacity_bytes,
            "hit_ratio": self.hit_ratio, "objects": self.objects, "titles": len(self.titles),
            "last_heartbeat_age_s": round(now - last, 3) if last is not None else None,
            "heartbeats": self.heartbeats, "policy": self.policy, "version": self.version,
        }


class Fleet:
    def __init__(self, interval: float = 1.0, admin_down: dict[str, bool] | None = None) -> None:
        self.interval = interval
        self.edges: dict[str, EdgeRecord] = {}
        self.admin_down: dict[str, bool] = dict(admin_down or {})
        self._views_key: tuple[int, tuple[str, ...]] | None = None
        self._views: tuple[EdgeView, ...] = ()
        self.version = 0  # bumps whenever what steering sees (other than health) changes

    def _check_common(self, edge_id: str, isp: str, url: str, ts: float, now: float) -> None:
        check_edge_id(edge_id)
        if not is_isp(isp):
            raise BadRequest("invalid isp name")
        if not URL_RE.match(url):
            raise BadRequest("invalid edge url")
        if abs(ts - now) > MAX_CLOCK_SKEW_S:
            raise StaleMessage(f"message ts is {ts - now:+.1f}s off (max {MAX_CLOCK_SKEW_S:g}s)")

    def register(self, msg: Register, now: float) -> EdgeRecord:
        self._check_common(msg.edge_id, msg.isp, msg.url, msg.ts, now)
        if msg.capacity_bytes < 0:
            raise BadRequest("capacity_bytes must be >= 0")
        old = self.edges.get(msg.edge_id)
        if old is not None and msg.ts <= old.register_ts:
            raise StaleMessage("registration is not newer than the current one")
        health = EdgeHealth(self.interval)
        health.on_admin(self.admin_down.get(msg.edge_id, False))
        health.on_heartbeat(now, UP)  # registering is a sign of life
        rec = EdgeRecord(msg.edge_id, msg.isp, msg.url, msg.capacity_bytes, now, msg.ts, health,
                         msg.policy[:64], msg.version[:64])
        if old is not None:  # keep what we knew about its content until the first heartbeat
            rec.titles, rec.used_bytes, rec.objects = old.titles, old.used_bytes, old.objects
            rec.pinned_bytes = old.pinned_bytes
        self.edges[msg.edge_id] = rec
        self.version += 1
        return rec

    def heartbeat(self, msg: Heartbeat, now: float) -> EdgeRecord:
        rec = self.edges.get(msg.edge_id)
        if rec is None:
            raise NotFound("unknown edge; register first")
        self._check_common(msg.edge_id, msg.isp, msg.url, msg.ts, now)
        if msg.registration_ts != rec.register_ts:  # a heartbeat of an earlier registration (replay)
            raise StaleMessage("heartbeat belongs to another registration")
        if msg.seq <= rec.last_seq:
            raise StaleMessage(f"heartbeat seq {msg.seq} <= last seen {rec.last_seq}")
        if len(msg.titles) > MAX_TITLES:
            raise BadRequest("too many titles")
        if min(msg.capacity_bytes, msg.used_bytes, msg.objects, msg.pinned_bytes) < 0:
            raise BadRequest("negative sizes")
        rec.last_seq = msg.seq
        titles = frozenset(msg.titles)
        if (rec.isp, rec.url, rec.titles) != (msg.isp, msg.url, titles):
            self.version += 1
        rec.isp, rec.url = msg.isp, msg.url
        rec.capacity_bytes, rec.used_bytes, rec.objects = msg.capacity_bytes, msg.used_bytes, msg.objects
        rec.pinned_bytes = min(msg.pinned_bytes, msg.capacity_bytes)
        rec.req_rate, rec.byte_rate, rec.hit_ratio = msg.req_rate, msg.byte_rate, msg.hit_ratio
        rec.titles = titles
        rec.running_plans = frozenset(f.plan_id for f in msg.fills if f.state == "running")
        rec.heartbeats += 1
        rec.health.on_heartbeat(now, msg.state)
        return rec

    def get(self, edge_id: str) -> EdgeRecord:
        rec = self.edges.get(edge_id)
        if rec is None:
            raise NotFound(f"unknown edge {edge_id[:64]}")
        return rec

    def set_admin(self, edge_id: str, down: bool) -> EdgeRecord:
        rec = self.get(edge_id)
        rec.health.on_admin(down)
        self.admin_down[edge_id] = down
        return rec

    def state(self, edge_id: str, now: float) -> HealthState:
        rec = self.edges.get(edge_id)
        return rec.health.state_at(now) if rec is not None else DOWN

    def views(self, now: float) -> tuple[EdgeView, ...]:
        """What steering sees at `now`; the very same tuple while nothing changed, so the
        ranker can reuse its per-fleet index."""
        states = self._steering_states(now)
        key = (self.version, states)
        if key != self._views_key:
            self._views_key = key
            self._views = tuple(EdgeView(r.edge_id, r.isp, r.url, st, r.titles)
                                for r, st in zip(self.edges.values(), states))
        return self._views

    def _steering_states(self, now: float) -> tuple[HealthState, ...]:
        """Each edge's health, with a whole ISP gone silent at once held (health.py Rule 5)."""
        recs = list(self.edges.values())
        states = [r.health.state_at(now) for r in recs]
        by_isp: dict[str, list[int]] = {}
        for i, r in enumerate(recs):
            by_isp.setdefault(r.isp, []).append(i)
        for idx in by_isp.values():
            if all(states[i] is not DOWN for i in idx):
                continue
            held = hold_partitioned([(states[i], recs[i].health.last_heartbeat) for i in idx], now)
            for i, st in zip(idx, held):
                states[i] = st
        return tuple(states)

    def isps(self) -> set[str]:
        return {r.isp for r in self.edges.values()}

    def counts_by_state(self, now: float) -> dict[HealthState, int]:
        out = {s: 0 for s in HEALTH_STATES}
        for r in self.edges.values():
            out[r.health.state_at(now)] += 1
        return out

    def to_json(self, now: float) -> list[dict[str, Any]]:
        return [r.to_json(now) for r in sorted(self.edges.values(), key=lambda r: (r.isp, r.edge_id))]
