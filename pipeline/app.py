"""The collector service's HTTP side: /healthz, /metrics and the read API.

    GET  /v1/series?metric=&by=isp|edge&step=1s|10s|1m&since=   a time series (pipeline.views.SERIES)
    GET  /v1/metrics                                             the series and views it knows
    GET  /v1/views/{name}?since=                                 a named view (pipeline.views.VIEWS)
    POST /v1/query  {"sql": "SELECT ..."}   (or GET ?sql=)       read-only SQL over the store

Queries run on a cursor of the store in a small thread pool, never on the event loop; a
query is refused unless it is one plain SELECT (`pipeline.query.check_readonly`), and a
bad one answers 400 with the engine's message. Answers are JSON `{"columns", "rows"}`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from common.errors import BadRequest
from common.service import HEALTH, REGISTRY, create_app
from pipeline.collector import Collector
from pipeline.query import BadQuery, QueryResult, check_readonly, run
from pipeline.store import EventStore
from pipeline.stream import StreamSettings
from pipeline.views import SERIES, VIEWS, parse_since, series_sql, view_sql

COLLECTOR = web.AppKey("pipeline_collector", Collector)
STORE = web.AppKey("pipeline_store", EventStore)
READERS = web.AppKey("pipeline_readers", concurrent.futures.ThreadPoolExecutor)
CLOCK = web.AppKey("pipeline_clock", object)
QUERY_TIMEOUT_S = 10.0
MAX_QUERY_BODY = 64 * 1024


async def _read(request: web.Request, work: Callable[[Any], QueryResult]) -> QueryResult:
    store = request.app[STORE]
    loop = asyncio.get_running_loop()

    def job() -> QueryResult:
        con = store.reader()
        try:
            return work(con)
        finally:
            con.close()

    fut = loop.run_in_executor(request.app[READERS], job)
    try:
        return await asyncio.wait_for(fut, QUERY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise BadQuery(f"query took longer than {QUERY_TIMEOUT_S:g} s") from None


def _now(request: web.Request) -> float:
    clock = request.app[CLOCK]
    assert callable(clock)
    return float(clock())


async def series(request: web.Request) -> web.Response:
    q = request.query
    metric, by, step = q.get("metric", ""), q.get("by", "isp"), q.get("step", "10s")
    since = parse_since(q.get("since"), _now(request))
    sql, params = series_sql(metric, by, step, since)
    res = await _read(request, lambda con: run(con, sql, params))
    out: dict[str, list[list[float | None]]] = {}
    for t, key, value in res.rows:
        out.setdefault("" if key is None else str(key), []).append([t, value])
    m = SERIES[metric]
    return web.json_response({"metric": metric, "unit": m.unit, "by": by, "step": step, "since": since,
                              "series": out})


async def catalog(request: web.Request) -> web.Response:
    return web.json_response({
        "series": {name: {"unit": m.unit, "help": m.help} for name, m in SERIES.items()},
        "views": {name: v.help for name, v in VIEWS.items()},
    })


async def view(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    sql = view_sql(name)
    since = parse_since(request.query.get("since"), _now(request))
    params = {"since": since} if "$since" in sql else None
    res = await _read(request, lambda con: run(con, sql, params))
    return web.json_response({"view": name, "since": since, **res.to_json()})


async def query(request: web.Request) -> web.Response:
    if request.method == "POST":
        if (request.content_length or 0) > MAX_QUERY_BODY:
            raise BadRequest("query body too large")
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise BadRequest("body must be JSON {\"sql\": ...}") from None
        sql = body.get("sql") if isinstance(body, dict) else None
    else:
        sql = request.query.get("sql")
    if not isinstance(sql, str) or not sql.strip():
        raise BadRequest("sql missing")

    def work(con: Any) -> QueryResult:
        check_readonly(con, sql)
        return run(con, sql)

    res = await _read(request, work)
    return web.json_response(res.to_json())


def build_app(events_url: str, store: EventStore, *, settings: StreamSettings | None = None,
              roll_interval: float = 30.0, clock: Callable[[], float] = time.time) -> web.Application:
    app = create_app("pipeline", client_max_size=MAX_QUERY_BODY)
    collector = Collector(events_url, store, settings=settings, roll_interval=roll_interval,
                          registry=app[REGISTRY], clock=clock)
    app[COLLECTOR] = collector
    app[STORE] = store
    app[READERS] = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="pipeline-reader")
    app[CLOCK] = clock
    app[HEALTH].append(collector.health)
    app.router.add_get("/v1/series", series)
    app.router.add_get("/v1/metrics", catalog)
    app.router.add_get("/v1/views/{name}", view)
    app.router.add_route("GET", "/v1/query", query)
    app.router.add_route("POST", "/v1/query", query)

    async def on_startup(app: web.Application) -> None:
        await collector.start()

    async def on_cleanup(app: web.Application) -> None:
        await collector.stop()
        app[READERS].shutdown(wait=False)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app
