"""HLS playlists as the player reads them (RFC 8216, the VOD subset ocsim serves;
`common.hls` writes them).

Rules of this module:

1. Pure (stdlib and `player.errors` only): the asyncio driver and the Locust
   user parse with the same code.
2. URIs are resolved against the playlist's own URL, so the token in the path
   is kept.
3. Anything that is not the HLS we expect raises `PlaylistError` with a short,
   bounded reason (input is never echoed at length).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

from player.errors import PlaylistError

__all__ = ["MasterPlaylist", "MediaPlaylist", "parse_master", "parse_media"]


@dataclass(frozen=True, slots=True)
class MasterPlaylist:
    """Renditions by bitrate (kbit/s) -> absolute media playlist URL."""

    url: str
    renditions: Mapping[int, str]

    @property
    def ladder_kbps(self) -> tuple[int, ...]:
        return tuple(sorted(self.renditions))


@dataclass(frozen=True, slots=True)
class MediaPlaylist:
    """A VOD media playlist: absolute segment URLs and their durations, and the absolute URL
    of its initialisation segment (`#EXT-X-MAP`, fMP4 renditions; None when it has none)."""

    url: str
    segment_urls: tuple[str, ...]
    durations: tuple[float, ...]
    init_url: str | None = None
    bitrates_kbps: tuple[int, ...] | None = None  # each segment's #EXT-X-BITRATE; None unless all have one

    @property
    def target_s(self) -> float:
        return max(self.durations)


def _attributes(text: str) -> dict[str, str]:
    """RFC 8216 4.2 attribute list: NAME=value pairs, quoted strings may hold commas."""
    attrs: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        eq = text.find("=", i)
        if eq < 0:
            break
        name = text[i:eq].strip()
        j = eq + 1
        if j < n and text[j] == '"':
            end = text.find('"', j + 1)
            if end < 0:
                raise PlaylistError("unterminated quoted string in attribute list")
            value, j = text[j + 1:end], end + 1
        else:
            end = text.find(",", j)
            end = n if end < 0 else end
            value, j = text[j:end].strip(), end
        attrs[name] = value
        comma = text.find(",", j)
        i = n if comma < 0 else comma + 1
    return attrs


def _lines(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U)")
    return lines


def parse_master(text: str, url: str) -> MasterPlaylist:
    """A master playlist's variants by bitrate; URIs resolved against `url`.

    The bitrate is AVERAGE-BANDWIDTH (RFC 8216 4.3.4.2) when present, else
    BANDWIDTH, in kbit/s: ocsim names renditions by exactly that number.
    """
    lines = _lines(text)
    renditions: dict[int, str] = {}
    pending: int | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = _attributes(line.split(":", 1)[1])
            raw = attrs.get("AVERAGE-BANDWIDTH") or attrs.get("BANDWIDTH")
            if raw is None or not raw.isdigit() or int(raw) < 1000:
                raise PlaylistError(f"variant without a usable bandwidth: {line[:80]}")
            pending = int(raw) // 1000
        elif line.startswith("#"):
            continue
        else:
            if pending is None:
                raise PlaylistError(f"URI without #EXT-X-STREAM-INF: {line[:80]}")
            if pending in renditions:
                raise PlaylistError(f"two variants at {pending} kbit/s")
            renditions[pending] = urljoin(url, line)
            pending = None
    if not renditions:
        raise PlaylistError("master playlist lists no variants")
    return MasterPlaylist(url, renditions)


def parse_media(text: str, url: str) -> MediaPlaylist:
    """A VOD media playlist (must end with #EXT-X-ENDLIST); URIs resolved against `url`."""
    lines = _lines(text)
    urls: list[str] = []
    durations: list[float] = []
    pending: float | None = None
    ended = False
    init: str | None = None
    bitrate: int | None = None  # RFC 8216bis 4.4.4.8: applies to every segment until the next one
    bitrates: list[int | None] = []
    for line in lines[1:]:
        if line.startswith("#EXT-X-BITRATE:"):
            raw = line.split(":", 1)[1].strip()
            if not raw.isdigit() or not 0 < int(raw) < 10**9:
                raise PlaylistError(f"bad #EXT-X-BITRATE {raw[:40]!r}")
            bitrate = int(raw)
        elif line.startswith("#EXT-X-MAP:"):
            if init is not None or urls:  # RFC 8216 4.3.2.5 allows more; ocsim's titles have one, first
                raise PlaylistError("only one #EXT-X-MAP, ahead of the segments, is supported")
            uri = _attributes(line.split(":", 1)[1]).get("URI")
            if not uri:
                raise PlaylistError("#EXT-X-MAP without a URI")
            init = urljoin(url, uri)
        elif line.startswith("#EXTINF:"):
            raw = line.split(":", 1)[1].split(",", 1)[0]
            try:
                pending = float(raw)
            except ValueError:
                raise PlaylistError(f"bad #EXTINF duration {raw[:40]!r}") from None
            if not (math.isfinite(pending) and pending > 0):
                raise PlaylistError(f"bad #EXTINF duration {raw[:40]!r}")
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#"):
            continue
        else:
            if pending is None:
                raise PlaylistError(f"segment URI without #EXTINF: {line[:80]}")
            urls.append(urljoin(url, line))
            durations.append(pending)
            bitrates.append(bitrate)
            pending = None
    if not urls:
        raise PlaylistError("media playlist lists no segments")
    if not ended:
        raise PlaylistError("media playlist is not VOD (no #EXT-X-ENDLIST)")
    known = tuple(b for b in bitrates if b is not None)
    return MediaPlaylist(url, tuple(urls), tuple(durations), init, known if len(known) == len(urls) else None)
