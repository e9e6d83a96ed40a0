"""The control plane's window on the event pipeline: the dashboard's time series.

`GET /v1/pipeline/series?metric=&by=&step=&since=` (operator) asks the collector's read API
(`--pipeline URL`, `GET /v1/series`) and answers what it answered. The dashboard calls
this route on its own origin with the operator's token, so:

- the browser never talks to the collector: no CORS on the read API, nothing for another
  site's page to read, and the page's CSP (`connect-src 'self'`) stays as strict as it is;
- who may see the series is decided where every other operator read is decided (the
  bearer check in `control.routes`);
- the parameters are checked here first (the collector checks them again), and only the
  collector's series route is reachable through it: no SQL passes this way.

No `--pipeline`: 404 with a reason (this control plane has no such data); the collector down or slow: 502 / 504; its own 4xx
(an unknown metric) comes back as it is, with the collector's message.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from common.errors import BadRequest, NotFound, UpstreamError, UpstreamTimeout
from control.state import STATE

PIPELINE_HTTP = web.AppKey("control_pipeline_http", aiohttp.ClientSession)
TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 8 * 1024 * 1024

_METRIC = re.compile(r"[a-z][a-z0-9_.]{0,39}\Z")
_SINCE = re.compile(r"([0-9]{1,6}(\.[0-9]{1,3})?(s|m|h)|[0-9]{1,11}(\.[0-9]{1,6})?)\Z")
BY = ("isp", "edge")
STEPS = ("1s", "10s", "1m")


async def pipeline_http(app: web.Application) -> AsyncIterator[None]:
    """A client session for the collector, when one is configured (cleanup_ctx)."""
    if app[STATE].config.pipeline_url:
        app[PIPELINE_HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
    yield
    if PIPELINE_HTTP in app:
        await app[PIPELINE_HTTP].close()


def series_query(query: Mapping[str, str]) -> dict[str, str]:
    """The checked parameters of one series request (400 on anything else)."""
    metric = query.get("metric", "")
    by, step, since = query.get("by", "isp"), query.get("step", "10s"), query.get("since", "5m")
    if not _METRIC.match(metric):
        raise BadRequest("metric: a series name like bytes_to_players or misses.cold (GET /v1/metrics of the "
                         "collector lists them)")
    if by not in BY:
        raise BadRequest(f"by must be one of {', '.join(BY)}")
    if step not in STEPS:
        raise BadRequest(f"step must be one of {', '.join(STEPS)}")
    if not _SINCE.match(since):
        raise BadRequest("since must be epoch seconds or a window like 90s, 5m, 1h")
    return {"metric": metric, "by": by, "step": step, "since": since}


async def get_pipeline_series(request: web.Request) -> web.Response:
    """One time series from the event pipeline's read API (the dashboard's charts)."""
    params = series_query(request.query)  # bad input is a 400 whether or not there is a pipeline
    base = request.app[STATE].config.pipeline_url
    if not base or PIPELINE_HTTP not in request.app:
        raise NotFound("no event pipeline configured (start the control plane with --pipeline URL, "
                       "or `ocsim up --events`)")
    url = f"{base.rstrip('/')}/v1/series?{urlencode(params)}"
    try:
        async with request.app[PIPELINE_HTTP].get(url) as resp:
            body = await resp.content.read(MAX_ANSWER_BYTES + 1)
            status = resp.status
    except asyncio.TimeoutError:
        raise UpstreamTimeout(f"the event pipeline did not answer within {TIMEOUT_S:g} s") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"the event pipeline is unreachable: {type(exc).__name__}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise UpstreamError("the event pipeline's answer is too large")
    try:
        obj = json.loads(body)
    except ValueError:
        raise UpstreamError(f"the event pipeline answered {status} without JSON") from None
    if 400 <= status < 500:
        reason = obj.get("error") if isinstance(obj, dict) else None
        raise BadRequest(f"pipeline: {reason or status}")
    if status != 200 or not isinstance(obj, dict):
        raise UpstreamError(f"the event pipeline answered {status}")
    return web.json_response(obj, headers={"Cache-Control": "no-store"})
