"""HTTP caching semantics (RFC 9111, with RFC 5861, 9211 and 9213) as a pure core.

Rules of this module:
- No IO, no clock: every decision takes `now` (and the request/response times it needs)
  as arguments, so each rule is unit-testable case by case (tests/test_edge_rfc9111.py
  names the RFC section of every case).
- Headers come in as a case-insensitive lookup (`Headers`: a mapping of lower-case names
  to the combined field value); nothing here raises on what an upstream sent. Malformed
  Cache-Control, Expires, Age or Vary are read the way the RFC says (an invalid Expires is
  "already expired" (5.3), an invalid Age is ignored (5.1), an invalid max-age makes the
  response stale (1.2.2, 4.2.1), a duplicated directive counts by its first occurrence
  (4.2.1)), never as an error.
- The cache is a *shared* cache (an edge): s-maxage, proxy-revalidate and private apply.
- CDN-Cache-Control (RFC 9213), when present and parseable, is the targeted field and
  replaces Cache-Control for this cache's freshness and storability decisions.
"""
from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

Headers = Mapping[str, str]  # lower-case field name -> combined field value

DELTA_MAX = 2**31  # 1.2.2: a delta-seconds greater than this is taken as this
HEURISTIC_FRACTION = 0.1  # 4.2.2: "10% of the time since Last-Modified" (typical)
HEURISTIC_MAX_S = 86400.0  # and capped: a day
# 4.2.2 / RFC 9110 15.1: status codes that are heuristically cacheable
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
# 3: status codes this cache understands (it stores only these)
UNDERSTOOD_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501})
UNSAFE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})  # RFC 9110 9.2.1: not safe
CACHEABLE_METHODS = frozenset({"GET", "HEAD"})

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_DELTA_RE = re.compile(r"[0-9]+\Z")


# -- parsing ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CacheControl:
    """Parsed directives: name (lower case) -> argument (None when it has none).

    A directive whose name is not a token is dropped (5.2: unrecognised or malformed
    directives are ignored); a repeated directive keeps its first value (4.2.1)."""

    directives: Mapping[str, str | None]

    def has(self, name: str) -> bool:
        return name in self.directives

    def seconds(self, name: str) -> float | None:
        """A delta-seconds argument (1.2.2); None when absent, 0.0 when present but
        invalid (the response is then stale, 4.2.1), capped at 2^31."""
        if name not in self.directives:
            return None
        arg = self.directives[name]
        if arg is None or not _DELTA_RE.match(arg):
            return 0.0
        return float(min(int(arg), DELTA_MAX))


def parse_cache_control(value: str | None) -> CacheControl:
    out: dict[str, str | None] = {}
    for part in _split_list(value or ""):
        name, eq, arg = part.partition("=")
        name = name.strip().lower()
        if not _TOKEN_RE.match(name):
            continue
        argument: str | None = None
        if eq:
            arg = arg.strip()
            if len(arg) >= 2 and arg[0] == arg[-1] == '"':
                arg = arg[1:-1]
            argument = arg
        out.setdefault(name, argument)
    return CacheControl(out)


def _split_list(value: str) -> list[str]:
    """Comma-separated members, commas inside quoted strings kept."""
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf).strip())
    return [p for p in parts if p]


