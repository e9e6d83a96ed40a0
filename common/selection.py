"""Which response a GET or HEAD gets for one representation: a pure function.

Rules of this module:

1. `select_response` sees the request's method, its Range and conditional fields, and the
   representation's length and strong ETag; it returns an `Outcome` and the byte range to
   send. It builds no headers and knows no framework: the origin and the edge each turn
   the outcome into their own response (their 304/416 header sets differ on purpose).
2. The order of evaluation is RFC 9110 13.2.2: If-Match (13.1.1) first, then
   If-None-Match (13.1.2), then Range (14.2) guarded by If-Range (13.1.5).
   If-Unmodified-Since and If-Modified-Since are not evaluated (our ETags are strong and
   always present, so 13.1.3/13.1.4 say the date fields are ignored when the tag ones are
   sent; a date-only request simply gets the full answer).
3. The method does not change the outcome (HEAD is answered as GET would be, 9.3.2);
   only a caller knows that a HEAD then sends no body.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from common.conditional import match, none_match, range_applies
from common.ranges import RangeKind, parse_range


class Outcome(enum.Enum):
    FULL = "full"                      # 200, the whole representation
    PARTIAL = "partial"                # 206, one byte range (14.2, 15.3.7)
    NOT_MODIFIED = "not_modified"      # 304 (13.1.2, 15.4.5)
    UNSATISFIABLE = "unsatisfiable"    # 416 with Content-Range: bytes */length (15.5.17)
    PRECONDITION_FAILED = "precondition_failed"  # 412 (13.1.1, 15.5.13)


STATUS = {Outcome.FULL: 200, Outcome.PARTIAL: 206, Outcome.NOT_MODIFIED: 304,
          Outcome.UNSATISFIABLE: 416, Outcome.PRECONDITION_FAILED: 412}


@dataclass(frozen=True, slots=True)
class Selection:
    outcome: Outcome
    start: int = 0
    end: int = 0  # exclusive; start == end == 0 when no body is sent

    @property
    def status(self) -> int:
        return STATUS[self.outcome]

    @property
    def size(self) -> int:
        return self.end - self.start

    def content_range(self, length: int) -> str | None:
        """The Content-Range value this outcome carries (206 and 416), else None."""
        if self.outcome is Outcome.PARTIAL:
            return f"bytes {self.start}-{self.end - 1}/{length}"
        if self.outcome is Outcome.UNSATISFIABLE:
            return f"bytes */{length}"
        return None


@dataclass(frozen=True, slots=True)
class Preconditions:
    """The request fields the selection depends on (None: absent)."""

    range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_range: str | None = None

    @property
    def any(self) -> bool:
        return (self.range is not None or self.if_match is not None or self.if_none_match is not None
                or self.if_range is not None)


NONE = Preconditions()
FIELDS = ("Range", "If-Match", "If-None-Match", "If-Range")  # the header names read by `from_headers`


def from_headers(headers: object) -> Preconditions:
    """The fields of a case-insensitive header mapping (anything with `.get(name)`)."""
    get = getattr(headers, "get")
    return Preconditions(get("Range"), get("If-Match"), get("If-None-Match"), get("If-Range"))


def select_response(method: str, length: int, etag: str, pre: Preconditions) -> Selection:
    """The outcome for a GET/HEAD (`method`, kept for the callers' symmetry; rule 3)."""
    del method
    if pre.if_match is not None and not match(pre.if_match, etag):
        return Selection(Outcome.PRECONDITION_FAILED)
    if none_match(pre.if_none_match, etag):
        return Selection(Outcome.NOT_MODIFIED)
    rng = parse_range(pre.range, length)
    if rng.kind is RangeKind.FULL or not range_applies(pre.if_range, etag):
        return Selection(Outcome.FULL, 0, length)
    if rng.kind is RangeKind.UNSATISFIABLE:
        return Selection(Outcome.UNSATISFIABLE)
    return Selection(Outcome.PARTIAL, rng.start, rng.end)
