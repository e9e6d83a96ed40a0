"""The answer to `POST {control}/v1/play`: the ranked edges to play a title from.

    {"isp": "isp-a", "candidates": [{"edge": "edge-a1", "url": "http://.../master.m3u8"}, ...]}

Rules of this module:

1. Pure (stdlib and `player.errors` only): Locust imports it.
2. An unusable answer raises `SteeringError`: not an object, no candidate list,
   a malformed candidate, a URL that is not absolute, or no candidate at all.
3. Candidates keep the control plane's order; a repeated edge keeps its first
   place. `isp` is whatever string the control plane named (None if absent).
4. `PlayAnswerCache` keeps one viewer's last good answer per title (time passed in), so
   a player can start a title it has been steered to before while the control plane is
   unreachable (issue 11: players keep playing while control is down), as Netflix's
   clients keep prefetched playback manifests. A stale answer's tokens may have expired:
   the edge then answers 403 and the session fails as it would have without the cache.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from player.errors import SteeringError

__all__ = ["Candidate", "PlayAnswerCache", "parse_play_answer"]


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


class PlayAnswerCache:
    """title -> (the parsed JSON of its last good play answer, when it came); bounded, LRU."""

    def __init__(self, max_age_s: float = 600.0, max_entries: int = 256) -> None:
        if not (max_age_s > 0 and max_entries >= 1):
            raise ValueError("need max_age_s > 0 and max_entries >= 1")
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._answers: OrderedDict[str, tuple[dict[str, object], float]] = OrderedDict()
        self.used = 0  # answers handed out in place of the control plane's

    def __len__(self) -> int:
        return len(self._answers)

    def put(self, title: str, answer: dict[str, object], now: float) -> None:
        self._answers[title] = (answer, now)
        self._answers.move_to_end(title)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def get(self, title: str, now: float) -> dict[str, object] | None:
        """The answer if it is younger than `max_age_s` (counted in `used`), else None."""
        hit = self._answers.get(title)
        if hit is None or not 0 <= now - hit[1] <= self.max_age_s:
            return None
        self.used += 1
        return hit[0]
