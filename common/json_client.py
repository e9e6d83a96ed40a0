"""The one small JSON-over-HTTP client of ocsim's tools (`ocsim up`, `ocsim demo`,
`ocsim-control preposition`): a JSON body out, a JSON body back, the operator's bearer
token when given, and errors that say which call failed and why.

Two entry points per call style, the same rules for both:

    request_json / request_json_async   any status back: JsonReply(status, body);
                                        body is None when the answer is not JSON
    call_json / call_json_async         a 2xx JSON object answer, else ApiError
                                        ("POST http://.../v1/prepositions: 409 no healthy edge")

The sync pair uses urllib (for command-line tools with no event loop); the async pair
takes the caller's aiohttp session (so a running loop is never blocked). A transport
failure (refused, timed out, bad URL) is always ApiError.
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.errors import UpstreamError


class ApiError(UpstreamError):
    """A call that failed: transport error, non-2xx answer, or a body that is not JSON."""

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class JsonReply:
    status: int
    body: object  # the decoded JSON, None if the answer was empty or not JSON


def _headers(token: str | None, has_body: bool) -> dict[str, str]:
    headers = {"Content-Type": "application/json"} if has_body else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _decode(raw: bytes) -> object:
    try:
        value: object = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    return value


def _checked(method: str, url: str, reply: JsonReply) -> dict[str, Any]:
    if not 200 <= reply.status < 300:
        reason = reply.body.get("error", "") if isinstance(reply.body, dict) else ""
        raise ApiError(f"{method} {url}: {reply.status} {reason}".rstrip())
    if not isinstance(reply.body, dict):
        raise ApiError(f"{method} {url}: the answer is not a JSON object")
    return reply.body


def _request_raw(method: str, url: str, token: str | None, body: object, timeout: float) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=_headers(token, data is not None))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - a URL the operator gave
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ApiError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None


def request_json(method: str, url: str, *, token: str | None = None, body: object = None,
                 timeout: float = 10.0) -> JsonReply:
    status, raw = _request_raw(method, url, token, body, timeout)
    return JsonReply(status, _decode(raw))


def call_json(method: str, url: str, *, token: str | None = None, body: object = None,
              timeout: float = 10.0) -> dict[str, Any]:
    status, raw = _request_raw(method, url, token, body, timeout)
    return _checked(method, url, JsonReply(status, _decode(raw)))


async def _request_raw_async(http: aiohttp.ClientSession, method: str, url: str, token: str | None, body: object,
                             timeout: float) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    try:
        async with http.request(method, url, data=data, headers=_headers(token, data is not None),
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.read()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        raise ApiError(f"{method} {url}: {str(exc) or type(exc).__name__}") from None


async def request_json_async(http: aiohttp.ClientSession, method: str, url: str, *, token: str | None = None,
                             body: object = None, timeout: float = 10.0) -> JsonReply:
    status, raw = await _request_raw_async(http, method, url, token, body, timeout)
    return JsonReply(status, _decode(raw))


async def call_json_async(http: aiohttp.ClientSession, method: str, url: str, *, token: str | None = None,
                          body: object = None, timeout: float = 10.0) -> dict[str, Any]:
    status, raw = await _request_raw_async(http, method, url, token, body, timeout)
    return _checked(method, url, JsonReply(status, _decode(raw)))


__all__ = ["ApiError", "JsonReply", "call_json", "call_json_async", "request_json", "request_json_async"]
