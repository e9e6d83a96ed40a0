"""Pre-positioning values files by what the event pipeline measured (issue 12): a real
nats-server, a real collector as a child process, edge.request events published the way
edges publish them, and the control plane's job reading the collector's `file_bytes` view.
What streamed in the ISP changes what gets placed; with nothing measured there, or the
pipeline unreachable, the job says it fell back to the catalog."""
from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.events import EdgeRequest
from common.eventsink import BufferedSink
from control.app import build_app
from control.jobs import rendition_bytes
from control.popularity import FileBytes, measured_values, rows_of, valuation
from pipeline.natsserver import NatsServer
from pipeline.publisher import NatsTransport
from ocsim.procs import ServiceProcess
from test_control_api import TITLES, MakeClient, edge, make_config
from test_control_support import bearer

BY_ID = {t.id: t for t in TITLES}
StartService = Callable[..., ServiceProcess]  # the conftest fixture's type


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def _view(url: str) -> list[list[Any]]:
    with urllib.request.urlopen(f"{url}/v1/views/file_bytes?since=1h", timeout=10) as resp:
        return list(json.loads(resp.read())["rows"])


def _segment_requests(isp: str, title: str, rendition: int, times: int) -> list[EdgeRequest]:
    """`times` full plays of one file: every segment of it, whole, `times` over."""
    t = BY_ID[title]
    out = []
    for _ in range(times):
        for n in range(t.segment_count):
            size = t.segment(rendition, n).length
            out.append(EdgeRequest(f"edge-{isp}", isp, f"/content/{title}/{rendition}/{n}.seg", title, rendition, n,
                                   200, size, size, "hit", 0.001, 0.002, None))
    return out


async def _publish(url: str, events: list[EdgeRequest]) -> None:
    sink = BufferedSink("edge-test", NatsTransport(url), batch_events=200, capacity=100_000)
    await sink.start()
    for e in events:
        sink.emit(e)
    for _ in range(600):  # the transport connects in the background; close gives up on a closed one
        if sink.published == len(events):
            break
        await asyncio.sleep(0.05)
    await sink.close(timeout=30)
    assert sink.published == len(events), sink.stats()


def test_rows_of_the_view_and_measured_values_by_hand() -> None:
    answer = {"columns": ["isp", "title", "rendition", "bytes", "requests"],
              "rows": [["isp-a", "beta", 235, 2 * rendition_bytes(BY_ID["beta"], 235), 9],
                       ["isp-b", "beta", 235, 10**9, 9], ["isp-a", "nope", 235, 5, 1], ["isp-a", "beta", 99, 5, 1],
                       ["bad row"]]}
    rows = rows_of(answer)
    assert FileBytes("isp-a", "beta", 235, 2 * rendition_bytes(BY_ID["beta"], 235)) in rows and len(rows) == 4
    # other ISPs, titles the catalog lacks and renditions a title lacks do not count
    assert measured_values(rows, "isp-a", BY_ID) == {"beta/235": 2.0}
    with pytest.raises(ValueError, match="lacks a column"):
        rows_of({"columns": ["isp"], "rows": []})
    # the forecast: measured + prior scaled to the measured total (prior: alpha 0.5 over 2 rungs, ...)
    ladders = {t.id: list(t.renditions) for t in TITLES}
    prior = {t.id: t.popularity for t in TITLES}
    v = valuation(prior, ladders, {"beta/235": 2.0})
    assert v.source == "pipeline"
    assert v.values["beta/235"] == pytest.approx(2.0 + 0.15 * 2.0 / 1.1)
    assert v.values["alpha/235"] == pytest.approx(0.25 * 2.0 / 1.1)
    assert valuation(prior, ladders, {}).source == "catalog"
    assert valuation(prior, ladders, None).note == ""


