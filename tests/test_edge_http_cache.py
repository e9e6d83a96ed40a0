"""The edge as a standard HTTP cache in front of any origin (RFC 9111, 5861, 9211, 9213).

A scriptable test origin on 127.0.0.1 answers each path with whatever status, headers and
body the test asks for, records every request it gets, and can hold an answer until the
test releases it. The edge runs in process (a real `EdgeNode` on a loopback port, fast
lane and all), so each case is two real HTTP hops and no fixed sleeps: where a time must
pass, the origin's `Age` header puts the response in the past instead. Every test names
the RFC section it checks.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from edge.server import EdgeConfig, EdgeNode

pytestmark = pytest.mark.timeout(30)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"hello"
    gate: asyncio.Event | None = None  # held until set
    chunked: bool = False


Script = Answer | Callable[[web.Request], Answer]


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class ScriptedOrigin:
    """Answers from `script[path_qs]` (a list: one answer per request, the last repeats)."""

    def __init__(self) -> None:
        self.script: dict[str, list[Script]] = {}
        self.seen: list[Seen] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    def on(self, target: str, *answers: Script) -> None:
        self.script[target] = list(answers)

    def hits(self, target: str, method: str = "GET") -> list[Seen]:
        return [s for s in self.seen if s.target == target and s.method == method]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, dict(request.headers), body))
        answers = self.script.get(request.raw_path)
        if not answers:
            return web.Response(status=404, text="no such thing")
        item = answers.pop(0) if len(answers) > 1 else answers[0]
        a = item(request) if callable(item) else item
        if a.gate is not None:
            await a.gate.wait()
        headers = {"Date": formatdate(usegmt=True), **a.headers}
        if a.chunked:
            resp = web.StreamResponse(status=a.status, headers=headers)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(a.body)
            await resp.write_eof()
            return resp
        if a.status == 304:
            return web.Response(status=304, headers=headers)
        return web.Response(status=a.status, headers=headers, body=a.body if request.method != "HEAD" else None)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@dataclass
class Rig:
    origin: ScriptedOrigin
    edge: str
    node: EdgeNode
    s: aiohttp.ClientSession

    async def get(self, target: str, headers: dict[str, str] | None = None,
                  method: str = "GET", data: bytes | None = None) -> tuple[int, Any, bytes]:
        async with self.s.request(method, self.edge + target, headers=headers, data=data,
                                  allow_redirects=False) as r:
            return r.status, r.headers, await r.read()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    origin = ScriptedOrigin()
    await origin.start()
    config = EdgeConfig(edge_id="e1", isp="isp-a", upstream=origin.url, cache_dir=str(tmp_path / "cache"),
                        capacity=50_000_000, operator_token="op-token-for-tests", policy="lru", fill_timeout=3.0,
                        scrub_bytes_per_s=0)
    node = EdgeNode(config, None)
    app = await node.start()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        yield Rig(origin, f"http://127.0.0.1:{port}", node, s)
    await runner.cleanup()
    await origin.stop()


async def raw_status(url: str, target: bytes) -> int:
    """The status of a request sent byte for byte (a client library would normalise it)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split()[1])
    finally:
        writer.close()


def past(seconds: int) -> str:
    return formatdate(__import__("time").time() - seconds, usegmt=True)


def future(seconds: int) -> str:
    return formatdate(__import__("time").time() + seconds, usegmt=True)


# -- the conformance matrix: two plain GETs, did the second come from the cache? ---------------------

