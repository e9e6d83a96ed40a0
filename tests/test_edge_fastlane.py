"""The edge's fast lane (edge.hitpath.FastLane): plain GETs of RAM objects answered below
aiohttp, everything else handed to aiohttp on the same connection, in order.

Real processes on loopback; raw sockets so the wire (pipelining, split headers, a client
that does not read) is exactly what the test says.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from common.metrics import parse_text
from common.tokens import Keyring
from edge.hitpath import simple_get, simple_get_target
from ocsim.procs import ServiceProcess
from tests.conftest import StartService

pytestmark = pytest.mark.timeout(40)

OP = "operator-secret-token"
MASTER = "/content/title-018/master.m3u8"
MEDIA = "/content/title-018/235/index.m3u8"


def start_edge(start_service: StartService, tmp_path: Path, upstream: str, *extra: str,
               env: dict[str, str] | None = None) -> ServiceProcess:
    return start_service("edge", "edge", "--host", "127.0.0.1", "--port", "0", "--id", "e1", "--isp", "isp-a",
                         "--upstream", upstream, "--cache-dir", str(tmp_path / "cache"), "--capacity", "50MB",
                         "--operator-token", OP, "--no-access-log", *extra, env=env)


class Raw:
    """A raw HTTP/1.1 connection: write bytes, read whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> Raw:
        parts = urlsplit(url)
        return cls(*await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("content-length", "0"))), 10)
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.writer.close()


def get(path: str, *extra: str) -> bytes:
    return ("".join([f"GET {path} HTTP/1.1\r\nHost: edge\r\n", *(f"{h}\r\n" for h in extra), "\r\n"])).encode()


async def warm(url: str, *paths: str) -> dict[str, bytes]:
    """Fetch each path until it is a HIT (a fill puts small objects in the RAM tier)."""
    bodies = {}
    async with aiohttp.ClientSession() as s:
        for p in paths:
            for _ in range(3):
                async with s.get(url + p) as r:
                    assert r.status == 200
                    bodies[p] = await r.read()
                    if r.headers["X-Cache"] == "HIT":
                        break
    return bodies


async def metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        return parse_text(await r.text())


def test_simple_get_target() -> None:
    assert simple_get_target(b"GET /content/a/1/0.seg HTTP/1.1\r\nHost: x") == "/content/a/1/0.seg"
    tokened = "/t/k1.9.-.abc/content/a/master.m3u8"
    assert simple_get_target(f"GET {tokened} HTTP/1.1".encode()) == tokened
    for head in [b"HEAD /x HTTP/1.1", b"GET /x HTTP/1.0", b"GET /x?q HTTP/1.1", b"GET /%2e HTTP/1.1",
                 b"GET /x HTTP/1.1\r\nRange: bytes=0-1", b"GET /x HTTP/1.1\r\nIf-None-Match: *",
                 b"GET /x HTTP/1.1\r\nif-range: x", b"GET /x HTTP/1.1\r\nConnection: close",
                 b"GET /x HTTP/1.1\r\nContent-Length: 0", b"GET /x HTTP/1.1\r\nTransfer-Encoding: chunked",
                 b"GET /x HTTP/1.1\r\nHost : x", b"GET /x HTTP/1.1\r\n Host: x", b"GET /x HTTP/1.1\r\nA: b\nC: d",
                 b"GET /x HTTP/1.1\r\nA: \xff", b"GET  /x HTTP/1.1", b"get /x HTTP/1.1", b"GET x HTTP/1.1",
                 b"GET /x HTTP/1.1\r\nExpect: 100-continue", b"GET /x HTTP/1.1\r\nUpgrade: websocket"]:
        assert simple_get_target(head) is None, head


