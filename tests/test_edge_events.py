"""What an edge's edge.request events say, end to end: real edges publishing to a real
nats-server, a real collector, the store queried. A miss filled from a peer edge says
`peer`, in the event and in the counters alike; a hit answered by the fast lane carries the
session id the client sent, as a hit answered by aiohttp does."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.metrics import parse_text
from ocsim.procs import ServiceProcess
from pipeline.natsserver import NatsServer
from tests.conftest import StartService
from tests.test_edge_fastlane import Raw, get

pytestmark = pytest.mark.timeout(90)

OP = "operator-secret-token"
SEG = "/content/title-020/750/0.seg"      # ~375 KB: a disk hit (aiohttp, sendfile)
MEDIA = "/content/title-018/235/index.m3u8"  # small: the RAM tier, so the fast lane


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def _sql(url: str, sql: str) -> list[list[Any]]:
    with urllib.request.urlopen(url + "/v1/query?sql=" + urllib.parse.quote(sql), timeout=10) as resp:
        return list(json.loads(resp.read())["rows"])


def _healthz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def _edge(start_service: StartService, tmp_path: Path, name: str, upstream: str, events: str,
          *extra: str) -> ServiceProcess:
    return start_service(name, "edge", "--host", "127.0.0.1", "--port", "0", "--id", name, "--isp", "isp-a",
                         "--upstream", upstream, "--cache-dir", str(tmp_path / name), "--capacity", "100MB",
                         "--operator-token", OP, "--no-access-log", "--events", events, *extra)


async def _metrics(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        return parse_text(await r.text())


async def test_peer_misses_and_sessions_on_fast_lane_hits(
        start_service: StartService, origin: ServiceProcess, nats: NatsServer, tmp_path: Path) -> None:
    col = start_service("pipeline", "pipeline", "--host", "127.0.0.1", "--port", "0", "--events", nats.url,
                        "--db", str(tmp_path / "ev.duckdb"), "--roll-interval", "3600", "--nice", "0")
    deadline = time.monotonic() + 20
    while not _healthz(col.url).get("bound"):  # the collector creates the stream the edges publish to
        assert time.monotonic() < deadline, "collector never bound"
        await asyncio.sleep(0.05)
    a = _edge(start_service, tmp_path, "edge-a", origin.url, nats.url)
    b = _edge(start_service, tmp_path, "edge-b", origin.url, nats.url, "--peer", a.url)
    async with aiohttp.ClientSession() as s:
        async with s.get(a.url + SEG) as r:
            assert r.status == 200 and r.headers["X-Cache"] == "MISS"
            await r.read()
        async with s.get(b.url + SEG, headers={"X-Ocsim-Session": "p-slow"}) as r:   # a peer miss
            assert r.status == 200 and r.headers["X-Cache"] == "MISS"
            await r.read()
        async with s.get(b.url + SEG, headers={"X-Ocsim-Session": "p-slow"}) as r:   # an aiohttp hit
            assert r.status == 200 and r.headers["X-Cache"] == "HIT"
            await r.read()
        for _ in range(4):  # the playlist, which edge-a lacks: a cold miss, then hits from RAM
            async with s.get(b.url + MEDIA) as r:
                assert r.status == 200
                await r.read()
    raw = await Raw.open(b.url)
    try:
        await raw.send(b"".join(get(MEDIA, "X-Ocsim-Session: p-fast") for _ in range(20)) + get(MEDIA))
        for _ in range(21):
            status, headers, _ = await raw.response()
            assert status == 200 and headers["x-cache"] == "HIT"
    finally:
        raw.close()

    m = await _metrics(b.url)
    expect = int(m["ocsim_edge_hits_total"] + sum(v for k, v in m.items() if k.startswith("ocsim_edge_misses_total")))
    deadline = time.monotonic() + 20
    while _sql(col.url, "SELECT count(*) FROM edge_request WHERE edge = 'edge-b'") != [[expect]]:
        assert time.monotonic() < deadline, "edge-b's events never all arrived"
        await asyncio.sleep(0.1)

    rows = _sql(col.url, "SELECT path, cache, session, count(*) FROM edge_request WHERE edge = 'edge-b' "
                         "GROUP BY ALL ORDER BY ALL")
    assert rows == [[MEDIA, "cold", None, 1], [MEDIA, "hit", "p-fast", 20], [MEDIA, "hit", None, 4],
                    [SEG, "hit", "p-slow", 1], [SEG, "peer", "p-slow", 1]], rows
    # the counters say what the events say
    assert m['ocsim_edge_misses_total{class="peer"}'] == 1 and m['ocsim_edge_misses_total{class="cold"}'] == 1
    # edge-a: its own cold miss, and edge-b's only-if-cached asks: the segment (a hit), the playlist (a 504)
    assert _sql(col.url, "SELECT cache, status, count(*) FROM edge_request WHERE edge = 'edge-a' "
                         "GROUP BY ALL ORDER BY ALL") == [["cold", 200, 1], ["hit", 200, 1], ["none", 504, 1]]