# (RFC section, response headers, second GET served from cache without asking the origin)
MATRIX: list[tuple[str, dict[str, str], bool]] = [
    ("9111 4.2.1 max-age", {"Cache-Control": "max-age=60"}, True),
    ("9111 5.2.2.10 s-maxage beats max-age in a shared cache", {"Cache-Control": "max-age=0, s-maxage=60"}, True),
    ("9111 4.2.1 max-age=0 is stale at once", {"Cache-Control": "max-age=0", "ETag": '"a"'}, False),
    ("9111 5.3 Expires in the future", {"Expires": "__future__"}, True),
    ("9111 5.3 Expires in the past", {"Expires": "__past__"}, False),
    ("9111 5.3 an invalid Expires is already expired", {"Expires": "0"}, False),
    ("9111 5.3 max-age beats Expires", {"Cache-Control": "max-age=60", "Expires": "__past__"}, True),
    ("9111 4.2.3 Age counts: older than max-age on arrival", {"Cache-Control": "max-age=60", "Age": "100"}, False),
    ("9111 5.1 an invalid Age is ignored", {"Cache-Control": "max-age=60", "Age": "soon"}, True),
    ("9111 1.2.2 an invalid max-age is stale", {"Cache-Control": "max-age=sixty"}, False),
    ("9111 5.2 unknown and malformed directives are ignored",
     {"Cache-Control": 'max-age=60, , =x, foo="a,b", bar'}, True),
    ("9111 5.2.2.5 no-store", {"Cache-Control": "no-store, max-age=60"}, False),
    ("9111 5.2.2.7 private in a shared cache", {"Cache-Control": "private, max-age=60"}, False),
    ("9111 5.2.2.4 no-cache: always validated", {"Cache-Control": "no-cache, max-age=60", "ETag": '"n"'}, False),
    ("9111 4.2.2 heuristic freshness from Last-Modified", {"Last-Modified": "__lastweek__"}, True),
    ("9111 4.2.2 no explicit freshness, no Last-Modified: not fresh", {}, False),
    ("9111 4.1 Vary: * never matches", {"Cache-Control": "max-age=60", "Vary": "*"}, False),
    ("9111 4.1 a malformed Vary member is ignored", {"Cache-Control": "max-age=60", "Vary": "@@, ("}, True),
    ("9213 2.1 CDN-Cache-Control replaces Cache-Control here",
     {"CDN-Cache-Control": "max-age=60", "Cache-Control": "no-store"}, True),
    ("9213 2.1 CDN-Cache-Control no-store", {"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=60"}, False),
    ("9213 2.1 an unparseable CDN-Cache-Control falls back", {"CDN-Cache-Control": "=", "Cache-Control": "max-age=60"},
     True),
]


@pytest.mark.parametrize(("section", "headers", "cached"), MATRIX, ids=[m[0] for m in MATRIX])
async def test_conformance_matrix(rig: Rig, section: str, headers: dict[str, str], cached: bool) -> None:
    dates = {"__future__": future(3600), "__past__": past(3600), "__lastweek__": past(7 * 86400)}
    h = {k: dates.get(v, v) for k, v in headers.items()}
    rig.origin.on("/m", Answer(headers=h, body=b"body-1"))
    for i in range(2):
        status, rh, body = await rig.get("/m")
        assert status == 200 and body == b"body-1", section  # never a 5xx, whatever the origin said
        assert rh["Cache-Status"].startswith("ocsim-e1"), section  # RFC 9211 2
    assert (rh["X-Cache"] == "HIT") is cached, (section, rh["Cache-Status"])
    assert len(rig.origin.hits("/m")) == (1 if cached else 2), section
    if cached:
        assert "hit" in rh["Cache-Status"].split("; ") and int(rh["Age"]) >= 0  # RFC 9211 2.1, 9111 5.1


async def test_request_directives_are_honoured(rig: Rig) -> None:
    """RFC 9111 5.2.1.4 (no-cache), 5.2.1.1 (max-age=0), 5.4 (Pragma), 5.2.1.7 (only-if-cached)."""
    rig.origin.on("/r", Answer(headers={"Cache-Control": "max-age=60", "ETag": '"r1"'}))
    assert (await rig.get("/r"))[1]["X-Cache"] == "MISS"
    assert (await rig.get("/r"))[1]["X-Cache"] == "HIT"
    for h in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}):
        n = len(rig.origin.hits("/r"))
        status, _, body = await rig.get("/r", h)
        assert status == 200 and body == b"hello" and len(rig.origin.hits("/r")) == n + 1, h
        assert rig.origin.hits("/r")[-1].headers.get("If-None-Match") == '"r1"', h  # 4.3.1: validated
    status, rh, _ = await rig.get("/never-fetched", {"Cache-Control": "only-if-cached"})
    assert status == 504 and not rig.origin.hits("/never-fetched")


