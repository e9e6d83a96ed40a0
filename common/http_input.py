"""What an admin API needs before its handler runs: a bounded body, a JSON object with
known fields, typed fields, and the operator's bearer token, checked in constant time.

Rules of this module:
1. A body is never read past its limit: a declared Content-Length over it is refused
   (413) before reading, and a chunked body is counted as it arrives.
2. Every refusal is a `common.errors.PeerError` with a short reason, so the service's
   error middleware turns it into `{"error": reason}` with the right 4xx.
3. The token comparison is `common.auth.bearer_matches` (constant time); a missing,
   non-Bearer or not-printable-ASCII header is 401 with a `WWW-Authenticate` challenge, a
   wrong token 403.
4. One strict layer for every decoded body, JSON or msgpack (`check_decoded`): a declared
   charset other than utf-8 is 415; the bytes must be valid UTF-8; nesting is at most
   `MAX_DEPTH` deep; numbers are finite floats or integers within 64 bits; strings and
   keys hold no lone surrogates. A body that passes can be re-encoded as JSON or msgpack
   and logged without raising.

Nothing here knows about one service: the control plane uses it today, and the edge's
and origin's admin APIs can take the same functions.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from common.auth import bearer_matches, printable_ascii
from common.errors import BadRequest, Forbidden, PayloadTooLarge, UnsupportedMediaType

MAX_JSON_BYTES = 64 * 1024
MAX_DEPTH = 32  # nesting of arrays/objects (maps/lists in msgpack); real bodies use 3
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1

JsonObject = dict[str, Any]  # a decoded JSON object; its values are checked field by field


class BearerChallenge(web.HTTPUnauthorized):
    """401 with `WWW-Authenticate: Bearer realm=...` (the error middleware keeps the header)."""

    def __init__(self, realm: str) -> None:
        super().__init__(reason="operator token required", headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})


def require_bearer(request: web.Request, token: str, realm: str) -> None:
    """Refuse the request unless it carries `Authorization: Bearer <token>`."""
    header = request.headers.get("Authorization")
    if not header or not printable_ascii(header) or not header.lower().startswith("bearer "):
        raise BearerChallenge(realm)
    if not bearer_matches(header, token):
        raise Forbidden("wrong operator token")


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_charset(request: web.BaseRequest) -> None:
    """Refuse (415) a body declared in any charset but utf-8 (absent means utf-8)."""
    charset = request.charset
    if charset is not None and charset.strip().lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("body charset must be utf-8")


def _refuse_constant(name: str) -> object:
    raise BadRequest(f"{name[:16]} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest("number out of range")
    return value


def decode_json(raw: bytes) -> object:
    """The JSON value in `raw`, through the strict layer (rule 4); 400 otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body is not valid UTF-8") from None
    try:
        value: object = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadRequest(f"JSON nested deeper than {MAX_DEPTH}") from None
    except ValueError:
        raise BadRequest("malformed JSON") from None
    check_decoded(value)
    return value


