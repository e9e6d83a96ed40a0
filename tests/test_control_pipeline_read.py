"""`GET /v1/pipeline/series` on the control plane: the dashboard's way to the collector's
read API. In process: a stand-in collector (a plain aiohttp app on loopback) behind
`--pipeline`; the operator's token is required, parameters are checked before anything is
forwarded, the collector's refusals come back as 400 with its message, and a collector
that is down is a 502, never a 500 or a hang."""
from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from control.app import build_app
from control.cli import pipeline_url
from test_control_api import make_config
from test_control_support import OPERATOR_TOKEN, bearer

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Any]]


@pytest.fixture
async def collector() -> Any:
    """A stand-in read API that records what it was asked."""
    asked: list[dict[str, str]] = []

    async def series(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if request.query["metric"] == "nope":
            return web.json_response({"error": "unknown metric 'nope'; known: sps, ..."}, status=400)
        return web.json_response({"metric": request.query["metric"], "unit": "B/s", "by": "isp", "step": "1s",
                                  "since": 1.0, "series": {"isp-a": [[10.0, 5.0], [11.0, 7.0]]}})

    app = web.Application()
    app.router.add_get("/v1/series", series)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, asked
    await server.close()


async def test_series_come_from_the_collector_behind_the_operator_token(
        aiohttp_client: MakeClient, tmp_path: Path, collector: Any) -> None:
    server, asked = collector
    base = str(server.make_url("")).rstrip("/")
    client: Client = await aiohttp_client(build_app(make_config(tmp_path / "c.db", pipeline_url=base)))
    path = "/v1/pipeline/series?metric=bytes_to_players&by=isp&step=1s&since=2m"
    assert (await client.get(path)).status == 401
    assert (await client.get(path, headers={"Authorization": "Bearer wrong"})).status == 403
    resp = await client.get(path, headers=bearer(OPERATOR_TOKEN))
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert body["series"] == {"isp-a": [[10.0, 5.0], [11.0, 7.0]]}
    assert asked == [{"metric": "bytes_to_players", "by": "isp", "step": "1s", "since": "2m"}]
    # the collector's own refusal: a 400 carrying its message
    resp = await client.get("/v1/pipeline/series?metric=nope", headers=bearer(OPERATOR_TOKEN))
    assert resp.status == 400 and "unknown metric 'nope'" in (await resp.json())["error"]


@pytest.mark.parametrize("query", ["", "metric=", "metric=x;DROP", "metric=sps&by=title", "metric=sps&step=2s",
                                   "metric=sps&since=yesterday", "metric=sps&since=1e400",
                                   "metric=" + "a" * 41])
async def test_bad_parameters_are_refused_here_and_never_forwarded(
        aiohttp_client: MakeClient, tmp_path: Path, collector: Any, query: str) -> None:
    server, asked = collector
    base = str(server.make_url("")).rstrip("/")
    client: Client = await aiohttp_client(build_app(make_config(tmp_path / "c.db", pipeline_url=base)))
    resp = await client.get("/v1/pipeline/series?" + query, headers=bearer(OPERATOR_TOKEN))
    assert resp.status == 400 and (await resp.json())["error"]
    assert asked == []


async def test_no_pipeline_is_a_404_and_a_dead_one_a_502(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client: Client = await aiohttp_client(build_app(make_config(tmp_path / "a.db")))
    resp = await client.get("/v1/pipeline/series?metric=sps", headers=bearer(OPERATOR_TOKEN))
    assert resp.status == 404 and "--pipeline" in (await resp.json())["error"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    client = await aiohttp_client(build_app(make_config(tmp_path / "b.db", pipeline_url=dead)))
    resp = await client.get("/v1/pipeline/series?metric=sps", headers=bearer(OPERATOR_TOKEN))
    assert resp.status == 502 and "unreachable" in (await resp.json())["error"]


def test_pipeline_flag_takes_an_http_url_only() -> None:
    assert pipeline_url("") == "" and pipeline_url("http://127.0.0.1:8300/") == "http://127.0.0.1:8300"
    for bad in ("127.0.0.1:8300", "file:///etc/passwd", "nats://127.0.0.1:4222", "http://h:1/?x=1", "http://"):
        with pytest.raises(ValueError):
            pipeline_url(bad)