async def test_request_no_store_and_authorization_are_not_stored(rig: Rig) -> None:
    """RFC 9111 5.2.1.5 (request no-store) and 3.5 (Authorization in a shared cache)."""
    rig.origin.on("/ns", Answer(headers={"Cache-Control": "max-age=60"}))
    rig.origin.on("/auth", Answer(headers={"Cache-Control": "max-age=60"}))
    status, rh, _ = await rig.get("/ns", {"Cache-Control": "no-store"})
    assert status == 200 and "fwd=request" in rh["Cache-Status"]
    assert (await rig.get("/ns"))[1]["X-Cache"] == "MISS"  # nothing was stored the first time
    status, rh, _ = await rig.get("/auth", {"Authorization": "Bearer x"})
    assert status == 200 and "fwd=bypass" in rh["Cache-Status"]
    assert rig.origin.hits("/auth")[-1].headers.get("Authorization") == "Bearer x"  # passed on, as sent
    assert (await rig.get("/auth"))[1]["X-Cache"] == "MISS"


# -- revalidation -------------------------------------------------------------------------------------

async def test_a_304_revalidates_and_updates_the_stored_headers(rig: Rig) -> None:
    """RFC 9111 4.3.1 (validators sent), 4.3.3 (304 handled), 4.3.4 (stored headers updated)."""
    rig.origin.on("/v", Answer(headers={"Cache-Control": "max-age=0", "ETag": '"v1"', "X-Version": "1"},
                               body=b"the body"),
                  Answer(status=304, headers={"Cache-Control": "max-age=60", "ETag": '"v1"', "X-Version": "2"}))
    status, rh, body = await rig.get("/v")
    assert status == 200 and rh["X-Cache"] == "MISS" and rh["X-Version"] == "1"
    status, rh, body = await rig.get("/v")
    assert status == 200 and body == b"the body" and rh["X-Version"] == "2"
    assert "fwd=stale" in rh["Cache-Status"] and "fwd-status=304" in rh["Cache-Status"]
    assert rig.origin.hits("/v")[-1].headers.get("If-None-Match") == '"v1"'
    status, rh, body = await rig.get("/v")  # fresh now, from the freshened headers
    assert rh["X-Cache"] == "HIT" and body == b"the body" and rh["X-Version"] == "2"
    assert len(rig.origin.hits("/v")) == 2


async def test_last_modified_alone_is_validated_with_if_modified_since(rig: Rig) -> None:
    """RFC 9111 4.3.1: a response with only Last-Modified is validated by date."""
    lm = past(86400)
    rig.origin.on("/lm", Answer(headers={"Cache-Control": "no-cache", "Last-Modified": lm}),
                  Answer(status=304, headers={"Cache-Control": "no-cache"}))
    await rig.get("/lm")
    status, rh, body = await rig.get("/lm")
    assert status == 200 and body == b"hello" and "fwd-status=304" in rh["Cache-Status"]
    assert rig.origin.hits("/lm")[-1].headers.get("If-Modified-Since") == lm


async def test_a_changed_object_replaces_the_stored_one(rig: Rig) -> None:
    """RFC 9111 4.3.3: a full 200 to a revalidation replaces the stored response."""
    rig.origin.on("/c", Answer(headers={"Cache-Control": "max-age=0", "ETag": '"c1"'}, body=b"old"),
                  Answer(headers={"Cache-Control": "max-age=60", "ETag": '"c2"'}, body=b"new!"))
    assert (await rig.get("/c"))[2] == b"old"
    assert (await rig.get("/c"))[2] == b"new!"
    status, rh, body = await rig.get("/c")
    assert rh["X-Cache"] == "HIT" and body == b"new!" and rh["ETag"] == '"c2"'


# -- Vary -------------------------------------------------------------------------------------------

