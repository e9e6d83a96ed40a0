"""The control plane's aiohttp service, assembled: state, metrics, lifecycle and routes.

Where things are:

    control.routes     every route once (method, path, handler, who may call it, its
                       OpenAPI entry); the router, the operator check and the document
                       (control.openapi) derive from it
    control.handlers   HTTP in, calls into the pure cores, HTTP out
    control.state      ControlConfig and the ControlState the handlers share
    control.lifecycle  load at startup, background flush, final flush at shutdown
    control.metrics    the control plane's own metrics

The decisions live elsewhere and are pure: steering (`control.steering`), placement
(`control.placement`), edge health (`control.health`), prefix lookup
(`control.prefixes`), job bookkeeping (`control.jobs`). SQLite (`control.store`) runs
on its own thread. Play counts and job progress are kept in memory and flushed about
once a second; a new job, a catalog change and a plan reaching done/failed are written
before the answer goes out.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from common.service import HEALTH, create_app, REGISTRY
from common.eventsink import make_sink
from common.wire import MAX_MESSAGE_BYTES
from control.lifecycle import lifecycle
from control.metrics import register_metrics
from control.pipeline_read import pipeline_http
from control.routes import OPERATOR_ROUTES, add_routes
from control.state import EVENTS, STATE, ControlConfig, ControlState


async def _events_lifecycle(app: web.Application) -> AsyncIterator[None]:
    await app[EVENTS].start()
    yield
    await app[EVENTS].close()


def build_app(config: ControlConfig) -> web.Application:
    """The control-plane app; state is loaded from SQLite (and the origin) on startup."""
    app = create_app("control", client_max_size=MAX_MESSAGE_BYTES)
    st = ControlState(config)
    app[STATE] = st
    register_metrics(app, st)
    app[HEALTH].append(lambda: {"edges": len(st.fleet.edges), "titles": len(st.catalog),
                                "jobs_active": sum(1 for j in st.jobs.jobs.values()
                                                   if not j.state.terminal)})
    app[EVENTS] = make_sink(config.events, "control", app[REGISTRY])
    app.cleanup_ctx.append(_events_lifecycle)
    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(pipeline_http)
    add_routes(app.router)
    return app


__all__ = ["ControlConfig", "ControlState", "build_app", "OPERATOR_ROUTES", "STATE"]
