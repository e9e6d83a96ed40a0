"""The origin against a real process on an ephemeral loopback port."""
from __future__ import annotations

import asyncio
import signal
import time
from urllib.parse import urlsplit

import aiohttp
import m3u8
import pytest

from common.content import default_catalog
from common.segbytes import HEADER_LEN
from ocsim.procs import ServiceProcess
from tests.conftest import StartService

CAT = default_catalog()
T1 = CAT.get("title-001")


async def raw_status(url: str, target: bytes) -> int:
    """Send a request line exactly as given (no client-side normalisation); return the status."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return int(line.split()[1])


def admin(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_catalog_and_health(origin: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(origin.url + "/v1/catalog") as r:
            body = await r.json()
        assert r.status == 200
        assert body == CAT.to_json()
        assert set(body["titles"][0]) == {"id", "duration_s", "renditions", "popularity", "media"}
        assert body["titles"][0]["media"] == "synthetic"
        async with s.get(origin.url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"


async def test_every_playlist_parses(origin: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as s:
        for title in list(CAT.titles.values())[:3]:
            base = f"{origin.url}/content/{title.id}/"
            async with s.get(base + "master.m3u8") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("application/vnd.apple.mpegurl")
                master = m3u8.loads(await r.text(), uri=base)
            assert master.is_variant and len(master.playlists) == len(title.renditions)
            for variant in master.playlists:
                async with s.get(variant.absolute_uri) as r:
                    assert r.status == 200
                    media = m3u8.loads(await r.text())
                assert media.is_endlist and len(media.segments) == title.segment_count


async def test_full_segment_verifies_and_headers(origin: ServiceProcess) -> None:
    spec = T1.segment(5800, 3)
    async with aiohttp.ClientSession() as s:
        async with s.get(origin.url + spec.id.path) as r:
            body = await r.read()
            h = r.headers
        assert r.status == 200 and len(body) == spec.length and spec.verify(0, body)
        assert h["Content-Length"] == str(spec.length)
        assert h["Cache-Control"] == "public, max-age=31536000, immutable"
        assert h["Accept-Ranges"] == "bytes"
        assert h["ETag"].startswith('"') and not h["ETag"].startswith("W/")
        async with s.head(origin.url + spec.id.path) as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(spec.length)
            assert r.headers["ETag"] == h["ETag"]
            assert await r.read() == b""


@pytest.mark.parametrize("header,start,end", [
    ("bytes=0-9", 0, 10),                      # inside the header
    ("bytes=100-200", 100, 201),               # across the header's end
    (f"bytes={HEADER_LEN}-", HEADER_LEN, None),
    ("bytes=-500", None, None),                # suffix
    ("bytes=1000-99999999", 1000, None),       # last-pos past the end is clipped
])
async def test_ranges_verify(origin: ServiceProcess, header: str, start: int | None, end: int | None) -> None:
    spec = T1.segment(1750, 10)
    if start is None:
        start = spec.length - 500
    end = spec.length if end is None else end
    async with aiohttp.ClientSession() as s:
        async with s.get(origin.url + spec.id.path, headers={"Range": header}) as r:
            body = await r.read()
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{spec.length}"
        assert len(body) == end - start and spec.verify(start, body)


async def test_range_unsatisfiable_and_ignored(origin: ServiceProcess) -> None:
    spec = T1.segment(235, 0)
    url = origin.url + spec.id.path
    async with aiohttp.ClientSession() as s:
        async with s.get(url, headers={"Range": f"bytes={spec.length}-"}) as r:
            assert r.status == 416 and r.headers["Content-Range"] == f"bytes */{spec.length}"
        for bad in ("bytes=9-3", "lines=0-1", "bytes=x-y", "bytes=0-1,4-5"):
            async with s.get(url, headers={"Range": bad}) as r:
                body = await r.read()
                assert r.status == 200 and len(body) == spec.length, bad


async def test_conditionals(origin: ServiceProcess) -> None:
    spec = T1.segment(750, 2)
    url = origin.url + spec.id.path
    async with aiohttp.ClientSession() as s:
        async with s.head(url) as r:
            etag = r.headers["ETag"]
        async with s.get(url, headers={"If-None-Match": etag}) as r:
            assert r.status == 304 and await r.read() == b"" and r.headers["ETag"] == etag
        async with s.get(url, headers={"If-None-Match": '"other"'}) as r:
            assert r.status == 200
        async with s.get(url, headers={"Range": "bytes=0-99", "If-Range": etag}) as r:
            assert r.status == 206 and len(await r.read()) == 100
        async with s.get(url, headers={"Range": "bytes=0-99", "If-Range": '"stale"'}) as r:
            assert r.status == 200 and len(await r.read()) == spec.length


async def test_unknown_content_is_404(origin: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as s:
        for path in ("/content/no-such-title/master.m3u8", "/content/title-001/1234/index.m3u8",
                     f"/content/title-001/5800/{T1.segment_count}.seg", "/content/title-001/9/0.seg",
                     "/elsewhere"):
            async with s.get(origin.url + path) as r:
                assert r.status == 404, path
                assert "error" in await r.json()


@pytest.mark.parametrize("target", [
    b"/content/../../etc/passwd", b"/content/title-001/..%2f..%2fetc/passwd", b"/content/title-001%2f5800/0.seg",
    b"/content/title-001/5800/0.seg%00", b"/content/title-001/5800/%2e%2e/0.seg",
    b"/content/" + b"a" * 5000 + b"/master.m3u8", b"/content/TITLE/master.m3u8", b"/content/title-001/5800/-1.seg",
])
async def test_malformed_paths_are_4xx(origin: ServiceProcess, target: bytes) -> None:
    status = await raw_status(origin.url, target)
    assert status in (400, 404), (target, status)


async def test_admin_requires_token(origin: ServiceProcess, admin_token: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(origin.url + "/admin/link") as r:
            assert r.status == 401
        async with s.put(origin.url + "/admin/link", json={"down": "503"}, headers=admin("wrong")) as r:
            assert r.status == 403
        async with s.get(origin.url + "/admin/link", headers=admin(admin_token)) as r:
            assert (await r.json())["down"] == "off"  # the refused call changed nothing
        for bad in ({"down": "maybe"}, {"error_rate": 2}, {"latency_ms": "x"}, {"nope": 1}, [1]):
            async with s.put(origin.url + "/admin/link", json=bad, headers=admin(admin_token)) as r:
                assert r.status == 400, bad
        async with s.put(origin.url + "/admin/link", data=b"{not json", headers=admin(admin_token)) as r:
            assert r.status == 400
        async with s.get(origin.url + "/admin/link", headers=admin(admin_token)) as r:
            assert await r.json() == {"latency_ms": 0.0, "bandwidth_bps": 0, "total_bandwidth_bps": 0,
                                      "error_rate": 0.0, "down": "off"}


async def test_stats_count_requests(origin: ServiceProcess, admin_token: str) -> None:
    path = T1.segment(235, 5).id.path
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(origin.url + path) as r:
                await r.read()
        async with s.get(origin.url + "/admin/stats", headers=admin(admin_token)) as r:
            stats = await r.json()
        assert stats["by_path"][path] == 3 and stats["by_title"]["title-001"] == 3
        assert stats["segment_requests"] == 3
        async with s.post(origin.url + "/admin/stats/reset", headers=admin(admin_token)) as r:
            assert r.status == 200
        async with s.get(origin.url + "/admin/stats", headers=admin(admin_token)) as r:
            assert (await r.json())["requests"] == 0


async def _set_link(url: str, token: str, **patch: object) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.put(url + "/admin/link", json=patch, headers=admin(token)) as r:
            assert r.status == 200, await r.text()


async def test_link_latency_is_observable(origin: ServiceProcess, admin_token: str) -> None:
    await _set_link(origin.url, admin_token, latency_ms=300)
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.get(origin.url + "/content/title-001/master.m3u8") as r:
            assert r.status == 200
        assert time.monotonic() - t0 >= 0.3


async def test_link_bandwidth_cap_is_observable(origin: ServiceProcess, admin_token: str) -> None:
    spec = T1.segment(750, 1)  # ~375 KB
    await _set_link(origin.url, admin_token, bandwidth_bps="8Mbit")  # 1 MB/s
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.get(origin.url + spec.id.path) as r:
            body = await r.read()
        elapsed = time.monotonic() - t0
    assert spec.verify(0, body) and len(body) == spec.length
    assert elapsed >= (spec.length - 50_000) / 1_000_000 * 0.95


async def test_total_bandwidth_cap_is_shared(origin: ServiceProcess, admin_token: str) -> None:
    specs = [T1.segment(750, i) for i in range(4)]
    await _set_link(origin.url, admin_token, total_bandwidth_bps="16Mbit")  # 2 MB/s shared
    async with aiohttp.ClientSession() as s:
        async def fetch(path: str) -> bytes:
            async with s.get(origin.url + path) as r:
                return await r.read()
        t0 = time.monotonic()
        bodies = await asyncio.gather(*(fetch(sp.id.path) for sp in specs))
        elapsed = time.monotonic() - t0
    total = sum(len(b) for b in bodies)
    assert all(sp.verify(0, b) for sp, b in zip(specs, bodies))
    assert elapsed >= (total - 100_000) / 2_000_000 * 0.95


async def test_link_errors_and_down(origin: ServiceProcess, admin_token: str) -> None:
    url = origin.url + "/content/title-001/master.m3u8"
    await _set_link(origin.url, admin_token, error_rate=1.0)
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 503 and (await r.json())["error"] == "injected error"
    await _set_link(origin.url, admin_token, error_rate=0.5)
    async with aiohttp.ClientSession() as s:
        statuses = []
        for _ in range(40):
            async with s.get(url) as r:
                statuses.append(r.status)
    assert 0 < statuses.count(503) < 40 and set(statuses) == {200, 503}
    await _set_link(origin.url, admin_token, error_rate=0.0, down="503")
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 503
        async with s.get(origin.url + "/healthz") as r:
            assert r.status == 200  # the process is alive; its content link is not
    await _set_link(origin.url, admin_token, down="refuse")
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientError):
            async with s.get(url) as r:
                await r.read()
    await _set_link(origin.url, admin_token, down="off")
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            assert r.status == 200


async def test_flags_set_link_at_start(start_service: StartService, admin_token: str) -> None:
    o = start_service("origin-down", "origin", "--port", "0", "--admin-token", admin_token, "--down", "503",
                      "--latency-ms", "5")
    async with aiohttp.ClientSession() as s:
        async with s.get(o.url + "/content/title-001/master.m3u8") as r:
            assert r.status == 503
        async with s.get(o.url + "/admin/link", headers=admin(admin_token)) as r:
            assert (await r.json())["latency_ms"] == 5.0


async def test_metrics_count_by_route_and_status(origin: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(origin.url + "/content/title-001/master.m3u8") as r:
            await r.read()
        async with s.get(origin.url + "/metrics") as r:
            text = await r.text()
    assert 'ocsim_http_requests_total{route="/content/{tail}",method="GET",status="200"}' in text
    assert "ocsim_http_response_bytes_total" in text


def test_sigterm_drains_and_exits_zero(origin: ServiceProcess) -> None:
    origin.signal(signal.SIGTERM)
    assert origin.proc is not None
    assert origin.proc.wait(10) == 0


def test_bad_catalog_file_is_a_clear_error(tmp_path: object) -> None:
    import subprocess
    import sys
    from pathlib import Path
    bad = Path(str(tmp_path)) / "cat.json"
    bad.write_text('{"titles": [{"id": "Bad Id", "duration_s": 10}]}')
    out = subprocess.run([sys.executable, "-m", "ocsim", "origin", "--catalog", str(bad), "--port", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "invalid title id" in out.stderr
