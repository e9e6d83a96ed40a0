"""The edge's HTTP cache glue: what the pure RFC 9111 core (`edge.rfc9111`) needs from an
edge's requests and stored objects, and what it answers, in the shapes the hot path wants.

Rules of this module:
- No IO, no clock, no aiohttp: time comes in as `now`, headers as plain mappings.
- A stored object's freshness is worked out once per metadata version (`Freshness`), so a
  hit's check is one float compare (`now < fresh_until`); only a request that carries its
  own directives (`Cache-Control`, `Pragma`) or a stale object goes to `rfc9111.judge`.
- Which response fields are stored, which are never (hop-by-hop, Set-Cookie, our own
  X-Cache / Cache-Status, Age and Date, which the edge computes), and which request fields
  a fill forwards upstream are tables here, not scattered through the handlers.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edge import rfc9111

# RFC 9110 7.6.1 hop-by-hop fields, plus what a proxy never relays as it is.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authenticate", "proxy-authorization"})
# Response fields kept out of the stored header block: hop-by-hop, framing (the edge sets
# Content-Length and Content-Range), its own status fields, and Set-Cookie (a shared cache
# never replays one visitor's cookie to another; RFC 9111 7.3 leaves that to the cache).
NOT_STORED = HOP_BY_HOP | frozenset({"content-length", "content-range", "x-cache", "cache-status",
                                     "set-cookie", "server", "accept-ranges"})
# Stored but never served as stored: the edge computes Age (RFC 9111 5.1) and sends its own
# Date; the stored ones are what 4.2.3's age calculation reads.
NOT_SERVED = frozenset({"age", "date"})
MAX_STORED_FIELDS = 64
# Request fields a fill never forwards: hop-by-hop, Host (the upstream's own), framing,
# the client's preconditions and ranges (a fill wants the whole, unconditional object;
# the edge answers those itself, RFC 9111 4.3.2), its cache directives (they are this
# cache's to honour, 5.2.1), and credentials (a request with Authorization is not
# served through the shared fill at all, 3.5).
NOT_FORWARDED = HOP_BY_HOP | frozenset({"host", "content-length", "range", "if-range", "if-match", "if-none-match",
                                        "if-modified-since", "if-unmodified-since", "cache-control", "pragma",
                                        "authorization", "cookie", "expect"})
# Response fields never passed back from a forwarded (uncached) answer.
NOT_RELAYED = HOP_BY_HOP | frozenset({"content-length", "server", "date"})
# Methods the edge forwards without caching (RFC 9110 9.3); anything else is refused (405).
FORWARDED_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
ALLOWED_METHODS = ("GET", "HEAD", *sorted(FORWARDED_METHODS))
_VALUE_RE = re.compile(r"[\t -~\x80-\xff]*\Z")  # a field value the edge may relay as it is

NEVER = -math.inf


def stored_headers(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The end-to-end fields of an upstream response worth keeping with the object (name
    as sent -> value, repeated fields combined with ", ", RFC 9110 5.3); bounded."""
    out: dict[str, str] = {}
    lower: dict[str, str] = {}
    for name, value in fields:
        low = name.lower()
        if low in NOT_STORED or not _VALUE_RE.match(value):
            continue
        if low in lower:
            first = lower[low]
            out[first] = f"{out[first]}, {value}"
        elif len(out) < MAX_STORED_FIELDS:
            lower[low] = name
            out[name] = value
    return out


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def forwarded_request_headers(fields: Iterable[tuple[str, str]], extra_skip: frozenset[str] = frozenset()) -> dict[str, str]:
    """A fill's request fields: the client's end-to-end fields minus `NOT_FORWARDED`."""
    out: dict[str, str] = {}
    for name, value in fields:
        low = name.lower()
        if low in NOT_FORWARDED or low in extra_skip or low.startswith("x-ocsim"):
            continue
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def relayed_headers(fields: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """A forwarded answer's fields as the edge passes them back."""
    return [(k, v) for k, v in fields if k.lower() not in NOT_RELAYED]


def has_own_directives(request: Mapping[str, str]) -> bool:
    """The request carries cache directives of its own (5.2.1, 5.4): judge it in full."""
    return "cache-control" in request or "pragma" in request


@dataclass(frozen=True, slots=True)
class Freshness:
    """A stored response's freshness, worked out once (RFC 9111 4.2).

    `fresh_until` is the absolute time up to which a request without directives of its
    own may be answered from cache without asking anyone (NEVER for `no-cache`, a
    lifetime of 0, or a Vary: *); `initial_age` is 4.2.3's corrected_initial_age, so a
    hit's `Age` is `initial_age + (now - response_time)`."""

    stored: rfc9111.Stored
    fresh_until: float
    initial_age: float
    lifetime: float

    def age(self, now: float) -> int:
        return max(0, int(self.initial_age + now - self.stored.response_time))

    def ttl(self, now: float) -> float:
        return self.lifetime - (self.initial_age + now - self.stored.response_time)


def freshness(headers: Mapping[str, str], *, status: int, request_time: float, response_time: float) -> Freshness:
    """`Freshness` of a stored response (`headers`: its fields as stored, any case)."""
    low = lower_headers(headers)
    stored = rfc9111.Stored(status, low, request_time, response_time)
    lifetime = stored.lifetime()
    initial_age = stored.age(response_time)
    cc = rfc9111.effective_cache_control(low)
    if cc.has("no-cache") or rfc9111.vary_names(low.get("vary")) is None:
        until = NEVER
    else:
        until = response_time + lifetime - initial_age
    return Freshness(stored, until, initial_age, lifetime)


class VaryMemory:
    """Which request fields select a variant of each path (the last Vary seen for it),
    so a lookup can build the variant key before it finds the object (RFC 9111 4.1).
    Bounded: the oldest paths are forgotten first (then a lookup misses once)."""

    __slots__ = ("_names", "_limit", "paths")

    def __init__(self, limit: int = 100_000) -> None:
        self._names: dict[str, tuple[str, ...]] = {}
        self._limit = limit
        self.paths: Mapping[str, tuple[str, ...]] = self._names  # read-only view for a hot path's `in`

    def get(self, path: str) -> tuple[str, ...]:
        return self._names.get(path, ())

    def __bool__(self) -> bool:
        return bool(self._names)

    def learn(self, path: str, names: tuple[str, ...]) -> None:
        if not names:
            self._names.pop(path, None)
            return
        if path not in self._names and len(self._names) >= self._limit:
            self._names.pop(next(iter(self._names)))
        self._names[path] = names

    def variant(self, path: str, request: Mapping[str, str]) -> str:
        names = self._names.get(path)
        return rfc9111.variant_of(names, request) if names else ""
