"""The edge's HTTP front: a shared HTTP cache (RFC 9111) for any origin, operator endpoints, stats.

A GET or HEAD goes: cache key (`_cache_key`: a content path gets the token check when a
keyring is configured and `common.ids.parse_content_key`, a typed `CacheKey`: the canonical
path, no token, no query, with its title; any other path is keyed by its raw target) ->
its Vary variant (`edge.httpcache.VaryMemory`) -> the store's index -> RFC 9111 freshness
(a fresh hit is one compare against `HitView.fresh.fresh_until`; a request with its own
directives or a stale object is judged in full by `edge.rfc9111.judge`: serve, serve stale
and refresh behind (RFC 5861), or revalidate through the coalescer, one conditional request
for all). Other methods, requests with credentials and request `no-store` are forwarded
(`_forward`), never stored; an unsafe method's non-error answer invalidates (RFC 9111 4.4).
A hit is answered from disk (`edge.hitpath.HitSender`, sendfile) or
from the RAM tier for small objects (a plain keep-alive GET of a RAM object is answered
below aiohttp by the fast lane, `edge.hitpath.FastLane` + `EdgeNode._fast_get`, with the
same headers and counters; `EdgeConfig.fast_lane`, `--no-fast-lane`, turns it off); a miss
joins the one fill in flight for the key (`edge.fill.FillCoalescer`) and streams from it.
Range and conditionals are decided by `common.selection.select_response` (the origin's
too) on both paths, against the length and ETag the origin announced. Every content
response carries `X-Cache` and an RFC 9211 `Cache-Status`, and answers CORS as the origin
does (`common.cors`: preflights by a middleware, the headers on every content answer; a
hit's are part of its cached header view, so the fast lane sends them too).

Rules of this module: it wires the parts and holds the handlers. Counters live in
`edge.metrics`, token verdicts are remembered by `common.tokens.TokenVerdicts`, and
every use of aiohttp's internals (the fast lane, sendfile accounting, the raw response
head) is in `edge.hitpath`.

Operator endpoints need `Authorization: Bearer <operator token>` (401 without, 403 when
wrong): `POST /admin/purge {"path"} | {"title"}`, `POST /admin/pin {"path"}`,
`POST /admin/unpin {"path"}`, `GET /admin/stats`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from bisect import bisect_left as _bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from common.cors import CONTENT_PREFIXES, cors_headers, install_cors
from common.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound, OcsimError, UriTooLong
from common.events import EdgeEvict, EdgeFill, EdgeRequest
from common.eventsink import make_sink, ref as event_ref
from common.http_input import read_json_object, require_bearer
from common.ids import CacheKey, check_title_id, parse_content_key, parse_content_path
from common.selection import FIELDS as _CONDITIONAL
from common.selection import Outcome, Selection, from_headers, select_response
from common.service import BYTES, HEALTH, LATENCY, REGISTRY, REQUESTS, create_app, json_error
from common.tokens import Keyring, TokenVerdict, TokenVerdicts, split_token_path
from edge import rfc9111
from edge.fill import Fill, FillCoalescer, FillState
from edge.httpcache import (ALLOWED_METHODS, FORWARDED_METHODS, HOP_BY_HOP, NOT_SERVED, Freshness, VaryMemory,
                            forwarded_request_headers, freshness, has_own_directives, relayed_headers)
from edge.hitpath import (
    MAX_SESSION_LEN, FastAnswer, FastHead, HitSender, HotTier, abort_response, fast_head, install_fast_lane,
)
from edge.metrics import CACHE, FILL, EdgeMetrics, Gauges
from edge.upstream import AiohttpUpstream
from edge.policy import make_policy
from edge.store import FILL_DIGEST_HEADER, DiskStore, Entry, ObjectMeta

if TYPE_CHECKING:
    from edge.agent import EdgeAgent, EdgeStats

log = logging.getLogger("ocsim.edge")
_perf_counter = time.perf_counter
_time = time.time

ADMIN_BODY_BYTES = 16 * 1024  # an admin body is one path or title
PURGE_FIELDS = frozenset({"path", "title"})
PIN_FIELDS = frozenset({"path"})
HOT_MAX_OBJECT = 64 * 1024  # playlists and other small objects live in RAM too
SESSION_HEADER = "X-Ocsim-Session"  # a player's play id: joins edge.request to steer.play
# what the content handler learns on the way, for its edge.request event
_KEY = web.RequestKey("ocsim_key", str)
_OUTCOME = web.RequestKey("ocsim_outcome", str)
_SIZE = web.RequestKey("ocsim_size", int)
_TTFB = web.RequestKey("ocsim_ttfb", float)
_T0 = web.RequestKey("ocsim_t0", float)
_REF_FIELDS = ("path", "title", "rendition", "segment")  # edge.request's fields a path decides
_CORS = cors_headers()
_DISCONNECTS = (ConnectionResetError, BrokenPipeError, aiohttp.ClientConnectionResetError)
MAX_TARGET = 2048  # a request target longer than this is refused (414)
RESERVED_PREFIXES = ("/admin/", "/healthz", "/metrics")  # the edge's own: never forwarded
FORWARD_BODY_MAX = 1024 * 1024  # a forwarded request body (aiohttp's client_max_size says 413 beyond)
_PASS_SKIP = HOP_BY_HOP | frozenset({"host", "content-length", "expect"})


@dataclass(slots=True)
class HitView:
    """A hit's answer for one metadata version of an entry, built once (`EdgeNode._hit_view`).

    The fast lane reads plain fields (no property, no method call): the length, when it
    stops being fresh, what its Age is made of, and the last whole response head it built
    (`lane_head`, for the Age and the Date second it was built for)."""

    meta: ObjectMeta
    headers: dict[str, str]  # the hit's headers without Age
    head: bytes | None  # the fast lane's response head up to Age, or None if it cannot have one
    fresh: Freshness
    length: int = 0
    fresh_until: float = 0.0
    initial_age: float = 0.0
    response_time: float = 0.0
    lane_age: int = -1
    lane_sec: int = -1
    lane_head: bytes = b""


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    edge_id: str
    isp: str
    upstream: str
    cache_dir: str
    capacity: int
    operator_token: str
    policy: str
    peers: tuple[str, ...] = ()
    fill_timeout: float = 10.0
    hot_bytes: int = 64 * 1024 * 1024
    control: str = ""
    edge_key: bytes = b""
    public_url: str = ""
    heartbeat_interval: float = 1.0
    max_open_files: int = 512
    fast_lane: bool = True  # plain GETs of RAM objects answered below aiohttp (edge.hitpath.FastLane)
    events: str = ""  # nats://... : publish edge.request / edge.fill / edge.evict (common.eventsink)
    scrub_bytes_per_s: int = 8 * 1024 * 1024  # background re-verification of objects on disk; 0 = off
    scrub_interval_s: float = 600.0  # from one scrub pass's start to the next's; 0 = back to back


class ScrubPacer:
    """When the scrubber may read (pure, time injected): always in the middle of a pass; a new
    pass only once `interval` seconds have gone by since the last one started."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.started: float | None = None

    def may_read(self, in_pass: bool, now: float) -> bool:
        if in_pass:
            return True
        if self.started is not None and now - self.started < self.interval:
            return False
        self.started = now
        return True


