"""What an edge's answer is worth to the player: its HTTP status and its bytes.

Rules of this module:

1. Pure (stdlib, `common` and `player.abr` only): the asyncio driver and the
   Locust user judge answers with the same code.
2. `failure_reason_for_status` maps an edge's HTTP status to the failover reason
   of `player.abr` (None: 200, go on): 403 -> FORBIDDEN, 5xx -> SERVER_ERROR,
   other 4xx -> NOT_FOUND, any other status we did not ask for -> CORRUPT.
3. `verify_segment` checks a segment byte for byte against its id: the header
   names the segment and its length, the body must be exactly that long and
   equal to the synthetic bytes (`common.segbytes`).
"""
from __future__ import annotations

from common.ids import SegmentId
from common.segbytes import HEADER_LEN, SegmentSpec, parse_header
from player.abr import FailureReason

__all__ = ["failure_reason_for_status", "verify_segment"]


def failure_reason_for_status(status: int) -> FailureReason | None:
    """The failover reason for an edge's HTTP status; None for 200."""
    if status == 200:
        return None
    if status == 403:
        return FailureReason.FORBIDDEN
    if status >= 500:
        return FailureReason.SERVER_ERROR
    if 400 <= status < 500:
        return FailureReason.NOT_FOUND
    return FailureReason.CORRUPT  # 1xx/2xx/3xx we did not ask for



def verify_segment(title: str, rendition_kbps: int, index: int, body: bytes) -> str | None:
    """None if `body` is exactly segment (title, rendition, index); else why not."""
    header = parse_header(bytes(body[:HEADER_LEN]))
    if header is None:
        return "no segment header"
    ident, length = header
    seg = SegmentId(title, rendition_kbps, index)
    if ident != str(seg):
        return f"misrouted: got {ident[:80]}, expected {seg}"
    if len(body) != length:
        return f"truncated: {len(body)} of {length} bytes"
    try:
        spec = SegmentSpec(seg, length)
    except ValueError as exc:
        return str(exc)
    if not spec.verify(0, body):
        return "body bytes differ"
    return None