async def test_vary_keeps_one_variant_per_selecting_value(rig: Rig) -> None:
    """RFC 9111 4.1: two variants of one URI, each served to the requests that select it."""
    def by_encoding(request: web.Request) -> Answer:
        enc = request.headers.get("Accept-Encoding", "")
        body = b"gzipped" if "gzip" in enc else b"identity"
        return Answer(headers={"Cache-Control": "max-age=60", "Vary": "Accept-Encoding"}, body=body)

    rig.origin.on("/vary", by_encoding)
    gz, ident = {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "identity"}
    assert (await rig.get("/vary", gz))[2] == b"gzipped"
    assert (await rig.get("/vary", ident))[2] == b"identity"
    for _ in range(2):
        _, rh, body = await rig.get("/vary", gz)
        assert body == b"gzipped" and rh["X-Cache"] == "HIT" and rh["Vary"] == "Accept-Encoding"
        _, rh, body = await rig.get("/vary", ident)
        assert body == b"identity" and rh["X-Cache"] == "HIT"
    assert len(rig.origin.hits("/vary")) == 2
    assert rig.origin.hits("/vary")[0].headers.get("Accept-Encoding") == "gzip"  # the selecting field went on


# -- invalidation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_unsafe_methods_are_forwarded_and_invalidate(rig: Rig, method: str) -> None:
    """RFC 9111 4.4: a non-error answer to an unsafe method invalidates the target URI (and a
    same-origin Location); RFC 9110 9.3: the method, its body and the answer pass through."""
    rig.origin.on("/doc", Answer(headers={"Cache-Control": "max-age=600", "ETag": '"d1"'}, body=b"v1"))
    rig.origin.on("/other", Answer(headers={"Cache-Control": "max-age=600"}, body=b"o1"))
    await rig.get("/doc")
    await rig.get("/other")
    assert (await rig.get("/doc"))[1]["X-Cache"] == "HIT"
    rig.origin.on("/doc", Answer(status=201, headers={"Location": "/other", "X-Made": "yes"}, body=b"made"))
    status, rh, body = await rig.get("/doc", method=method, data=b"payload")
    assert status == 201 and body == b"made" and rh["X-Made"] == "yes" and "fwd=method" in rh["Cache-Status"]
    assert rig.origin.hits("/doc", method)[-1].body == b"payload"
    rig.origin.on("/doc", Answer(headers={"Cache-Control": "max-age=600"}, body=b"v2"))
    status, rh, body = await rig.get("/doc")
    assert rh["X-Cache"] == "MISS" and body == b"v2"
    assert (await rig.get("/other"))[1]["X-Cache"] == "MISS"  # the Location named it


async def test_an_error_answer_does_not_invalidate(rig: Rig) -> None:
    """RFC 9111 4.4: only a non-error (2xx, 3xx) answer invalidates."""
    rig.origin.on("/keep", Answer(headers={"Cache-Control": "max-age=600"}))
    await rig.get("/keep")
    rig.origin.on("/keep", Answer(status=500, body=b"nope"))
    assert (await rig.get("/keep", method="POST", data=b"x"))[0] == 500
    assert (await rig.get("/keep"))[1]["X-Cache"] == "HIT"


async def test_invalidation_covers_every_variant(rig: Rig) -> None:
    """RFC 9111 4.4 with 4.1: every stored response of the target URI goes."""
    def by_language(r: web.Request) -> Answer:
        return Answer(headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"},
                      body=r.headers.get("Accept-Language", "-").encode())

    rig.origin.on("/vv", by_language)
    for lang in ("en", "fr"):
        await rig.get("/vv", {"Accept-Language": lang})
        assert (await rig.get("/vv", {"Accept-Language": lang}))[1]["X-Cache"] == "HIT"
    rig.origin.on("/vv", Answer(status=204), by_language)
    assert (await rig.get("/vv", method="PUT", data=b"x"))[0] == 204
    for lang in ("en", "fr"):
        _, rh, body = await rig.get("/vv", {"Accept-Language": lang})
        assert rh["X-Cache"] == "MISS" and body == lang.encode()


# -- RFC 5861 -----------------------------------------------------------------------------------------

