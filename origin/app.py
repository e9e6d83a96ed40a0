"""The origin service: the catalog, HLS playlists and synthetic segments over HTTP.

It behaves like a real HTTP origin for video: strong ETags, immutable cache headers,
single byte ranges and conditionals per RFC 9110, bodies streamed in chunks (never a
multi-MB body in memory), and link emulation (origin/link.py) that an operator can
change at run time through `/admin/link`. Synthetic titles' bytes come from
common.segbytes; packaged titles' from the files their digest list names (origin/media.py),
so nothing outside the catalog can ever be served. Content answers CORS (common/cors.py).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import struct
import time
from pathlib import Path
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiohttp import web

from common.content import Catalog, Title
from common.cors import install_cors
from common.errors import BadRequest, NotFound
from common.http_input import read_json_object, require_bearer
from common.hls import master_playlist, media_playlist
from common.ids import ContentKind, ContentRef, parse_content_path
from common.segbytes import SegmentSpec
from common.selection import Outcome, from_headers, select_response
from common.service import REGISTRY, create_app
from origin.link import LinkSettings, Pacer
from origin.media import MediaLibrary, catalog_with_media

CACHE_CONTROL = "public, max-age=31536000, immutable"
CHUNK = 256 * 1024
PACED_CHUNK = 16 * 1024
MAX_TRACKED_PATHS = 200_000
LINK_FIELDS = frozenset({"latency_ms", "bandwidth_bps", "total_bandwidth_bps", "error_rate", "down"})



class OriginState:
    """The origin's mutable state: catalog, link settings, pacers and request tallies."""

    def __init__(self, catalog: Catalog, link: LinkSettings, admin_token: str, seed: int | None = None,
                 media: MediaLibrary | None = None) -> None:
        self.media = media or MediaLibrary(Path("."))
        self.catalog = catalog_with_media(catalog, self.media) if media else catalog
        self.catalog_body = json.dumps(self.catalog.to_json()).encode()
        self.admin_token = admin_token
        self.rng = random.Random(seed)
        self.link = link
        self.total_pacer = Pacer(link.total_bandwidth_bps)
        self.reset_stats()

    def set_link(self, link: LinkSettings) -> None:
        if link.total_bandwidth_bps != self.link.total_bandwidth_bps:
            self.total_pacer = Pacer(link.total_bandwidth_bps)
        self.link = link

    def reset_stats(self) -> None:
        self.requests = 0
        self.segment_requests = 0
        self.bytes = 0
        self.by_title: Tally[str] = Tally()
        self.by_path: Tally[str] = Tally()

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "segment_requests": self.segment_requests, "bytes": self.bytes,
                "by_title": dict(self.by_title), "by_path": dict(self.by_path)}


ORIGIN = web.AppKey("ocsim_origin", OriginState)


def _etag(*parts: object) -> str:
    return '"' + hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest() + '"'


def _require_admin(request: web.Request) -> None:
    require_bearer(request, request.app[ORIGIN].admin_token, "ocsim-origin")


