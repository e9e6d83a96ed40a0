"""The edge's HTTP front: content paths as a reverse cache, operator endpoints, stats.

A content request goes: token check (when a keyring is configured) -> path parsed by
`common.ids.parse_content_path` (the key is the canonical path: no token, no query) ->
the store's index. A hit is answered from disk (`edge.hitpath.HitSender`, sendfile) or
from the RAM tier for small objects (a plain keep-alive GET of a RAM object is answered
below aiohttp by the fast lane, `edge.hitpath.FastLane` + `EdgeNode._fast_get`, with the
same headers and counters; `OCSIM_FASTLANE=0` turns it off); a miss joins the one fill
in flight for the key (`edge.fill.FillCoalescer`) and streams from it. Range (RFC 9110
14), If-None-Match (13.1.2) and If-Range (13.1.5) are evaluated the same way on both
paths, against the length and ETag the origin announced. Every content response
carries `X-Cache` and an RFC 9211 `Cache-Status`.

Operator endpoints need `Authorization: Bearer <operator token>` (401 without, 403 when
wrong): `POST /admin/purge {"path"} | {"title"}`, `POST /admin/pin {"path"}`,
`POST /admin/unpin {"path"}`, `GET /admin/stats`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from common.auth import bearer_matches
from common.conditional import none_match, range_applies
from common.errors import BadRequest, Forbidden, NotFound, OcsimError, Unauthorized
from common.ids import check_title_id, content_prefix, parse_content_path
from common.metrics import Counter
from common.ranges import RangeKind, full, parse_range
from common.service import BYTES, HEALTH, LATENCY, REGISTRY, REQUESTS, create_app, json_error
from common.tokens import Keyring, TokenVerdict, split_token_path
from edge.fill import Fill, FillCoalescer, FillMetrics
from edge.hitpath import FastAnswer, HitSender, HotTier, install_fast_lane
from edge.policy import make_policy
from edge.store import DiskStore, Entry, ObjectMeta

log = logging.getLogger("ocsim.edge")

HOT_MAX_OBJECT = 64 * 1024  # playlists and other small objects live in RAM too
_DISCONNECTS = (ConnectionResetError, BrokenPipeError, aiohttp.ClientConnectionResetError)
_CACHE = ("cache",)
_PLAIN_VALUE = re.compile(r"[\t -~]*\Z")  # header values the fast lane may write as they are
_MEMO_MAX = 65536  # bound of the small memo dicts (verified tokens, valid paths)
_CONDITIONAL = ("Range", "If-None-Match", "If-Range")


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


@dataclass(slots=True)
class _RateSample:
    at: float = field(default_factory=time.monotonic)
    requests: float = 0.0
    bytes: float = 0.0


def _only_if_cached(cache_control: str | None) -> bool:
    if not cache_control:
        return False
    return any(d.strip().lower() == "only-if-cached" for d in cache_control.split(","))


def _abort(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """Cut the connection so the client sees a truncated body, never a short 200."""
    resp.force_close()
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


class EdgeNode:
    """One edge: store, fills, handlers, counters, and (optionally) the agent."""

    def __init__(self, config: EdgeConfig, keyring: Keyring | None) -> None:
        self.config = config
        self.keyring = keyring
        self.cache_status = f"ocsim-{config.edge_id}"
        self.hot = HotTier(config.hot_bytes, max_object_bytes=HOT_MAX_OBJECT) if config.hot_bytes > 0 else None
        self.store = DiskStore(config.cache_dir, make_policy(config.policy, config.capacity),
                               max_open_files=config.max_open_files, on_evict=self._forget_hot)
        self.sender = HitSender()
        self.app = create_app("edge")
        reg = self.app[REGISTRY]
        self.hits = reg.counter("ocsim_edge_hits_total", "Content requests answered from the cache")
        self.misses = reg.counter("ocsim_edge_misses_total",
                                  "Content requests not in the cache, by class (cold, evicted, coalesced)",
                                  ("class",))
        self.served = reg.counter("ocsim_edge_served_bytes_total", "Body bytes sent, by source (cache, fill)",
                                  ("source",))
        self.fill_metrics = FillMetrics(
            fills=reg.counter("ocsim_edge_fills_total", "Fills by source (peer, origin) and result",
                              ("source", "result")),
            errors=reg.counter("ocsim_edge_fill_errors_total", "Failed fills by reason", ("reason",)),
            filled_bytes=reg.counter("ocsim_edge_filled_bytes_total", "Bytes received by fills, by source",
                                     ("source",)))
        reg.gauge("ocsim_edge_disk_used_bytes", "Bytes held on disk (fills in flight included)",
                  callback=lambda: float(self.store.used))
        reg.gauge("ocsim_edge_capacity_bytes", "Byte budget of the cache", callback=lambda: float(self.store.capacity))
        reg.gauge("ocsim_edge_objects", "Cached objects", callback=lambda: float(len(self.store.index)))
        reg.gauge("ocsim_edge_pinned_objects", "Pinned objects", callback=lambda: float(self.store.pinned_count()))
        reg.gauge("ocsim_edge_fills_inflight", "Fills in flight", callback=lambda: float(len(self.coalescer.inflight)))
        reg.gauge("ocsim_edge_evictions", "Objects evicted since start", callback=lambda: float(self.store.evictions))
        self.session: aiohttp.ClientSession | None = None
        self.coalescer: FillCoalescer = None  # type: ignore[assignment]  # set in start()
        self.agent: Any = None
        self._agent_task: asyncio.Task[None] | None = None
        self._rate = _RateSample()
        self.public_url = config.public_url
        self._hit_status = f"{self.cache_status}; hit"
        self._tokens: dict[tuple[str, str], int] = {}  # (token, title) -> expiry, verified once
        self._tokens_ring: Keyring | None = None
        self._warming: dict[str, asyncio.Task[None]] = {}  # RAM-tier loads in flight, strongly held
        self._date_at = -1
        self._date = b""
        self.fast_lane = config.fast_lane and os.environ.get("OCSIM_FASTLANE", "1") != "0"
        app = self.app
        self._http_requests, self._http_bytes, self._http_latency = app[REQUESTS], app[BYTES], app[LATENCY]
        self._fast_labels: tuple[str, str, str] = ("", "GET", "200")
        self._fast_route: tuple[str] = ("",)

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> web.Application:
        await self.store.open()
        # read_bufsize: the fill's reader pauses the upstream socket once 128 KiB wait
        # unread (aiohttp's default, 256 KiB, lets uvloop read ~1 MB in one go), so the fill
        # task, and the first write to the client, are not held behind a burst of reads.
        self.session = aiohttp.ClientSession(auto_decompress=False, read_bufsize=64 * 1024,
                                             connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))
        self.coalescer = FillCoalescer(
            self.store, self.session, self.config.upstream, peers=list(self.config.peers),
            keyring=lambda: self.keyring, isp=self.config.isp, fill_timeout=self.config.fill_timeout,
            metrics=self.fill_metrics, on_stored=self._stored)
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
            on_token_keys=self._set_token_keys, heartbeat_interval=self.config.heartbeat_interval,
            policy=self.config.policy)
        await self.agent.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._agent_task is not None:
            await asyncio.gather(self._agent_task, return_exceptions=True)
        if self.agent is not None:
            await self.agent.drain()

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._warming:
            await asyncio.gather(*self._warming.values(), return_exceptions=True)
        if self.agent is not None:
            await self.agent.stop()
        await self.coalescer.close()
        await self.store.close()
        if self.session is not None:
            await self.session.close()

    # -- callables for the agent ---------------------------------------------------------

    def edge_stats(self) -> Any:
        from edge.agent import EdgeStats

        now = time.monotonic()
        requests = self.hits.total() + self.misses.total()
        sent = self.served.total()
        prev, self._rate = self._rate, _RateSample(now, requests, sent)
        dt = max(now - prev.at, 1e-6)
        return EdgeStats(capacity_bytes=self.store.capacity, used_bytes=self.store.used,
                         objects=len(self.store.index), req_rate=(requests - prev.requests) / dt,
                         byte_rate=(sent - prev.bytes) / dt, hit_ratio=self.hit_ratio(),
                         titles=self.store.titles())

    def _pin_now(self, path: str) -> bool:
        try:
            key = parse_content_path(path).path
        except OcsimError:
            return False
        return self.store.set_pinned(key, True)

    def _set_token_keys(self, text: str) -> None:
        """The control plane's keyring replaces ours; ValueError (kept by the agent) if unusable."""
        self.keyring = Keyring.parse(text)

    # -- helpers ---------------------------------------------------------------------------

    def hit_ratio(self) -> float:
        hits, misses = self.hits.total(), self.misses.total()
        return hits / (hits + misses) if hits + misses else 0.0

    def _health(self) -> dict[str, Any]:
        return {"id": self.config.edge_id, "isp": self.config.isp, "used_bytes": self.store.used,
                "capacity_bytes": self.store.capacity, "objects": len(self.store.index)}

    def _forget_hot(self, key: str) -> None:
        if self.hot is not None:
            self.hot.discard(key)

    def _stored(self, key: str, fill: Fill) -> None:
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

    def _token_ok(self, ring: Keyring, token: str | None, path: str, now: float) -> bool:
        """Is `token` good for `path` now? A token verified once (HMAC, constant time) is
        remembered with its expiry for its title, so a player's many requests with one
        token cost a dict lookup; a new keyring forgets every remembered token."""
        if not token:
            return False
        if self._tokens_ring is not ring:
            self._tokens.clear()
            self._tokens_ring = ring
        parts = path.split("/", 3)
        title = parts[2] if len(parts) > 3 and parts[1] == "content" else ""
        expiry = self._tokens.get((token, title))
        if expiry is not None:
            return expiry >= now
        if not title or ring.check(token, path, now) is not TokenVerdict.OK:
            return False
        if len(self._tokens) >= _MEMO_MAX:
            self._tokens.clear()
        self._tokens[(token, title)] = int(token.split(".", 2)[1])
        return True

    def _hit_view(self, entry: Entry) -> tuple[ObjectMeta, dict[str, str], bytes | None]:
        """A hit's headers for `entry`, built once per metadata version: (meta, headers
        without Age, the fast lane's response head up to Age or None if it cannot have one)."""
        view = entry.view
        meta = entry.meta
        if view is not None and view[0] is meta:
            return view  # type: ignore[no-any-return]
        h = self._object_headers(meta)
        h["X-Cache"] = "HIT"
        h["Cache-Status"] = self._hit_status
        head = None
        if meta.length <= HOT_MAX_OBJECT and all(_PLAIN_VALUE.match(v) for v in h.values()):
            lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in h.items()),
                     f"Content-Length: {meta.length}", f"Server: {SERVER_SOFTWARE}", ""]
            head = "\r\n".join(lines).encode("ascii")
        view = entry.view = (meta, h, head)
        return view

    def _fast_get(self, target: str) -> FastAnswer | None:
        """The fast lane's question (edge.hitpath.FastLane): the whole answer to a plain GET
        of `target` when it is a valid, authorized RAM hit, else None and the request goes
        the normal way (which handles every other case and every error). Counted exactly
        like the normal path counts a hit, HTTP metrics included."""
        t0 = time.perf_counter()
        now = time.time()
        token, path = split_token_path(target)
        # The RAM tier first: its keys are canonical content paths, so a key found there is a
        # valid path, and a request the lane cannot answer costs one dict lookup here.
        hot = self.hot
        data = hot.get(path) if hot is not None else None
        if data is None:
            return None
        ring = self.keyring
        if ring is not None and not self._token_ok(ring, token, path, now):
            return None
        entry = self.store.index.get(path)
        if entry is None:
            return None
        meta, _, head = self._hit_view(entry)
        if head is None or len(data) != meta.length:
            return None
        self.store.policy.lookup(path, now)  # what store.lookup records for every request
        n = len(data)
        self.hits.inc()
        self.served.inc(_CACHE, n)
        sec = int(now)
        if sec != self._date_at:
            self._date_at = sec
            self._date = formatdate(sec, usegmt=True).encode("ascii")
        head = b"%sAge: %d\r\nDate: %s\r\n\r\n" % (head, max(0, int(now - meta.stored_at)), self._date)
        labels = self._fast_labels
        self._http_requests.inc(labels)
        self._http_bytes.inc(labels, n)
        self._http_latency.observe(time.perf_counter() - t0, self._fast_route)
        return head, data

    # -- content ------------------------------------------------------------------------------

    async def content(self, request: web.Request) -> web.StreamResponse:
        try:
            if "%" in request.raw_path.partition("?")[0]:
                raise BadRequest("encoded characters are not allowed in content paths")
            token, path = split_token_path(request.path)
            ring = self.keyring
            if ring is not None and not self._token_ok(ring, token, path, time.time()):
                verdict = ring.check(token, path, time.time())
                if verdict is not TokenVerdict.OK:
                    raise Forbidden(verdict.value)
            key = parse_content_path(path).path
        except OcsimError as exc:
            return self._error(exc.status, exc.reason)
        entry = self.store.lookup(key, time.time())
        refetch = False
        if entry is not None:
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
        self.misses.inc((klass,))
        return await self._serve_fill(request, fill, joined)

    def _select(self, request: web.Request, meta: ObjectMeta,
                headers: dict[str, str]) -> tuple[web.Response | None, int, int, int]:
        """Conditionals and Range for one representation: an early answer (304/416) or
        (None, status, start, end)."""
        if none_match(request.headers.get("If-None-Match"), meta.etag):
            keep = {k: v for k, v in headers.items() if k not in ("Content-Type", "Accept-Ranges")}
            return web.Response(status=304, headers=keep), 304, 0, 0
        rng = parse_range(request.headers.get("Range"), meta.length)
        if rng.kind is not RangeKind.FULL and not range_applies(request.headers.get("If-Range"), meta.etag):
            rng = full(meta.length)
        if rng.kind is RangeKind.UNSATISFIABLE:
            h = dict(headers, **{"Content-Range": rng.content_range(meta.length)})
            h.pop("Content-Type", None)
            return json_error(416, "range not satisfiable", h), 416, 0, 0
        if rng.kind is RangeKind.PARTIAL:
            headers["Content-Range"] = rng.content_range(meta.length)
            return None, 206, rng.start, rng.end
        return None, 200, 0, meta.length

    async def _serve_hit(self, request: web.Request, key: str, entry: Entry) -> web.StreamResponse | None:
        meta = entry.meta
        headers = dict(self._hit_view(entry)[1])
        headers["Age"] = str(max(0, int(time.time() - meta.stored_at)))
        rh = request.headers
        if any(h in rh for h in _CONDITIONAL):
            early, status, start, end = self._select(request, meta, headers)
            if early is not None:
                self.hits.inc()
                return early
        else:
            status, start, end = 200, 0, meta.length  # what _select answers without those fields
        count = end - start
        if request.method == "HEAD":
            self.hits.inc()
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        if self.hot is not None and meta.length <= HOT_MAX_OBJECT:
            data = self.hot.get(key)
            if data is not None:
                self.hits.inc()
                self.served.inc(_CACHE, count)
                return HotTier.response(data, status=status, headers=headers, offset=start, count=count)
            self._warm(key, entry)  # this hit goes out by sendfile; later ones from RAM
        of = await self.store.acquire(entry)
        if of is None:
            return None
        self.hits.inc()
        try:
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = count
            await send_file(self.sender, request, resp, of.fd, start, count)
        finally:
            self.store.release(of)
        self.served.inc(("cache",), count)
        return resp

    def _warm(self, key: str, entry: Any) -> None:
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

    async def _serve_fill(self, request: web.Request, fill: Fill, joined: bool) -> web.StreamResponse:
        try:
            await fill.headers()
        except OcsimError as exc:
            return self._error(exc.status, exc.reason)
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
        early, status, start, end = self._select(request, meta, headers)
        if early is not None:
            return early
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = end - start
        await resp.prepare(request)
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
            _abort(request, resp)
            return resp
        except _DISCONNECTS:
            return resp  # the client went away; the fill goes on without it
        finally:
            self.served.inc(("fill",), pos - start)
        if pos < end:
            _abort(request, resp)
            return resp
        await resp.write_eof()
        return resp

    # -- operator endpoints ------------------------------------------------------------------

    def _authorize(self, request: web.Request) -> None:
        header = request.headers.get("Authorization")
        if not header:
            raise Unauthorized("operator token required")
        if not bearer_matches(header, self.config.operator_token):
            raise Forbidden("bad operator token")

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body must be JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    @staticmethod
    def _key_of(body: dict[str, Any]) -> str:
        path = body.get("path")
        if not isinstance(path, str):
            raise BadRequest('expected {"path": "/content/..."}')
        return parse_content_path(split_token_path(path)[1]).path

    async def purge(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await self._json(request)
        if "title" in body:
            title = check_title_id(body["title"])
            prefix = content_prefix(title)
            keys = set(self.store.keys_of_title(title))
            keys.update(k for k in self.coalescer.inflight if k.startswith(prefix))
        else:
            keys = {self._key_of(body)}
        purged = [k for k in sorted(keys) if await self.store.remove(k)]
        for k in keys:
            self._forget_hot(k)
        log.info("purge", extra={"fields": {"keys": len(purged)}})
        return web.json_response({"purged": len(purged), "paths": purged[:1000]})

    async def _set_pin(self, request: web.Request, pinned: bool) -> web.Response:
        self._authorize(request)
        key = self._key_of(await self._json(request))
        if not self.store.set_pinned(key, pinned):
            raise NotFound(f"{key} is not cached")
        await self.store.flush()
        return web.json_response({"path": key, "pinned": pinned})

    async def pin(self, request: web.Request) -> web.Response:
        return await self._set_pin(request, True)

    async def unpin(self, request: web.Request) -> web.Response:
        return await self._set_pin(request, False)

    def stats_dict(self) -> dict[str, Any]:
        fills = self.fill_metrics.fills
        by_source = {"peer": 0.0, "origin": 0.0}
        for (source, _result), n in fills.values.items():
            by_source[source] = by_source.get(source, 0.0) + n
        return {
            "id": self.config.edge_id, "isp": self.config.isp, "policy": self.config.policy,
            **self.store.snapshot(),
            "hits": int(self.hits.total()),
            "misses": {"cold": int(self.misses.get(("cold",))), "evicted": int(self.misses.get(("evicted",))),
                       "coalesced": int(self.misses.get(("coalesced",))),
                       "peer": int(by_source["peer"]), "origin": int(by_source["origin"])},
            "hit_ratio": round(self.hit_ratio(), 4),
            "bytes_from_cache": int(self.served.get(("cache",))),
            "bytes_filled": int(self.served.get(("fill",))),
            "bytes_fetched": int(self.fill_metrics.filled_bytes.total()),
            "fill_errors": int(self.fill_metrics.errors.total()),
            "fills": {f"{s}/{r}": int(n) for (s, r), n in sorted(fills.values.items())},
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