async def test_stale_while_revalidate_serves_stale_while_exactly_one_refresh_runs(rig: Rig) -> None:
    """RFC 5861 3: within stale-while-revalidate, stale answers at once; one refresh behind."""
    gate = asyncio.Event()
    rig.origin.on("/swr",
                  Answer(headers={"Cache-Control": "max-age=1, stale-while-revalidate=600", "Age": "5",
                                  "ETag": '"s1"'}, body=b"stale"),
                  Answer(headers={"Cache-Control": "max-age=600", "ETag": '"s2"'}, body=b"fresh", gate=gate))
    await rig.get("/swr")
    answers = await asyncio.gather(*(rig.get("/swr") for _ in range(8)))
    for status, rh, body in answers:
        assert status == 200 and body == b"stale" and rh["X-Cache"] == "HIT"
        assert "detail=stale-while-revalidate" in rh["Cache-Status"]
    assert len(rig.origin.hits("/swr")) == 2  # the fill, and exactly one refresh (held at the gate)
    assert rig.origin.hits("/swr")[-1].headers.get("If-None-Match") == '"s1"'
    gate.set()
    for _ in range(200):  # the refresh lands: wait on the edge's state, no fixed sleep
        if "/swr" not in {k.path for k in rig.node.coalescer.inflight}:
            break
        await asyncio.sleep(0.01)
    status, rh, body = await rig.get("/swr")
    assert body == b"fresh" and rh["X-Cache"] == "HIT" and len(rig.origin.hits("/swr")) == 2


async def test_stale_if_error_serves_stale_when_the_origin_fails(rig: Rig) -> None:
    """RFC 5861 4: within stale-if-error, an origin error (5xx) or an unreachable origin
    gets the stale response; without it, the error (RFC 9111 4.2.4)."""
    rig.origin.on("/sie", Answer(headers={"Cache-Control": "max-age=1, stale-if-error=600", "Age": "5"},
                                 body=b"old but good"), Answer(status=503, body=b"down"))
    rig.origin.on("/plain", Answer(headers={"Cache-Control": "max-age=1", "Age": "5"}), Answer(status=503))
    rig.origin.on("/mr", Answer(headers={"Cache-Control": "max-age=1, must-revalidate, stale-if-error=600",
                                         "Age": "5"}), Answer(status=503))
    for path in ("/sie", "/plain", "/mr"):
        await rig.get(path)
    status, rh, body = await rig.get("/sie")
    assert status == 200 and body == b"old but good" and "detail=stale-if-error" in rh["Cache-Status"]
    assert (await rig.get("/plain"))[0] == 502
    assert (await rig.get("/mr"))[0] == 504  # 9111 5.2.2.2: must-revalidate: an error (504), never stale
    await rig.origin.stop()  # unreachable now
    status, rh, body = await rig.get("/sie")
    assert status == 200 and body == b"old but good" and "stale-if-error" in rh["Cache-Status"]
    assert (await rig.get("/plain"))[0] in (502, 504)


# -- any origin ------------------------------------------------------------------------------------------

async def test_any_path_and_query_is_a_cache_key_and_concurrent_misses_coalesce(rig: Rig) -> None:
    """RFC 9111 2: the target URI (query included) is the key; one fetch for N misses."""
    gate = asyncio.Event()
    rig.origin.on("/a/b.m3u8?v=1", Answer(headers={"Cache-Control": "max-age=60"}, body=b"one", gate=gate))
    rig.origin.on("/a/b.m3u8?v=2", Answer(headers={"Cache-Control": "max-age=60"}, body=b"two"))
    many = asyncio.gather(*(rig.get("/a/b.m3u8?v=1") for _ in range(6)))
    for _ in range(200):
        if rig.origin.hits("/a/b.m3u8?v=1"):
            break
        await asyncio.sleep(0.01)
    gate.set()
    assert all(body == b"one" for _, _, body in await many)
    assert len(rig.origin.hits("/a/b.m3u8?v=1")) == 1
    assert (await rig.get("/a/b.m3u8?v=2"))[2] == b"two"
    _, rh, body = await rig.get("/a/b.m3u8?v=1")
    assert rh["X-Cache"] == "HIT" and body == b"one"


