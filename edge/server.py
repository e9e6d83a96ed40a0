"""The edge's HTTP front: content paths as a reverse cache, operator endpoints, stats.

A content request goes: token check (when a keyring is configured) -> path parsed by
`common.ids.parse_content_path` (the key is the canonical path: no token, no query) ->
the store's index. A hit is answered from disk (`edge.hitpath.HitSender`, sendfile) or
from the RAM tier for small objects; a miss joins the one fill in flight for the key
(`edge.fill.FillCoalescer`) and streams from it. Range (RFC 9110 14), If-None-Match
(13.1.2) and If-Range (13.1.5) are evaluated the same way on both paths, against the
length and ETag the origin announced. Every content response carries `X-Cache` and an
RFC 9211 `Cache-Status`.

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
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from common.auth import bearer_matches
from common.conditional import none_match, range_applies
from common.errors import BadRequest, Forbidden, NotFound, OcsimError, Unauthorized
from common.ids import check_title_id, parse_content_path
from common.metrics import Counter
from common.ranges import RangeKind, full, parse_range
from common.service import HEALTH, REGISTRY, create_app
from common.tokens import Keyring, TokenVerdict, split_token_path
from edge.fill import Fill, FillCoalescer, FillMetrics
from edge.hitpath import HitSender, HotTier
from edge.policy import make_policy
from edge.store import DiskStore, Entry, ObjectMeta

log = logging.getLogger("ocsim.edge")

HOT_MAX_OBJECT = 64 * 1024  # playlists and other small objects live in RAM too
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

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> web.Application:
        await self.store.open()
        self.session = aiohttp.ClientSession(auto_decompress=False,
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
        app.router.add_get("/{tail:.*}", self.content)
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
        return web.json_response({"error": reason}, status=status, headers=h)

    @staticmethod
    def _object_headers(meta: ObjectMeta) -> dict[str, str]:
        h = {"ETag": meta.etag, "Content-Type": meta.content_type, "Accept-Ranges": "bytes"}
        if meta.cache_control:
            h["Cache-Control"] = meta.cache_control
        if meta.last_modified:
            h["Last-Modified"] = meta.last_modified
        return h

    # -- content ------------------------------------------------------------------------------

    async def content(self, request: web.Request) -> web.StreamResponse:
        try:
            if "%" in request.raw_path.partition("?")[0]:
                raise BadRequest("encoded characters are not allowed in content paths")
            token, path = split_token_path(request.path)
            ring = self.keyring
            if ring is not None:
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
            return web.json_response({"error": "range not satisfiable"}, status=416, headers=h), 416, 0, 0
        if rng.kind is RangeKind.PARTIAL:
            headers["Content-Range"] = rng.content_range(meta.length)
            return None, 206, rng.start, rng.end
        return None, 200, 0, meta.length

    async def _serve_hit(self, request: web.Request, key: str, entry: Entry) -> web.StreamResponse | None:
        meta = entry.meta
        headers = self._object_headers(meta)
        headers.update({"X-Cache": "HIT", "Cache-Status": f"{self.cache_status}; hit",
                        "Age": str(max(0, int(time.time() - meta.stored_at)))})
        early, status, start, end = self._select(request, meta, headers)
        if early is not None:
            self.hits.inc()
            return early
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
            if data is None:
                data = await self.store.read_all(entry)
                if data is None:
                    await self.store.remove(key)
                    return None
                if self.store.index.get(key) is entry:
                    self.hot.put(key, data)
            self.hits.inc()
            self.served.inc(("cache",), count)
            return HotTier.response(data, status=status, headers=headers, offset=start, count=count)
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
            prefix = f"/content/{title}/"
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

