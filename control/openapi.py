"""The control plane's OpenAPI 3.1 document, derived from the route table.

Each route of `control.routes.ROUTES` carries its summary, request body and responses;
this module adds what follows from who may call it (an operator route gets the bearer
`security` and the 401/403 answers, an edge route the signed msgpack body and headers),
the path parameters and the shared schemas. So a route cannot be served without being
documented, or documented with the wrong caller.
"""
from __future__ import annotations

import copy
import re
import zoneinfo
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from common.content import MAX_DURATION_S, MAX_RENDITION_KBPS
from common.ids import ISP_RULE, TITLE_RULE
from common.wire import FillPlanState
from control.health import HealthState
from control.jobs import JobState

if TYPE_CHECKING:
    from control.routes import Route

_PLAN_STATES = [s.value for s in FillPlanState]
_ERR = {"$ref": "#/components/schemas/Error"}
_OP: list[dict[str, list[str]]] = [{"operatorToken": []}]


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_body(_ERR, description)


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_AUTH_ERRORS = {
    "401": {**error("No operator token (a `WWW-Authenticate: Bearer` challenge is sent)"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "403": error("Wrong operator token"),
}
BAD_INPUT = {"400": error("Malformed JSON, wrong types or unknown fields"), "413": error("Body over 64 KiB")}
_MSGPACK_BODY = {"required": True, "content": {"application/msgpack": {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}
_SIGNED = {
    "description": "A `ControlReply` (msgpack) signed with the edge key (`X-Ocsim-Signature`); carries "
                   "`token_keys` and the outstanding `fill_plans` of this edge",
    "headers": {"X-Ocsim-Signature": {"schema": {"type": "string"}}},
    "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
}
# What the handlers accept, said once here and used by the schemas below (JSON Schema
# patterns are searched, not matched, so each is anchored).
EXAMPLE_TITLE = "title-001"  # in the built-in catalog (common.content.default_catalog)
TITLE_ID = {"type": "string", "pattern": f"^{TITLE_RULE}$", "maxLength": 64, "example": EXAMPLE_TITLE}
ISP_NAME = {"type": "string", "pattern": f"^{ISP_RULE}$", "maxLength": 32, "example": "isp-a"}
EDGE_ID = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", "maxLength": 64, "example": "edge-a1"}
JOB_ID = {"type": "string", "pattern": "^job-[0-9a-f]{10}$", "example": "job-0123456789"}
KBPS = {"type": "integer", "minimum": 1, "maximum": MAX_RENDITION_KBPS}
MAX_POPULARITY = 1e12
PATH_PARAMETERS: dict[str, dict[str, Any]] = {  # path prefix -> schema of its {id}
    "/v1/titles/": TITLE_ID, "/v1/edges/": EDGE_ID, "/v1/prepositions/": JOB_ID, "/watch/": TITLE_ID, "/v1/digests/": TITLE_ID}

_EDGE_HEADERS = [
    {"name": "X-Ocsim-Edge", "in": "header", "required": True, "schema": EDGE_ID},
    {"name": "X-Ocsim-Signature", "in": "header", "required": True,
     "schema": {"type": "string", "description": "hex HMAC-SHA256(edge key, body)"}},
]

_HHMM = "([01][0-9]|2[0-3]):[0-5][0-9]"
WINDOW_PATTERN = f"^{_HHMM}-({_HHMM}|24:00)$"  # control.window.parse_window

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Title": {
        "type": "object", "required": ["id", "duration_s"], "additionalProperties": False,
        "properties": {
            "id": TITLE_ID,
            "duration_s": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_S},
            "renditions": {"type": "array", "items": KBPS, "minItems": 1, "maxItems": 64, "uniqueItems": True,
                           "description": "kbit/s; default 235, 750, 1750, 3000, 5800"},
            "popularity": {"type": "number", "minimum": 0, "maximum": MAX_POPULARITY},
        },
        "example": {"id": "title-new", "duration_s": 60, "renditions": [235, 750], "popularity": 0.5},
    },
    "Catalog": {"type": "object", "required": ["titles"],
                "properties": {"titles": {"type": "array", "items": ref("CatalogTitle")}}},
    "PlayRequest": {
        "type": "object", "required": ["title"], "additionalProperties": False,
        "description": "Give client_ip (the ISP is found by longest prefix match), or isp, or neither "
                       "(an unknown network: the fallback ranking); not both.",
        "properties": {"title": TITLE_ID,
                       "client_ip": {"type": "string", "maxLength": 64,
                                     "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                       "isp": {**ISP_NAME, "description": "an ISP nobody serves is an unknown network"}},
        "oneOf": [
            {"title": "by client_ip", "required": ["client_ip"], "not": {"required": ["isp"]}},
            {"title": "by isp", "required": ["isp"], "not": {"required": ["client_ip"]}},
            {"title": "unknown network", "not": {"anyOf": [{"required": ["client_ip"]}, {"required": ["isp"]}]}},
        ],
        "example": {"title": EXAMPLE_TITLE, "isp": "isp-a"},
    },
    "PlayAnswer": {
        "type": "object", "required": ["title", "isp", "candidates", "expires"],
        "properties": {
            "title": {"type": "string"},
            "isp": {"type": ["string", "null"], "description": "null: unknown network, fallback ranking"},
            "expires": {"type": "integer", "description": "Unix time the URL tokens expire"},
            "candidates": {"type": "array", "items": {
                "type": "object", "required": ["edge", "url", "reason"],
                "properties": {"edge": {"type": "string"},
                               "url": {"type": "string", "description": "signed master playlist URL"},
                               "reason": {"type": "string"}}}},
        },
    },
    "Edge": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "isp": {"type": "string"}, "url": {"type": "string"},
            "state": {"enum": [s.value for s in HealthState]},
            "admin_down": {"type": "boolean"}, "req_rate": {"type": "number"}, "byte_rate": {"type": "number"},
            "used_bytes": {"type": "integer"}, "capacity_bytes": {"type": "integer"},
            "hit_ratio": {"type": "number"}, "objects": {"type": "integer"},
            "titles": {"type": "integer", "description": "how many titles the edge holds objects of"},
            "last_heartbeat_age_s": {"type": ["number", "null"]}, "heartbeats": {"type": "integer"},
            "policy": {"type": "string"}, "version": {"type": "string"},
        },
    },
    "Fleet": {"type": "object", "required": ["edges"], "properties": {
        "edges": {"type": "array", "items": ref("Edge")},
        "states": {"type": "object", "additionalProperties": {"type": "integer"}},
        "isps": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}},
    "AdminRequest": {"type": "object", "required": ["down"], "additionalProperties": False,
                     "properties": {"down": {"type": "boolean"}}},
    "JobRequest": {
        "type": "object", "required": ["isp"], "additionalProperties": False,
        "description": "At most one of titles or top; one of them unless refresh. Files (renditions) are placed "
                       "by value within capacity minus pinned bytes minus fills in flight.",
        "properties": {
            "isp": ISP_NAME,
            "titles": {"type": "array", "items": TITLE_ID, "minItems": 1, "maxItems": 1000},
            "top": {"type": "integer", "minimum": 1, "maximum": 20000,
                    "description": "the N most valuable files (title renditions) in the ISP"},
            "renditions": {"type": "array", "items": KBPS, "minItems": 1, "maxItems": 64, "uniqueItems": True,
                           "description": "default: all"},
            "bandwidth_bps": {"type": "integer", "minimum": 0, "maximum": 10**12,
                              "description": "fill cap per plan; 0 = none"},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 64,
                         "description": "at most this many edges per file"},
            "refresh": {"type": "boolean", "description": "unpin what is no longer among the most valuable, "
                                                          "then fill what now is"},
            "now": {"type": "boolean", "description": "ignore the ISP's fill window"},
            "window": {"type": "string", "pattern": WINDOW_PATTERN,
                       "description": "fill window HH:MM-HH:MM in local time (end may be 24:00; start != end)"},
            "timezone": {"type": "string", "enum": sorted(zoneinfo.available_timezones()),
                         "description": "IANA time zone of window (needs window)"},
        },
        "dependentRequired": {"timezone": ["window"]},
        "oneOf": [{"title": "named titles", "required": ["titles"], "not": {"required": ["top"]}},
                  {"title": "top N", "required": ["top"], "not": {"required": ["titles"]}}],
        "example": {"isp": "isp-a", "top": 10},
    },
    "Plan": {"type": "object", "properties": {
        "id": {"type": "string"}, "edge": {"type": "string"},
        "state": {"enum": _PLAN_STATES},
        "titles": {"type": "array", "items": {"type": "string"}},
        "done_objects": {"type": "integer"}, "total_objects": {"type": "integer"},
        "done_bytes": {"type": "integer"}, "total_bytes": {"type": "integer"},
        "failed_objects": {"type": "integer"}, "error": {"type": "string"}}},
    "Job": {"type": "object", "required": ["id", "state", "progress", "isp", "titles"], "properties": {
        "id": JOB_ID, "state": {"enum": [s.value for s in JobState]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1}, "isp": {"type": "string"},
        "placed": {"type": "object", "description": "file -> edges holding it once done"},
        "left_out": {"type": "object", "description": "file -> why it was not placed"},
        "shortfall": {"type": "integer", "description": "files asked for but not placed (state partial)"},
        "window": {"type": "string"}, "waiting_for": {"type": "string"}, "refresh": {"type": "boolean"},
        "popularity": {"enum": ["pipeline", "catalog"],
                       "description": "what the files were valued by: the event pipeline's file_bytes view, "
                                      "or the catalog's popularity and the plays counted"},
        "popularity_note": {"type": "string", "description": "why the catalog, when a pipeline is configured"},
        "titles": {"type": "array", "items": {"type": "string"}},
        "renditions": {"type": ["array", "null"], "items": {"type": "integer"}},
        "bandwidth_bps": {"type": "integer"},
        "unplaced": {"type": "array", "items": {"type": "string"},
                     "description": "titles no edge had room for"},
        "created_at": {"type": "number"}, "updated_at": {"type": "number"}, "error": {"type": "string"},
        "plans": {"type": "array", "items": ref("Plan"), "description": "only in GET /v1/prepositions/{id}"}}},
}