async def test_a_chunked_small_body_is_cached_and_hits_take_the_fast_lane(rig: Rig) -> None:
    """RFC 9112 7.1: no Content-Length; the edge reads it whole, then caches it like any other."""
    rig.origin.on("/live.m3u8", Answer(headers={"Cache-Control": "max-age=60",
                                                "Content-Type": "application/vnd.apple.mpegurl"},
                                       body=b"#EXTM3U\n" * 500, chunked=True))
    assert (await rig.get("/live.m3u8"))[2] == b"#EXTM3U\n" * 500
    before = rig.node.hot.hits if rig.node.hot is not None else 0
    for _ in range(3):
        _, rh, body = await rig.get("/live.m3u8")
        assert rh["X-Cache"] == "HIT" and body == b"#EXTM3U\n" * 500 and rh["Content-Type"].startswith(
            "application/vnd.apple.mpegurl")
    assert rig.node.hot is not None and rig.node.hot.hits > before  # served from RAM


async def test_redirects_and_errors_pass_through_uncached(rig: Rig) -> None:
    """RFC 9110 15.4: a 3xx goes to the client with its Location (the edge follows none)."""
    rig.origin.on("/moved", Answer(status=302, headers={"Location": "/there"}, body=b""))
    for _ in range(2):
        status, rh, _ = await rig.get("/moved")
        assert status == 302 and rh["Location"] == "/there" and rh["X-Cache"] == "MISS"
    assert len(rig.origin.hits("/moved")) == 2


# -- bad input ---------------------------------------------------------------------------------------------

async def test_bad_requests_get_a_4xx(rig: Rig) -> None:
    """RFC 9110 9.3.1 (a GET body has no meaning: refused), 15.5.6 (405 with Allow),
    15.5.15 / aiohttp's limits (oversized header fields), never a 5xx."""
    rig.origin.on("/x", Answer(headers={"Cache-Control": "max-age=60"}))
    status, _, _ = await rig.get("/x", data=b"a body")
    assert status == 400
    for method in ("TRACE", "FOO", "CONNECT"):
        status, rh, _ = await rig.get("/x", method=method)
        assert 400 <= status < 500, method
    status, rh, _ = await rig.get("/x", method="TRACE")
    assert status == 405 and "GET" in rh["Allow"]
    status, _, _ = await rig.get("/x", {"X-Big": "a" * 20000})
    assert 400 <= status < 500
    for target in (b"/a/../x", b"/a/%2e%2e/x", b"/" + b"a" * 3000, b"/a\\..\\x"):
        assert 400 <= await raw_status(rig.edge, target) < 500, target
    assert not [s for s in rig.origin.seen if s.method != "GET"]


@pytest.mark.parametrize("field", [b"Cache-Control: no-cache", b"Pragma: no-cache", b"Authorization: Bearer x",
                                   b"cache-control: max-age=0"])
def test_the_fast_lane_leaves_requests_with_directives_or_credentials_to_the_full_path(field: bytes) -> None:
    """RFC 9111 5.2.1 / 3.5: only a request without directives of its own is answered from
    a fresh object by the fast lane's freshness check alone."""
    from edge.hitpath import simple_get_target

    assert simple_get_target(b"GET /a HTTP/1.1\r\nHost: x") == "/a"
    assert simple_get_target(b"GET /a HTTP/1.1\r\nHost: x\r\n" + field) is None


async def test_the_fast_lane_serves_only_fresh_objects(rig: Rig) -> None:
    """RFC 9111 4.2: a RAM hit answered below aiohttp is fresh; once stale, the full path
    revalidates it (the fast lane's answer is None, so nothing stale leaves from RAM)."""
    rig.origin.on("/f", Answer(headers={"Cache-Control": "max-age=60", "ETag": '"f"'}),
                  Answer(headers={"Cache-Control": "max-age=60", "Age": "100", "ETag": '"f"'}))
    await rig.get("/f")
    assert rig.node._fast_get("/f") is not None
    rig.origin.on("/g", Answer(headers={"Cache-Control": "max-age=60", "Age": "100"}))
    await rig.get("/g")
    assert rig.node.hot is not None and "/g" in rig.node.hot  # in RAM, and stale
    assert rig.node._fast_get("/g") is None


