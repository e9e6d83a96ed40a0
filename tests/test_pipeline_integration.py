"""The pipeline end to end on loopback: a real nats-server (one node or a 3-node cluster),
real collectors as child processes, a real publisher. Faults: SIGKILL of the collector mid-
stream, NATS killed and restarted; two collectors sharing one stream."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.events import EdgeRequest
from common.eventsink import BufferedSink
from tests.conftest import StartService
from ocsim.procs import ServiceProcess
from pipeline.natsserver import NatsServer, start_cluster
from pipeline.publisher import NatsTransport
from pipeline.query import open_readonly, run

pytestmark = pytest.mark.slow


def _req(i: int) -> EdgeRequest:
    return EdgeRequest("edge-a1", "isp-a", f"/content/t{i % 9}/750/{i}.seg", f"t{i % 9}", 750, i, 200, 1000, 1000,
                       "hit" if i % 4 else "cold", 0.001, 0.002, None)


def _query(url: str, sql: str) -> list[list[Any]]:
    with urllib.request.urlopen(url + "/v1/query?sql=" + urllib.parse.quote(sql), timeout=10) as resp:
        return list(json.loads(resp.read())["rows"])


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)  # polling a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}")


def _collector(start_service: StartService, name: str, events: str, db: Path, *extra: str) -> ServiceProcess:
    return start_service(name, "pipeline", "--host", "127.0.0.1", "--port", "0", "--events", events,
                         "--db", str(db), "--roll-interval", "3600", *extra)


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


async def _publish(url: str, ids: list[str], n: int, *, pace_every: int = 500, pause: float = 0.005) -> BufferedSink:
    sink = BufferedSink("edge-a1", NatsTransport(url), batch_events=500, capacity=1_000_000)
    await sink.start()
    for i in range(n):
        sink.emit(_req(i))
        if i % pace_every == 0:
            await asyncio.sleep(pause)
    await sink.close(timeout=30)
    ids.extend([f"{sink.ids.prefix}-{k:x}" for k in range(1, n + 1)])
    return sink


@pytest.mark.timeout(120)
def test_sigkill_of_the_collector_mid_stream_loses_nothing_and_doubles_nothing(
        start_service: StartService, nats: NatsServer, tmp_path: Path) -> None:
    db = tmp_path / "ev.duckdb"
    col = _collector(start_service, "pipeline", nats.url, db)
    _wait(lambda: json.loads(urllib.request.urlopen(col.url + "/healthz").read()).get("bound"), 20, "bound")
    n = 60_000
    ids: list[str] = []

    async def scenario() -> None:
        task = asyncio.create_task(_publish(nats.url, ids, n, pace_every=2000, pause=0.02))
        # kill while events are still flowing and some are stored
        await asyncio.to_thread(_wait, lambda: _query(col.url, "SELECT count(*) FROM edge_request")[0][0] > 5000,
                                30, "some events stored")
        col.kill()
        await task

    asyncio.run(scenario())
    col2 = _collector(start_service, "pipeline2", nats.url, db)
    _wait(lambda: _query(col2.url, "SELECT count(*) FROM edge_request")[0][0] >= n, 60, "every event stored")
    rows = _query(col2.url, "SELECT count(*), count(DISTINCT id) FROM edge_request")
    assert rows == [[n, n]]
    col2.stop()
    con = open_readonly([db])
    stored = {r[0] for r in run(con, "SELECT id FROM edge_request", max_rows=n + 1).rows}
    assert stored == set(ids)


@pytest.mark.timeout(120)
def test_nats_down_publisher_keeps_going_counts_drops_and_resumes(
        start_service: StartService, tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "nats").start()
    col = _collector(start_service, "pipeline", server.url, tmp_path / "ev.duckdb")
    _wait(lambda: json.loads(urllib.request.urlopen(col.url + "/healthz").read()).get("bound"), 20, "bound")

    async def scenario() -> dict[str, int]:
        sink = BufferedSink("edge-a1", NatsTransport(server.url), batch_events=200, capacity=2000,
                            drop_report_interval=0.5, retry_interval=0.05)
        await sink.start()
        for i in range(1000):
            sink.emit(_req(i))
        await asyncio.to_thread(_wait, lambda: sink.published == 1000, 20, "first 1000 published")
        server.kill()  # NATS gone: emit must neither block nor raise
        t0 = time.perf_counter()
        for i in range(1000, 11_000):
            sink.emit(_req(i))
            if i % 1000 == 0:
                await asyncio.sleep(0.01)
        assert time.perf_counter() - t0 < 2.0
        assert sink.dropped > 0
        dropped_while_down = sink.dropped
        await asyncio.sleep(0.6)  # let the periodic drop report queue (its interval is 0.5 s)
        server.start()  # same ports, same store
        await asyncio.to_thread(_wait, lambda: sink.transport.connected, 30, "publisher reconnected")
        await asyncio.to_thread(_wait, lambda: sink.stats()["buffered"] == 0, 30, "buffer drained")
        for i in range(11_000, 12_000):
            sink.emit(_req(i))
        await sink.close(timeout=30)
        assert sink.dropped == dropped_while_down
        return sink.stats()

    stats = asyncio.run(scenario())
    expected = 12_000 - stats["dropped"]
    _wait(lambda: _query(col.url, "SELECT count(*) FROM edge_request")[0][0] >= expected, 60, "resumed events stored")
    assert _query(col.url, "SELECT count(*), count(DISTINCT id) FROM edge_request") == [[expected, expected]]
    # the drop count reached the pipeline as events.dropped
    _wait(lambda: (_query(col.url, "SELECT coalesce(max(total), 0) FROM events_dropped")[0][0] or 0)
          == stats["dropped"], 30, "events.dropped stored")
    col.stop()
    server.stop()


@pytest.mark.timeout(150)
def test_three_node_cluster_two_collectors_every_event_exactly_once(
        start_service: StartService, tmp_path: Path) -> None:
    nodes = start_cluster(tmp_path / "cluster", 3)
    try:
        urls = ",".join(s.url for s in nodes)
        dbs = [tmp_path / "a.duckdb", tmp_path / "b.duckdb"]
        cols = [_collector(start_service, f"pipeline-{i}", urls, db, "--replicas", "3") for i, db in enumerate(dbs)]
        for c in cols:
            _wait(lambda: json.loads(urllib.request.urlopen(c.url + "/healthz").read()).get("bound"), 30, "bound")
        n = 40_000
        ids: list[str] = []
        # publish through a different node than the first, so the cluster carries it
        asyncio.run(_publish(",".join(s.url for s in reversed(nodes)), ids, n, pace_every=2000, pause=0.01))
        _wait(lambda: sum(_query(c.url, "SELECT count(*) FROM edge_request")[0][0] for c in cols) >= n, 60,
              "both collectors stored everything")
        counts = [_query(c.url, "SELECT count(*) FROM edge_request")[0][0] for c in cols]
        assert sum(counts) == n and all(c > 0 for c in counts), counts  # both took a share
        for c in cols:
            c.stop()
        con = open_readonly(dbs)
        assert run(con, "SELECT count(*), count(DISTINCT id) FROM edge_request").rows == [[n, n]]
        assert {r[0] for r in run(con, "SELECT id FROM edge_request", max_rows=n + 1).rows} == set(ids)
    finally:
        for s in nodes:
            s.stop()
