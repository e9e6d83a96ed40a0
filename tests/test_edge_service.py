"""The edge against a real origin, as real processes on ephemeral loopback ports.

Every body is checked byte for byte against common.segbytes; upstream fetches are
counted at the origin (`/admin/stats` by_path). No fixed sleeps: we poll with deadlines.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web

from common.content import default_catalog
from common.segbytes import SegmentSpec
from common.tokens import Keyring
from common.wire import SIGNATURE_HEADER, ControlReply, FillPlan, Heartbeat, Register, sign, verify_signature
from ocsim.procs import ServiceProcess
from tests.conftest import StartService

pytestmark = pytest.mark.timeout(40)

CAT = default_catalog()
OP = "operator-secret-token"


def seg(title: str, rendition: int, index: int) -> SegmentSpec:
    return CAT.get(title).segment(rendition, index)


def path_of(spec: SegmentSpec) -> str:
    return spec.id.path


def start_edge(start_service: StartService, tmp_path: Path, upstream: str, *extra: str, name: str = "edge",
               cache: str = "cache", capacity: str = "200MB") -> ServiceProcess:
    return start_service(name, "edge", "--host", "127.0.0.1", "--port", "0", "--id", name, "--isp", "isp-a",
                         "--upstream", upstream, "--cache-dir", str(tmp_path / cache), "--capacity", capacity,
                         "--operator-token", OP, "--no-access-log", *extra)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fetch(s: aiohttp.ClientSession, url: str, method: str = "GET",
                headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    async with s.request(method, url, headers=headers) as r:
        return r.status, r.headers, await r.read()


async def origin_count(s: aiohttp.ClientSession, origin: ServiceProcess, token: str, path: str) -> int:
    async with s.get(origin.url + "/admin/stats", headers=bearer(token)) as r:
        return int((await r.json())["by_path"].get(path, 0))


async def set_link(s: aiohttp.ClientSession, origin: ServiceProcess, token: str, **settings: Any) -> None:
    async with s.put(origin.url + "/admin/link", json=settings, headers=bearer(token)) as r:
        assert r.status == 200, await r.text()


async def edge_stats(s: aiohttp.ClientSession, edge: ServiceProcess) -> dict[str, Any]:
    async with s.get(edge.url + "/admin/stats", headers=bearer(OP)) as r:
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def data_file(cache_dir: Path, key: str) -> Path:
    h = hashlib.sha256(key.encode()).hexdigest()
    return cache_dir / "objects" / h[:2] / h[2:4] / h


def disk_files(cache_dir: Path) -> tuple[list[Path], list[Path]]:
    files = [p for p in (cache_dir / "objects").rglob("*") if p.is_file()]
    return [p for p in files if not p.name.endswith(".meta")], [p for p in files if p.name.endswith(".meta")]


async def raw_status(url: str, target: bytes, extra: bytes = b"") -> int:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra + b"Connection: close\r\n\r\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return int(line.split()[1])


# -- coalescing ---------------------------------------------------------------------------------

async def test_100_concurrent_misses_make_one_upstream_fetch(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    spec = seg("title-010", 5800, 3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await set_link(s, origin, admin_token, latency_ms=300)  # all 100 arrive while the fill is in flight
        results = await asyncio.gather(*(fetch(s, edge.url + path_of(spec)) for _ in range(100)))
        assert await origin_count(s, origin, admin_token, path_of(spec)) == 1
        for status, headers, body in results:
            assert status == 200 and headers["X-Cache"] == "MISS"
            assert len(body) == spec.length and spec.verify(0, body)
        st = await edge_stats(s, edge)
        assert st["misses"]["cold"] == 1 and st["misses"]["coalesced"] == 99 and st["misses"]["origin"] == 1
        status, headers, body = await fetch(s, edge.url + path_of(spec))
        assert status == 200 and headers["X-Cache"] == "HIT" and headers["Cache-Status"] == "ocsim-edge; hit"
        assert spec.verify(0, body) and len(body) == spec.length
        assert await origin_count(s, origin, admin_token, path_of(spec)) == 1


# -- Range and conditionals, on misses and on hits ------------------------------------------------

@pytest.mark.parametrize("state", ["miss", "hit"])
async def test_range_and_conditionals(start_service: StartService, origin: ServiceProcess, admin_token: str,
                                      tmp_path: Path, state: str) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    async with aiohttp.ClientSession() as s:
        cases: list[tuple[str, dict[str, str], int, tuple[int, int] | None]] = [
            ("GET", {"Range": "bytes=0-99"}, 206, (0, 100)),
            ("GET", {"Range": "bytes=-100"}, 206, (-100, 0)),
            ("GET", {"Range": "bytes=1000-"}, 206, (1000, 0)),
            ("GET", {"Range": "bytes=5-2"}, 200, None),  # invalid: ignored (RFC 9110 14.2)
            ("GET", {"Range": "bytes=0-1,5-6"}, 200, None),  # several ranges: we may send all
            ("GET", {"Range": "items=0-1"}, 200, None),  # unknown unit: ignored
            ("GET", {"Range": "bytes=99999999-"}, 416, None),
            ("GET", {"Range": "bytes=-0"}, 416, None),
            ("GET", {"If-None-Match": "ETAG"}, 304, None),
            ("GET", {"If-None-Match": '"nope", ETAG'}, 304, None),
            ("GET", {"Range": "bytes=0-9", "If-Range": "ETAG"}, 206, (0, 10)),
            ("GET", {"Range": "bytes=0-9", "If-Range": '"other"'}, 200, None),
            ("HEAD", {}, 200, None),
            ("HEAD", {"Range": "bytes=10-19"}, 206, (10, 20)),
            ("GET", {}, 200, None),
        ]
        etags = []
        for i in range(len(cases)):
            etags.append((await fetch(s, origin.url + path_of(seg("title-011", 235, i)), "HEAD"))[1]["ETag"])
        async with s.post(origin.url + "/admin/stats/reset", headers=bearer(admin_token)) as r:
            assert r.status == 200
        for i, (method, hdrs, want, rng) in enumerate(cases):
            spec = seg("title-011", 235, i)
            url = edge.url + path_of(spec)
            etag = etags[i]
            hdrs = {k: v.replace("ETAG", etag) for k, v in hdrs.items()}
            if state == "hit":
                await fetch(s, url)
            status, headers, body = await fetch(s, url, method, hdrs)
            where = f"case {i} {method} {hdrs}"
            assert status == want, where
            assert headers["X-Cache"] == ("HIT" if state == "hit" else "MISS"), where
            assert headers["Cache-Status"].startswith("ocsim-edge; "), where
            if status in (200, 206, 304):
                assert headers["ETag"] == etag and "immutable" in headers["Cache-Control"], where
            if status == 416:
                assert headers["Content-Range"] == f"bytes */{spec.length}", where
                continue
            if status == 304:
                assert body == b"", where
                continue
            assert headers["Accept-Ranges"] == "bytes", where
            start, end = (0, spec.length) if rng is None else rng
            start = start % spec.length if start < 0 else start
            end = end or spec.length
            assert int(headers["Content-Length"]) == end - start, where
            if status == 206:
                assert headers["Content-Range"] == f"bytes {start}-{end - 1}/{spec.length}", where
            if method == "HEAD":
                assert body == b"", where
            else:
                assert len(body) == end - start and spec.verify(start, body), where
        # the edge always fetched whole objects, once each
        for i in range(len(cases)):
            assert await origin_count(s, origin, admin_token, path_of(seg("title-011", 235, i))) == 1


async def test_range_on_a_miss_is_answered_while_filling(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    spec = seg("title-012", 1750, 0)
    async with aiohttp.ClientSession() as s:
        await set_link(s, origin, admin_token, bandwidth_bps=4_000_000)  # ~1.8 s for the whole object
        status, headers, body = await fetch(s, edge.url + path_of(spec), headers={"Range": "bytes=0-99"})
        assert status == 206 and headers["Content-Range"] == f"bytes 0-99/{spec.length}"
        assert spec.verify(0, body) and len(body) == 100
        assert (await edge_stats(s, edge))["fills_inflight"] == 1  # answered before the fill ended

        async def stored() -> bool:
            return (await edge_stats(s, edge))["objects"] == 1
        await until(stored, 10, "the fill to complete")
        status, headers, body = await fetch(s, edge.url + path_of(spec))
        assert status == 200 and headers["X-Cache"] == "HIT" and spec.verify(0, body) and len(body) == spec.length


# -- failures ---------------------------------------------------------------------------------

async def test_origin_down_hits_still_served_misses_fail_fast(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url, "--fill-timeout", "1")
    cached, other = seg("title-013", 750, 0), seg("title-013", 750, 1)
    async with aiohttp.ClientSession() as s:
        assert (await fetch(s, edge.url + path_of(cached)))[0] == 200
        for down, want in (("refuse", 502), ("503", 502)):
            await set_link(s, origin, admin_token, down=down)
            status, headers, body = await fetch(s, edge.url + path_of(cached))
            assert status == 200 and headers["X-Cache"] == "HIT" and spec_ok(cached, body)
            t0 = time.monotonic()
            status, headers, body = await fetch(s, edge.url + path_of(other))
            assert status == want and headers["X-Cache"] == "MISS" and b"error" in body
            assert time.monotonic() - t0 < 1.5
        await set_link(s, origin, admin_token, down="off", latency_ms=3000)
        t0 = time.monotonic()
        status, headers, body = await fetch(s, edge.url + path_of(other))
        assert status == 504 and headers["X-Cache"] == "MISS"
        assert time.monotonic() - t0 < 2.5
        st = await edge_stats(s, edge)
        assert st["fill_errors"] == 3 and st["objects"] == 1 and st["filling"] == 0
    assert not list((tmp_path / "cache" / "tmp").iterdir())


def spec_ok(spec: SegmentSpec, body: bytes) -> bool:
    return len(body) == spec.length and spec.verify(0, body)


async def test_upstream_dying_mid_fill_truncates_clients_and_caches_nothing(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    spec = seg("title-014", 1750, 0)
    async with aiohttp.ClientSession() as s:
        await set_link(s, origin, admin_token, bandwidth_bps=2_000_000)
        async with s.get(edge.url + path_of(spec)) as r:
            assert r.status == 200 and r.headers["X-Cache"] == "MISS"
            first = await r.content.readexactly(1000)
            assert spec.verify(0, first)
            origin.kill()
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()  # never a silently short 200
        st = await edge_stats(s, edge)
        assert st["objects"] == 0 and st["used_bytes"] == 0 and st["fill_errors"] == 1
        t0 = time.monotonic()
        status, headers, _ = await fetch(s, edge.url + path_of(spec))
        assert status == 502 and headers["X-Cache"] == "MISS" and time.monotonic() - t0 < 2
    assert not list((tmp_path / "cache" / "tmp").iterdir())
    assert disk_files(tmp_path / "cache") == ([], [])


async def test_kill_9_during_fills_then_restart(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    capacity = 3_000_000
    edge = start_edge(start_service, tmp_path, origin.url, capacity=str(capacity))
    cache = tmp_path / "cache"
    small = [seg("title-015", 235, i) for i in range(3)]
    big = [seg("title-015", 1750, i) for i in range(6)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        for spec in small:
            assert (await fetch(s, edge.url + path_of(spec)))[0] == 200
            # pinned, so the fills below cannot evict them whatever the policy: what must
            # survive the crash is then known exactly (pins persist too)
            async with s.post(edge.url + "/admin/pin", json={"path": path_of(spec)}, headers=bearer(OP)) as r:
                assert r.status == 200
        await set_link(s, origin, admin_token, bandwidth_bps=8_000_000)
        tasks = [asyncio.ensure_future(fetch(s, edge.url + path_of(spec))) for spec in big]

        async def partial_on_disk() -> bool:
            parts = list((cache / "tmp").iterdir())
            return sum(1 for p in parts if p.stat().st_size > 0) >= 2
        await until(partial_on_disk, 10, "fills in flight with bytes on disk")
        edge.kill()  # SIGKILL mid-fill
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for spec, result in zip(big, results):  # what reached a client before the crash
            if not isinstance(result, BaseException) and result[0] == 200:
                assert spec_ok(spec, result[2]), "a client got a short or corrupt 200"
        assert list((cache / "tmp").iterdir())  # the crash left temp files behind

        edge2 = start_edge(start_service, tmp_path, origin.url, name="edge-restarted", capacity=str(capacity))
        assert not list((cache / "tmp").iterdir())
        data, metas = disk_files(cache)
        st = await edge_stats(s, edge2)
        assert st["objects"] == len(data) == len(metas) >= len(small)
        assert sum(p.stat().st_size for p in data) == st["used_bytes"] <= capacity
        for spec in small:  # survived the crash: hits, no refetch
            status, headers, body = await fetch(s, edge2.url + path_of(spec))
            assert status == 200 and headers["X-Cache"] == "HIT" and spec_ok(spec, body)
            assert await origin_count(s, origin, admin_token, path_of(spec)) == 1
        await set_link(s, origin, admin_token, bandwidth_bps=0)
        for spec in big:  # every byte right, whatever state the crash left
            status, _, body = await fetch(s, edge2.url + path_of(spec))
            assert status == 200 and spec_ok(spec, body)
        st = await edge_stats(s, edge2)
        data, _ = disk_files(cache)
        assert sum(p.stat().st_size for p in data) == st["used_bytes"] <= capacity


async def test_object_truncated_on_disk_is_refetched(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    spec = seg("title-016", 750, 2)
    async with aiohttp.ClientSession() as s:
        for want in ("MISS", "HIT"):
            status, headers, body = await fetch(s, edge.url + path_of(spec))
            assert status == 200 and headers["X-Cache"] == want and spec_ok(spec, body)
        os.truncate(data_file(tmp_path / "cache", path_of(spec)), spec.length // 2)
        status, headers, body = await fetch(s, edge.url + path_of(spec))
        assert status == 200 and headers["X-Cache"] == "MISS" and spec_ok(spec, body)
        assert await origin_count(s, origin, admin_token, path_of(spec)) == 2
        status, headers, body = await fetch(s, edge.url + path_of(spec))
        assert status == 200 and headers["X-Cache"] == "HIT" and spec_ok(spec, body)


async def test_too_big_to_cache_streams_through_and_errors_pass_through(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url, capacity="500KB")
    spec = seg("title-017", 1750, 0)
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            status, headers, body = await fetch(s, edge.url + path_of(spec))
            assert status == 200 and headers["X-Cache"] == "MISS" and spec_ok(spec, body)
            assert "stored" not in headers["Cache-Status"]
        assert await origin_count(s, origin, admin_token, path_of(spec)) == 2
        for path in ("/content/title-017/99/0.seg", "/content/no-such-title/master.m3u8"):
            status, headers, body = await fetch(s, edge.url + path)
            assert status == 404 and headers["X-Cache"] == "MISS" and b"error" in body
        assert (await edge_stats(s, edge))["objects"] == 0


# -- bad input ------------------------------------------------------------------------------------

async def test_bad_paths_never_escape_the_cache(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    targets = [
        b"/content/../../etc/passwd", b"/content/title-001/../../../etc/passwd",
        b"/content/title-001%2f235/0.seg", b"/content/title-001/235/%2e%2e%2f0.seg",
        b"/content/title-001/235/0.seg%00", b"/content/title-001/235/0.seg\x00",
        b"/content/" + b"a" * 300 + b"/master.m3u8", b"/content/title-001/0235/0.seg",
        b"/content/title-001/235/-1.seg", b"/content/title-001/235/00.seg", b"/t/../content/x/master.m3u8",
        b"/content/title-001\\..\\..\\x", b"/content/TITLE-001/master.m3u8", b"/%2e%2e/%2e%2e/etc/passwd",
        b"/content/title-001/235/999999999.seg", b"/t/abc", b"/", b"/content/", b"/etc/passwd",
    ]
    for target in targets:
        status = await raw_status(edge.url, target)
        assert 400 <= status < 500, (target, status)
    # oversized header: aiohttp refuses it with a 4xx
    assert 400 <= await raw_status(edge.url, b"/content/title-001/master.m3u8",
                                   b"X-Big: " + b"a" * 20000 + b"\r\n") < 500
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["objects", "tmp"]
    assert disk_files(tmp_path / "cache") == ([], [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "logs"]
    async with aiohttp.ClientSession() as s:
        # other methods are forwarded (ocsim's origin refuses a POST) and never stored;
        # a method the edge does not forward is refused here (RFC 9110 15.5.6)
        status, headers, _ = await fetch(s, edge.url + "/content/title-001/master.m3u8", "POST")
        assert 400 <= status < 500 and "fwd=method" in headers["Cache-Status"]
        status, headers, _ = await fetch(s, edge.url + "/content/title-001/master.m3u8", "TRACE")
        assert status == 405 and "GET" in headers["Allow"]
        assert disk_files(tmp_path / "cache") == ([], [])
        assert (await fetch(s, edge.url + "/healthz"))[0] == 200


# -- tokens ----------------------------------------------------------------------------------------

async def test_tokens(start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    ring = Keyring.parse("k1:" + secrets.token_hex(32))
    other_ring = Keyring.parse("k2:" + secrets.token_hex(32))
    edge = start_edge(start_service, tmp_path, origin.url, "--token-key", ring.format())
    now = int(time.time())
    master = "/content/title-018/master.m3u8"
    spec = seg("title-018", 235, 0)

    def url(token: str, path: str = master) -> str:
        return f"{edge.url}/t/{token}{path}"

    good = ring.sign("title-018", now + 60, "isp-a")
    tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
    async with aiohttp.ClientSession() as s:
        status, headers, body = await fetch(s, url(good))
        assert status == 200 and headers["X-Cache"] == "MISS" and body.startswith(b"#EXTM3U")
        status, headers, _ = await fetch(s, url(ring.sign("title-018", now + 120, "isp-b")))
        assert status == 200 and headers["X-Cache"] == "HIT"  # the token is not part of the key
        status, _, body = await fetch(s, url(good, path_of(spec)) + "?x=1")
        assert status == 200 and spec_ok(spec, body)
        for target, reason in [
            (edge.url + master, "missing token"),
            (url("not-a-token"), "malformed token"),
            (url(ring.sign("title-018", now - 5, "isp-a")), "expired token"),
            (url(tampered), "bad token signature"),
            (url(ring.sign("title-019", now + 60, "isp-a")), "bad token signature"),
            (url(other_ring.sign("title-018", now + 60, "isp-a")), "unknown token key"),
        ]:
            async with s.get(target) as r:
                assert r.status == 403, target
                assert await r.json() == {"error": reason}
        assert await origin_count(s, origin, admin_token, master) == 1


# -- peers ------------------------------------------------------------------------------------------

async def test_peer_fill_before_origin(start_service: StartService, origin: ServiceProcess, admin_token: str,
                                       tmp_path: Path) -> None:
    ring = Keyring.parse("k1:" + secrets.token_hex(32))
    a = start_edge(start_service, tmp_path, origin.url, "--token-key", ring.format(), name="edge-a", cache="a")
    b = start_edge(start_service, tmp_path, origin.url, "--token-key", ring.format(), "--peer", a.url,
                   name="edge-b", cache="b")
    on_a, not_on_a = seg("title-020", 750, 0), seg("title-020", 750, 1)
    tok = ring.sign("title-020", int(time.time()) + 60, "isp-a")
    async with aiohttp.ClientSession() as s:
        assert (await fetch(s, f"{a.url}/t/{tok}{path_of(on_a)}"))[0] == 200
        status, headers, body = await fetch(s, f"{b.url}/t/{tok}{path_of(on_a)}")
        assert status == 200 and headers["X-Cache"] == "MISS" and spec_ok(on_a, body)
        assert await origin_count(s, origin, admin_token, path_of(on_a)) == 1
        status, _, body = await fetch(s, f"{b.url}/t/{tok}{path_of(not_on_a)}")
        assert status == 200 and spec_ok(not_on_a, body)
        assert await origin_count(s, origin, admin_token, path_of(not_on_a)) == 1
        sa, sb = await edge_stats(s, a), await edge_stats(s, b)
        assert sb["misses"]["peer"] == 1 and sb["misses"]["origin"] == 1 and sb["objects"] == 2
        # by request: the first miss was a peer miss, the second a cold one; by fill: one of each source
        assert sb["misses"]["cold"] == 1 and sb["fills_by_source"] == {"peer": 1, "origin": 1}
        assert sa["objects"] == 1  # only-if-cached never made the peer fill
        status, headers, _ = await fetch(s, f"{a.url}/t/{tok}{path_of(not_on_a)}",
                                         headers={"Cache-Control": "only-if-cached"})
        assert status == 504 and headers["X-Cache"] == "MISS"


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_mutual_peers_missing_the_same_object_do_not_wait_on_each_other(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    """Each edge's fill asks the other (only-if-cached) while the other's fill asks it.

    A fill still probing peers must not be joined by a peer's only-if-cached request, or
    the two wait on each other until the peer timeout (seen under Locust at 10 s)."""
    port_a = free_port()
    url_a = f"http://127.0.0.1:{port_a}"
    b = start_edge(start_service, tmp_path, origin.url, "--peer", url_a, "--fill-timeout", "8",
                   name="edge-b", cache="b")
    a = start_service("edge-a", "edge", "--host", "127.0.0.1", "--port", str(port_a), "--id", "edge-a",
                      "--isp", "isp-a", "--upstream", origin.url, "--cache-dir", str(tmp_path / "a"),
                      "--capacity", "200MB", "--operator-token", OP, "--no-access-log", "--peer", b.url,
                      "--fill-timeout", "8")
    async with aiohttp.ClientSession() as s:
        await set_link(s, origin, admin_token, latency_ms=100)  # both fills are in flight together
        for i in range(3):
            spec = seg("title-030", 750, i)
            t0 = time.monotonic()
            results = await asyncio.gather(fetch(s, a.url + path_of(spec)), fetch(s, b.url + path_of(spec)))
            elapsed = time.monotonic() - t0
            for status, _, body in results:
                assert status == 200 and spec_ok(spec, body)
            assert elapsed < 4, f"edges waited on each other for {elapsed:.1f}s"
            assert 1 <= await origin_count(s, origin, admin_token, path_of(spec)) <= 2


# -- operator endpoints -------------------------------------------------------------------------------

async def test_operator_endpoints(start_service: StartService, origin: ServiceProcess, admin_token: str,
                                  tmp_path: Path) -> None:
    edge = start_edge(start_service, tmp_path, origin.url)
    a, b, c = seg("title-021", 235, 0), seg("title-021", 235, 1), seg("title-022", 235, 0)
    async with aiohttp.ClientSession() as s:
        for spec in (a, b, c):
            assert (await fetch(s, edge.url + path_of(spec)))[0] == 200
        for ep in ("/admin/purge", "/admin/pin", "/admin/unpin"):
            async with s.post(edge.url + ep, json={"path": path_of(a)}) as r:
                assert r.status == 401
            async with s.post(edge.url + ep, json={"path": path_of(a)}, headers=bearer("wrong")) as r:
                assert r.status == 403
            async with s.post(edge.url + ep, data=b"{not json", headers=bearer(OP)) as r:
                assert r.status == 400
            async with s.post(edge.url + ep, json={"path": "/content/../etc"}, headers=bearer(OP)) as r:
                assert r.status == 400
        async with s.get(edge.url + "/admin/stats") as r:
            assert r.status == 401
        assert (await fetch(s, edge.url + path_of(a)))[1]["X-Cache"] == "HIT"  # nothing changed
        async with s.post(edge.url + "/admin/purge", json={"path": path_of(a)}, headers=bearer(OP)) as r:
            assert r.status == 200 and (await r.json())["purged"] == 1
        assert not data_file(tmp_path / "cache", path_of(a)).exists()
        assert (await fetch(s, edge.url + path_of(a)))[1]["X-Cache"] == "MISS"
        async with s.post(edge.url + "/admin/purge", json={"title": "title-021"}, headers=bearer(OP)) as r:
            assert r.status == 200 and (await r.json())["purged"] == 2
        assert (await fetch(s, edge.url + path_of(b)))[1]["X-Cache"] == "MISS"
        assert (await fetch(s, edge.url + path_of(c)))[1]["X-Cache"] == "HIT"
        async with s.post(edge.url + "/admin/pin", json={"path": path_of(c)}, headers=bearer(OP)) as r:
            assert r.status == 200 and (await r.json())["pinned"] is True
        async with s.post(edge.url + "/admin/pin", json={"path": path_of(seg("title-022", 235, 5))},
                          headers=bearer(OP)) as r:
            assert r.status == 404
        st = await edge_stats(s, edge)
        assert st["pinned"] == 1 and st["objects"] == 2 and st["hits"] == 2
        assert set(st["misses"]) == {"cold", "evicted", "coalesced", "peer", "stale", "origin"}
        async with s.get(edge.url + "/metrics") as r:
            text = await r.text()
        for name in ("ocsim_edge_hits_total", "ocsim_edge_misses_total", "ocsim_edge_served_bytes_total",
                     "ocsim_edge_disk_used_bytes", "ocsim_edge_fill_errors_total", "ocsim_edge_fills_total"):
            assert name in text
        async with s.get(edge.url + "/healthz") as r:
            health = await r.json()
        assert health["id"] == "edge" and health["isp"] == "isp-a" and health["capacity_bytes"] == 200_000_000
        assert edge.stop() == 0
        edge = start_edge(start_service, tmp_path, origin.url, name="edge-again")
        assert (await edge_stats(s, edge))["pinned"] == 1  # the pin survived the restart
        async with s.post(edge.url + "/admin/unpin", json={"path": path_of(c)}, headers=bearer(OP)) as r:
            assert r.status == 200
        assert (await edge_stats(s, edge))["pinned"] == 0


# -- the control plane: register, heartbeat, fill plans, drain ---------------------------------------------

async def test_agent_fill_plan_and_drain(start_service: StartService, origin: ServiceProcess, admin_token: str,
                                         tmp_path: Path) -> None:
    key = secrets.token_bytes(32)
    ring = Keyring.parse("k1:" + secrets.token_hex(32))
    plan_paths = [path_of(seg("title-023", 235, i)) for i in range(3)]
    seen: dict[str, list[Any]] = {"register": [], "heartbeat": []}

    async def reply(request: web.Request, kind: str) -> web.Response:
        body = await request.read()
        verify_signature(key, body, request.headers.get(SIGNATURE_HEADER))
        msg = (Register if kind == "register" else Heartbeat).unpack(body)
        seen[kind].append(msg)
        plan = FillPlan(plan_id="p1", job_id="j1", edge_id="edge", paths=plan_paths, bandwidth_bps=0,
                        issued_at=time.time())
        out = ControlReply(ts=time.time(), heartbeat_interval_s=0.2, token_keys=ring.format(), fill_plans=[plan])
        packed = out.pack()
        return web.Response(body=packed, headers={SIGNATURE_HEADER: sign(key, packed)},
                            content_type="application/msgpack")

    async def register(request: web.Request) -> web.Response:
        return await reply(request, "register")

    async def heartbeat(request: web.Request) -> web.Response:
        return await reply(request, "heartbeat")

    app = web.Application()
    app.router.add_post("/v1/edges/register", register)
    app.router.add_post("/v1/edges/{id}/heartbeat", heartbeat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        edge = start_edge(start_service, tmp_path, origin.url, "--control", f"http://127.0.0.1:{port}",
                          "--edge-key", key.hex(), "--token-key", "k0:" + secrets.token_hex(16))

        async def plan_done() -> bool:
            return any(f.plan_id == "p1" and f.state == "done" for hb in seen["heartbeat"] for f in hb.fills)
        await until(plan_done, 15, "the fill plan to be reported done")
        assert seen["register"][0].url == edge.url and seen["register"][0].capacity_bytes == 200_000_000
        async with aiohttp.ClientSession() as s:
            st = await edge_stats(s, edge)
            assert st["objects"] == 3 and st["pinned"] == 3
            hb = seen["heartbeat"][-1]
            assert hb.objects == 3 and hb.titles == ["title-023"] and hb.state == "up"
            # the control plane's token keys replaced the ones from the command line
            tok = ring.sign("title-023", int(time.time()) + 60, "isp-a")
            status, headers, body = await fetch(s, f"{edge.url}/t/{tok}{plan_paths[0]}")
            assert status == 200 and headers["X-Cache"] == "HIT" and spec_ok(seg("title-023", 235, 0), body)
            for p in plan_paths:
                assert await origin_count(s, origin, admin_token, p) == 1
        edge.signal(signal.SIGTERM)
        assert edge.proc is not None and await asyncio.to_thread(edge.proc.wait, 10) == 0
        assert seen["heartbeat"][-1].state == "draining"
    finally:
        await runner.cleanup()


async def test_small_object_not_in_ram_is_sent_from_disk_then_warmed(
        start_service: StartService, origin: ServiceProcess, admin_token: str, tmp_path: Path) -> None:
    """A hit is sendfile from disk: a small cached object missing from the RAM tier (after a
    restart) is not read through an executor on the request path; RAM serves it later."""
    path = "/content/title-031/235/index.m3u8"
    edge = start_edge(start_service, tmp_path, origin.url)
    async with aiohttp.ClientSession() as s:
        status, _, body = await fetch(s, edge.url + path)
        assert status == 200
        edge.stop()
        edge2 = start_edge(start_service, tmp_path, origin.url, name="edge-again")
        before = (await edge_stats(s, edge2))["sender"]["sendfile"]
        status, headers, again = await fetch(s, edge2.url + path)
        assert status == 200 and headers["X-Cache"] == "HIT" and again == body
        assert (await edge_stats(s, edge2))["sender"]["sendfile"] == before + 1

        async def from_ram() -> bool:
            sent = (await edge_stats(s, edge2))["sender"]["sendfile"]
            status, headers, got = await fetch(s, edge2.url + path)
            assert status == 200 and headers["X-Cache"] == "HIT" and got == body
            return (await edge_stats(s, edge2))["sender"]["sendfile"] == sent
        await until(from_ram, 5, "the RAM tier to serve the object")
        assert await origin_count(s, origin, admin_token, path) == 1