def parse_http_date(value: str | None) -> float | None:
    """An HTTP-date as a POSIX time; None when absent or invalid."""
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def parse_age(value: str | None) -> float | None:
    """5.1: the first member of a list-valued Age; an invalid value is ignored (None)."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    if not _DELTA_RE.match(first):
        return None
    return float(min(int(first), DELTA_MAX))


def effective_cache_control(headers: Headers) -> CacheControl:
    """RFC 9213 2.1: a CDN-Cache-Control this cache can parse replaces Cache-Control."""
    cdn = headers.get("cdn-cache-control")
    if cdn is not None:
        parsed = parse_cache_control(cdn)
        if parsed.directives:
            return parsed
    return parse_cache_control(headers.get("cache-control"))


# -- storing (section 3) -----------------------------------------------------------------------

class NotStored(enum.Enum):
    METHOD = "method"            # 3: the request method is not cacheable (GET/HEAD here)
    STATUS = "status"            # 3: the status code is not understood
    NO_STORE = "no-store"        # 3, 5.2.2.5 / 5.2.1.5: no-store in response or request
    PRIVATE = "private"          # 3, 5.2.2.7: private in a shared cache
    AUTHORIZATION = "authorization"  # 3.5: a request with Authorization, not explicitly allowed
    VARY_STAR = "vary-star"      # 4.1: Vary: * never matches; storing it is pointless
    NOT_CACHEABLE = "uncacheable"  # 3: neither explicit freshness nor a validator nor heuristic


def storable(method: str, status: int, request: Headers, response: Headers) -> NotStored | None:
    """None if a shared cache may store the response (RFC 9111 section 3), else why not."""
    if method not in CACHEABLE_METHODS:
        return NotStored.METHOD
    if status not in UNDERSTOOD_STATUSES:
        return NotStored.STATUS
    req_cc = parse_cache_control(request.get("cache-control"))
    cc = effective_cache_control(response)
    if req_cc.has("no-store") or cc.has("no-store"):
        return NotStored.NO_STORE
    if cc.has("private"):
        return NotStored.PRIVATE
    if "authorization" in request and not (cc.has("public") or cc.has("s-maxage") or cc.has("must-revalidate")):
        return NotStored.AUTHORIZATION
    if vary_names(response.get("vary")) is None:
        return NotStored.VARY_STAR
    explicit = (cc.has("public") or cc.has("max-age") or cc.has("s-maxage") or "expires" in response)
    if explicit or status in HEURISTIC_STATUSES or cc.has("no-cache"):
        return None
    return NotStored.NOT_CACHEABLE


# -- freshness (4.2) ---------------------------------------------------------------------------

def freshness_lifetime(response: Headers, status: int = 200, *, response_time: float) -> float:
    """4.2.1: s-maxage, max-age, Expires - Date, else the heuristic of 4.2.2 (only for a
    heuristically cacheable status or `public`, and only with a Last-Modified)."""
    cc = effective_cache_control(response)
    s_maxage = cc.seconds("s-maxage")
    if s_maxage is not None:
        return s_maxage
    max_age = cc.seconds("max-age")
    if max_age is not None:
        return max_age
    if "expires" in response:
        expires = parse_http_date(response.get("expires"))
        if expires is None:
            return 0.0  # 5.3: an invalid Expires (e.g. "0") is already expired
        date = parse_http_date(response.get("date"))
        return max(0.0, expires - (date if date is not None else response_time))
    if status in HEURISTIC_STATUSES or cc.has("public"):
        last_modified = parse_http_date(response.get("last-modified"))
        if last_modified is not None:
            date = parse_http_date(response.get("date"))
            base = date if date is not None else response_time
            return min(HEURISTIC_MAX_S, max(0.0, (base - last_modified) * HEURISTIC_FRACTION))
    return 0.0


def current_age(response: Headers, *, request_time: float, response_time: float, now: float) -> float:
    """4.2.3, literally."""
    date = parse_http_date(response.get("date"))
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    age_value = parse_age(response.get("age")) or 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - response_time)
    return corrected_initial_age + resident_time


@dataclass(frozen=True, slots=True)
class Stored:
    """What the cache keeps to judge a stored response: its status, headers and times."""

    status: int
    headers: Headers  # lower-case names
    request_time: float
    response_time: float

    def age(self, now: float) -> float:
        return current_age(self.headers, request_time=self.request_time, response_time=self.response_time,
                           now=now)

    def lifetime(self) -> float:
        return freshness_lifetime(self.headers, self.status, response_time=self.response_time)


class Use(enum.Enum):
    FRESH = "fresh"                  # 4.2: serve from cache
    STALE_WHILE_REVALIDATE = "swr"   # RFC 5861 3: serve stale, refresh in the background
    REVALIDATE = "revalidate"        # 4.3: ask the origin (conditional request) first
    MISS = "miss"                    # 4.1: does not match (Vary: *): forward, as for a miss


@dataclass(frozen=True, slots=True)
class Verdict:
    use: Use
    age: float
    ttl: float  # freshness lifetime minus current age (negative when stale)
    may_serve_stale_on_error: bool  # RFC 5861 4 (stale-if-error) and not forbidden by 4.2.4


def judge(stored: Stored, request: Headers, now: float) -> Verdict:
    """May `stored` answer `request` at `now`, and how (4.2, 4.2.4, 5.2.1, 5.2.2, RFC 5861)."""
    if vary_names(stored.headers.get("vary")) is None:
        return Verdict(Use.MISS, 0.0, 0.0, False)  # 4.1: "*" always fails to match
    cc = effective_cache_control(stored.headers)
    req = parse_cache_control(request.get("cache-control"))
    if "cache-control" not in request and "no-cache" in request.get("pragma", "").lower():
        req = parse_cache_control("no-cache")  # RFC 9111 5.4 (Pragma, deprecated, still honoured)
    age = stored.age(now)
    lifetime = stored.lifetime()
    if req.has("max-age"):  # 5.2.1.1: the client accepts nothing older
        lifetime = min(lifetime, req.seconds("max-age") or 0.0)
    ttl = lifetime - age
    min_fresh = req.seconds("min-fresh") or 0.0  # 5.2.1.3
    # 4.2.4 / 5.2.2.2 / 5.2.2.8 / 5.2.2.10: no stale service of any kind
    no_stale = cc.has("must-revalidate") or cc.has("proxy-revalidate") or cc.has("s-maxage")
    stale_on_error = False
    if not no_stale:
        sie = cc.seconds("stale-if-error")
        req_sie = req.seconds("stale-if-error")
        window = max(sie or 0.0, req_sie or 0.0)
        stale_on_error = (sie is not None or req_sie is not None) and -ttl <= window
    if cc.has("no-cache") or req.has("no-cache"):  # 5.2.2.4, 5.2.1.4: always validate
        return Verdict(Use.REVALIDATE, age, ttl, stale_on_error or ttl > 0)
    if ttl - min_fresh > 0:
        return Verdict(Use.FRESH, age, ttl, True)
    if no_stale:
        return Verdict(Use.REVALIDATE, age, ttl, False)
    if req.has("max-stale"):  # 5.2.1.2: the client accepts a stale response (no value: any)
        limit = req.directives["max-stale"]
        if limit is None or -ttl <= (req.seconds("max-stale") or 0.0):
            return Verdict(Use.FRESH, age, ttl, True)
    swr = cc.seconds("stale-while-revalidate")
    if swr is not None and -ttl <= swr:  # RFC 5861 3
        return Verdict(Use.STALE_WHILE_REVALIDATE, age, ttl, True)
    return Verdict(Use.REVALIDATE, age, ttl, stale_on_error)


# -- validation (4.3) --------------------------------------------------------------------------

def conditional_headers(stored: Headers) -> dict[str, str]:
    """4.3.1: the validators of the stored response as preconditions."""
    out: dict[str, str] = {}
    if stored.get("etag"):
        out["If-None-Match"] = stored["etag"]
    if stored.get("last-modified"):
        out["If-Modified-Since"] = stored["last-modified"]
    return out


# 3.2: fields a 304 must not change in the stored response
_NOT_UPDATED = frozenset({"content-length", "content-encoding", "content-range", "transfer-encoding",
                          "connection", "keep-alive", "te", "trailer", "upgrade", "proxy-connection"})


NOT_UPDATED = _NOT_UPDATED


def freshen(stored: Headers, not_modified: Headers) -> dict[str, str]:
    """4.3.4: the stored headers updated with the 304's, except those 3.2 excludes."""
    out = dict(stored)
    for name, value in not_modified.items():
        if name not in _NOT_UPDATED:
            out[name] = value
    return out


