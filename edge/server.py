"""The edge's HTTP front: content paths as a reverse cache, operator endpoints, stats.

A content request goes: token check (when a keyring is configured) -> path parsed by
`common.ids.parse_content_key` (a typed `CacheKey`: the canonical path, no token, no
query, with its title; it becomes a string only for the eviction policy) -> the store's index. A hit is answered from disk (`edge.hitpath.HitSender`, sendfile) or
from the RAM tier for small objects (a plain keep-alive GET of a RAM object is answered
below aiohttp by the fast lane, `edge.hitpath.FastLane` + `EdgeNode._fast_get`, with the
same headers and counters; `EdgeConfig.fast_lane`, `--no-fast-lane`, turns it off); a miss
joins the one fill in flight for the key (`edge.fill.FillCoalescer`) and streams from it.
Range and conditionals are decided by `common.selection.select_response` (the origin's
too) on both paths, against the length and ETag the origin announced. Every content
response carries `X-Cache` and an RFC 9211 `Cache-Status`.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from common.errors import BadRequest, Forbidden, NotFound, OcsimError
from common.events import EdgeEvict, EdgeFill, EdgeRequest
from common.eventsink import make_sink
from common.http_input import read_json_object, require_bearer
from common.ids import CacheKey, check_title_id, parse_content_key, parse_content_path
from common.selection import FIELDS as _CONDITIONAL
from common.selection import Outcome, Selection, from_headers, select_response
from common.service import BYTES, HEALTH, LATENCY, REGISTRY, REQUESTS, create_app, json_error
from common.tokens import Keyring, TokenVerdict, TokenVerdicts, split_token_path
from edge.fill import Fill, FillCoalescer
from edge.hitpath import (
    MAX_SESSION_LEN, FastAnswer, FastHead, HitSender, HotTier, abort_response, fast_head, install_fast_lane,
)
from edge.metrics import CACHE, FILL, EdgeMetrics, Gauges
from edge.upstream import AiohttpUpstream
from edge.policy import make_policy
from edge.store import DiskStore, Entry, ObjectMeta

if TYPE_CHECKING:
    from edge.agent import EdgeAgent, EdgeStats

log = logging.getLogger("ocsim.edge")

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
_DISCONNECTS = (ConnectionResetError, BrokenPipeError, aiohttp.ClientConnectionResetError)


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


def miss_class(klass: str, joined: bool, source: str) -> str:
    """The class of a miss once its fill knows its source: a miss that started a fill which a
    peer edge answered is a `peer` miss (no origin bytes), whatever made it a miss; one that
    joined a fill in flight stays `coalesced`; otherwise `klass` (cold or evicted). A stale
    serve (RFC 5861) is classed where it is served, as `stale`, never here."""
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
        self.coalescer = FillCoalescer(
            self.store, self.upstream, config.upstream, peers=list(config.peers),
            keyring=lambda: self.keyring, isp=config.isp, fill_timeout=config.fill_timeout,
            metrics=self.metrics.fill, on_stored=self._stored,
            on_done=self._fill_done if config.events else None)
        # Events (DESIGN "Events"): emit is a deque append; without --events a NullSink.
        self.events = make_sink(config.events, config.edge_id, self.app[REGISTRY])
        # edge.request goes straight into its buffer as one flat tuple (None: events off); the
        # edge and ISP are the frame's constants, so a row starts at the path
        self._record = (self.events.recorder(EdgeRequest, {"edge": config.edge_id, "isp": config.isp},
                                             groups=(_REF_FIELDS,)) if self.events.enabled else None)
        self._event_refs: dict[str, tuple[str, str | None, int | None, int | None]] = {}
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
        # what common.service's middleware would count for a content hit
        self._fast_route = (route.resource.canonical if route.resource is not None else "unmatched",)
        self._fast_labels = (self._fast_route[0], "GET", "200")
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
        """Re-verify the objects on disk at a bounded rate (DiskStore.scrub), forever."""
        while True:
            await asyncio.sleep(1.0)
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
            self.hot.discard(key)
        if self.events.enabled:
            cfg = self.config
            self.events.emit(EdgeEvict(cfg.edge_id, cfg.isp, key.text, key.title, entry.meta.length, reason))

    def _fill_done(self, fill: Fill, result: str) -> None:
        cfg = self.config
        self.events.emit(EdgeFill(cfg.edge_id, cfg.isp, fill.key.text, fill.key.title, fill.source or "origin",
                                  fill.received, time.monotonic() - fill.started, result))

    def _stored(self, key: CacheKey, fill: Fill) -> None:
        if self.hot is not None and fill.received <= HOT_MAX_OBJECT:
            self.hot.put(key, fill.body())

    def _error(self, status: int, reason: str, detail: str = "fwd=uri-miss",
               headers: dict[str, str] | None = None) -> web.Response:
        h = {"X-Cache": "MISS", "Cache-Status": f"{self.cache_status}; {detail}", "Cache-Control": "no-store"}
        h.update(headers or {})
        return json_error(status, reason, h)

    @staticmethod
    def _object_headers(meta: ObjectMeta) -> dict[str, str]:
        h = {"ETag": meta.etag, "Content-Type": meta.content_type, "Accept-Ranges": "bytes"}
        if meta.cache_control:
            h["Cache-Control"] = meta.cache_control
        if meta.last_modified:
            h["Last-Modified"] = meta.last_modified
        return h

    def _hit_view(self, entry: Entry) -> tuple[ObjectMeta, dict[str, str], bytes | None]:
        """A hit's headers for `entry`, built once per metadata version: (meta, headers
        without Age, the fast lane's response head up to Age or None if it cannot have one)."""
        view = entry.view
        meta = entry.meta
        if view is not None and view[0] is meta:
            return view
        h = self._object_headers(meta)
        h["X-Cache"] = "HIT"
        h["Cache-Status"] = self._hit_status
        head = fast_head(h, meta.length) if meta.length <= HOT_MAX_OBJECT else None
        view = entry.view = (meta, h, head)
        return view

    def _fast_get(self, target: str, session: str | None = None) -> FastAnswer | None:
        """The fast lane's question (edge.hitpath.FastLane): the whole answer to a plain GET
        of `target` when it is a valid, authorized RAM hit, else None and the request goes
        the normal way (which handles every other case and every error). Counted exactly
        like the normal path counts a hit, HTTP metrics included."""
        t0 = time.perf_counter()
        now = time.time()
        token, path = split_token_path(target)
        # The RAM tier first: its keys are cache keys of canonical content paths, so a key
        # found there is a valid path, and a request the lane cannot answer costs one dict
        # lookup here (a bare CacheKey(path) is a lookup key: the title is not identity).
        key = CacheKey(path)
        hot = self.hot
        data = hot.get(key) if hot is not None else None
        if data is None:
            return None
        ring = self.keyring
        if ring is not None and self._verdicts.check(ring, token, path, now) is not TokenVerdict.OK:
            return None
        entry = self.store.index.get(key)
        if entry is None:
            return None
        meta, _, head = self._hit_view(entry)
        if head is None or len(data) != meta.length:
            return None
        self.store.policy.lookup(key.text, now)  # what store.lookup records for every request
        n = len(data)
        metrics = self.metrics
        metrics.hits.inc()
        metrics.served.inc(CACHE, n)
        head = self._fast_head.finish(head, max(0, int(now - meta.stored_at)), now)
        labels = self._fast_labels
        self._http_requests.inc(labels)
        self._http_bytes.inc(labels, n)
        took = time.perf_counter() - t0
        self._http_latency.observe(took, self._fast_route)
        record = self._record
        if record is not None:
            ref = self._event_refs.get(path) or self._event_ref(path)
            record((now, ref, 200, n, n, "hit", took, took, session))
        return head, data

    def _event_ref(self, key: str) -> tuple[str, str | None, int | None, int | None]:
        """edge.request's fields of a path (path, title, rendition, segment), parsed once and
        remembered, so an event costs one tuple and one list append."""
        try:
            r = parse_content_path(key)
            ref: tuple[str, str | None, int | None, int | None] = (r.path, r.title, r.rendition, r.index)
        except OcsimError:
            ref = (key[:256], None, None, None)
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

    async def _content(self, request: web.Request) -> web.StreamResponse:
        try:
            if "%" in request.raw_path.partition("?")[0]:
                raise BadRequest("encoded characters are not allowed in content paths")
            token, path = split_token_path(request.path)
            ring = self.keyring
            if ring is not None:
                verdict = self._verdicts.check(ring, token, path, time.time())
                if verdict is not TokenVerdict.OK:
                    raise Forbidden(verdict.value)
            key = parse_content_key(path)
        except OcsimError as exc:
            return self._error(exc.status, exc.reason)
        request[_KEY] = key.text
        entry = self.store.lookup(key, time.time())
        refetch = False
        if entry is not None:
            request[_OUTCOME] = "hit"
            request[_SIZE] = entry.meta.length
            resp = await self._serve_hit(request, key, entry)
            if resp is not None:
                return resp
            refetch = True  # the file changed behind our back: it is gone now, fetch it again
        if _only_if_cached(request.headers.get("Cache-Control")):
            # RFC 9111 5.2.1.7. A fill in flight is as good as cached (joining starts nothing
            # new), but only once it has its source: a fill still asking its peers may be
            # asking us, and two edges waiting on each other would deadlock until timeout.
            pending = self.coalescer.inflight.get(key)
            if pending is None or not pending.source:
                return self._error(504, "not cached", "fwd=uri-miss; detail=only-if-cached")
        fill, joined = self.coalescer.join(key)
        klass = "coalesced" if joined else ("evicted" if refetch or self.store.was_evicted(key) else "cold")
        return await self._serve_fill(request, fill, joined, klass)

    def _count_miss(self, request: web.Request, klass: str) -> None:
        """One miss, by class, in the counters and in the request's edge.request alike."""
        self.metrics.misses.inc((klass,))
        request[_OUTCOME] = klass

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

    async def _serve_hit(self, request: web.Request, key: CacheKey, entry: Entry) -> web.StreamResponse | None:
        meta = entry.meta
        headers = dict(self._hit_view(entry)[1])
        headers["Age"] = str(max(0, int(time.time() - meta.stored_at)))
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
            data = self.hot.get(key)
            if data is not None:
                metrics.hits.inc()
                metrics.served.inc(CACHE, count)
                return HotTier.response(data, status=status, headers=headers, offset=start, count=count)
            self._warm(key, entry)  # this hit goes out by sendfile; later ones from RAM
        of = await self.store.acquire(entry)
        if of is None:
            return None
        metrics.hits.inc()
        try:
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await send_file(self.sender, request, resp, of.fd, start, count)
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
                self.hot.put(key, data)

        task = asyncio.create_task(load(), name=f"warm {key}")
        self._warming[key] = task
        task.add_done_callback(lambda _t: self._warming.pop(key, None))

    async def _serve_fill(self, request: web.Request, fill: Fill, joined: bool, klass: str) -> web.StreamResponse:
        try:
            await fill.headers()
        except OcsimError as exc:
            self._count_miss(request, klass)
            return self._error(exc.status, exc.reason)
        self._count_miss(request, miss_class(klass, joined, fill.source))
        if fill.passthrough is not None:
            p = fill.passthrough
            return web.Response(status=p.status, body=p.body, headers={
                "Content-Type": p.content_type, "X-Cache": "MISS", "Cache-Control": "no-store",
                "Cache-Status": f"{self.cache_status}; fwd=uri-miss; fwd-status={p.status}"})
        assert fill.meta is not None
        meta = fill.meta
        detail = "fwd=uri-miss; fwd-status=200" + ("; collapsed" if joined else "") + ("; stored" if fill.stored else "")
        headers = self._object_headers(meta)
        headers.update({"X-Cache": "MISS", "Cache-Status": f"{self.cache_status}; {detail}"})
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
                    # body and asks again then gets a hit (the commit is a rename, ~1 ms).
                    with contextlib.suppress(OcsimError):
                        await fill.finished()
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
        path = body.get("path")
        if not isinstance(path, str):
            raise BadRequest('expected {"path": "/content/..."}')
        return parse_content_key(split_token_path(path)[1])

    async def purge(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._json(request, PURGE_FIELDS)
        if "title" in body:
            title = check_title_id(body["title"])
            keys = set(self.store.keys_of_title(title))
            keys.update(k for k in self.coalescer.inflight if k.title == title)
        else:
            keys = {self._key_of(body)}
        purged = [k.path for k in sorted(keys, key=lambda k: k.text) if await self.store.remove(k)]
        if self.hot is not None:
            for k in keys:
                self.hot.discard(k)
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
                    fd: int, offset: int, count: int) -> None:
    """The one place a hit's bytes leave: `resp` unprepared, `content_length == count`."""
    await sender.send(request, resp, fd, offset, count)


async def build_edge(config: EdgeConfig, keyring: Keyring | None) -> EdgeNode:
    node = EdgeNode(config, keyring)
    await node.start()
    return node

