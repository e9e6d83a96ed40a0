"""What a fill asks its sources through: the `Upstream` protocol and its aiohttp implementation.

Rules of this module (the httpx `MockTransport` idea): the coalescer (`edge.fill`)
talks only to `Upstream`/`UpstreamResponse`, so its coalescing, peer order and failure
classes are tested in process with a fake (tests/test_edge_fill.py). An implementation
reports failures in three classes only, which the coalescer maps to its errors:

* `TimeoutError`: connecting, the headers, or one body read took too long;
* `common.errors.UpstreamError`: anything else that went wrong on the wire (refused,
  reset, a body cut short), its reason already worded for the client;
* nothing else: an `OSError` out of a fill is the edge's own disk.

`AiohttpUpstream` is the one implementation the edge runs.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp

from common.errors import UpstreamError


class UpstreamResponse(Protocol):
    @property
    def status(self) -> int: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, as the bytes arrive."""
        ...

    async def read(self, limit: int) -> bytes:
        """At most `limit` bytes of the body (for a passed-through error page)."""
        ...

    def release(self) -> None: ...


class Upstream(Protocol):
    async def get(self, url: str, *, only_if_cached: bool, connect_timeout: float,
                  headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        """GET `url` (no redirects followed) with the request fields `headers` (a fill's
        forwarded fields, a revalidation's preconditions); `only_if_cached` asks a peer edge
        for a hit only."""
        ...


def _translated(exc: BaseException) -> BaseException:
    if isinstance(exc, TimeoutError):
        return exc
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamError("upstream body was cut short")
    return UpstreamError(f"upstream error: {type(exc).__name__}")


class _AiohttpResponse:
    __slots__ = ("_resp",)

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def content_length(self) -> int | None:
        return self._resp.content_length

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for data in self._resp.content.iter_any():
                yield data
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translated(exc) from exc

    async def read(self, limit: int) -> bytes:
        try:
            return await self._resp.content.read(limit)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translated(exc) from exc

    def release(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """`Upstream` over one aiohttp client session (created by `start`, closed by `close`).

    `read_timeout` bounds every body read (an idle timeout, so a slow but moving origin
    can finish a big object)."""

    def __init__(self, *, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        # read_bufsize: the fill's reader pauses the upstream socket once 128 KiB wait
        # unread (aiohttp's default, 256 KiB, lets uvloop read ~1 MB in one go), so the fill
        # task, and the first write to the client, are not held behind a burst of reads.
        self.session = aiohttp.ClientSession(auto_decompress=False, read_bufsize=64 * 1024,
                                             connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def get(self, url: str, *, only_if_cached: bool, connect_timeout: float,
                  headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        fields = dict(headers or {})
        if only_if_cached:
            fields["Cache-Control"] = "only-if-cached"
        return await self.forward("GET", url, fields, None, connect_timeout=connect_timeout)

    async def forward(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None, *,
                      connect_timeout: float) -> UpstreamResponse:
        """Any request (the edge's pass-through of methods it does not cache), as it is."""
        assert self.session is not None, "AiohttpUpstream.start() first"
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_connect=connect_timeout,
                                        sock_read=self.read_timeout)
        try:
            resp = await self.session.request(method, url, headers=headers, data=body, allow_redirects=False,
                                              timeout=timeout, skip_auto_headers=("Accept-Encoding", "User-Agent"))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _translated(exc) from exc
        return _AiohttpResponse(resp)