async def test_pipelined_fast_and_slow_requests_stay_in_order(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    bodies = await warm(edge.url, MASTER, MEDIA)
    before = await metrics(edge.url)
    c = await Raw.open(edge.url)
    try:
        # fast, slow (Range), fast, slow (conditional), slow (not content), fast again on the
        # slow connection: all in one write, answered in order
        await c.send(get(MASTER) + get(MEDIA, "Range: bytes=0-9") + get(MEDIA)
                     + get(MASTER, 'If-None-Match: "nope"') + get("/healthz") + get(MASTER))
        status, h, body = await c.response()
        assert status == 200 and h["x-cache"] == "HIT" and body == bodies[MASTER]
        assert h["cache-status"] == "ocsim-e1; hit" and h["accept-ranges"] == "bytes" and "etag" in h
        status, h, body = await c.response()
        assert status == 206 and body == bodies[MEDIA][:10] and h["content-range"].startswith("bytes 0-9/")
        status, h, body = await c.response()
        assert status == 200 and body == bodies[MEDIA]
        status, h, body = await c.response()
        assert status == 200 and body == bodies[MASTER]
        status, h, body = await c.response()
        assert status == 200 and b'"status"' in body
        status, h, body = await c.response()
        assert status == 200 and body == bodies[MASTER] and h["x-cache"] == "HIT"
    finally:
        c.close()
    after = await metrics(edge.url)
    key = 'ocsim_http_requests_total{route="/{tail}",method="GET",status="200"}'
    assert after[key] - before.get(key, 0) == 4  # every content 200, fast or not, counted alike
    assert after["ocsim_edge_hits_total"] - before["ocsim_edge_hits_total"] == 5


async def test_fast_answer_matches_the_normal_one(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    await warm(edge.url, MEDIA)
    c = await Raw.open(edge.url)
    try:
        await c.send(get(MEDIA))
        fast = await c.response()
        await c.send(get(MEDIA, "Connection: keep-alive"))  # goes the aiohttp way
        slow = await c.response()
    finally:
        c.close()
    drop = ("date", "age")
    assert fast[0] == slow[0] == 200 and fast[2] == slow[2]
    assert {k: v for k, v in fast[1].items() if k not in drop} == {k: v for k, v in slow[1].items() if k not in drop}
    assert "date" in fast[1] and int(fast[1]["age"]) >= 0


async def test_split_headers_and_a_client_that_does_not_read(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    bodies = await warm(edge.url, MEDIA)
    c = await Raw.open(edge.url)
    try:
        req = get(MEDIA)
        for piece in (req[:5], req[5:30], req[30:-1], req[-1:]):  # the header block in four packets
            await c.send(piece)
            await asyncio.sleep(0.02)
        status, _, body = await c.response()
        assert status == 200 and body == bodies[MEDIA]
        # ~16 MB of answers asked for while we do not read: more than the socket buffers
        # hold, so the edge must stop writing and reading (transport paused), not fail
        n = max(400, (16 << 20) // len(body))
        c.writer.write(req * n)
        await asyncio.sleep(0.5)
        for _ in range(n):
            status, _, body = await c.response()
            assert status == 200 and body == bodies[MEDIA]
        await c.send(req)  # and the connection is still good
        assert (await c.response())[2] == bodies[MEDIA]
    finally:
        c.close()


async def test_tokens_on_the_fast_lane(start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    ring = Keyring.parse("k1:" + secrets.token_hex(32))
    edge = start_edge(start_service, tmp_path, origin.url, "--token-key", ring.format())
    now = int(time.time())
    good = ring.sign("title-018", now + 60, "isp-a")
    bodies = await warm(edge.url, f"/t/{good}{MASTER}")
    c = await Raw.open(edge.url)
    try:
        for _ in range(3):  # verified once, then remembered
            await c.send(get(f"/t/{good}{MASTER}"))
            status, h, body = await c.response()
            assert status == 200 and h["x-cache"] == "HIT" and body == bodies[f"/t/{good}{MASTER}"]
        other = ring.sign("title-019", now + 60, "isp-a")
        expired = ring.sign("title-018", now - 5, "isp-a")
        tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
        for target in (f"/t/{other}{MASTER}", f"/t/{expired}{MASTER}", f"/t/{tampered}{MASTER}", MASTER):
            await c.send(get(target))
            status, _, _ = await c.response()
            assert status == 403, target
    finally:
        c.close()


async def test_sigterm_with_idle_fast_connections(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    await warm(edge.url, MASTER)
    conns = [await Raw.open(edge.url) for _ in range(5)]
    try:
        for c in conns:
            await c.send(get(MASTER))
            assert (await c.response())[0] == 200
        t0 = time.monotonic()
        edge.stop(timeout=10)
        assert edge.proc is not None and edge.proc.returncode == 0
        assert time.monotonic() - t0 < 5
        for c in conns:  # the edge closed them
            assert await asyncio.wait_for(c.reader.read(), 5) == b""
    finally:
        for c in conns:
            c.close()


async def test_fast_lane_can_be_turned_off(start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url, "--no-fast-lane")
    bodies = await warm(edge.url, MASTER)
    c = await Raw.open(edge.url)
    try:
        await c.send(get(MASTER) * 3)
        for _ in range(3):
            status, h, body = await c.response()
            assert status == 200 and h["x-cache"] == "HIT" and body == bodies[MASTER]
    finally:
        c.close()


async def test_keep_alive_timer_follows_fast_answers() -> None:
    """In process, with a short keep-alive timeout: fast answers keep the connection open
    past the timeout, idleness then closes it (aiohttp's own timer, pushed by the lane)."""
    from aiohttp import web

    from edge.hitpath import install_fast_lane

    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok")
    async def slow(request: web.Request) -> web.Response:
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_get("/slow", slow)
    install_fast_lane(app, lambda path, session: answer if path == "/fast" else None)
    runner = web.AppRunner(app, keepalive_timeout=0.4)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        c = await Raw.open(f"http://127.0.0.1:{port}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:  # 2.5x the timeout, busy
            await c.send(get("/fast"))
            assert (await c.response())[2] == b"ok"
            await asyncio.sleep(0.1)
        await c.send(get("/slow") + get("/fast"))  # handed over, and aiohttp answers both
        assert (await c.response())[2] == b"slow"
        assert (await c.response())[0] == 404
        assert await asyncio.wait_for(c.reader.read(), 3) == b""  # idle: closed by the timer
        c.close()
    finally:
        await runner.cleanup()


def test_simple_get_finds_the_session_in_the_same_scan() -> None:
    base = b"GET /content/a/1/0.seg HTTP/1.1\r\nHost: x"
    assert simple_get(base) == ("/content/a/1/0.seg", None)
    assert simple_get(base + b"\r\nX-Ocsim-Session: p-12ab") == ("/content/a/1/0.seg", "p-12ab")
    assert simple_get(base + b"\r\nx-ocsim-session:\tp-1 \t\r\nAccept: */*") == ("/content/a/1/0.seg", "p-1")
    # the first of two, as aiohttp's headers.get answers; cut to 128 characters as the slow path cuts it
    assert simple_get(base + b"\r\nX-Ocsim-Session: a\r\nX-Ocsim-Session: b") == ("/content/a/1/0.seg", "a")
    assert simple_get(base + b"\r\nX-Ocsim-Session: " + b"s" * 300) == ("/content/a/1/0.seg", "s" * 128)
    assert simple_get(base + b"\r\nX-Ocsim-Session: ") == ("/content/a/1/0.seg", None)
    # a slow field after the session still sends the request to aiohttp
    assert simple_get(base + b"\r\nX-Ocsim-Session: a\r\nRange: bytes=0-1") is None
    assert simple_get(base + b"\r\nX-Ocsim-Sessions: a") == ("/content/a/1/0.seg", None)


async def test_a_failing_fast_lane_falls_back_to_aiohttp() -> None:
    from aiohttp import web

    from edge.hitpath import install_fast_lane

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="aiohttp")

    def broken(path: str, session: str | None) -> None:
        raise RuntimeError("bug")

    app = web.Application()
    app.router.add_get("/x", handler)
    install_fast_lane(app, broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        c = await Raw.open(f"http://127.0.0.1:{runner.addresses[0][1]}")
        await c.send(get("/x") * 2)
        assert (await c.response())[2] == b"aiohttp"
        assert (await c.response())[2] == b"aiohttp"
        c.close()
    finally:
        await runner.cleanup()
