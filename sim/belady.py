"""Belady's MIN, the offline upper bound, for a byte-budgeted cache.

Variant (stated because MIN is only optimal for equal sizes): on a miss the object is
inserted, then objects are evicted in order of furthest next use (never-used-again
first) until the budget holds; the new object is itself a candidate, so an object
whose next use is further than every resident one is simply not admitted (bypass).
With equal sizes this is exactly Belady's MIN with bypass; with variable sizes it is
the usual "furthest next use" heuristic (optimal variable-size caching is NP-hard,
Berger et al., "Practical Bounds on Optimal Caching with Variable Object Sizes",
SIGMETRICS'18). Pinned objects are kept and only shrink the budget.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

__all__ = ["NEVER", "belady_hits", "next_uses"]

NEVER = 1 << 62


def next_uses(keys: Sequence[str]) -> list[int]:
    """``result[i]`` is the index of the next request for ``keys[i]`` (``NEVER`` if none)."""
    result = [NEVER] * len(keys)
    seen: dict[str, int] = {}
    for i in range(len(keys) - 1, -1, -1):
        key = keys[i]
        result[i] = seen.get(key, NEVER)
        seen[key] = i
    return result


def belady_hits(keys: Sequence[str], sizes: Sequence[int], capacity: int,
                pinned: dict[str, int] | None = None,
                future: Sequence[int] | None = None) -> list[bool]:
    """Replay under MIN and return, per request, whether it was a hit."""
    pinned = pinned or {}
    budget = capacity - sum(pinned.values())
    future = next_uses(keys) if future is None else future
    resident: dict[str, int] = {}     # key -> its next use
    resident_size: dict[str, int] = {}
    heap: list[tuple[int, str]] = []  # (-next use, key); stale entries skipped lazily
    push, pop = heapq.heappush, heapq.heappop
    used = 0
    hits = [False] * len(keys)
    for i, key in enumerate(keys):
        if key in pinned:
            hits[i] = True
            continue
        nxt = future[i]
        if key in resident:
            hits[i] = True
            resident[key] = nxt
            push(heap, (-nxt, key))
            continue
        size = sizes[i]
        if nxt == NEVER or size > budget:
            continue  # bypass: caching it could never produce a hit
        resident[key] = nxt
        resident_size[key] = size
        used += size
        push(heap, (-nxt, key))
        while used > budget:
            neg, victim = pop(heap)
            if resident.get(victim) != -neg:
                continue
            del resident[victim]
            used -= resident_size.pop(victim)
    return hits
