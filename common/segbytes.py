"""Deterministic synthetic segment bytes: any range of any segment, from its id alone.

Layout of a segment of `length` bytes:

    [0, HEADER_LEN)       ASCII header: magic, the segment id and its length, padded
    [HEADER_LEN, length)  body: byte o is PATTERN[(o + shift) % PERIOD]

PATTERN is one pseudo-random table of PERIOD bytes built once per process from a fixed
seed; `shift` comes from a hash of the segment id. PERIOD is larger than any segment
of the default ladder, so a body never repeats inside a segment and two segments
differ almost everywhere. Producing any range is a slice of the table (memcpy speed,
no per-byte work, no crypto), and `verify` compares against the same slice. The header
makes a misrouted object (wrong id) or a truncated one (length disagrees with what
arrived) detectable from its first bytes.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass

from common.ids import SegmentId

HEADER_LEN = 128
MAGIC = b"OCSIM-SEG/1"
PERIOD = 4 * 1024 * 1024 + 4093  # odd, > the largest default segment (~3.2 MB)
_SEED = 0x0C5E6D

_TABLE = random.Random(_SEED).randbytes(PERIOD)
# Doubled so any slice of length <= PERIOD is contiguous: one memcpy, no wraparound logic.
_TABLE2 = memoryview(_TABLE + _TABLE)


def _shift(seg: SegmentId) -> int:
    digest = hashlib.blake2b(str(seg).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % PERIOD


def header_bytes(seg: SegmentId, length: int) -> bytes:
    text = MAGIC + f" {seg} len={length}\n".encode()
    if len(text) > HEADER_LEN:
        raise ValueError("segment id too long for the header")
    return text[:-1].ljust(HEADER_LEN - 1, b"#") + b"\n"


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """A segment and its length: everything needed to produce or check its bytes."""

    id: SegmentId
    length: int

    def __post_init__(self) -> None:
        if self.length < HEADER_LEN:
            raise ValueError(f"segment length {self.length} < header length {HEADER_LEN}")

    def read(self, offset: int, size: int) -> bytes:
        return b"".join(self.chunks(offset, offset + size))

    def chunks(self, start: int, end: int, chunk_size: int = 256 * 1024) -> Iterator[bytes | memoryview]:
        """Yield the bytes of [start, end) in chunks of at most chunk_size; zero-copy views
        into the pattern table for the body."""
        if not 0 <= start <= end <= self.length:
            raise ValueError(f"range [{start}, {end}) outside segment of {self.length} bytes")
        pos = start
        if pos < HEADER_LEN and pos < end:
            head = header_bytes(self.id, self.length)[pos:min(end, HEADER_LEN)]
            yield head
            pos += len(head)
        shift = _shift(self.id)
        while pos < end:
            n = min(chunk_size, end - pos, PERIOD)
            i = (pos + shift) % PERIOD
            yield _TABLE2[i:i + n]
            pos += n

    def verify(self, offset: int, data: bytes | bytearray | memoryview) -> bool:
        """True when `data` is exactly the bytes at [offset, offset + len(data))."""
        end = offset + len(data)
        if offset < 0 or end > self.length:
            return False
        view = memoryview(data)
        pos = 0
        for chunk in self.chunks(offset, end, chunk_size=PERIOD):
            n = len(chunk)
            if view[pos:pos + n] != chunk:
                return False
            pos += n
        return True


def verify(segment: SegmentSpec, offset: int, data: bytes | bytearray | memoryview) -> bool:
    """Check bytes received for `segment` starting at `offset`."""
    return segment.verify(offset, data)


def parse_header(data: bytes) -> tuple[str, int] | None:
    """Read the id string and length from a segment's first HEADER_LEN bytes, or None."""
    if len(data) < HEADER_LEN or not data.startswith(MAGIC + b" "):
        return None
    try:
        text = data[len(MAGIC) + 1:HEADER_LEN].decode("ascii").rstrip("#\n")
        ident, _, length = text.partition(" len=")
        return ident, int(length)
    except (UnicodeDecodeError, ValueError):
        return None
