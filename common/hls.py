"""HLS playlists (RFC 8216) for a title: one master, one VOD media playlist per rendition.

URIs inside playlists are relative, so a token carried in the path ahead of
`/content/...` is kept by any HLS client that resolves them.
"""
from __future__ import annotations

from common.content import VBR_SPREAD, Title

# A plausible resolution per bitrate, for players that look at RESOLUTION.
_RESOLUTIONS = ((5000, "1920x1080"), (2500, "1280x720"), (1200, "960x540"), (600, "640x360"), (0, "416x234"))
CODECS = "avc1.64001f,mp4a.40.2"


def _resolution(kbps: int) -> str:
    return next(res for floor, res in _RESOLUTIONS if kbps >= floor)


def resolution_for(kbps: int) -> tuple[int, int]:
    """(width, height) of the rung at `kbps`: the size synthetic playlists announce and the
    size `ocsim package` encodes for a 16:9 source, so both kinds of title look alike."""
    w, h = _resolution(kbps).split("x")
    return int(w), int(h)


def master_playlist(title: Title) -> str:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for kbps in sorted(title.renditions):
        peak = round(kbps * 1000 * (1 + VBR_SPREAD))
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={kbps * 1000},"
            f'CODECS="{CODECS}",RESOLUTION={_resolution(kbps)}'
        )
        lines.append(f"{kbps}/index.m3u8")
    return "\n".join(lines) + "\n"


def media_playlist(title: Title, rendition: int) -> str:
    title.segment(rendition, 0)  # NotFound for an unknown rendition
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-TARGETDURATION:4",
        "#EXT-X-MEDIA-SEQUENCE:0",
    ]
    for i in range(title.segment_count):
        lines.append(f"#EXTINF:{title.segment_duration(i):.3f},")
        lines.append(f"{i}.seg")
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