def test_the_forecast_prior_is_the_catalog_not_the_plays_counted_since_start() -> None:
    # Plays are counted since the control plane started: yesterday's measurement must not
    # be forecast over them, or every past day weighs as much as the window. alpha had 100
    # plays long ago; the window measured beta/235 streamed twice and nothing of alpha.
    ladders = {t.id: list(t.renditions) for t in TITLES}
    catalog = {t.id: t.popularity for t in TITLES}
    plays = {t.id: t.popularity + (100.0 if t.id == "alpha" else 0.0) for t in TITLES}
    v = valuation(catalog, ladders, {"beta/235": 2.0}, fallback_by_title=plays)
    assert v.source == "pipeline"
    # the same numbers as with the catalog alone: alpha's old plays do not count
    assert v.values == valuation(catalog, ladders, {"beta/235": 2.0}).values
    assert v.values["beta/235"] > v.values["alpha/235"]
    # with nothing measured the fallback (catalog + plays) is what a job places by
    fallback = valuation(catalog, ladders, {}, fallback_by_title=plays)
    assert fallback.source == "catalog" and fallback.values["alpha/235"] > fallback.values["beta/235"]
    assert fallback.values["alpha/235"] == pytest.approx(100.5 * 0.5)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_measured_popularity_from_a_real_collector_changes_what_is_placed(
        aiohttp_client: MakeClient, start_service: StartService, nats: NatsServer, tmp_path: Path) -> None:
    col = start_service("pipeline", "pipeline", "--host", "127.0.0.1", "--port", "0", "--events", nats.url,
                        "--db", str(tmp_path / "ev.duckdb"), "--roll-interval", "3600")
    for _ in range(200):
        with urllib.request.urlopen(col.url + "/healthz", timeout=5) as resp:
            if json.loads(resp.read()).get("bound"):
                break
        await asyncio.sleep(0.05)  # polling the collector's health until it binds to the stream
    # In isp-a, viewers streamed delta's 1750 rendition 3 times over (by the catalog, the least
    # popular title); in isp-b, alpha's 235 once.
    events = _segment_requests("isp-a", "delta", 1750, 3) + _segment_requests("isp-b", "alpha", 235, 1)
    await _publish(nats.url, events)
    for _ in range(400):
        if len(_view(col.url)) == 2:
            break
        await asyncio.sleep(0.05)  # polling the view until the collector has committed both files
    assert {(r[0], r[1], r[2]) for r in _view(col.url)} == {("isp-a", "delta", 1750), ("isp-b", "alpha", 235)}

    client = await aiohttp_client(build_app(make_config(tmp_path / "control.db", pipeline_url=col.url,
                                                        popularity_window_s=3600.0)))
    for eid, isp in (("a1", "isp-a"), ("b1", "isp-b")):
        e = edge(client, eid, isp, capacity_bytes=10**9, used_bytes=10**9)
        await e.register()
        await e.heartbeat()

    async def job(isp: str) -> dict[str, Any]:
        resp = await client.post("/v1/prepositions", json={"isp": isp, "top": 2}, headers=bearer())
        assert resp.status == 202
        answer: dict[str, Any] = await resp.json()
        return answer

    a = await job("isp-a")
    assert a["popularity"] == "pipeline", a
    # measured: delta/1750 first; then the catalog's prior breaks the tie among the unmeasured
    assert sorted(a["placed"]) == ["alpha/235", "delta/1750"], a["placed"]
    b = await job("isp-b")
    assert b["popularity"] == "pipeline" and "alpha/235" in b["placed"] and "delta/1750" not in b["placed"], b

    # The same request without the pipeline's measurement (a control plane pointed at a
    # collector that is not there): the catalog's two most popular files, and it says why.
    client2 = await aiohttp_client(build_app(make_config(tmp_path / "control2.db",
                                                         pipeline_url="http://127.0.0.1:9")))
    e = edge(client2, "a1", "isp-a", capacity_bytes=10**9, used_bytes=10**9)
    await e.register()
    await e.heartbeat()
    resp = await client2.post("/v1/prepositions", json={"isp": "isp-a", "top": 2}, headers=bearer())
    c = await resp.json()
    assert c["popularity"] == "catalog" and "did not answer" in c["popularity_note"], c
    assert sorted(c["placed"]) == ["alpha/235", "alpha/750"], c["placed"]
