"""The control plane's OpenAPI 3.1 document, written by hand to match control/app.py.

A test checks that every route the app registers is described here and nothing else is,
so this file cannot drift from the code silently.
"""
from __future__ import annotations

import copy
from typing import Any

_ERR = {"$ref": "#/components/schemas/Error"}
_OP: list[dict[str, list[str]]] = [{"operatorToken": []}]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json(_ERR, description)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


_AUTH_ERRORS = {
    "401": {**_err("No operator token (a `WWW-Authenticate: Bearer` challenge is sent)"),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    "403": _err("Wrong operator token"),
}
_BAD = {"400": _err("Malformed JSON, wrong types or unknown fields"), "413": _err("Body over 64 KiB")}
_MSGPACK_BODY = {"required": True, "content": {"application/msgpack": {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}
_SIGNED = {
    "description": "A `ControlReply` (msgpack) signed with the edge key (`X-Ocsim-Signature`); carries "
                   "`token_keys` and the outstanding `fill_plans` of this edge",
    "headers": {"X-Ocsim-Signature": {"schema": {"type": "string"}}},
    "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
}
_EDGE_HEADERS = [
    {"name": "X-Ocsim-Edge", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-Ocsim-Signature", "in": "header", "required": True,
     "schema": {"type": "string", "description": "hex HMAC-SHA256(edge key, body)"}},
]
_ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Title": {
        "type": "object", "required": ["id", "duration_s"], "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,63}$"},
            "duration_s": {"type": "number", "exclusiveMinimum": 0},
            "renditions": {"type": "array", "items": {"type": "integer", "minimum": 1},
                           "description": "kbit/s; default 235, 750, 1750, 3000, 5800"},
            "popularity": {"type": "number", "minimum": 0},
        },
    },
    "Catalog": {"type": "object", "required": ["titles"],
                "properties": {"titles": {"type": "array", "items": _ref("Title")}}},
    "PlayRequest": {
        "type": "object", "required": ["title"], "additionalProperties": False,
        "description": "Give client_ip (the ISP is found by longest prefix match) or isp, not both.",
        "properties": {"title": {"type": "string"}, "client_ip": {"type": "string"},
                       "isp": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,31}$"}},
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
            "state": {"enum": ["up", "suspect", "down", "draining", "admin_down"]},
            "admin_down": {"type": "boolean"}, "req_rate": {"type": "number"}, "byte_rate": {"type": "number"},
            "used_bytes": {"type": "integer"}, "capacity_bytes": {"type": "integer"},
            "hit_ratio": {"type": "number"}, "objects": {"type": "integer"},
            "titles": {"type": "integer", "description": "how many titles the edge holds objects of"},
            "last_heartbeat_age_s": {"type": ["number", "null"]}, "heartbeats": {"type": "integer"},
            "policy": {"type": "string"}, "version": {"type": "string"},
        },
    },
    "Fleet": {"type": "object", "required": ["edges"], "properties": {
        "edges": {"type": "array", "items": _ref("Edge")},
        "states": {"type": "object", "additionalProperties": {"type": "integer"}},
        "isps": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}}}},
    "AdminRequest": {"type": "object", "required": ["down"], "additionalProperties": False,
                     "properties": {"down": {"type": "boolean"}}},
    "JobRequest": {
        "type": "object", "required": ["isp"], "additionalProperties": False,
        "description": "Exactly one of titles or top.",
        "properties": {
            "isp": {"type": "string"},
            "titles": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1000},
            "top": {"type": "integer", "minimum": 1, "maximum": 1000,
                    "description": "top N by plays observed in the ISP, then catalog popularity"},
            "renditions": {"type": "array", "items": {"type": "integer"}, "description": "default: all"},
            "bandwidth_bps": {"type": "integer", "minimum": 0, "description": "fill cap per plan; 0 = none"},
            "replicas": {"type": "integer", "minimum": 1, "description": "at most this many edges per title"},
        },
    },
    "Plan": {"type": "object", "properties": {
        "id": {"type": "string"}, "edge": {"type": "string"},
        "state": {"enum": ["pending", "running", "done", "failed"]},
        "titles": {"type": "array", "items": {"type": "string"}},
        "done_objects": {"type": "integer"}, "total_objects": {"type": "integer"},
        "done_bytes": {"type": "integer"}, "total_bytes": {"type": "integer"},
        "failed_objects": {"type": "integer"}, "error": {"type": "string"}}},
    "Job": {"type": "object", "required": ["id", "state", "progress", "isp", "titles"], "properties": {
        "id": {"type": "string"}, "state": {"enum": ["pending", "running", "done", "failed"]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1}, "isp": {"type": "string"},
        "titles": {"type": "array", "items": {"type": "string"}},
        "renditions": {"type": ["array", "null"], "items": {"type": "integer"}},
        "bandwidth_bps": {"type": "integer"},
        "unplaced": {"type": "array", "items": {"type": "string"},
                     "description": "titles no edge had room for"},
        "created_at": {"type": "number"}, "updated_at": {"type": "number"}, "error": {"type": "string"},
        "plans": {"type": "array", "items": _ref("Plan"), "description": "only in GET /v1/prepositions/{id}"}}},
}

PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "Liveness; 503 while draining", "tags": ["service"], "responses": {
        "200": _json({"type": "object"}, "Serving"), "503": _json({"type": "object"}, "Draining")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics (text format 0.0.4)", "tags": ["service"], "responses": {
        "200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/openapi.json": {"get": {"summary": "This document", "tags": ["service"],
                              "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
    "/dashboard": {"get": {"summary": "Fleet and jobs at a glance (HTML; the page asks for the operator token)",
                           "tags": ["service"], "responses": {"200": {
                               "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    "/v1/catalog": {"get": {"summary": "The catalog, most popular first (same shape as the origin's)",
                            "tags": ["public"], "responses": {"200": _json(_ref("Catalog"), "Catalog")}}},
    "/v1/titles": {"post": {
        "summary": "Add a title", "tags": ["operator"], "security": _OP,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Title")}}},
        "responses": {"201": _json(_ref("Title"), "Added"), **_BAD, **_AUTH_ERRORS,
                      "409": _err("A title with this id exists")}}},
    "/v1/titles/{id}": {
        "parameters": _ID,
        "get": {"summary": "One title", "tags": ["public"], "responses": {
            "200": _json(_ref("Title"), "The title"), "400": _err("Invalid title id"), "404": _err("Unknown title")}},
        "delete": {"summary": "Retire a title (it stays retired across origin catalog reloads)",
                   "tags": ["operator"], "security": _OP, "responses": {
                       "200": _json({"type": "object", "properties": {"id": {"type": "string"},
                                                                      "retired": {"const": True}}}, "Retired"),
                       "400": _err("Invalid title id"), **_AUTH_ERRORS, "404": _err("Unknown title")}},
    },
    "/v1/play": {"post": {
        "summary": "Steer one play: ranked, signed master-playlist URLs", "tags": ["public"],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("PlayRequest")}}},
        "responses": {"200": _json(_ref("PlayAnswer"), "Ranked candidates, best first"), **_BAD,
                      "404": _err("Unknown title"),
                      "503": _err("No edge available (`{\"error\": \"no edge available\"}`)")}}},
    "/v1/edges/register": {"post": {
        "summary": "An edge registers (msgpack `Register`, signed)", "tags": ["edge"],
        "parameters": _EDGE_HEADERS, "requestBody": _MSGPACK_BODY,
        "responses": {"200": _SIGNED, "400": _err("Malformed message or header"),
                      "403": _err("Bad or missing signature"), "409": _err("Stale registration or clock off by > 30 s"),
                      "413": _err("Message over 1 MiB")}}},
    "/v1/edges/{id}/heartbeat": {"parameters": _ID, "post": {
        "summary": "An edge heartbeats (msgpack `Heartbeat`, signed); fill progress rides along",
        "tags": ["edge"], "parameters": _EDGE_HEADERS, "requestBody": _MSGPACK_BODY,
        "responses": {"200": _SIGNED, "400": _err("Malformed message or header"),
                      "403": _err("Bad or missing signature"), "404": _err("Unknown edge: register again"),
                      "409": _err("Replayed (seq not increasing) or clock off by > 30 s"),
                      "413": _err("Message over 1 MiB")}}},
    "/v1/edges/{id}/admin": {"parameters": _ID, "post": {
        "summary": "Take an edge out of steering (down: true) or put it back", "tags": ["operator"],
        "security": _OP,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("AdminRequest")}}},
        "responses": {"200": _json(_ref("Edge"), "The edge"), **_BAD, **_AUTH_ERRORS, "404": _err("Unknown edge")}}},
    "/v1/fleet": {"get": {"summary": "Every edge: state, load, disk, hit ratio, titles, heartbeat age",
                          "tags": ["operator"], "security": _OP,
                          "responses": {"200": _json(_ref("Fleet"), "The fleet"), **_AUTH_ERRORS}}},
    "/v1/popularity": {"get": {
        "summary": "Observed plays per title in one ISP", "tags": ["operator"], "security": _OP,
        "parameters": [{"name": "isp", "in": "query", "schema": {"type": "string", "default": "-"}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "default": 20}}],
        "responses": {"200": _json({"type": "object", "properties": {
            "isp": {"type": "string"}, "titles": {"type": "array", "items": {
                "type": "object", "properties": {"id": {"type": "string"}, "plays": {"type": "integer"}}}}}},
            "Most played first"), "400": _err("Bad isp or limit"), **_AUTH_ERRORS}}},
    "/v1/prepositions": {
        "post": {"summary": "Start a pre-position job", "tags": ["operator"], "security": _OP,
                 "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("JobRequest")}}},
                 "responses": {"202": {**_json(_ref("Job"), "Accepted; poll the Location"),
                                       "headers": {"Location": {"schema": {"type": "string"}}}},
                               **_BAD, **_AUTH_ERRORS, "404": _err("Unknown title or ISP"),
                               "409": _err("No healthy edge in the ISP")}},
        "get": {"summary": "All jobs, newest first (without plans)", "tags": ["operator"], "security": _OP,
                "responses": {"200": _json({"type": "object", "properties": {
                    "jobs": {"type": "array", "items": _ref("Job")}}}, "Jobs"), **_AUTH_ERRORS}},
    },
    "/v1/prepositions/{id}": {"parameters": _ID, "get": {
        "summary": "One job with its plans", "tags": ["operator"], "security": _OP,
        "responses": {"200": _json(_ref("Job"), "The job"), **_AUTH_ERRORS, "404": _err("Unknown job")}}},
}


def spec() -> dict[str, Any]:
    """A fresh copy of the document."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "ocsim control plane", "version": "1",
                 "description": "Catalog, steering, fleet and pre-positioning of an Open Connect-style CDN "
                                "simulator. Operator endpoints need `Authorization: Bearer <operator token>`."},
        "paths": copy.deepcopy(PATHS),
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"operatorToken": {"type": "http", "scheme": "bearer"}},
        },
    }
