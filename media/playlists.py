"""The playlists of a packaged title (RFC 8216), written from what was measured.

ffmpeg's own media playlists are read only for the segment durations; ocsim writes the
playlists it serves itself, so their form is the same for every title and the master can
announce measured figures: BANDWIDTH is the peak segment bit rate and AVERAGE-BANDWIDTH
the average over the rendition (RFC 8216 4.3.4.2), CODECS and RESOLUTION come from the
init segment, and every segment of a media playlist is preceded by its own bit rate
(`#EXT-X-BITRATE`, kbit/s, RFC 8216bis 4.4.4.8), so a player's ABR can use the real sizes. URIs are relative, so a token carried in the path ahead of `/content/...`
is kept. Pure: text in, text out.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from common.errors import BadRequest
from common.ids import INIT_SEGMENT

AUDIO_CODEC = "mp4a.40.2"  # AAC-LC, what ffmpeg's native aac encoder writes
HLS_VERSION = 7            # EXT-X-MAP in a playlist without I-frames only needs 6; 7 is what ffmpeg writes
_EXTINF_RE = re.compile(r"#EXTINF:\s*([0-9]+(?:\.[0-9]+)?)\s*,")


@dataclass(frozen=True, slots=True)
class RenditionFacts:
    """One packaged rendition, as measured after encoding."""

    kbps: int
    width: int
    height: int
    video_codec: str
    durations: tuple[float, ...]   # of segments 0..n-1, seconds
    sizes: tuple[int, ...]         # bytes of segments 0..n-1

    @property
    def duration_s(self) -> float:
        return sum(self.durations)

    @property
    def peak_bps(self) -> int:
        return max(math.ceil(8 * size / dur) for size, dur in zip(self.sizes, self.durations, strict=True))

    @property
    def average_bps(self) -> int:
        return math.ceil(8 * sum(self.sizes) / self.duration_s)

    @property
    def codecs(self) -> str:
        return f"{self.video_codec},{AUDIO_CODEC}"

    def to_json(self) -> dict[str, object]:
        return {"kbps": self.kbps, "width": self.width, "height": self.height, "video_codec": self.video_codec,
                "durations": list(self.durations), "sizes": list(self.sizes)}

    @classmethod
    def from_json(cls, obj: object) -> RenditionFacts:
        if not isinstance(obj, dict):
            raise BadRequest("a rendition must be an object")
        try:
            facts = cls(int(obj["kbps"]), int(obj["width"]), int(obj["height"]), str(obj["video_codec"]),
                        tuple(float(d) for d in obj["durations"]), tuple(int(s) for s in obj["sizes"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"bad rendition entry: {exc}") from None
        if not facts.durations or len(facts.durations) != len(facts.sizes) or min(facts.durations) <= 0:
            raise BadRequest(f"rendition {facts.kbps}: durations and sizes must be non-empty, positive and paired")
        return facts


def segment_durations(ffmpeg_playlist: str) -> tuple[float, ...]:
    """The EXTINF durations of a media playlist, in order."""
    found = tuple(float(m.group(1)) for m in _EXTINF_RE.finditer(ffmpeg_playlist))
    if not found:
        raise BadRequest("the encoder's playlist lists no segments")
    return found


def segment_kbps(size: int, duration_s: float) -> int:
    """A segment's bit rate as EXT-X-BITRATE writes it: whole kbit/s, at least 1."""
    return max(1, round(8 * size / duration_s / 1000))


def media_playlist(r: RenditionFacts) -> str:
    # EXT-X-TARGETDURATION: every EXTINF rounded to the nearest integer must not exceed it (4.3.3.1)
    target = max(1, max(round(d) for d in r.durations))
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", f"#EXT-X-TARGETDURATION:{target}",
             "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-INDEPENDENT-SEGMENTS",
             f'#EXT-X-MAP:URI="{INIT_SEGMENT}"']
    for i, (d, size) in enumerate(zip(r.durations, r.sizes, strict=True)):
        lines += [f"#EXT-X-BITRATE:{segment_kbps(size, d)}", f"#EXTINF:{d:.6f},", f"{i}.seg"]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist(renditions: Sequence[RenditionFacts]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for r in sorted(renditions, key=lambda r: r.kbps):
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={r.peak_bps},AVERAGE-BANDWIDTH={r.average_bps},"
                     f'CODECS="{r.codecs}",RESOLUTION={r.width}x{r.height}')
        lines.append(f"{r.kbps}/index.m3u8")
    return "\n".join(lines) + "\n"