def _path_parameters(path: str) -> list[dict[str, Any]]:
    schema = next((s for prefix, s in PATH_PARAMETERS.items() if path.startswith(prefix)), {"type": "string"})
    return [{"name": name, "in": "path", "required": True, "schema": schema}
            for name in re.findall(r"\{([^}]+)\}", path)]


def operation(route: Route) -> dict[str, Any]:
    """The OpenAPI operation object of one route."""
    op: dict[str, Any] = {"summary": route.summary, "operationId": route.operation_id,
                          "tags": [route.tag or route.caller.value]}
    responses = dict(route.responses)
    if route.caller.value == "operator":
        op["security"] = _OP
        responses.update(_AUTH_ERRORS)
    elif route.caller.value == "edge":
        op["parameters"] = _EDGE_HEADERS
        op["requestBody"] = _MSGPACK_BODY
    if route.request_schema is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": route.request_schema}}}
    if route.query:
        op["parameters"] = list(route.query)
    op["responses"] = responses
    return op


def spec(routes: Iterable[Route]) -> dict[str, Any]:
    """A fresh document describing exactly `routes`."""
    paths: dict[str, Any] = {}
    for route in routes:
        item = paths.setdefault(route.path, {})
        params = _path_parameters(route.path)
        if params:
            item["parameters"] = params
        item[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "ocsim control plane", "version": "1",
                 "description": "Catalog, steering, fleet and pre-positioning of an Open Connect-style CDN "
                                "simulator. Operator endpoints need `Authorization: Bearer <operator token>`."},
        "paths": copy.deepcopy(paths),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"operatorToken": {"type": "http", "scheme": "bearer"}},
        },
    }


# A title as the service answers it: what a client may send, plus what the catalog says of it.
SCHEMAS["CatalogTitle"] = {
    **SCHEMAS["Title"], "required": ["id", "duration_s", "media"],
    "properties": {**SCHEMAS["Title"]["properties"],
                   "media": {"type": "string", "enum": ["synthetic", "packaged"],
                             "description": "synthetic bytes, or packaged real media (ocsim package)"}},
    "example": {**SCHEMAS["Title"]["example"], "media": "synthetic"},
}
