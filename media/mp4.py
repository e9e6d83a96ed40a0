"""A read-only ISO BMFF (MP4) box walker, enough to describe an fMP4 init segment.

From the `moov` of an init segment it reads what a master playlist must announce: the
H.264 codec string (RFC 6381: `avc1.PPCCLL`, profile, constraint flags and level from the
`avcC` box, ISO/IEC 14496-15 5.3.3.1) and the coded picture size (the `avc1` visual sample
entry, ISO/IEC 14496-12 12.1.3), and which track kinds it holds (`hdlr` handler types).
Pure: bytes in, facts out; malformed input raises BadMedia, never IndexError.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from common.errors import BadRequest

# Boxes whose payload is a plain list of child boxes.
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"dinf", b"edts"})
_SAMPLE_ENTRY_HEADER = 8        # reserved(6) + data_reference_index(2)
_VISUAL_ENTRY_LEN = 78          # the fixed part of a VisualSampleEntry after the box header


class BadMedia(BadRequest):
    """Bytes that are not the MP4 we expect."""


@dataclass(frozen=True, slots=True)
class Box:
    kind: bytes
    payload: bytes


def boxes(data: bytes) -> Iterator[Box]:
    """The boxes laid end to end in `data` (one level)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8:
            raise BadMedia("truncated box header")
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if len(data) - pos < 16:
                raise BadMedia("truncated large box header")
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header or pos + size > len(data):
            raise BadMedia(f"box {kind!r} of {size} bytes overruns its parent")
        yield Box(kind, data[pos + header:pos + size])
        pos += size


def find(data: bytes, *path: bytes) -> list[Box]:
    """Every box at `path` (e.g. b"moov", b"trak"), descending through container boxes."""
    level = [Box(b"", data)]
    for kind in path:
        level = [b for parent in level for b in boxes(parent.payload) if b.kind == kind]
    return level


@dataclass(frozen=True, slots=True)
class InitInfo:
    video_codec: str          # e.g. avc1.64001e
    width: int
    height: int
    handlers: tuple[str, ...]  # e.g. ("vide", "soun")


def _stsd_entries(stsd: bytes) -> Iterator[Box]:
    if len(stsd) < 8:
        raise BadMedia("truncated stsd")
    yield from boxes(stsd[8:])  # version/flags(4) + entry_count(4)


def describe_init(data: bytes) -> InitInfo:
    """What an fMP4 init segment holds; BadMedia without an H.264 video track."""
    handlers: list[str] = []
    video: InitInfo | None = None
    for trak in find(data, b"moov", b"trak"):
        for hdlr in find(trak.payload, b"mdia", b"hdlr"):
            if len(hdlr.payload) >= 12:
                handlers.append(hdlr.payload[8:12].decode("latin-1"))
        for stsd in find(trak.payload, b"mdia", b"minf", b"stbl", b"stsd"):
            for entry in _stsd_entries(stsd.payload):
                if entry.kind not in (b"avc1", b"avc3"):
                    continue
                if len(entry.payload) < _VISUAL_ENTRY_LEN:
                    raise BadMedia("truncated avc1 sample entry")
                width, height = struct.unpack_from(">HH", entry.payload, _SAMPLE_ENTRY_HEADER + 16)
                avcc = [b for b in boxes(entry.payload[_VISUAL_ENTRY_LEN:]) if b.kind == b"avcC"]
                if not avcc or len(avcc[0].payload) < 4:
                    raise BadMedia("avc1 sample entry without avcC")
                profile, constraints, level = avcc[0].payload[1:4]
                codec = f"{entry.kind.decode()}.{profile:02x}{constraints:02x}{level:02x}"
                video = InitInfo(codec, width, height, ())
    if video is None:
        raise BadMedia("no H.264 video track in the init segment")
    return InitInfo(video.video_codec, video.width, video.height, tuple(handlers))