def check_decoded(value: object, what: str = "body") -> None:
    """Rule 4 over an already decoded JSON or msgpack value (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadRequest(f"{what} nested deeper than {MAX_DEPTH}")
            if isinstance(item, dict):
                for k, v in item.items():
                    stack.append((k, depth + 1))
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if not _valid_text(item):
                raise BadRequest(f"{what} holds a string that is not valid Unicode")
        elif isinstance(item, bool) or item is None or isinstance(item, bytes):
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise BadRequest(f"{what} holds an integer out of range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadRequest(f"{what} holds a number that is not finite")
        else:
            raise BadRequest(f"{what} holds a value of an unsupported type")


def _valid_text(text: str) -> bool:
    """No lone surrogates (so the string encodes as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def read_json_value(request: web.Request, limit: int = MAX_JSON_BYTES) -> object:
    """Any JSON value, through the strict layer (rule 4); 400/413/415 otherwise."""
    check_charset(request)
    raw = await read_limited(request, limit)
    return decode_json(raw)


async def read_json_object(request: web.Request, allowed: frozenset[str], limit: int = MAX_JSON_BYTES) -> JsonObject:
    """A JSON object body with only `allowed` keys (400 otherwise)."""
    obj = await read_json_value(request, limit)
    if not isinstance(obj, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(k[:40] for k in unknown[:5])}")
    return obj


def str_field(obj: JsonObject, name: str, *, required: bool = False, max_len: int = 128) -> str | None:
    """A non-empty string of at most `max_len` characters, or None when absent and optional."""
    value = obj.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def int_field(obj: JsonObject, name: str, lo: int, hi: int) -> int | None:
    """An integer (not a bool) in [lo, hi], or None when absent."""
    value = obj.get(name)
    if value is None:
        return None
    number = as_int(value)
    if number is None or not lo <= number <= hi:
        raise BadRequest(f"{name} must be an integer in [{lo}, {hi}]")
    return number


def as_int(value: object) -> int | None:
    """`value` as a JSON Schema integer, else None: an int that is not a bool (`true` is
    not 1 here), or a float with no fractional part (`750.0` is 750, as JSON Schema says)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def is_int(value: object) -> bool:
    return as_int(value) is not None


def number_field(obj: JsonObject, name: str, lo: float, hi: float, *, above_lo: bool = False) -> float | None:
    """A finite number (int or float, not a bool, not -0.0) in [lo, hi] (or (lo, hi] when
    `above_lo`), as a float; None when absent. Infinity (`1e400` parses to it) and NaN are refused."""
    value = obj.get(name)
    if value is None:
        return None
    low = "(" if above_lo else "["
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{name} must be a number in {low}{lo:g}, {hi:g}]")
    if isinstance(value, int) and abs(value) > 2**53:  # 10**19: out of any range we take, and of SQLite's
        raise BadRequest(f"{name} must be a number in {low}{lo:g}, {hi:g}]")
    number = float(value)
    if not math.isfinite(number) or math.copysign(1.0, number) < 0 and number == 0:
        raise BadRequest(f"{name} must be a finite number in {low}{lo:g}, {hi:g}] (not -0.0, NaN or Infinity)")
    if number < lo or number > hi or (above_lo and number == lo):
        raise BadRequest(f"{name} must be a number in {low}{lo:g}, {hi:g}]")
    return number


def int_list_field(obj: JsonObject, name: str, lo: int, hi: int, *, max_items: int = 64) -> list[int] | None:
    """A non-empty list of at most `max_items` distinct integers (not bools) in [lo, hi], or None when absent."""
    value = obj.get(name)
    if value is None:
        return None
    numbers = [as_int(v) for v in value] if isinstance(value, list) else []
    if not 1 <= len(numbers) <= max_items or not all(n is not None and lo <= n <= hi for n in numbers):
        raise BadRequest(f"{name} must be a list of 1 to {max_items} integers in [{lo}, {hi}]")
    if len(set(numbers)) != len(numbers):
        raise BadRequest(f"{name} must not repeat a value")
    return [n for n in numbers if n is not None]


_QUERY_INT_RE = re.compile(r"(?:0|[1-9][0-9]{0,17})\Z")


def query_int(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    """A query-string integer in [lo, hi]: decimal digits only (no sign, spaces, `_` or
    leading zeros, which `int()` would take), else 400 naming the parameter."""
    text = query.get(name)
    if text is None:
        return default
    if not _QUERY_INT_RE.match(text) or not lo <= int(text) <= hi:
        raise BadRequest(f"{name} must be an integer in [{lo}, {hi}]")
    return int(text)


__all__ = ["MAX_DEPTH", "MAX_JSON_BYTES", "BearerChallenge", "JsonObject", "as_int", "check_charset",
           "check_decoded", "decode_json", "int_field", "int_list_field", "is_int", "number_field", "query_int",
           "read_json_object", "read_json_value", "read_limited", "require_bearer",
           "str_field"]
