"""Integrity end to end: a byte flipped on disk (same length) behind a running edge is found
by the background scrubber, purged, counted, and the next request refetches it intact.
Real processes on loopback; we poll the metrics with a deadline, no fixed sleeps."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from common.content import default_catalog
from common.ids import parse_content_key
from common.metrics import parse_text
from edge.store import key_digest
from ocsim.procs import ServiceProcess
from tests.conftest import StartService

pytestmark = pytest.mark.timeout(40)

OP = "operator-secret-token"


async def _corrupt_count(s: aiohttp.ClientSession, edge: ServiceProcess) -> float:
    async with s.get(edge.url + "/metrics") as r:
        samples = parse_text(await r.text())
    return samples.get("ocsim_edge_corrupt_objects", 0.0)


async def test_a_flipped_byte_on_disk_is_never_served_after_the_scrub_and_is_refetched(
        start_service: StartService, origin: ServiceProcess, tmp_path: Path) -> None:
    spec = default_catalog().get("title-018").segment(235, 0)
    path = spec.id.path
    cache = tmp_path / "cache"
    edge = start_service("edge", "edge", "--host", "127.0.0.1", "--port", "0", "--id", "e1", "--isp", "isp-a",
                         "--upstream", origin.url, "--cache-dir", str(cache), "--capacity", "50MB",
                         "--operator-token", OP, "--no-access-log", "--hot-bytes", "0", "--scrub-rate", "64MiB",
                         "--scrub-interval", "0")
    async with aiohttp.ClientSession() as s:
        async with s.get(edge.url + path) as r:
            assert r.status == 200 and spec.verify(0, await r.read())
        h = key_digest(parse_content_key(path))
        data = cache / "objects" / h[:2] / h[2:4] / h
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
        deadline = time.monotonic() + 20
        while await _corrupt_count(s, edge) < 1:
            assert time.monotonic() < deadline, "the scrubber never found the flipped byte"
            await asyncio.sleep(0.05)
        async with s.get(edge.url + path) as r:
            body = await r.read()
            assert r.status == 200 and r.headers["X-Cache"] == "MISS"  # purged: fetched again
            assert len(body) == spec.length and spec.verify(0, body)
        async with s.get(edge.url + path) as r:
            body = await r.read()
            assert r.headers["X-Cache"] == "HIT" and spec.verify(0, body)