def validator_matches(stored: Headers, not_modified: Headers) -> bool:
    """4.3.4: the 304 selects this stored response (strong ETag, else Last-Modified)."""
    etag = not_modified.get("etag")
    if etag is not None:
        return etag == stored.get("etag")
    lm = not_modified.get("last-modified")
    if lm is not None:
        return lm == stored.get("last-modified")
    return True  # no validator in the 304: it applies to the one stored response


# -- Vary (4.1) ----------------------------------------------------------------------------------

def vary_names(vary: str | None) -> tuple[str, ...] | None:
    """The selecting header names (lower case, sorted, unique); None for `Vary: *`.
    Members that are not tokens are ignored."""
    names: set[str] = set()
    for member in _split_list(vary or ""):
        if member == "*":
            return None
        if _TOKEN_RE.match(member):
            names.add(member.lower())
    return tuple(sorted(names))


def variant_of(names: tuple[str, ...], request: Headers) -> str:
    """4.1: the variant a request selects: its values of the selecting fields, whitespace
    normalised; "" when nothing varies (the same key as a response without Vary)."""
    if not names:
        return ""
    parts = []
    for name in names:
        value = request.get(name)
        norm = "" if value is None else ",".join(p.strip() for p in value.split(","))
        parts.append(f"{name}={norm!r}" if value is not None else f"{name}-")
    return ";".join(parts)


# -- invalidation (4.4) --------------------------------------------------------------------------

def invalidates(method: str, status: int) -> bool:
    """4.4: a non-error response to an unsafe method invalidates the target URI."""
    return method.upper() in UNSAFE_METHODS and 200 <= status < 400


# -- Cache-Status (RFC 9211) ---------------------------------------------------------------------

def cache_status(cache: str, *, hit: bool, fwd: str | None = None, fwd_status: int | None = None,
                 ttl: float | None = None, stored: bool = False, detail: str | None = None) -> str:
    """One Cache-Status member for this cache (RFC 9211 2)."""
    params = [cache]
    if hit:
        params.append("hit")
    if fwd is not None:
        params.append(f"fwd={fwd}")
    if fwd_status is not None:
        params.append(f"fwd-status={fwd_status}")
    if ttl is not None:
        params.append(f"ttl={int(ttl)}")
    if stored:
        params.append("stored")
    if detail is not None:
        params.append(f"detail={detail}")
    return "; ".join(params)
