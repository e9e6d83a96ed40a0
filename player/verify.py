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
4. `check_segment_head` is the cheap check a crowd viewer makes of every segment
   it does not verify in full: the header bytes name this segment and the length
   the edge announced (Content-Length) is the length the header names.
5. Packaged real media (`ocsim package`) has no self-describing bytes: `MediaDigests`
   holds the title's digest list (the origin's record: length and SHA-256 of every
   file, fetched from the control plane) and checks any file the CDN handed over by
   its name under `/content/{title}/` (playlists, init segments, segments alike).
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from common.ids import SegmentId
from common.segbytes import HEADER_LEN, SegmentSpec, parse_header
from player.abr import FailureReason

__all__ = ["MediaDigests", "check_segment_head", "failure_reason_for_status", "verify_segment"]

DIGESTS_FORMAT = "ocsim-media/1"
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class MediaDigests:
    """A packaged title's digest list as a player uses it: file name -> (length, SHA-256 hex)."""

    title: str
    files: Mapping[str, tuple[int, str]]

    @classmethod
    def from_json(cls, obj: Any) -> MediaDigests:
        """ValueError with a short reason for anything that is not a digest list."""
        if not isinstance(obj, dict) or obj.get("format") != DIGESTS_FORMAT:
            raise ValueError(f"not an ocsim digest list (format must be {DIGESTS_FORMAT!r})")
        title, raw = obj.get("title"), obj.get("files")
        if not isinstance(title, str) or not isinstance(raw, dict) or not raw:
            raise ValueError("a digest list needs a title and a non-empty files object")
        files: dict[str, tuple[int, str]] = {}
        for name, entry in raw.items():
            length = entry.get("length") if isinstance(entry, dict) else None
            sha = entry.get("sha256") if isinstance(entry, dict) else None
            if (not isinstance(length, int) or isinstance(length, bool) or length < 0 or not isinstance(sha, str)
                    or len(sha) != 64 or not set(sha) <= _HEX):
                raise ValueError(f"digest list entry {str(name)[:80]!r} is not {{length, sha256}}")
            files[str(name)] = (length, sha)
        return cls(title, files)

    def name_of(self, url: str) -> str | None:
        """The file name of `url` below `/content/{title}/` (a token ahead of it is ignored)."""
        path = urlsplit(url).path
        marker = f"/content/{self.title}/"
        at = path.find(marker)
        return None if at < 0 else path[at + len(marker):]

    def check(self, url: str, body: bytes) -> str | None:
        """None if `body` is exactly the file `url` names; else why not."""
        name = self.name_of(url)
        if name is None or name not in self.files:
            return f"{(name or url)[:80]} is not in the digest list of {self.title}"
        length, sha = self.files[name]
        if len(body) != length:
            return f"{name}: {len(body)} bytes, the digest list says {length}"
        if hashlib.sha256(body).hexdigest() != sha:
            return f"{name}: SHA-256 does not match the digest list"
        return None


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

def check_segment_head(title: str, rendition_kbps: int, index: int, head: bytes | bytearray | memoryview,
                       length: int) -> str | None:
    """None if `head` (the first HEADER_LEN bytes) names segment (title, rendition, index)
    and `length` bytes; else why not. Costs nothing per body byte."""
    header = parse_header(bytes(head[:HEADER_LEN]))
    if header is None:
        return "no segment header"
    ident, named = header
    seg = SegmentId(title, rendition_kbps, index)
    if ident != str(seg):
        return f"misrouted: got {ident[:80]}, expected {seg}"
    if named != length:
        return f"truncated: {length} of {named} bytes"
    return None


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
