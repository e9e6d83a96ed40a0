"""The edge's fault API (edge/faults.py) end to end: off by default, its own token, and each
disk or clock fault has the effect a test can see: ENOSPC (nothing cached, still served),
EIO (503), a corrupt object refused and fetched again, a skewed clock expiring tokens.

A real origin and edge on loopback; no scrubber (--scrub-rate 0), so a corrupt object is
caught on the read path itself."""
from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from common.content import default_catalog
from common.tokens import Keyring, token_url
from ocsim.procs import ServiceProcess
from tests.conftest import StartService

pytestmark = pytest.mark.timeout(60)

OP = "operator-secret-token"
FAULT = "fault-secret-token-0123"
AUTH = {"Authorization": f"Bearer {FAULT}"}


def _edge(start_service: StartService, origin: ServiceProcess, tmp_path: Path, *extra: str,
          env: dict[str, str] | None = None) -> ServiceProcess:
    return start_service("edge", "edge", "--host", "127.0.0.1", "--port", "0", "--id", "e1", "--isp", "isp-a",
                         "--upstream", origin.url, "--cache-dir", str(tmp_path / "cache"), "--capacity", "50MB",
                         "--operator-token", OP, "--no-access-log", "--hot-bytes", "0", "--scrub-rate", "0",
                         *extra, env=env)


def _segment(n: int) -> tuple[str, object]:
    spec = default_catalog().get("title-018").segment(235, n)
    return spec.id.path, spec


async def _get(s: aiohttp.ClientSession, url: str) -> tuple[int, str, bytes]:
    async with s.get(url) as r:
        return r.status, r.headers.get("X-Cache", ""), await r.read()


async def test_the_fault_api_is_off_unless_enabled(start_service: StartService, origin: ServiceProcess,
                                                   tmp_path: Path) -> None:
    edge = _edge(start_service, origin, tmp_path)
    async with aiohttp.ClientSession() as s:
        async with s.put(edge.url + "/faults", json={"disk_full": True}, headers=AUTH) as r:
            assert r.status in (404, 405)  # no such route: only content paths
        async with s.get(edge.url + "/faults", headers=AUTH) as r:
            assert r.status in (400, 404) and "disk_full" not in await r.text()  # a content path, not faults