def _reset_connection(request: web.Request) -> None:
    """Emulate a dead origin: RST the connection without a response."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        transport.abort()


async def _content(request: web.Request) -> web.StreamResponse:
    state = request.app[ORIGIN]
    link = state.link
    if link.down == "refuse":
        _reset_connection(request)
        raise asyncio.CancelledError  # nothing more to say on a reset connection
    if link.down == "503":
        raise web.HTTPServiceUnavailable(reason="origin down")
    if "%" in request.raw_path.partition("?")[0]:
        raise BadRequest("encoded characters are not allowed in content paths")
    ref = parse_content_path(request.path)
    title = state.catalog.get(ref.title)
    if link.error_rate and state.rng.random() < link.error_rate:
        return web.json_response({"error": "injected error"}, status=503)
    state.requests += 1
    state.by_title[ref.title] += 1
    if len(state.by_path) < MAX_TRACKED_PATHS or ref.path in state.by_path:
        state.by_path[ref.path] += 1
    if link.latency_ms:
        await asyncio.sleep(link.latency_ms / 1000)
    if ref.kind is ContentKind.SEGMENT:
        state.segment_requests += 1
    if title.media == "packaged":
        return await _send_file(request, state, ref)
    if ref.kind is ContentKind.INIT:
        raise NotFound(f"synthetic title {title.id} has no init segment")
    if ref.kind is ContentKind.SEGMENT:
        assert ref.rendition is not None and ref.index is not None
        return await _send_segment(request, state, title.segment(ref.rendition, ref.index))
    return await _send_playlist(request, state, title, ref)


def _playlist_text(title: Title, ref: ContentRef) -> str:
    if ref.kind is ContentKind.MASTER:
        return master_playlist(title)
    assert ref.rendition is not None
    return media_playlist(title, ref.rendition)


async def _send_playlist(request: web.Request, state: OriginState, title: Title, ref: ContentRef) -> web.StreamResponse:
    body = _playlist_text(title, ref).encode()
    etag = _etag("pl", ref.path, len(body), hashlib.blake2b(body, digest_size=8).hexdigest())
    return await _send(request, state, len(body), etag, "application/vnd.apple.mpegurl",
                       lambda s, e: [body[s:e]])


async def _send_segment(request: web.Request, state: OriginState, spec: SegmentSpec) -> web.StreamResponse:
    etag = _etag("seg", spec.id, spec.length)
    chunk = PACED_CHUNK if (state.link.bandwidth_bps or state.link.total_bandwidth_bps) else CHUNK
    return await _send(request, state, spec.length, etag, "video/mp2t",
                       lambda s, e: spec.chunks(s, e, chunk))


async def _send_file(request: web.Request, state: OriginState, ref: ContentRef) -> web.StreamResponse:
    f = state.media.file(ref)
    chunk = PACED_CHUNK if (state.link.bandwidth_bps or state.link.total_bandwidth_bps) else CHUNK
    return await _send(request, state, f.length, f.etag, f.content_type, f.chunks(chunk))


async def _each(pieces: Iterable[bytes | memoryview] | AsyncIterator[bytes]) -> AsyncIterator[bytes | memoryview]:
    if isinstance(pieces, AsyncIterator):
        async for read in pieces:
            yield read
    else:
        for made in pieces:
            yield made


async def _send(request: web.Request, state: OriginState, length: int, etag: str, content_type: str,
                chunks: Callable[[int, int], Iterable[bytes | memoryview] | AsyncIterator[bytes]]) -> web.StreamResponse:
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL, "Accept-Ranges": "bytes",
               "Content-Type": content_type}
    sel = select_response(request.method, length, etag, from_headers(request.headers))
    if sel.outcome is Outcome.PRECONDITION_FAILED:
        return web.Response(status=412, headers={"ETag": etag})
    if sel.outcome is Outcome.NOT_MODIFIED:
        return web.Response(status=304, headers={k: headers[k] for k in ("ETag", "Cache-Control")})
    if sel.outcome is Outcome.UNSATISFIABLE:
        return web.Response(status=416, headers={"Content-Range": f"bytes */{length}",
                                                 "Accept-Ranges": "bytes", "ETag": etag})
    resp = web.StreamResponse(status=sel.status, headers=headers)
    content_range = sel.content_range(length)
    if content_range is not None:
        resp.headers["Content-Range"] = content_range
    resp.content_length = sel.size
    await resp.prepare(request)
    if request.method == "HEAD":
        await resp.write_eof()
        return resp
    link = state.link
    pacer = Pacer(link.bandwidth_bps) if link.bandwidth_bps else None
    loop = asyncio.get_running_loop()
    async for piece in _each(chunks(sel.start, sel.end)):
        if pacer is not None or link.total_bandwidth_bps:
            now = loop.time()
            wait = max(pacer.delay(len(piece), now) if pacer else 0.0,
                       state.total_pacer.delay(len(piece), now) if link.total_bandwidth_bps else 0.0)
            if wait > 0:
                await asyncio.sleep(wait)
        await resp.write(piece)
        state.bytes += len(piece)
    await resp.write_eof()
    return resp


async def _catalog(request: web.Request) -> web.Response:
    return web.Response(body=request.app[ORIGIN].catalog_body, content_type="application/json")


async def _digests(request: web.Request) -> web.Response:
    """The digest list of a packaged title, straight from the origin (players verify against it)."""
    digests = request.app[ORIGIN].media.digest_list(request.match_info["title"])
    return web.json_response(digests.to_json())


async def _get_link(request: web.Request) -> web.Response:
    _require_admin(request)
    return web.json_response(request.app[ORIGIN].link.to_json())


async def _put_link(request: web.Request) -> web.Response:
    _require_admin(request)
    state = request.app[ORIGIN]
    patch = await read_json_object(request, LINK_FIELDS, 16 * 1024)  # the strict input layer
    state.set_link(state.link.updated(patch))
    return web.json_response(state.link.to_json())


async def _get_stats(request: web.Request) -> web.Response:
    _require_admin(request)
    return web.json_response(request.app[ORIGIN].stats())


async def _reset_stats(request: web.Request) -> web.Response:
    _require_admin(request)
    request.app[ORIGIN].reset_stats()
    return web.json_response({"reset": True, "at": time.time()})


async def _not_content(request: web.Request) -> web.Response:
    raise NotFound("no such path")


def build_app(catalog: Catalog, link: LinkSettings, admin_token: str, seed: int | None = None,
              media: MediaLibrary | None = None) -> web.Application:
    app = create_app("origin", client_max_size=64 * 1024)
    install_cors(app, ("/content/", "/v1/catalog", "/v1/digests/"))
    state = OriginState(catalog, link, admin_token, seed, media)
    app[ORIGIN] = state
    registry = app[REGISTRY]
    registry.gauge("ocsim_origin_content_requests", "Content requests served since the last stats reset",
                   callback=lambda: float(state.requests))
    registry.gauge("ocsim_origin_body_bytes", "Body bytes sent since the last stats reset",
                   callback=lambda: float(state.bytes))
    registry.gauge("ocsim_origin_titles", "Titles in the catalog", callback=lambda: float(len(state.catalog)))
    app.router.add_get("/v1/catalog", _catalog)
    app.router.add_get("/v1/digests/{title}", _digests)
    app.router.add_get("/admin/link", _get_link)
    app.router.add_put("/admin/link", _put_link)
    app.router.add_get("/admin/stats", _get_stats)
    app.router.add_post("/admin/stats/reset", _reset_stats)
    app.router.add_get("/content/{tail:.*}", _content)
    app.router.add_route("*", "/{tail:.*}", _not_content)
    return app
