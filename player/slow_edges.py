"""Slow edges: when a player leaves an edge that answers, but too slowly to play from.

Pure (standard library only, no clock read): the asyncio player and the Locust viewer both
use it, and time is passed in. A failed request already moves a player on
(`player.abr.next_candidate`); an edge that delivers, but far below what the rendition
needs, is the gray failure that failover alone never sees (a congested link, a lossy
path, one edge's NIC at its limit: every request succeeds and the buffer drains).

Rules:

1. **A segment is too slow** when its download took longer than `factor` (1.5) times its
   own media duration (both on the player's media clock): its throughput was well below the
   bit rate of the rendition it carries, so playing from that edge drains the buffer
   whatever the ABR does. This is dash.js's AbandonRequestsRule and hls.js's fragment abandonment
   measure (download time against the segment's duration), applied to the edge.
2. **A download still running at `abandon_factor` x its duration is abandoned** and asked
   from the next candidate, but only when one is left that is not known to be slow (else the
   bytes on their way are the best there is). The failure reason is SLOW
   (`player.abr.FAILURE_RULES`: retryable, forgotten on re-steer, never fatal on its own).
   Moves for slowness are counted apart (`slow_moves` in the report), not as failovers or
   failed requests: the edge did not fail.
3. **A slow edge is moved away from, never failed**: after a slow segment the player goes to
   the first candidate in steering's order that is neither slow nor failed in this session
   (`faster_candidate`); with none, it stays. A run of slow edges therefore never ends a
   session.
4. **A viewer remembers** (`SlowEdges`, one per viewer, as Netflix clients keep their own
   network history): an edge found slow is ranked after the others in the next play
   answers for `ttl_s`, so the next session starts on a faster edge; an edge that then
   delivers a segment in time is forgotten at once. Steering's order is kept otherwise.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["SlowEdgeRule", "SlowEdges", "faster_candidate"]


@dataclass(frozen=True)
class SlowEdgeRule:
    """When a segment download counts as too slow, or is given up (rules 1 and 2)."""

    # 1.5: throughput under 2/3 of the segment's bit rate. Not 1.0: at 20x (the chaos runner) a
    # 4 s segment is due in 200 ms, and a loaded 2-core machine stalls a healthy fetch that long.
    factor: float = 1.5
    abandon_factor: float = 2.5  # still running at 2.5x its duration: ask the next edge

    def __post_init__(self) -> None:
        if not (0 < self.factor <= self.abandon_factor):
            raise ValueError("need 0 < factor <= abandon_factor")

    def too_slow(self, download_s: float, media_s: float) -> bool:
        """A finished download of `media_s` of media that took `download_s` (media clock)."""
        return media_s > 0 and download_s > self.factor * media_s

    def abandon_after(self, media_s: float) -> float:
        """Media seconds after which a running download of `media_s` is given up."""
        return self.abandon_factor * media_s


def faster_candidate(ranked: Sequence[str], current: str, slow: set[str] | frozenset[str],
                     failed: Mapping[str, Sequence[object]]) -> str | None:
    """The edge to move to from a slow `current` (rule 3): the first of `ranked` that is
    not `current`, not slow, and has not failed in this session; None: stay."""
    for edge in ranked:
        if edge != current and edge not in slow and not failed.get(edge):
            return edge
    return None


class SlowEdges:
    """One viewer's memory of edges found slow (rule 4); times on the caller's clock."""

    def __init__(self, ttl_s: float = 120.0) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.ttl_s = ttl_s
        self._until: dict[str, float] = {}
        self.marked = 0  # how many times an edge was found slow (for reports)

    def mark(self, edge: str, now: float) -> None:
        self._until[edge] = now + self.ttl_s
        self.marked += 1

    def clear(self, edge: str) -> None:
        """`edge` just delivered in time: no longer slow."""
        self._until.pop(edge, None)

    def slow(self, now: float) -> frozenset[str]:
        for edge in [e for e, t in self._until.items() if t <= now]:
            del self._until[edge]
        return frozenset(self._until)

    def rank(self, ranked: Sequence[str], now: float) -> list[str]:
        """Steering's order with the edges known to be slow moved to the end (stable)."""
        slow = self.slow(now)
        return [e for e in ranked if e not in slow] + [e for e in ranked if e in slow]
