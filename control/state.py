"""The control plane's configuration and the state its handlers share (built at startup).

Rules of this module: no IO and no handlers here; `ControlState` holds the pure cores
(fleet, steering, jobs, prefixes) and the in-memory play counts, and the lifecycle
(`control.lifecycle`) fills and flushes it.
"""
from __future__ import annotations

from common.eventsink import EventSink

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from common.content import Catalog, Title
from common.tokens import NO_ISP, Keyring
from common.wire import edge_key
from control.fleet import Fleet
from control.jobs import JobBook
from control.prefixes import PrefixTable
from control.steering import SteeringRanker
from control.store import AsyncStore
from control.topology import Topology


@dataclass(frozen=True, slots=True)
class ControlConfig:
    db_path: Path
    operator_token: str
    fleet_secret: bytes
    keyring: Keyring
    token_ttl_s: int = 3600
    topology: Topology = field(default_factory=Topology)
    origin_url: str | None = None
    catalog: Catalog | None = None  # from --catalog
    steer_to_origin: bool = False
    heartbeat_interval_s: float = 1.0
    flush_interval_s: float = 1.0
    plan_timeout_s: float = 120.0
    fill_bandwidth_bps: int = 100_000_000
    origin_wait_s: float = 10.0
    max_candidates: int = 4
    events: str = ""  # nats://... : publish steer.play and job.progress (common.eventsink)
    # the collector's read API: the dashboard's time series (control.pipeline_read), and what
    # pre-position jobs value files by (control.popularity)
    pipeline_url: str = ""
    popularity_window_s: float = 86_400.0  # how far back a job looks in the pipeline
    pin_headroom: float = 0.0  # share of each edge a job leaves unpinned (rule F1's headroom)

    def __post_init__(self) -> None:
        if not self.operator_token:
            raise ValueError("an operator token is required")
        if len(self.fleet_secret) < 16:
            raise ValueError("the fleet secret must be at least 16 bytes")
        if not 0.0 <= self.pin_headroom < 1.0:
            raise ValueError("the pin headroom must be in [0, 1)")
        if not 1.0 <= self.popularity_window_s <= 7 * 86_400.0:
            raise ValueError("the popularity window must be 1 s to 7 days")


class ControlState:
    """Everything the handlers share; built at startup."""

    def __init__(self, config: ControlConfig) -> None:
        self.config = config
        self.store: AsyncStore | None = None
        self.catalog = Catalog()
        self.prefixes = PrefixTable()
        for spec in config.topology.isps.values():
            for prefix in spec.prefixes:
                self.prefixes.add(prefix, spec.name)
        self.fleet = Fleet(config.heartbeat_interval_s)
        self.ranker = SteeringRanker(max_candidates=config.max_candidates,
                                     origin_url=config.origin_url if config.steer_to_origin else None)
        self.jobs = JobBook()
        self.plays: dict[tuple[str, str], int] = {}  # (isp or "-", title) -> plays, all time
        self.play_deltas: dict[tuple[str, str], int] = {}  # not yet in SQLite
        self.keys_text = config.keyring.format()
        self._edge_keys: dict[str, bytes] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.flush_lock = asyncio.Lock()

    def edge_key(self, edge_id: str) -> bytes:
        key = self._edge_keys.get(edge_id)
        if key is None:
            if len(self._edge_keys) > 10_000:
                self._edge_keys.clear()
            key = self._edge_keys[edge_id] = edge_key(self.config.fleet_secret, edge_id)
        return key

    def db(self) -> AsyncStore:
        assert self.store is not None, "store not open"
        return self.store

    def known_isps(self) -> set[str]:
        return set(self.config.topology.isps) | self.fleet.isps()

    def observed(self, isp: str, title_id: str) -> int:
        return self.plays.get((isp, title_id), 0)

    def top_titles(self, isp: str, n: int) -> list[Title]:
        """Top n by plays observed in `isp`, then by catalog popularity."""
        return sorted(self.catalog.titles.values(),
                      key=lambda t: (-self.observed(isp, t.id), -t.popularity, t.id))[:n]

    def count_play(self, isp: str | None, title_id: str) -> None:
        key = (isp or NO_ISP, title_id)
        self.plays[key] = self.plays.get(key, 0) + 1
        self.play_deltas[key] = self.play_deltas.get(key, 0) + 1



STATE = web.AppKey("control_state", ControlState)
EVENTS = web.AppKey("control_events", EventSink)