async def test_the_fast_lanes_reused_head_follows_the_clock(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9111 5.1 / RFC 9110 6.6.1: the fast lane reuses a finished head only while its
    Age and Date stay the same; a later second gets a new Date and a grown Age, each the
    Age the normal path would send (`Freshness.age`)."""
    import edge.server as edge_server

    rig.origin.on("/clock", Answer(headers={"Cache-Control": "max-age=600", "Age": "5"}))
    await rig.get("/clock")
    t = [time.time() + 0.25]
    monkeypatch.setattr(edge_server, "_time", lambda: t[0])
    fresh = rig.node._hit_view(rig.node.store.by_text["/clock"]).fresh

    def head() -> dict[str, str]:
        got = rig.node._fast_get("/clock")
        assert got is not None
        lines = got[0].decode().split("\r\n")
        return dict(line.split(": ", 1) for line in lines[1:] if line)

    first = head()
    assert head() == first  # same second: the same head
    assert int(first["Age"]) == fresh.age(t[0]) >= 5 and first["Date"] == formatdate(int(t[0]), usegmt=True)
    t[0] += 1.5
    later = head()
    assert int(later["Age"]) == fresh.age(t[0]) > int(first["Age"])
    assert later["Date"] == formatdate(int(t[0]), usegmt=True) != first["Date"]
    t[0] += 100
    assert int(head()["Age"]) == fresh.age(t[0]) >= int(first["Age"]) + 100


async def test_fast_lane_hits_move_the_counters_and_the_latency_histogram(rig: Rig) -> None:
    """The fast lane counts what the normal path counts for a hit: hits, cache bytes, HTTP
    requests and bytes of the content route, and one latency observation each."""
    from common.metrics import parse_text

    rig.origin.on("/counted", Answer(headers={"Cache-Control": "max-age=600"}, body=b"x" * 1000))
    await rig.get("/counted")

    async def scrape() -> dict[str, float]:
        async with rig.s.get(rig.edge + "/metrics") as r:
            return parse_text(await r.text())

    before = await scrape()
    for _ in range(7):
        assert rig.node._fast_get("/counted") is not None
    after = await scrape()

    def moved(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    route = 'route="/{tail}"'
    assert moved("ocsim_edge_hits_total") == 7
    assert moved('ocsim_edge_served_bytes_total{source="cache"}') == 7000
    assert moved(f'ocsim_http_requests_total{{{route},method="GET",status="200"}}') == 7
    assert moved(f'ocsim_http_response_bytes_total{{{route},method="GET",status="200"}}') == 7000
    assert moved(f"ocsim_http_request_seconds_count{{{route}}}") == 7


async def test_purge_takes_any_origin_path_and_every_variant(rig: Rig) -> None:
    """The operator's purge (not an RFC rule): an origin's own path, all its variants."""
    rig.origin.on("/p?x=1", lambda r: Answer(headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"},
                                             body=r.headers.get("Accept-Language", "-").encode()))
    for lang in ("en", "fr"):
        await rig.get("/p?x=1", {"Accept-Language": lang})
    async with rig.s.post(rig.edge + "/admin/purge", json={"path": "/p?x=1"},
                          headers={"Authorization": "Bearer op-token-for-tests"}) as r:
        assert r.status == 200 and (await r.json())["purged"] == 2
    for lang in ("en", "fr"):
        assert (await rig.get("/p?x=1", {"Accept-Language": lang}))[1]["X-Cache"] == "MISS"


async def test_once_a_path_varies_the_newest_variant_answers_not_an_older_plain_copy(rig: Rig) -> None:
    """RFC 9111 4.1: with several stored responses that match, the most recent is used; the
    fast lane (which reads no request fields) leaves a path with variants to the full path."""
    rig.origin.on("/vx", Answer(headers={"Cache-Control": "max-age=600", "ETag": '"p"'}, body=b"plain"),
                  Answer(headers={"Cache-Control": "max-age=600", "Vary": "Accept-Language"}, body=b"varied"))
    await rig.get("/vx")
    assert rig.node._fast_get("/vx") is not None
    assert (await rig.get("/vx", {"Cache-Control": "no-cache"}))[2] == b"varied"  # 5.2.1.4: to the origin
    assert rig.node._fast_get("/vx") is None
    _, rh, body = await rig.get("/vx")
    assert body == b"varied" and rh["X-Cache"] == "HIT"