async def test_the_fault_api_needs_its_own_token(start_service: StartService, origin: ServiceProcess,
                                                 tmp_path: Path) -> None:
    edge = _edge(start_service, origin, tmp_path, "--fault-api", env={"OCSIM_EDGE_FAULT_TOKEN": FAULT})
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + "/faults") as r:
            assert r.status == 401
        async with s.get(edge.url + "/faults", headers={"Authorization": f"Bearer {OP}"}) as r:
            assert r.status == 403  # the operator's token does not open the fault API
        async with s.put(edge.url + "/faults", json={"disk_full": "yes"}, headers=AUTH) as r:
            assert r.status == 400 and "disk_full" in (await r.json())["error"]
        async with s.put(edge.url + "/faults", json={"nope": 1}, headers=AUTH) as r:
            assert r.status == 400
        async with s.get(edge.url + "/faults", headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["disk_full"] is False


async def test_disk_full_read_errors_and_a_corrupt_object(start_service: StartService, origin: ServiceProcess,
                                                         tmp_path: Path) -> None:
    edge = _edge(start_service, origin, tmp_path, "--fault-api", env={"OCSIM_EDGE_FAULT_TOKEN": FAULT})
    async with aiohttp.ClientSession() as s:
        # disk full: every fill fails to write (ENOSPC), the players still get the bytes
        async with s.put(edge.url + "/faults", json={"disk_full": True}, headers=AUTH) as r:
            assert r.status == 200
        path, spec = _segment(0)
        for _ in range(2):
            status, cache, body = await _get(s, edge.url + path)
            assert status == 200 and cache == "MISS" and spec.verify(0, body)  # type: ignore[attr-defined]
        async with s.get(edge.url + "/faults", headers=AUTH) as r:
            assert (await r.json())["writes_refused"] >= 2
        async with s.delete(edge.url + "/faults", headers=AUTH) as r:
            assert r.status == 200
        assert (await _get(s, edge.url + path))[1] == "MISS"
        assert (await _get(s, edge.url + path))[1] == "HIT"

        # read errors: a cached object cannot be read (EIO): 503, and it stays cached
        async with s.put(edge.url + "/faults", json={"read_errors": True}, headers=AUTH) as r:
            assert r.status == 200
        status, _, _ = await _get(s, edge.url + path)
        assert status == 503
        async with s.put(edge.url + "/faults", json={"read_errors": False}, headers=AUTH) as r:
            assert r.status == 200
        assert (await _get(s, edge.url + path))[:2] == (200, "HIT")

        # corrupt, under an open fd (the object was just served from disk) ...
        async with s.post(edge.url + "/faults/corrupt", json={"path": path}, headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["count"] == 1
        status, cache, body = await _get(s, edge.url + path)
        assert status == 200 and cache == "MISS" and spec.verify(0, body)  # type: ignore[attr-defined]
        # ... and one never opened for a hit yet (fresh open: data newer than its sidecar)
        path1, spec1 = _segment(1)
        assert (await _get(s, edge.url + path1))[1] == "MISS"
        async with s.post(edge.url + "/faults/corrupt", json={"all": True}, headers=AUTH) as r:
            assert (await r.json())["count"] == 2
        for p, sp, n in ((path1, spec1, 1), (path, spec, 0)):
            status, cache, body = await _get(s, edge.url + p)
            assert status == 200 and cache == "MISS" and sp.verify(0, body), p  # type: ignore[attr-defined]
        async with s.get(edge.url + "/faults", headers=AUTH) as r:
            assert (await r.json())["corrupt_detected"] == 3


async def test_clock_skew_expires_tokens_early(start_service: StartService, origin: ServiceProcess,
                                               tmp_path: Path) -> None:
    ring = Keyring.generate("k1")
    edge = _edge(start_service, origin, tmp_path, "--fault-api", "--token-key", ring.format(),
                 env={"OCSIM_EDGE_FAULT_TOKEN": FAULT})
    path, _ = _segment(0)
    url = token_url(edge.url, ring.sign("title-018", int(time.time()) + 600), path)
    async with aiohttp.ClientSession() as s:
        assert (await _get(s, url))[0] == 200
        async with s.put(edge.url + "/faults", json={"clock_skew_s": 3600}, headers=AUTH) as r:
            assert r.status == 200
        status, _, body = await _get(s, url)
        assert status == 403 and b"expired" in body
        async with s.delete(edge.url + "/faults", headers=AUTH) as r:
            assert r.status == 200
        assert (await _get(s, url))[0] == 200


async def test_a_peer_that_accepts_but_never_answers_costs_a_miss_about_a_second(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    """The paused-edge scenario found this: a SIGSTOPped peer's kernel still accepts, so the
    peer ask used to wait the whole fill read timeout (10 s) before going to the origin."""
    import asyncio
    held: list[asyncio.StreamWriter] = []

    async def never_answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        peer = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        edge = _edge(start_service, origin, tmp_path, "--peer", peer)
        path, spec = _segment(0)
        async with aiohttp.ClientSession() as s:
            t0 = time.monotonic()
            status, cache, body = await _get(s, edge.url + path)
            took = time.monotonic() - t0
            assert status == 200 and cache == "MISS" and spec.verify(0, body)  # type: ignore[attr-defined]
            assert held and took < 4.0, took
            # the next misses skip the silent peer for a while: no second wait
            asked = len(held)
            t0 = time.monotonic()
            for n in (1, 2, 3):
                p, sp = _segment(n)
                status, cache, body = await _get(s, edge.url + p)
                assert status == 200 and cache == "MISS" and sp.verify(0, body)  # type: ignore[attr-defined]
            assert len(held) == asked and time.monotonic() - t0 < 2.0
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()
