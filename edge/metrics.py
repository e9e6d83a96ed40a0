"""The edge's counters and gauges, and the views of them the edge reports.

Rules of this module: it registers every `ocsim_edge_*` metric in one place, keeps the
request-rate sample the agent's heartbeat needs, and builds the `/admin/stats` and
heartbeat figures from the counters; it knows nothing about HTTP. Gauges read the store,
the coalescer and the RAM tier through callables given at construction, so nothing here
holds a reference it would have to keep in step.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.metrics import Counter, Registry
from edge.fill import FillMetrics

CACHE = ("cache",)
# A miss's class, as the counters and edge.request (common.events.CACHE_OUTCOMES) name it:
# cold (never here), evicted (here before), coalesced (joined a fill in flight), peer (its fill
# came from a peer edge), stale (a stale copy whose revalidation brought a new object).
MISS_CLASSES = ("cold", "evicted", "coalesced", "peer", "stale")
FILL = ("fill",)


@dataclass(slots=True)
class RateSample:
    at: float = field(default_factory=time.monotonic)
    requests: float = 0.0
    bytes: float = 0.0


@dataclass(frozen=True, slots=True)
class Rates:
    req_rate: float
    byte_rate: float


@dataclass(frozen=True, slots=True)
class Gauges:
    """What the gauges read, each a zero-argument callable."""

    used: Callable[[], float]
    capacity: Callable[[], float]
    objects: Callable[[], float]
    pinned: Callable[[], float]
    inflight: Callable[[], float]
    evictions: Callable[[], float]
    corrupt: Callable[[], float] = lambda: 0.0


class EdgeMetrics:
    """The counters of one edge, registered in `registry`."""

    def __init__(self, registry: Registry, gauges: Gauges) -> None:
        reg = registry
        self.hits = reg.counter("ocsim_edge_hits_total", "Content requests answered from the cache")
        self.misses = reg.counter("ocsim_edge_misses_total",
                                  "Content requests not in the cache, by class (" + ", ".join(MISS_CLASSES) + ")",
                                  ("class",))
        self.revalidated = reg.counter("ocsim_edge_revalidated_total",
                                       "Stale objects the upstream confirmed with a 304 (RFC 9111 4.3.4)")
        self.invalidated = reg.counter("ocsim_edge_invalidated_total",
                                       "Stored objects invalidated by an unsafe method (RFC 9111 4.4)")
        self.forwarded = reg.counter("ocsim_edge_forwarded_total",
                                     "Requests passed to the upstream uncached, by why (method, bypass, request)",
                                     ("why",))
        self.served = reg.counter("ocsim_edge_served_bytes_total", "Body bytes sent, by source (cache, fill)",
                                  ("source",))
        self.fill = FillMetrics(
            fills=reg.counter("ocsim_edge_fills_total", "Fills by source (peer, origin) and result",
                              ("source", "result")),
            errors=reg.counter("ocsim_edge_fill_errors_total", "Failed fills by reason", ("reason",)),
            filled_bytes=reg.counter("ocsim_edge_filled_bytes_total", "Bytes received by fills, by source",
                                     ("source",)))
        reg.gauge("ocsim_edge_disk_used_bytes", "Bytes held on disk (fills in flight included)", callback=gauges.used)
        reg.gauge("ocsim_edge_capacity_bytes", "Byte budget of the cache", callback=gauges.capacity)
        reg.gauge("ocsim_edge_objects", "Cached objects", callback=gauges.objects)
        reg.gauge("ocsim_edge_pinned_objects", "Pinned objects", callback=gauges.pinned)
        reg.gauge("ocsim_edge_fills_inflight", "Fills in flight", callback=gauges.inflight)
        # a count that only grows: a counter (rate() works on it), named as counters are
        reg.counter_reading("ocsim_edge_evictions_total", "Objects evicted since start", gauges.evictions)
        reg.gauge("ocsim_edge_corrupt_objects", "Objects purged since start because their checksum failed",
                  callback=gauges.corrupt)
        self._rate = RateSample()

    def hit_ratio(self) -> float:
        hits, misses = self.hits.total(), self.misses.total()
        return hits / (hits + misses) if hits + misses else 0.0

    def rates(self, now: float) -> Rates:
        """Requests and bytes per second since the previous call (the heartbeat's figures)."""
        requests = self.hits.total() + self.misses.total()
        sent = self.served.total()
        prev, self._rate = self._rate, RateSample(now, requests, sent)
        dt = max(now - prev.at, 1e-6)
        return Rates((requests - prev.requests) / dt, (sent - prev.bytes) / dt)

    def counts(self) -> dict[str, object]:
        """The counter half of `/admin/stats` (the caller adds store and config fields)."""
        fills = self.fill.fills
        by_source = {"peer": 0.0, "origin": 0.0}
        for (source, _result), n in fills.values.items():
            by_source[source] = by_source.get(source, 0.0) + n
        misses: Counter = self.misses
        return {
            "hits": int(self.hits.total()),
            # requests by miss class (what edge.request's `cache` says), and fills from the origin
            "misses": {**{c: int(misses.get((c,))) for c in MISS_CLASSES}, "origin": int(by_source["origin"])},
            "fills_by_source": {s: int(n) for s, n in by_source.items()},
            "hit_ratio": round(self.hit_ratio(), 4),
            "bytes_from_cache": int(self.served.get(CACHE)),
            "bytes_filled": int(self.served.get(FILL)),
            "bytes_fetched": int(self.fill.filled_bytes.total()),
            "fill_errors": int(self.fill.errors.total()),
            "fills": {f"{s}/{r}": int(n) for (s, r), n in sorted(fills.values.items())},
        }
