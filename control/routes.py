"""Every route of the control plane, written once: method, path, handler, who may call it,
and what its OpenAPI entry says. The router, the operator check and the OpenAPI document
(`control.openapi`) all derive from `ROUTES`.

Who may call what:

    public    the catalog, one title and its digest list, POST /v1/play, /healthz, /metrics, /openapi.json,
              /dashboard (the page; its data calls need the token), /watch/{title} (a player
              page) and the files it loads (/static/hls.min.js and its licence)
    edge      register and heartbeat: msgpack signed with the per-edge key (common/wire.py);
              the handlers verify the signature
    operator  everything else, with `Authorization: Bearer <operator token>`
              (missing: 401 + WWW-Authenticate; wrong: 403), checked before the handler runs
"""
from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from common.http_input import require_bearer
from control import handlers as h
from control import openapi
from control import pipeline_read
from control import watch as w
from control.openapi import BAD_INPUT, ISP_NAME, error, json_body, ref
from control.state import STATE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REALM = "ocsim-control"


class Caller(enum.Enum):
    """Who may call a route."""
    PUBLIC = "public"
    OPERATOR = "operator"
    EDGE = "edge"  # signed msgpack; the handler checks the signature


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler | None  # None: served by common.service.create_app (listed for the document)
    caller: Caller
    summary: str
    responses: Mapping[str, Any]
    request_schema: Mapping[str, Any] | None = None  # a JSON body
    query: Sequence[Mapping[str, Any]] = ()  # OpenAPI query parameters
    tag: str | None = None  # default: the caller's name

    @property
    def operation_id(self) -> str:
        """The handler's name (`create_job`), or one made of the method and path."""
        if self.handler is not None:
            return self.handler.__name__
        return self.method.lower() + re.sub(r"[^a-z0-9]+", "_", self.path).rstrip("_")


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi.spec(ROUTES))


_OBJECT = {"type": "object"}
_SIGNED = {
    "description": "A `ControlReply` (msgpack) signed with the edge key (`X-Ocsim-Signature`); carries "
                   "`token_keys` and the outstanding `fill_plans` of this edge",
    "headers": {"X-Ocsim-Signature": {"schema": {"type": "string"}}},
    "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
}
_EDGE_REFUSALS = {"400": error("Malformed message or header"), "403": error("Bad or missing signature"),
                  "413": error("Message over 1 MiB")}
