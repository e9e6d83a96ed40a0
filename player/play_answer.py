"""The answer to `POST {control}/v1/play`: the ranked edges to play a title from.

    {"isp": "isp-a", "candidates": [{"edge": "edge-a1", "url": "http://.../master.m3u8"}, ...]}

Rules of this module:

1. Pure (stdlib and `player.errors` only): Locust imports it.
2. An unusable answer raises `SteeringError`: not an object, no candidate list,
   a malformed candidate, a URL that is not absolute, or no candidate at all.
3. Candidates keep the control plane's order; a repeated edge keeps its first
   place. `isp` is whatever string the control plane named (None if absent).
"""
from __future__ import annotations

from dataclasses import dataclass

from player.errors import SteeringError

__all__ = ["Candidate", "parse_play_answer"]


@dataclass(frozen=True, slots=True)
class Candidate:
    edge: str
    url: str  # the signed master playlist URL


def parse_play_answer(obj: object) -> tuple[str | None, tuple[Candidate, ...]]:
    """(isp, candidates) from a `POST /v1/play` answer; SteeringError if malformed."""
    if not isinstance(obj, dict) or not isinstance(obj.get("candidates"), list):
        raise SteeringError('play answer is not {"candidates": [...]}')
    seen: set[str] = set()
    out: list[Candidate] = []
    for c in obj["candidates"]:
        if not (isinstance(c, dict) and isinstance(c.get("edge"), str) and isinstance(c.get("url"), str)):
            raise SteeringError("play answer has a malformed candidate")
        if not c["url"].startswith(("http://", "https://")):
            raise SteeringError(f"candidate {c['edge'][:40]} has no absolute URL")
        if c["edge"] not in seen:
            seen.add(c["edge"])
            out.append(Candidate(c["edge"], c["url"]))
    if not out:
        raise SteeringError("steering has no edge for this title right now")
    isp = obj.get("isp")
    return (isp if isinstance(isp, str) else None), tuple(out)
