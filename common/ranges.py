"""Single byte-range requests, RFC 9110 section 14, as pure functions.

Only one range per request is served. A request for several ranges may be answered
with the whole representation: "A server MAY ignore the Range header field" (14.2).
Syntax we do not understand is ignored, as 14.2 requires ("A recipient MUST ignore a
Range header field ... containing a range unit it does not understand"; an invalid
ranges-specifier is likewise ignored). A range that is valid but lies wholly past the
end is unsatisfiable: 416 with `Content-Range: bytes */length` (15.5.17).
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_SPEC_RE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*\Z", re.IGNORECASE)
_MAX_DIGITS = 18


class RangeKind(enum.Enum):
    FULL = "full"              # no usable Range: send 200 with everything
    PARTIAL = "partial"        # send 206 with [start, end)
    UNSATISFIABLE = "unsatisfiable"  # send 416


@dataclass(frozen=True, slots=True)
class ByteRange:
    kind: RangeKind
    start: int = 0
    end: int = 0  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start

    def content_range(self, length: int) -> str:
        if self.kind is RangeKind.UNSATISFIABLE:
            return f"bytes */{length}"
        return f"bytes {self.start}-{self.end - 1}/{length}"


def full(length: int) -> ByteRange:
    return ByteRange(RangeKind.FULL, 0, length)


def parse_range(header: str | None, length: int) -> ByteRange:
    """Evaluate a Range header against a representation of `length` bytes."""
    if header is None:
        return full(length)
    if "," in header:
        return full(length)  # multiple ranges: 14.2 lets us ignore Range
    m = _SPEC_RE.match(header)
    if not m:
        return full(length)
    first, last = m.group(1), m.group(2)
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        return full(length)
    if first == "" and last == "":
        return full(length)
    if first == "":
        # suffix-range: the last N bytes (14.1.2); "-0" is unsatisfiable
        suffix = int(last)
        if suffix == 0 or length == 0:
            return ByteRange(RangeKind.UNSATISFIABLE)
        return ByteRange(RangeKind.PARTIAL, max(0, length - suffix), length)
    start = int(first)
    if last != "" and int(last) < start:
        return full(length)  # invalid range-spec: ignore the header
    if start >= length:
        return ByteRange(RangeKind.UNSATISFIABLE)
    end = length if last == "" else min(int(last) + 1, length)
    return ByteRange(RangeKind.PARTIAL, start, end)
