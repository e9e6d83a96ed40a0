"""What every ocsim service has, built once: /healthz, Prometheus /metrics, JSON errors,
a JSON access log off the hot path, uvloop, and a graceful SIGTERM.

A service builds its aiohttp app with `create_app(name)`, adds its routes, and hands
it to `run_app(app, host, port)`. On SIGTERM or SIGINT the service stops accepting,
marks itself draining (`/healthz` answers 503), runs its shutdown hooks, lets in-flight
requests finish (bounded by `shutdown_timeout`) and exits 0. Once listening, it prints
one JSON line on stdout, `{"event": "listening", "service", "url", "pid"}`, which is how
supervisors (`ocsim up`, test fixtures) learn the port when started with `--port 0`.

A request aiohttp's parser refuses (a 4xx the client caused) is logged at INFO as one line
without a traceback (`ClientParseErrors`); only our own faults are logged at ERROR.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from common.errors import OcsimError
from common.logs import event, setup_logging, stop_logging
from common.metrics import Counter, Histogram, Registry

log = logging.getLogger("ocsim.service")

SERVICE_NAME = web.AppKey("ocsim_service", str)
REGISTRY = web.AppKey("ocsim_registry", Registry)
DRAINING = web.AppKey("ocsim_draining", dict)  # {"draining": bool}; a dict so it can change after freeze
HEALTH = web.AppKey("ocsim_health", list)  # callables returning extra /healthz fields
ON_LISTENING = web.AppKey("ocsim_on_listening", list)  # callables given the bound URL
STARTED_AT = web.AppKey("ocsim_started_at", float)
REQUESTS = web.AppKey("ocsim_requests", Counter)
BYTES = web.AppKey("ocsim_bytes", Counter)
LATENCY = web.AppKey("ocsim_latency", Histogram)


class ClientParseErrors(logging.Filter):
    """On `aiohttp.server`: a parser refusal with a 4xx code is the client's mistake, so
    its record becomes one INFO line with the reason and no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", 500) if isinstance(exc, HttpProcessingError) else 500
        if isinstance(code, int) and 400 <= code < 500:
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "refused a malformed request: %s %s"
            record.args = (code, str(getattr(exc, "message", "") or type(exc).__name__)[:120])
            record.exc_info = record.exc_text = None
            record.stack_info = None
        return True


def quiet_client_parse_errors() -> None:
    """Install `ClientParseErrors` on aiohttp's server logger (once)."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientParseErrors) for f in server_log.filters):
        server_log.addFilter(ClientParseErrors())


def json_error(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


def _route_label(request: web.Request) -> str:
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def _observe(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Errors become JSON; requests, bytes and latency are counted by route and status."""
    app = request.app
    t0 = time.perf_counter()
    try:
        resp = await handler(request)
    except OcsimError as exc:
        resp = json_error(exc.status, exc.reason)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            resp = json_error(exc.status, exc.reason, headers={k: v for k, v in exc.headers.items()
                                                               if k.lower() in ("allow", "www-authenticate")})
        else:
            raise
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        resp = json_error(500, "internal error")
    route = _route_label(request)
    labels = (route, request.method, str(resp.status))
    app[REQUESTS].inc(labels)
    sent = resp.body_length if resp.prepared else (resp.content_length or 0)
    if sent:
        app[BYTES].inc(labels, sent)
    app[LATENCY].observe(time.perf_counter() - t0, (route,))
    return resp


async def _healthz(request: web.Request) -> web.Response:
    app = request.app
    body: dict[str, Any] = {
        "status": "draining" if app[DRAINING]["draining"] else "ok",
        "service": app[SERVICE_NAME],
        "pid": os.getpid(),
        "uptime_s": round(time.time() - app[STARTED_AT], 3),
    }
    for extra in app[HEALTH]:
        body.update(extra())
    return web.json_response(body, status=503 if app[DRAINING]["draining"] else 200)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[REGISTRY].render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Prometheus-Format": "0.0.4"})


def create_app(service: str, *, client_max_size: int = 1024 * 1024,
               middlewares: list[Any] | None = None) -> web.Application:
    """An aiohttp app with the service basics; add routes, then `run_app` it."""
    quiet_client_parse_errors()
    registry = Registry()
    app = web.Application(middlewares=[_observe, *(middlewares or [])], client_max_size=client_max_size)
    app[SERVICE_NAME] = service
    app[REGISTRY] = registry
    app[DRAINING] = {"draining": False}
    app[HEALTH] = []
    app[ON_LISTENING] = []
    app[STARTED_AT] = time.time()
    app[REQUESTS] = registry.counter("ocsim_http_requests_total", "HTTP requests by route, method and status",
                                     ("route", "method", "status"))
    app[BYTES] = registry.counter("ocsim_http_response_bytes_total", "Response body bytes by route, method and status",
                                  ("route", "method", "status"))
    app[LATENCY] = registry.histogram("ocsim_http_request_seconds", "Handler time by route", ("route",))
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


class JsonAccessLogger(AbstractAccessLogger):
    """One JSON line per request, formatted on the logging thread."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info("access", extra={"fields": {
            "method": request.method, "path": request.path, "status": response.status,
            "bytes": response.body_length, "ms": round(time * 1000, 3),
            "remote": request.remote, "x_cache": response.headers.get("X-Cache"),
        }})


async def serve(app: web.Application, host: str, port: int, *, access_log: bool = True,
                shutdown_timeout: float = 10.0, stop: asyncio.Event | None = None,
                on_listening: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop` is set), then drain and return."""
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=shutdown_timeout,
        access_log_class=JsonAccessLogger,
        access_log=logging.getLogger("ocsim.access") if access_log else None,
    )
    # Signal handlers go in before anyone can learn our address, so a SIGTERM sent right
    # after the listening line is always a graceful stop.
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    # aiohttp exposes no public accessor for the port actually bound (needed for --port 0).
    server = site._server  # noqa: SLF001
    sockets = getattr(server, "sockets", None)
    assert sockets
    bound = sockets[0].getsockname()
    url = f"http://{host}:{bound[1]}"
    event(log, "listening", url=url, service=app[SERVICE_NAME])
    sys.stdout.write(json.dumps({"event": "listening", "service": app[SERVICE_NAME], "url": url,
                                 "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    for listener in [*app.get(ON_LISTENING, []), *([on_listening] if on_listening else [])]:
        listener(url)
    try:
        await stop.wait()
    finally:
        app[DRAINING]["draining"] = True
        event(log, "draining", service=app[SERVICE_NAME])
        await runner.cleanup()  # stops accepting, runs on_shutdown, waits for handlers
        event(log, "stopped", service=app[SERVICE_NAME])


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop unless OCSIM_LOOP=asyncio asks for the stock loop (for comparisons)."""
    if os.environ.get("OCSIM_LOOP", "uvloop") == "asyncio":
        return asyncio.new_event_loop()
    import uvloop
    return uvloop.new_event_loop()


def run_main(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())


def run_app(make_app: Callable[[], Coroutine[Any, Any, web.Application]], host: str, port: int, *, service: str,
            access_log: bool = True, log_level: str = "INFO", shutdown_timeout: float = 10.0) -> int:
    """Entry point for a service's CLI: logging, loop, serve, exit code."""
    setup_logging(service, log_level)

    async def main() -> None:
        app = await make_app()
        await serve(app, host, port, access_log=access_log, shutdown_timeout=shutdown_timeout)

    try:
        run_main(main)
    except OSError as exc:
        event(log, "cannot start", level=logging.ERROR, error=str(exc))
        return 1
    finally:
        stop_logging()
    return 0
