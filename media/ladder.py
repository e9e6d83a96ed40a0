"""The renditions `ocsim package` encodes: bitrate, picture size and the audio share of each.

A rung is named by its total bitrate in kbit/s (video + audio), as synthetic renditions are,
so a packaged title's ladder reads like the design's (235, 750, 1750, 3000, 5800). The
default picture sizes are the ones synthetic playlists announce (common.hls.resolution_for).
A ladder on the command line is `KBPS[:WxH],...`, e.g. `235:160x90,750:320x180` (the tests'
tiny ladder); a rung without a size gets the default one. Pure: no IO.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from common.content import DEFAULT_LADDER, MAX_RENDITION_KBPS
from common.errors import BadRequest
from common.hls import resolution_for

_RUNG_RE = re.compile(r"\s*([1-9][0-9]{0,5})\s*(?::\s*([1-9][0-9]{1,4})x([1-9][0-9]{1,4}))?\s*\Z")
MIN_KBPS = 100  # below this there is nothing left for the picture once audio is paid for
MAX_RUNGS = 10


def audio_kbps(total_kbps: int) -> int:
    """The AAC share of a rung: 64 kbit/s on the small rungs, 128 kbit/s from 1 Mbit/s up."""
    return 64 if total_kbps < 1000 else 128


@dataclass(frozen=True, slots=True, order=True)
class Rung:
    kbps: int     # total, the rendition's name
    width: int
    height: int

    @property
    def audio_kbps(self) -> int:
        return audio_kbps(self.kbps)

    @property
    def video_kbps(self) -> int:
        return self.kbps - self.audio_kbps

    @property
    def label(self) -> str:
        return f"{self.kbps}:{self.width}x{self.height}"


def default_ladder() -> tuple[Rung, ...]:
    return tuple(Rung(k, *resolution_for(k)) for k in DEFAULT_LADDER)


def parse_ladder(spec: str) -> tuple[Rung, ...]:
    """`KBPS[:WxH],...` -> rungs sorted by bitrate. BadRequest names the bad part."""
    rungs: list[Rung] = []
    for part in spec.split(","):
        m = _RUNG_RE.match(part)
        if not m:
            raise BadRequest(f"ladder: {part.strip()!r} is not KBPS or KBPS:WxH (e.g. 750:640x360)")
        kbps = int(m.group(1))
        if not MIN_KBPS <= kbps <= MAX_RENDITION_KBPS:
            raise BadRequest(f"ladder: {kbps} kbit/s is outside [{MIN_KBPS}, {MAX_RENDITION_KBPS}]")
        if m.group(2):
            w, h = int(m.group(2)), int(m.group(3))
            if w % 2 or h % 2:
                raise BadRequest(f"ladder: {w}x{h}: H.264 4:2:0 needs even sizes")
        else:
            w, h = resolution_for(kbps)
        rungs.append(Rung(kbps, w, h))
    if len({r.kbps for r in rungs}) != len(rungs):
        raise BadRequest("ladder: bitrates must be distinct")
    if len(rungs) > MAX_RUNGS:
        raise BadRequest(f"ladder: at most {MAX_RUNGS} rungs")
    return tuple(sorted(rungs))


def fit_to_source(ladder: tuple[Rung, ...], source_height: int | None) -> tuple[tuple[Rung, ...], tuple[Rung, ...]]:
    """(kept, dropped): rungs taller than the source are not encoded (upscaling spends bits
    on nothing), but the lowest rung always is. Unknown source height: keep all."""
    if source_height is None:
        return ladder, ()
    kept = tuple(r for r in ladder if r.height <= source_height) or ladder[:1]
    return kept, tuple(r for r in ladder if r not in kept)

