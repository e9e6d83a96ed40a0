"""common.json_client: the tools' one JSON-over-HTTP client, against an in-process server."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from common.json_client import ApiError, call_json, call_json_async, request_json, request_json_async


async def _echo(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != "Bearer sekrit":
        return web.json_response({"error": "wrong operator token"}, status=403)
    return web.json_response({"method": request.method, "body": await request.json() if request.can_read_body
                              else None})


async def _text(request: web.Request) -> web.Response:
    return web.Response(text="not json")


@pytest.fixture
async def base(aiohttp_server: Callable[..., Awaitable[Any]]) -> str:
    app = web.Application()
    app.router.add_route("*", "/echo", _echo)
    app.router.add_get("/text", _text)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}"


async def test_sync_and_async_calls_agree(base: str) -> None:
    got = await asyncio.to_thread(call_json, "POST", f"{base}/echo", token="sekrit", body={"a": 1})
    assert got == {"method": "POST", "body": {"a": 1}}
    async with aiohttp.ClientSession() as http:
        assert await call_json_async(http, "POST", f"{base}/echo", token="sekrit", body={"a": 1}) == got
        reply = await request_json_async(http, "GET", f"{base}/echo")
        assert (reply.status, reply.body) == (403, {"error": "wrong operator token"})
        with pytest.raises(ApiError, match=r"^GET .*/echo: 403 wrong operator token$"):
            await call_json_async(http, "GET", f"{base}/echo", token="wrong")
        with pytest.raises(ApiError, match="not a JSON object"):
            await call_json_async(http, "GET", f"{base}/text")
    reply = await asyncio.to_thread(request_json, "GET", f"{base}/text")
    assert (reply.status, reply.body) == (200, None)
    with pytest.raises(ApiError, match=r"^GET .*/echo: 403 wrong operator token$"):
        await asyncio.to_thread(call_json, "GET", f"{base}/echo", token="wrong")


async def test_nothing_listening_is_a_clear_error(unused_tcp_port: int) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/x"
    with pytest.raises(ApiError, match=r"^GET http://127\.0\.0\.1:\d+/x: "):
        await asyncio.to_thread(call_json, "GET", url, timeout=2)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ApiError, match=r"^GET http://127\.0\.0\.1:\d+/x: "):
            await request_json_async(http, "GET", url, timeout=2)