P, O, E = Caller.PUBLIC, Caller.OPERATOR, Caller.EDGE

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", None, P, "Liveness; 503 while draining", tag="service",
          responses={"200": json_body(_OBJECT, "Serving"), "503": json_body(_OBJECT, "Draining")}),
    Route("GET", "/metrics", None, P, "Prometheus metrics (text format 0.0.4)", tag="service",
          responses={"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}),
    Route("GET", "/openapi.json", get_openapi, P, "This document", tag="service",
          responses={"200": json_body(_OBJECT, "OpenAPI 3.1")}),
    Route("GET", "/dashboard", h.get_dashboard, P,
          "Fleet and jobs at a glance (HTML; the page asks for the operator token)", tag="service",
          responses={"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}),
    Route("GET", "/watch/{title}", w.get_watch, P,
          "Watch a title through the CDN in the browser (HTML; hls.js plays the best candidate of /v1/play, "
          "fails over, shows edge, rendition, buffer, start-up and rebuffers)", tag="service",
          query=({"name": "isp", "in": "query", "description": "the ISP to steer for (default: from the client address)",
                  "schema": {"type": "string", "pattern": ISP_NAME["pattern"], "maxLength": 32}},
                 {"name": "buffer", "in": "query", "description": "hls.js's forward buffer goal, seconds",
                  "schema": {"type": "integer", "minimum": 4, "maximum": 120, "default": w.DEFAULT_BUFFER_S}}),
          responses={"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}},
                     "400": error("Invalid title id, isp or buffer"), "404": error("Unknown title")}),
    Route("GET", "/static/hls.min.js", w.get_hls_js, P,
          f"hls.js {w.HLS_JS_VERSION}, vendored (sha256 {w.HLS_JS_SHA256[:16]}...)", tag="service",
          responses={"200": {"description": "JavaScript",
                             "content": {"text/javascript": {"schema": {"type": "string"}}}}}),
    Route("GET", "/static/hls.js.LICENSE", w.get_hls_js_license, P, "hls.js's licence (Apache-2.0)", tag="service",
          responses={"200": {"description": "Text", "content": {"text/plain": {"schema": {"type": "string"}}}}}),
    Route("GET", "/v1/catalog", h.get_catalog, P, "The catalog, most popular first (same shape as the origin's)",
          responses={"200": json_body(ref("Catalog"), "Catalog")}),
    Route("POST", "/v1/titles", h.add_title, O, "Add a title", request_schema=ref("Title"),
          responses={"201": json_body(ref("CatalogTitle"), "Added"), **BAD_INPUT,
                     "409": error("A title with this id exists")}),
    Route("GET", "/v1/titles/{id}", h.get_title, P, "One title",
          responses={"200": json_body(ref("CatalogTitle"), "The title"), "400": error("Invalid title id"),
                     "404": error("Unknown title")}),
    Route("GET", "/v1/digests/{title}", h.get_title_digests, P,
          "A packaged title's digest list (length and SHA-256 of every file): the origin's, passed on; what "
          "players verify real media against (same path and shape as the origin's)",
          responses={"200": json_body({"type": "object", "required": ["format", "title", "files"],
                                       "properties": {"format": {"const": "ocsim-media/1"}, "title": {"type": "string"},
                                                      "files": {"type": "object"}}}, "The digest list"),
                     "400": error("Invalid title id"), "404": error("Unknown title, or a synthetic one"),
                     "502": error("The origin failed or sent a malformed list"),
                     "503": error("No origin configured"), "504": error("The origin timed out")}),
    Route("DELETE", "/v1/titles/{id}", h.retire_title, O,
          "Retire a title (it stays retired across origin catalog reloads)",
          responses={"200": json_body({"type": "object", "properties": {"id": {"type": "string"},
                                                                        "retired": {"const": True}}}, "Retired"),
                     "400": error("Invalid title id"), "404": error("Unknown title")}),
    Route("POST", "/v1/play", h.play, P, "Steer one play: ranked, signed master-playlist URLs",
          request_schema=ref("PlayRequest"),
          responses={"200": json_body(ref("PlayAnswer"), "Ranked candidates, best first"), **BAD_INPUT,
                     "404": error("Unknown title"),
                     "503": error("No edge available (`{\"error\": \"no edge available\"}`)")}),
    Route("POST", "/v1/edges/register", h.register, E, "An edge registers (msgpack `Register`, signed)",
          responses={"200": _SIGNED, **_EDGE_REFUSALS,
                     "409": error("Stale registration or clock off by > 30 s")}),
    Route("POST", "/v1/edges/{id}/heartbeat", h.heartbeat, E,
          "An edge heartbeats (msgpack `Heartbeat`, signed); fill progress rides along",
          responses={"200": _SIGNED, **_EDGE_REFUSALS, "404": error("Unknown edge: register again"),
                     "409": error("Replayed (seq not increasing) or clock off by > 30 s")}),
    Route("POST", "/v1/edges/{id}/admin", h.edge_admin, O, "Take an edge out of steering (down: true) or put it back",
          request_schema=ref("AdminRequest"),
          responses={"200": json_body(ref("Edge"), "The edge"), **BAD_INPUT, "404": error("Unknown edge")}),
    Route("GET", "/v1/fleet", h.get_fleet, O, "Every edge: state, load, disk, hit ratio, titles, heartbeat age",
          responses={"200": json_body(ref("Fleet"), "The fleet")}),
    Route("GET", "/v1/popularity", h.get_popularity, O, "Observed plays per title in one ISP",
          query=({"name": "isp", "in": "query", "description": "an ISP, or `-` for unknown networks",
                  "schema": {"type": "string", "default": "-",
                             "anyOf": [{"const": "-"}, {"pattern": ISP_NAME["pattern"]}], "maxLength": 32}},
                 {"name": "limit", "in": "query",
                  "schema": {"type": "integer", "default": 20, "minimum": 1, "maximum": h.MAX_POPULARITY_LIMIT}}),
          responses={"200": json_body({"type": "object", "properties": {
              "isp": {"type": "string"}, "titles": {"type": "array", "items": {
                  "type": "object", "properties": {"id": {"type": "string"},
                                                   "plays": {"type": "integer", "minimum": 1}}}}}},
              "Most played first"), "400": error("Bad isp or limit")}),
    Route("POST", "/v1/prepositions", h.create_job, O, "Start a pre-position job", request_schema=ref("JobRequest"),
          responses={"202": {**json_body(ref("Job"), "Accepted; poll the Location"),
                             "headers": {"Location": {"schema": {"type": "string",
                                                                 "pattern": "^/v1/prepositions/job-[0-9a-f]{10}$"},
                                                      "description": "/v1/prepositions/{id} of the new job"}},
                             "links": {"GetJob": {"operationId": "get_job",
                                                  "parameters": {"id": "$response.body#/id"},
                                                  "description": "The job just created (the Location header)"}}},
                     **BAD_INPUT, "404": error("Unknown title or ISP"),
                     "409": error("No healthy edge in the ISP, or a title has none of the renditions")}),
    Route("GET", "/v1/prepositions", h.list_jobs, O, "All jobs, newest first (without plans)",
          responses={"200": json_body({"type": "object", "properties": {
              "jobs": {"type": "array", "items": ref("Job")}}}, "Jobs")}),
    Route("GET", "/v1/prepositions/{id}", h.get_job, O, "One job with its plans",
          responses={"200": json_body(ref("Job"), "The job"), "404": error("Unknown job")}),
    Route("GET", "/v1/pipeline/series", pipeline_read.get_pipeline_series, O,
          "One time series from the event pipeline's read API (what the dashboard draws)", tag="pipeline",
          query=({"name": "metric", "in": "query", "required": True,
                  "description": "a series of the collector (`GET /v1/metrics` there): bytes_to_players, offload, "
                                 "sps, startup_s, rebuffer_ratio, misses.cold, ...",
                  "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_.]{0,39}$"}},
                 {"name": "by", "in": "query", "schema": {"type": "string", "enum": list(pipeline_read.BY),
                                                          "default": "isp"}},
                 {"name": "step", "in": "query", "schema": {"type": "string", "enum": list(pipeline_read.STEPS),
                                                            "default": "10s"}},
                 {"name": "since", "in": "query", "description": "epoch seconds, or a window back from now",
                  "schema": {"type": "string", "default": "5m",
                             "pattern": r"^([0-9]{1,6}(\.[0-9]{1,3})?(s|m|h)|[0-9]{1,11}(\.[0-9]{1,6})?)$"}}),
          responses={"200": json_body({"type": "object", "properties": {
              "metric": {"type": "string"}, "unit": {"type": "string"}, "by": {"type": "string"},
              "step": {"type": "string"}, "since": {"type": "number"},
              "series": {"type": "object", "additionalProperties": {"type": "array", "items": {
                  "type": "array", "items": {"type": ["number", "null"]}}}}}},
              "Points [t, value] per key (ISP or edge), oldest first"),
              "400": error("Bad parameter, or one the collector refused (its message)"),
              "502": error("The collector is unreachable or answered badly"),
              "404": error("No event pipeline configured (--pipeline)"),
              "504": error("The collector did not answer in time")}),
)

# (method, path) of every operator route; the auth tests walk this list.
OPERATOR_ROUTES: list[tuple[str, str]] = [(r.method, r.path) for r in ROUTES if r.caller is Caller.OPERATOR]


def _operator_only(handler: Handler) -> Handler:
    """`handler` behind the operator's bearer token, checked before anything else."""
    async def checked(request: web.Request) -> web.StreamResponse:
        require_bearer(request, request.app[STATE].config.operator_token, REALM)
        return await handler(request)
    checked.__name__ = handler.__name__
    checked.__doc__ = handler.__doc__
    return checked


def add_routes(router: web.UrlDispatcher, routes: Sequence[Route] = ROUTES) -> None:
    """Register `routes` on `router`, operator ones behind the token check."""
    for route in routes:
        if route.handler is None:
            continue
        handler = _operator_only(route.handler) if route.caller is Caller.OPERATOR else route.handler
        if route.method == "GET":
            router.add_get(route.path, handler)  # and HEAD, as aiohttp does for GET
        else:
            router.add_route(route.method, route.path, handler)


__all__ = ["Caller", "OPERATOR_ROUTES", "REALM", "ROUTES", "Route", "add_routes"]