def miss_class(klass: str, joined: bool, source: str) -> str:
    """The class of a miss once its fill knows its source: a miss that started a fill which a
    peer edge answered is a `peer` miss (no origin bytes), whatever made it a miss; one that
    joined a fill in flight stays `coalesced`; otherwise `klass` (cold or evicted). A stale
    object that its revalidation replaced is classed where that happens (`_revalidate`:
    `stale`), never here; a stale object served (RFC 5861) is a hit."""
    if not joined and source == "peer":
        return "peer"
    return klass


def _only_if_cached(cache_control: str | None) -> bool:
    if not cache_control:
        return False
    return any(d.strip().lower() == "only-if-cached" for d in cache_control.split(","))


class EdgeNode:
    """One edge: store, fills, handlers, counters, and (optionally) the agent."""

    def __init__(self, config: EdgeConfig, keyring: Keyring | None) -> None:
        self.config = config
        self.keyring = keyring
        self.cache_status = f"ocsim-{config.edge_id}"
        self.hot = HotTier(config.hot_bytes, max_object_bytes=HOT_MAX_OBJECT) if config.hot_bytes > 0 else None
        self.store = DiskStore(config.cache_dir, make_policy(config.policy, config.capacity),
                               max_open_files=config.max_open_files, on_evict=self._dropped)
        self.sender = HitSender()
        self.app = create_app("edge")
        self.metrics = EdgeMetrics(self.app[REGISTRY], Gauges(
            used=lambda: float(self.store.used), capacity=lambda: float(self.store.capacity),
            objects=lambda: float(len(self.store.index)), pinned=lambda: float(self.store.pinned_count()),
            inflight=lambda: float(len(self.coalescer.inflight)), evictions=lambda: float(self.store.evictions),
            corrupt=lambda: float(self.store.corrupt)))
        self.upstream = AiohttpUpstream(read_timeout=config.fill_timeout)
        self.vary = VaryMemory()
        self.coalescer = FillCoalescer(
            self.store, self.upstream, config.upstream, peers=list(config.peers),
            keyring=lambda: self.keyring, isp=config.isp, fill_timeout=config.fill_timeout,
            metrics=self.metrics.fill, on_stored=self._stored,
            on_done=self._fill_done if config.events else None, vary=self.vary)
        # Events (DESIGN "Events"): emit is a list extend; without --events a NullSink.
        self.events = make_sink(config.events, config.edge_id, self.app[REGISTRY])
        # edge.request goes straight into a flat buffer (None: events off); the edge and ISP
        # are the frames' constants, so a row starts at the path's fields (one tuple per path)
        where = {"edge": config.edge_id, "isp": config.isp}
        self._record = (self.events.recorder(EdgeRequest, where, groups=(_REF_FIELDS,))
                        if self.events.enabled else None)
        # the fast lane's hits, a buffer of their own: status, cache and object size are
        # the hit's (the body is the whole object), its duration is its time to first byte,
        # so a row is (time, path fields, bytes, ttfb, session), extended inline
        lane = (self.events.lane(EdgeRequest, {**where, "status": 200, "cache": "hit"}, groups=(_REF_FIELDS,),
                                 same_as={"object_bytes": "bytes", "duration_s": "ttfb_s"})
                if self.events.enabled else None)
        self._hit_buf: Any = lane.buf if lane is not None else None
        self._hit_limit = lane.limit if lane is not None else 0
        self._hit_drop = lane.drop if lane is not None else (lambda: None)
        self._event_refs: dict[str, tuple[Any, ...]] = {}
        self.agent: EdgeAgent | None = None
        self._agent_task: asyncio.Task[None] | None = None
        self._scrubber: asyncio.Task[None] | None = None
        self.public_url = config.public_url
        self._hit_status = f"{self.cache_status}; hit"
        self._verdicts = TokenVerdicts()
        self._warming: dict[CacheKey, asyncio.Task[None]] = {}  # RAM-tier loads in flight, strongly held
        self._fast_head = FastHead()
        self.fast_lane = config.fast_lane
        app = self.app
        self._http_requests, self._http_bytes, self._http_latency = app[REQUESTS], app[BYTES], app[LATENCY]
        self._fast_labels: tuple[str, str, str] = ("", "GET", "200")
        self._fast_route: tuple[str] = ("",)
        # what the fast lane touches, bound once (none of these objects is ever replaced)
        self._hot_get = self.hot.get if self.hot is not None else (lambda _key: None)
        self._by_text = self.store.by_text
        self._vary_paths = self.vary.paths
        self._policy_lookup = self.store.policy.lookup
        self._hits_values = self.metrics.hits.values
        self._served_values = self.metrics.served.values
        self._reqs_values = self._http_requests.values
        self._bytes_values = self._http_bytes.values
        self._latency_buckets = self._http_latency.buckets
        self._latency_series: tuple[list[int], list[float]] = ([], [0.0, 0.0])  # start() names the route

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> web.Application:
        await self.events.start()
        await self.store.open()
        self.upstream.start()
        if self.config.scrub_bytes_per_s > 0:
            self._scrubber = asyncio.create_task(self._scrub(), name="scrubber")
        app = self.app
        app[HEALTH].append(self._health)
        app.router.add_post("/admin/purge", self.purge)
        app.router.add_post("/admin/pin", self.pin)
        app.router.add_post("/admin/unpin", self.unpin)
        app.router.add_get("/admin/stats", self.stats)
        route = app.router.add_get("/{tail:.*}", self.content)
        app.router.add_route("*", "/{tail:.*}", self.content)  # other methods: forwarded, never stored
        install_cors(app, CONTENT_PREFIXES)  # preflights and the headers of every content answer
        # what common.service's middleware would count for a content hit
        self._fast_route = (route.resource.canonical if route.resource is not None else "unmatched",)
        self._fast_labels = (self._fast_route[0], "GET", "200")
        self._latency_series = self._http_latency.series_of(self._fast_route)
        # The lane's label tuple is the key those counters hold (a dict lookup with the very
        # key object skips comparing the tuple's items): put in first, at 0, so it is ours.
        for values in (self._reqs_values, self._bytes_values):
            values.setdefault(self._fast_labels, 0.0)
        if self.fast_lane and self.hot is not None:
            install_fast_lane(app, self._fast_get)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    def on_listening(self, url: str) -> None:
        """Called once the port is bound: now the agent can say where we are."""
        self.public_url = self.config.public_url or url
        if self.config.control:
            self._agent_task = asyncio.ensure_future(self._start_agent())

    async def _start_agent(self) -> None:
        from edge.agent import EdgeAgent  # only edges with a control plane need it

        self.agent = EdgeAgent(
            self.config.edge_id, self.config.isp, self.public_url, self.config.control, self.config.edge_key,
            stats=self.edge_stats, fill_object=self.coalescer.fill_object, pin=self._pin_now,
            unpin=self._unpin_now, fill_from=self.coalescer.fill_object, on_token_keys=self._set_token_keys, heartbeat_interval=self.config.heartbeat_interval,
            policy=self.config.policy)
        await self.agent.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._agent_task is not None:
            await asyncio.gather(self._agent_task, return_exceptions=True)
        if self.agent is not None:
            await self.agent.drain()

    async def _scrub(self) -> None:
        """Re-verify the objects on disk at a bounded rate (DiskStore.scrub), one pass over the
        cache per scrub interval: a small working set is not re-read over and over (it was 6-16 %
        of a busy edge's CPU), and hot objects are verified anyway when the RAM tier loads them."""
        pacer = ScrubPacer(self.config.scrub_interval_s)
        while True:
            await asyncio.sleep(1.0)
            if not pacer.may_read(self.store.scrub_in_pass, time.monotonic()):
                continue
            try:
                await self.store.scrub(self.config.scrub_bytes_per_s)
            except OSError as exc:
                log.warning("scrub failed", extra={"fields": {"error": str(exc)}})

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._scrubber is not None:
            self._scrubber.cancel()
            await asyncio.gather(self._scrubber, return_exceptions=True)
        if self._warming:
            await asyncio.gather(*self._warming.values(), return_exceptions=True)
        if self.agent is not None:
            await self.agent.stop()
        await self.coalescer.close()
        await self.store.close()
        await self.upstream.close()
        await self.events.close()

    # -- callables for the agent ---------------------------------------------------------

    def edge_stats(self) -> EdgeStats:
        from edge.agent import EdgeStats

        rates = self.metrics.rates(time.monotonic())
        return EdgeStats(capacity_bytes=self.store.capacity, used_bytes=self.store.used,
                         objects=len(self.store.index), req_rate=rates.req_rate,
                         byte_rate=rates.byte_rate, hit_ratio=self.metrics.hit_ratio(),
                         titles=self.store.titles(), pinned_bytes=self.store.pinned_bytes())

    def _pin_now(self, path: str) -> bool:
        try:
            key = parse_content_key(path)
        except OcsimError:
            return False
        return self.store.set_pinned(key, True)

    def _unpin_now(self, path: str) -> bool:
        try:
            key = parse_content_key(path)
        except OcsimError:
            return False
        return self.store.set_pinned(key, False)

    def _set_token_keys(self, text: str) -> None:
        """The control plane's keyring replaces ours; ValueError (kept by the agent) if unusable."""
        self.keyring = Keyring.parse(text)

    # -- helpers ---------------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        return {"id": self.config.edge_id, "isp": self.config.isp, "used_bytes": self.store.used,
                "capacity_bytes": self.store.capacity, "objects": len(self.store.index)}

    def _dropped(self, key: CacheKey, entry: Entry, reason: str) -> None:
        if self.hot is not None:
            self.hot.discard(key.text)
        if self.events.enabled:
            cfg = self.config
            self.events.emit(EdgeEvict(cfg.edge_id, cfg.isp, key.text, key.title, entry.meta.length, reason))

    def _fill_done(self, fill: Fill, result: str) -> None:
        cfg = self.config
        self.events.emit(EdgeFill(cfg.edge_id, cfg.isp, fill.key.text, fill.key.title, fill.source or "origin",
                                  fill.received, time.monotonic() - fill.started, result))

    def _stored(self, key: CacheKey, fill: Fill) -> None:
        if self.hot is not None and fill.received <= HOT_MAX_OBJECT:
            self.hot.put(key.text, fill.body())

    def _error(self, status: int, reason: str, detail: str = "fwd=uri-miss",
               headers: dict[str, str] | None = None) -> web.Response:
        h = {"X-Cache": "MISS", "Cache-Status": f"{self.cache_status}; {detail}", "Cache-Control": "no-store"}
        h.update(headers or {})
        return json_error(status, reason, h)

    @staticmethod
    def _object_headers(meta: ObjectMeta) -> dict[str, str]:
        """The stored response's fields as a hit or a miss sends them (Age, Date and framing
        are the edge's own); a sidecar without stored fields gets the ones it kept."""
        if meta.headers:
            h = {k: v for k, v in meta.headers.items() if k.lower() not in NOT_SERVED}
            names = {k.lower() for k in h}
            if "etag" not in names:
                h["ETag"] = meta.etag  # the edge's own validator (a strong one over key and length)
            if "content-type" not in names:
                h["Content-Type"] = meta.content_type
            h["Accept-Ranges"] = "bytes"
            return h
        h = {"ETag": meta.etag, "Content-Type": meta.content_type, "Accept-Ranges": "bytes"}
        if meta.cache_control:
            h["Cache-Control"] = meta.cache_control
        if meta.last_modified:
            h["Last-Modified"] = meta.last_modified
        return h

    @staticmethod
    def _freshness(meta: ObjectMeta) -> Freshness:
        if meta.headers:
            return freshness(meta.headers, status=200, request_time=meta.request_time or meta.stored_at,
                             response_time=meta.stored_at)
        legacy = {"Cache-Control": meta.cache_control, "Last-Modified": meta.last_modified}
        return freshness({k: v for k, v in legacy.items() if v}, status=200, request_time=meta.stored_at,
                         response_time=meta.stored_at)

    def _hit_view(self, entry: Entry) -> HitView:
        """A hit's headers and freshness for `entry`, built once per metadata version."""
        view = entry.view
        meta = entry.meta
        if view is not None and view.meta is meta:
            return view  # type: ignore[no-any-return]
        h = self._object_headers(meta)
        h["X-Cache"] = "HIT"
        h["Cache-Status"] = self._hit_status
        if meta.digest is not None:
            h[FILL_DIGEST_HEADER] = meta.digest  # of the whole object; a peer's fill checks it
        h.update(_CORS)  # in the view, so the fast lane's ready-made head carries it too
        head = fast_head(h, meta.length) if meta.length <= HOT_MAX_OBJECT else None
        fresh = self._freshness(meta)
        view = entry.view = HitView(meta, h, head, fresh, meta.length, fresh.fresh_until, fresh.initial_age,
                                    fresh.stored.response_time)
        return view

    def _fast_get(self, target: str, session: str | None = None) -> FastAnswer | None:
        """The fast lane's question (edge.hitpath.FastLane): the whole answer to a plain GET
        of `target` when it is a valid, authorized RAM hit, else None and the request goes
        the normal way (which handles every other case and every error). Counted exactly
        like the normal path counts a hit, HTTP metrics included.

        This runs once per small hit, so it is written for the interpreter: the objects it
        touches are bound once (`_bind_lane`), it reads plain fields, and the finished head
        is reused while its Age and Date stay the same (`HitView.lane_head`)."""
        t0 = _perf_counter()
        token, path = split_token_path(target) if target.startswith("/t/") else (None, target)
        # The RAM tier first: its keys are cache keys' texts (a plain key's text is its path;
        # a Vary variant's never equals a request path), so a key found there is a valid
        # path, and a request the lane cannot answer costs one dict lookup here. Both
        # lookups take the path string as it is: no CacheKey is built on this path.
        data = self._hot_get(path)
        if data is None:
            return None
        now = _time()
        if token is not None or path.startswith("/content/"):  # the content rules (_cache_key)
            ring = self.keyring
            if token is not None and not path.startswith("/content/"):
                return None
            if ring is not None and self._verdicts.check(ring, token, path, now) is not TokenVerdict.OK:
                return None
        entry = self._by_text.get(path)
        if entry is None:
            return None
        if self._vary_paths and path in self._vary_paths:
            return None  # the path has variants now (RFC 9111 4.1): the full path selects one
        view = entry.view
        if view is None or view.meta is not entry.meta:
            view = self._hit_view(entry)
        head = view.head
        # RFC 9111 4.2: fresh without asking anyone (the lane takes no request with
        # directives of its own); a stale or no-cache object goes the normal way
        n = len(data)
        if head is None or n != view.length or now >= view.fresh_until:
            return None
        self._policy_lookup(path, now)  # what store.lookup records for every request (path == key.text)
        age = int(view.initial_age + now - view.response_time)  # RFC 9111 4.2.3, as Freshness.age
        sec = int(now)
        if age != view.lane_age or sec != view.lane_sec:
            view.lane_head = self._fast_head.finish(head, age if age > 0 else 0, now)
            view.lane_age, view.lane_sec = age, sec
        # the four counters a hit moves (hits, served cache bytes, HTTP requests and bytes)
        # and the latency histogram, as Counter.inc and Histogram.observe do them, without
        # five calls on the hottest path there is
        hits = self._hits_values
        hits[()] = hits.get((), 0.0) + 1.0
        served = self._served_values
        served[CACHE] = served.get(CACHE, 0.0) + n
        labels = self._fast_labels
        reqs = self._reqs_values
        reqs[labels] = reqs.get(labels, 0.0) + 1.0
        sent = self._bytes_values
        sent[labels] = sent.get(labels, 0.0) + n
        took = _perf_counter() - t0
        counts, sums = self._latency_series
        counts[_bisect_left(self._latency_buckets, took)] += 1
        sums[0] += took
        sums[1] += 1
        buf = self._hit_buf
        if buf is not None:
            if len(buf) < self._hit_limit:
                buf.extend((now, self._event_refs.get(path) or self._event_ref(path), n, took, session))
            else:
                self._hit_drop()
        return view.lane_head, data

    def _event_ref(self, key: str) -> tuple[Any, ...]:
        """edge.request's fields of a path (path, title, rendition, segment) as an event row
        holds them (`common.eventsink.ref`), parsed once and remembered, so an event costs
        one tuple and one list extend, and a frame sends the path once."""
        try:
            r = parse_content_path(key)
            ref = event_ref((r.path, r.title, r.rendition, r.index))
        except OcsimError:
            ref = event_ref((key[:256], None, None, None))
        if len(self._event_refs) < 100_000:
            self._event_refs[key] = ref
        return ref

    # -- content ------------------------------------------------------------------------------

    async def content(self, request: web.Request) -> web.StreamResponse:
        record = self._record
        if record is None:
            return await self._content(request)
        t0 = request[_T0] = time.perf_counter()
        resp = await self._content(request)
        took = time.perf_counter() - t0
        now = time.time()  # the event happened when the answer was done
        sent = resp.body_length if resp.prepared else (resp.content_length or 0)
        outcome = request.get(_OUTCOME, "none")  # what the counters counted, whatever the status
        ttfb = request.get(_TTFB, took)
        session = request.headers.get(SESSION_HEADER)
        key = request.get(_KEY, request.path)
        ref = self._event_refs.get(key) or self._event_ref(key)
        record((now, ref, resp.status, sent, request.get(_SIZE), outcome, ttfb, took,
                session[:MAX_SESSION_LEN] if session else None))
        return resp

    def _cache_key(self, request: web.Request) -> CacheKey:
        """The cache key of a GET/HEAD (or the target of a forwarded request).

        Content paths (`/content/...`, or anything behind `/t/{token}`) keep their rules:
        the token when a keyring is set, the strict path grammar, no query in the key.
        Any other path is an origin's own: its target URI, query included, is the key
        (RFC 9111 2), taken as sent (percent-encoding kept), with no dot segments."""
        raw = request.raw_path
        token, path = split_token_path(request.path)
        if token is not None or path.startswith("/content/") or path == "/content":
            if "%" in raw.partition("?")[0]:
                raise BadRequest("encoded characters are not allowed in content paths")
            ring = self.keyring
            if ring is not None:
                verdict = self._verdicts.check(ring, token, path, time.time())
                if verdict is not TokenVerdict.OK:
                    raise Forbidden(verdict.value)
            return parse_content_key(path)
        if len(raw) > MAX_TARGET:
            raise UriTooLong("request target too long")
        if not raw.startswith("/") or "\\" in raw or any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
            raise BadRequest("malformed request target")
        rawpath = raw.partition("?")[0]
        for segs in (rawpath.split("/"), request.path.split("/")):
            if "." in segs or ".." in segs:
                raise BadRequest("dot segments are not allowed in paths")
        if path.startswith(RESERVED_PREFIXES):
            raise NotFound("not found")
        return CacheKey(raw)

    async def _content(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        try:
            if method not in ("GET", "HEAD"):
                if method not in FORWARDED_METHODS:
                    raise MethodNotAllowed(f"method {method[:16]} not allowed")
                return await self._forward(request, self._cache_key(request), "method")
            if request.body_exists:
                raise BadRequest("a GET or HEAD request carries no body")
            key = self._cache_key(request)
        except OcsimError as exc:
            return self._error(exc.status, exc.reason, headers={"Allow": ", ".join(ALLOWED_METHODS)}
                               if exc.status == 405 else None)
        rh = request.headers
        if "Authorization" in rh:
            # RFC 9111 3.5: a shared cache serves and stores a request with credentials only
            # when the response allows it; this edge takes the safe side and passes it on.
            return await self._forward(request, key, "bypass")
        if self.vary:
            variant = self.vary.variant(key.path, rh)  # 4.1: the variant this request selects
            if variant:
                key = key.with_variant(variant)
        request[_KEY] = key.path
        now = time.time()
        entry = self.store.lookup(key, now)
        refetch = False
        only_if_cached = _only_if_cached(rh.get("Cache-Control"))
        if entry is not None:
            view = self._hit_view(entry)
            if now < view.fresh.fresh_until and not has_own_directives(rh):
                use, verdict = rfc9111.Use.FRESH, None
            else:
                verdict = rfc9111.judge(view.fresh.stored, rh, now)
                use = verdict.use
            if use is rfc9111.Use.FRESH or use is rfc9111.Use.STALE_WHILE_REVALIDATE:
                request[_OUTCOME] = "hit"
                request[_SIZE] = entry.meta.length
                status = None
                if use is rfc9111.Use.STALE_WHILE_REVALIDATE:  # RFC 5861 3: stale now, refreshed behind
                    self._refresh(key, entry, rh)
                    status = f"{self._hit_status}; fwd=stale; detail=stale-while-revalidate"
                resp = await self._serve_hit(request, key, entry, status)
                if resp is not None:
                    return resp
                refetch = True  # the file changed behind our back: it is gone now, fetch it again
            elif use is rfc9111.Use.REVALIDATE and not only_if_cached:
                assert verdict is not None
                return await self._revalidate(request, key, entry, verdict)
        if only_if_cached:
            # RFC 9111 5.2.1.7. A fill in flight is as good as cached (joining starts nothing
            # new), but only once it has its source: a fill still asking its peers may be
            # asking us, and two edges waiting on each other would deadlock until timeout.
            pending = self.coalescer.inflight.get(key)
            if pending is None or not pending.source or pending.validate is not None:
                return self._error(504, "not cached", "fwd=uri-miss; detail=only-if-cached")
        if "no-store" in rfc9111.parse_cache_control(rh.get("Cache-Control")).directives:
            return await self._forward(request, key, "request")  # 5.2.1.5: nothing of it is stored
        fill, joined = self.coalescer.join(key, headers=forwarded_request_headers(rh.items()))
        klass = "coalesced" if joined else ("evicted" if refetch or self.store.was_evicted(key) else "cold")
        return await self._serve_fill(request, fill, joined, klass)

    def _count_miss(self, request: web.Request, klass: str) -> None:
        """One miss, by class, in the counters and in the request's edge.request alike."""
        self.metrics.misses.inc((klass,))
        request[_OUTCOME] = klass

    def _refresh(self, key: CacheKey, entry: Entry, rh: Any) -> None:
        """Start the one background revalidation of `entry` (RFC 5861 3); joining a fill
        already in flight for the key starts nothing."""
        if key not in self.coalescer.inflight:
            self.coalescer.join(key, headers=forwarded_request_headers(rh.items()), validate=entry)

    async def _revalidate(self, request: web.Request, key: CacheKey, entry: Entry,
                          verdict: rfc9111.Verdict) -> web.StreamResponse:
        """A stale (or no-cache) object: one conditional request for all who ask (RFC 9111
        4.3); a 304 serves the stored bytes with freshened headers, a 200 streams the new
        object, an error serves the stale one where stale-if-error allows (RFC 5861 4)."""
        fill, joined = self.coalescer.join(key, headers=forwarded_request_headers(request.headers.items()),
                                           validate=entry)
        request[_SIZE] = entry.meta.length
        try:
            await fill.headers()
        except OcsimError as exc:
            if verdict.may_serve_stale_on_error and self.store.index.get(key) is entry:
                request[_OUTCOME] = "hit"
                resp = await self._serve_hit(request, key, entry, f"{self._hit_status}; fwd=stale; "
                                             f"fwd-status={exc.status}; detail=stale-if-error")
                if resp is not None:
                    return resp
            cc = rfc9111.effective_cache_control(self._hit_view(entry).fresh.stored.headers)
            if cc.has("must-revalidate") or cc.has("proxy-revalidate"):
                # RFC 9111 5.2.2.2 / 5.2.2.8: an error, never the stale response; "SHOULD be 504"
                return self._error(504, f"cannot revalidate: {exc.reason}", "fwd=stale")
            return self._error(exc.status, exc.reason, "fwd=stale")
        if fill.state is FillState.REVALIDATED and fill.validate is not None:
            request[_OUTCOME] = "hit"
            self.metrics.revalidated.inc()
            resp = await self._serve_hit(request, key, fill.validate,
                                         f"{self._hit_status}; fwd=stale; fwd-status=304")
            if resp is not None:
                return resp
            return self._error(502, "revalidated object is gone", "fwd=stale")
        self.metrics.misses.inc(("coalesced" if joined else "stale",))
        request[_OUTCOME] = "stale"
        return await self._serve_fill(request, fill, joined)

    async def _forward(self, request: web.Request, key: CacheKey, why: str) -> web.StreamResponse:
        """Pass a request the cache does not answer (another method, credentials, no-store)
        to the upstream and its answer back, storing nothing; a non-error answer to an
        unsafe method invalidates what is stored for the target (RFC 9111 4.4)."""
        method = request.method
        try:
            body = await request.read() if request.body_exists else None
        except web.HTTPRequestEntityTooLarge:
            return self._error(413, "request body too large", f"fwd={why}")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _PASS_SKIP}
        self.metrics.forwarded.inc((why,))
        request[_OUTCOME] = "forwarded"
        try:
            up = await self.upstream.forward(method, self.config.upstream.rstrip("/") + key.path, headers, body,
                                             connect_timeout=self.config.fill_timeout)
        except TimeoutError:
            return self._error(504, "upstream timed out", f"fwd={why}")
        except OcsimError as exc:
            return self._error(exc.status, exc.reason, f"fwd={why}")
        try:
            if rfc9111.invalidates(method, up.status):
                await self._invalidate(key.path, up.headers)
            out = web.StreamResponse(status=up.status)
            for name, value in relayed_headers(up.headers.items()):
                out.headers.add(name, value)
            out.headers["X-Cache"] = "MISS"
            out.headers["Cache-Status"] = f"{self.cache_status}; fwd={why}; fwd-status={up.status}"
            if up.content_length is not None:
                out.content_length = up.content_length
            await out.prepare(request)
            if method != "HEAD":
                async for data in up.chunks():
                    await out.write(data)
            await out.write_eof()
        except OcsimError:
            abort_response(request, out)
        except _DISCONNECTS:
            pass
        finally:
            up.release()
        return out

    async def _invalidate(self, path: str, headers: Any) -> None:
        """RFC 9111 4.4: the target URI, and Location / Content-Location when they name a
        path of the same upstream, lose every stored variant."""
        paths = {path}
        base = self.config.upstream.rstrip("/")
        for name in ("Location", "Content-Location"):
            value = headers.get(name)
            if not value:
                continue
            if value.startswith(base + "/"):
                value = value[len(base):]
            if value.startswith("/") and not value.startswith("//"):
                paths.add(value.split("#", 1)[0])
        for p in paths:
            for k in self.store.keys_of_path(p):
                await self.store.remove(k)
                if self.hot is not None:
                    self.hot.discard(k.text)
                self.metrics.invalidated.inc()

    def _early(self, sel: Selection, meta: ObjectMeta, headers: dict[str, str]) -> web.Response | None:
        """The whole answer for a 304, 412 or 416 selection; None when a body follows (the
        Content-Range of a 206 is then added to `headers`)."""
        outcome = sel.outcome
        if outcome is Outcome.FULL:
            return None
        if outcome is Outcome.PARTIAL:
            headers["Content-Range"] = f"bytes {sel.start}-{sel.end - 1}/{meta.length}"
            return None
        if outcome is Outcome.NOT_MODIFIED:
            keep = {k: v for k, v in headers.items() if k not in ("Content-Type", "Accept-Ranges")}
            return web.Response(status=304, headers=keep)
        h = {k: v for k, v in headers.items() if k != "Content-Type"}
        if outcome is Outcome.UNSATISFIABLE:
            h["Content-Range"] = f"bytes */{meta.length}"
            return json_error(416, "range not satisfiable", h)
        return json_error(412, "precondition failed", h)

    async def _serve_hit(self, request: web.Request, key: CacheKey, entry: Entry,
                         cache_status: str | None = None) -> web.StreamResponse | None:
        """A hit (`cache_status`: the Cache-Status when it is not a plain fresh hit); None
        when the file changed behind our back (the entry is gone, the caller refetches)."""
        view = self._hit_view(entry)
        meta = view.meta
        headers = dict(view.headers)
        headers["Age"] = str(view.fresh.age(time.time()))  # RFC 9111 5.1
        if cache_status is not None:
            headers["Cache-Status"] = cache_status
        rh = request.headers
        metrics = self.metrics
        if any(h in rh for h in _CONDITIONAL):
            sel = select_response(request.method, meta.length, meta.etag, from_headers(rh))
            early = self._early(sel, meta, headers)
            if early is not None:
                metrics.hits.inc()
                return early
            status, start, end = sel.status, sel.start, sel.end
        else:
            status, start, end = 200, 0, meta.length  # what select_response answers without those fields
        count = end - start
        if request.method == "HEAD":
            metrics.hits.inc()
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        if self.hot is not None and meta.length <= HOT_MAX_OBJECT:
            data = self.hot.get(key.text)
            if data is not None:
                metrics.hits.inc()
                metrics.served.inc(CACHE, count)
                return HotTier.response(data, status=status, headers=headers, offset=start, count=count)
            self._warm(key, entry)  # this hit goes out by sendfile; later ones from RAM
        of = await self.store.acquire(entry)
        if of is None:
            return None
        metrics.hits.inc()
        vouched = of.entry.mtime_ns  # what this acquire checked; the last byte waits on it
        try:
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await send_file(self.sender, request, resp, of.fd, start, count,
                            lambda: self.store.unchanged(of, vouched))
        finally:
            self.store.release(of)
        metrics.served.inc(CACHE, count)
        return resp

    def _warm(self, key: CacheKey, entry: Entry) -> None:
        """Load a small object into the RAM tier in the background (one read per object)."""
        if key in self._warming or self.hot is None:
            return

        async def load() -> None:
            data = await self.store.read_all(entry)
            if data is not None and self.hot is not None and self.store.index.get(key) is entry:
                self.hot.put(key.text, data)

        task = asyncio.create_task(load(), name=f"warm {key}")
        self._warming[key] = task
        task.add_done_callback(lambda _t: self._warming.pop(key, None))

    async def _serve_fill(self, request: web.Request, fill: Fill, joined: bool, klass: str | None = None,
                          retry: bool = True) -> web.StreamResponse:
        """Stream `fill` to the client; `klass`: the miss's class so far, counted once the fill
        knows its source (None: the caller has counted this request already)."""
        try:
            await fill.headers()
        except OcsimError as exc:
            if klass is not None:
                self._count_miss(request, klass)
            return self._error(exc.status, exc.reason)
        if klass is not None:
            self._count_miss(request, miss_class(klass, joined, fill.source))
        if fill.passthrough is not None:
            p = fill.passthrough
            out = web.Response(status=p.status, body=p.body)
            for name, value in p.headers:
                out.headers.add(name, value)
            out.headers.setdefault("Content-Type", p.content_type)
            out.headers.setdefault("Cache-Control", "no-store")
            out.headers["X-Cache"] = "MISS"
            out.headers["Cache-Status"] = f"{self.cache_status}; fwd=uri-miss; fwd-status={p.status}"
            return out
        if fill.state is FillState.REVALIDATED and fill.validate is not None:
            # joined a revalidation that the upstream confirmed: the stored object answers
            resp = await self._serve_hit(request, fill.key, fill.validate,
                                         f"{self._hit_status}; fwd=stale; fwd-status=304")
            return resp if resp is not None else self._error(502, "revalidated object is gone")
        if fill.vary and retry:
            want = rfc9111.variant_of(fill.vary, request.headers)
            if want != fill.store_key.variant:
                # 4.1: this response is another variant than this request selects; the Vary
                # is known now, so the request's own variant is looked up (or filled) once
                key = fill.key.with_variant(want)
                entry = self.store.lookup(key, time.time())
                if entry is not None:
                    resp = await self._serve_hit(request, key, entry)
                    if resp is not None:
                        return resp
                other, joined = self.coalescer.join(key, headers=forwarded_request_headers(request.headers.items()))
                return await self._serve_fill(request, other, joined, retry=False)
        assert fill.meta is not None
        meta = fill.meta
        fresh = self._freshness(meta)
        detail = ("fwd=uri-miss; fwd-status=200" + ("; collapsed" if joined else "")
                  + ("; stored" if fill.stored else "")
                  + (f"; detail={fill.not_stored.value}" if fill.not_stored is not None else ""))
        headers = self._object_headers(meta)
        headers.update({"X-Cache": "MISS", "Cache-Status": f"{self.cache_status}; {detail}"})
        age = fresh.age(time.time())
        if age:
            headers["Age"] = str(age)
        sel = select_response(request.method, meta.length, meta.etag, from_headers(request.headers))
        early = self._early(sel, meta, headers)
        if early is not None:
            return early
        start, end = sel.start, sel.end
        resp = web.StreamResponse(status=sel.status, headers=headers)
        resp.content_length = end - start
        request[_SIZE] = meta.length
        await resp.prepare(request)
        if _T0 in request:
            request[_TTFB] = time.perf_counter() - request[_T0]
        if request.method == "HEAD":
            await resp.write_eof()
            return resp
        pos = start
        try:
            while pos < end:
                view = await fill.read(pos)
                if view is None:
                    break
                n = min(len(view), end - pos)
                if pos + n == meta.length:
                    # Hold the last byte until the fill is committed: a client that has the whole
                    # body and asks again then gets a hit (the commit is a rename, ~1 ms). A body
                    # that failed its sender's fill checksum never gets its last byte.
                    with contextlib.suppress(OcsimError):
                        await fill.finished()
                    if fill.bad_body:
                        abort_response(request, resp)
                        return resp
                await resp.write(view[:n])
                pos += n
        except OcsimError:
            abort_response(request, resp)
            return resp
        except _DISCONNECTS:
            return resp  # the client went away; the fill goes on without it
        finally:
            self.metrics.served.inc(FILL, pos - start)
        if pos < end:
            abort_response(request, resp)
            return resp
        await resp.write_eof()
        return resp

    # -- operator endpoints ------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        require_bearer(request, self.config.operator_token, "ocsim-edge")

    @staticmethod
    async def _json(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
        return await read_json_object(request, allowed, ADMIN_BODY_BYTES)  # the strict input layer

    @staticmethod
    def _key_of(body: dict[str, Any]) -> CacheKey:
        """A content path's key, or any other origin path's (as a request would name it)."""
        path = body.get("path")
        if not isinstance(path, str):
            raise BadRequest('expected {"path": "/content/..."}')
        token, rest = split_token_path(path)
        if token is not None or rest.startswith("/content/"):
            return parse_content_key(rest)
        if not rest.startswith("/") or len(rest) > MAX_TARGET or any(ord(c) < 0x21 for c in rest) \
                or ".." in rest.split("/"):
            raise BadRequest("malformed path")
        return CacheKey(rest)

    async def purge(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._json(request, PURGE_FIELDS)
        if "title" in body:
            title = check_title_id(body["title"])
            keys = set(self.store.keys_of_title(title))
            keys.update(k for k in self.coalescer.inflight if k.title == title)
        else:
            key = self._key_of(body)
            keys = {key, *self.store.keys_of_path(key.path)}  # every Vary variant of it
        purged = [k.path for k in sorted(keys, key=lambda k: k.text) if await self.store.remove(k)]
        if self.hot is not None:
            for k in keys:
                self.hot.discard(k.text)
        log.info("purge", extra={"fields": {"keys": len(purged)}})
        return web.json_response({"purged": len(purged), "paths": purged[:1000]})

    async def _set_pin(self, request: web.Request, pinned: bool) -> web.Response:
        self._authorize(request)
        key = self._key_of(await self._json(request, PIN_FIELDS))
        if not self.store.set_pinned(key, pinned):
            raise NotFound(f"{key} is not cached")
        await self.store.flush()
        return web.json_response({"path": key.path, "pinned": pinned})

    async def pin(self, request: web.Request) -> web.Response:
        return await self._set_pin(request, True)

    async def unpin(self, request: web.Request) -> web.Response:
        return await self._set_pin(request, False)

    def stats_dict(self) -> dict[str, Any]:
        return {
            "id": self.config.edge_id, "isp": self.config.isp, "policy": self.config.policy,
            **self.store.snapshot(),
            **self.metrics.counts(),
            "fills_inflight": len(self.coalescer.inflight),
            "hot_objects": len(self.hot) if self.hot is not None else 0,
            "sender": dict(self.sender.stats),
            "token_required": self.keyring is not None,
        }

    async def stats(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.Response(text=json.dumps(self.stats_dict()), content_type="application/json")


async def send_file(sender: HitSender, request: web.BaseRequest, resp: web.StreamResponse,
                    fd: int, offset: int, count: int, intact: Callable[[], bool] | None = None) -> None:
    """The one place a hit's bytes leave: `resp` unprepared, `content_length == count`;
    `intact` is asked before the last byte (edge.hitpath rule 7)."""
    await sender.send(request, resp, fd, offset, count, intact)


async def build_edge(config: EdgeConfig, keyring: Keyring | None) -> EdgeNode:
    node = EdgeNode(config, keyring)
    await node.start()
    return node

