"""CORS (the Fetch standard's CORS protocol) for content, as real CDNs answer web players.

A player page served from another origin (the control plane's watch page, or any site)
fetches playlists and segments with XMLHttpRequest/fetch. For that the content responses
carry `Access-Control-Allow-Origin: *` and expose the headers a player reads
(`Content-Length`, `Content-Range`, `ETag`, `X-Cache`, ...). A browser sends a preflight
`OPTIONS` first when a request carries a header outside the CORS-safelisted set (a `Range`
that is not one simple range, `If-None-Match`, `X-Ocsim-Session`); it is answered 204 with
the methods and headers allowed.
Content is public and credential-free, so `*` is right and no `Vary: Origin` is needed.

`CORS_POLICY` is the one table; `cors_headers` and `preflight_headers` are pure;
`install_cors` hangs them on an aiohttp app for the paths given.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    allow_methods: tuple[str, ...] = ("GET", "HEAD", "OPTIONS")
    allow_headers: tuple[str, ...] = ("Range", "If-None-Match", "If-Range", "If-Modified-Since", "X-Ocsim-Session")
    expose_headers: tuple[str, ...] = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Age", "Date",
                                       "Cache-Control", "X-Cache", "Cache-Status", "X-Edge-Id", "X-Served-By")
    max_age_s: int = 86_400


CORS_POLICY = CorsPolicy()
# Where content lives: the origin's and every edge's content paths, the edges' with a token ahead.
CONTENT_PREFIXES = ("/content/", "/t/")


def cors_headers(policy: CorsPolicy = CORS_POLICY) -> dict[str, str]:
    """What every response to a cross-origin content request carries."""
    return {"Access-Control-Allow-Origin": "*",
            "Access-Control-Expose-Headers": ", ".join(policy.expose_headers),
            "Timing-Allow-Origin": "*"}  # lets the page's Resource Timing see sizes and times


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    return method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def preflight_headers(policy: CorsPolicy = CORS_POLICY) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": ", ".join(policy.allow_methods),
            "Access-Control-Allow-Headers": ", ".join(policy.allow_headers),
            "Access-Control-Max-Age": str(policy.max_age_s)}


def _applies(path: str, prefixes: tuple[str, ...]) -> bool:
    return path.startswith(prefixes)


def install_cors(app: web.Application, prefixes: tuple[str, ...], policy: CorsPolicy = CORS_POLICY) -> None:
    """Answer preflights and add CORS headers on responses for paths under `prefixes`.
    Call before the app starts (middlewares freeze then)."""
    headers = cors_headers(policy)
    preflight = preflight_headers(policy)

    @web.middleware
    async def _preflight(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if is_preflight(request.method, request.headers) and _applies(request.path, prefixes):
            return web.Response(status=204, headers=preflight)
        return await handler(request)

    async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        if _applies(request.path, prefixes) and "Access-Control-Allow-Origin" not in response.headers:
            response.headers.update(headers)

    app.middlewares.append(_preflight)
    app.on_response_prepare.append(_on_prepare)
