"""The collector's read API over HTTP, in process, on hand-made events: a bad query or
parameter is a 4xx carrying the engine's (or the check's) message, never a 500; no request
can write; and the API sends no CORS headers, so no other site's page can read it (the
dashboard goes through the control plane's operator route)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from pipeline.app import build_app
from pipeline.natsserver import NatsServer
from pipeline.store import EventStore
from test_pipeline_store import HAND, T0, events

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Any]]


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(aiohttp_client: MakeClient, tmp_path: Path, nats: NatsServer) -> tuple[Client, EventStore]:
    store = EventStore(tmp_path / "ev.duckdb", parquet_dir=tmp_path / "parquet")
    store.commit(events(HAND), now=T0 + 8)
    client: Client = await aiohttp_client(build_app(nats.url, store, clock=lambda: T0 + 10))
    return client, store


async def counts(client: Client) -> list[Any]:
    resp = await client.get("/v1/views/events")
    assert resp.status == 200
    return list((await resp.json())["rows"])


async def test_good_reads(api: tuple[Client, EventStore]) -> None:
    client, _ = api
    resp = await client.post("/v1/query", json={"sql": "SELECT count(*) AS n FROM edge_request"})
    assert resp.status == 200 and (await resp.json())["rows"] == [[7]]
    resp = await client.get("/v1/series?metric=bytes_to_players&by=isp&step=1s&since=60s")
    assert resp.status == 200 and set((await resp.json())["series"]) == {"isp-a", "isp-b"}
    assert "Access-Control-Allow-Origin" not in resp.headers


BAD_SQL = [
    ("DELETE FROM edge_request", "read-only"),
    ("DROP TABLE steer_play", "read-only"),
    ("INSERT INTO edge_request SELECT * FROM edge_request", "read-only"),
    ("UPDATE edge_request SET bytes = 0", "read-only"),
    ("CREATE TABLE x AS SELECT 1", "read-only"),
    ("ATTACH '/tmp/ocsim-x.duckdb' AS x", "read-only"),
    ("COPY edge_request TO '/tmp/ocsim-x.csv'", "read-only"),
    ("SELECT 1; DELETE FROM edge_request", "exactly one statement"),
    ("SELECT * FROM read_csv('/etc/passwd')", "not allowed"),
    ("SELECT * FROM '/etc/passwd'", "not a table of the store"),
    ("SELECT nope FROM edge_request", "nope"),                       # the binder's own message
    ("SELEC 1", "syntax error"),                                     # the parser's own message
]


async def test_bad_sql_is_a_400_with_the_reason_and_writes_nothing(api: tuple[Client, EventStore]) -> None:
    client, _ = api  # one collector for every case (each costs a stream bind): the cases in a loop
    before = await counts(client)
    for sql, reason in BAD_SQL:
        for resp in (await client.post("/v1/query", json={"sql": sql}),
                     await client.get("/v1/query", params={"sql": sql})):
            assert resp.status == 400, (sql, resp.status)
            error = (await resp.json())["error"]
            assert reason.lower() in error.lower(), (sql, error)
    assert await counts(client) == before


BAD_PARAMS = [
    "/v1/series?metric=nope", "/v1/series?metric=sps&by=title", "/v1/series?metric=sps&step=5s",
    "/v1/series?metric=sps&since=yesterday", "/v1/series?metric=sps&since=1e300", "/v1/series?metric=sps&since=9999h",
    "/v1/views/nope", "/v1/views/qoe?since=-5", "/v1/query", "/v1/query?sql=",
]


async def test_bad_parameters_are_a_400_with_a_reason(api: tuple[Client, EventStore]) -> None:
    client, _ = api
    for path in BAD_PARAMS:
        resp = await client.get(path)
        assert resp.status == 400 and (await resp.json())["error"], path


async def test_bad_bodies_are_4xx(api: tuple[Client, EventStore]) -> None:
    client, _ = api
    resp = await client.post("/v1/query", data=b"not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    resp = await client.post("/v1/query", json=["SELECT 1"])
    assert resp.status == 400
    resp = await client.post("/v1/query", data=b"{" + b" " * (70 * 1024) + b"}",
                             headers={"Content-Type": "application/json"})
    assert 400 <= resp.status < 500
    # and a write verb on the read API is not a route at all
    assert (await client.delete("/v1/query")).status == 405
