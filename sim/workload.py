"""Synthetic request traces, seeded and reproducible.

Two generators:

* :func:`zipf_trace` — the independent reference model (IRM): each request picks one of
  N equal-size objects with probability proportional to ``1 / rank**alpha``. This is
  the validation workload (libCacheSim uses the same model).
* :func:`session_trace` — video-shaped load: a catalog of titles with Zipf popularity,
  viewing sessions that fetch consecutive 4 s segments of one rendition, new releases
  that start hot and decay, and a daily cycle of session arrivals. Keys are the edge's
  cache keys, ``/content/{title}/{rendition}/{n}.seg``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import accumulate

from common.content import DEFAULT_LADDER, SEGMENT_SECONDS, segment_length
from common.ids import SegmentId
from sim.trace import Trace

__all__ = ["LADDER_KBPS", "SEGMENT_SECONDS", "SessionWorkload", "segment_size", "session_trace", "zipf_trace"]

LADDER_KBPS = DEFAULT_LADDER  # the live content model's ladder and segment duration
# Share of sessions settling on each rung (bandwidth-limited clients sit low).
_RUNG_WEIGHTS = (0.05, 0.10, 0.20, 0.30, 0.35)


def zipf_trace(objects: int, requests: int, alpha: float, object_size: int = 4000,
               seed: int = 0, duration_s: float = 86400.0) -> Trace:
    """IRM Zipf(alpha) over ``objects`` equal-size objects named "0".."N-1" by rank."""
    if objects <= 0 or requests < 0:
        raise ValueError("objects must be > 0 and requests >= 0")
    rng = random.Random(seed)
    ids = [str(rank) for rank in range(objects)]
    cum = list(accumulate(1.0 / (rank ** alpha) for rank in range(1, objects + 1)))
    keys = rng.choices(ids, cum_weights=cum, k=requests)
    step = duration_s / max(requests, 1)
    return Trace(times=[i * step for i in range(requests)], keys=keys, sizes=[object_size] * requests)


def segment_size(title: str, kbps: int, n: int) -> int:
    """Bytes of one full segment, by the live content model (common.content.segment_length)."""
    return segment_length(SegmentId(title, kbps, n), SEGMENT_SECONDS)


@dataclass(frozen=True, slots=True)
class SessionWorkload:
    """Knobs of :func:`session_trace` (defaults: a day of a mid-size catalog)."""

    titles: int = 500
    requests: int = 200_000
    alpha: float = 0.9
    duration_s: float = 86_400.0
    mean_title_minutes: float = 45.0
    mean_watch_minutes: float = 12.0
    new_releases: int = 5
    release_boost: float = 20.0        # a new release's weight at launch, x the top title's
    release_half_life_s: float = 6 * 3600.0
    daily_amplitude: float = 0.6       # arrivals swing +-60% around the mean over a day
    peak_hour: float = 21.0
    size_variation: float = 0.1
    seed: int = 0


def session_trace(w: SessionWorkload = SessionWorkload()) -> Trace:
    rng = random.Random(w.seed)
    names = [f"t{i:04d}" for i in range(w.titles)]
    segments = [max(1, int(rng.expovariate(1.0 / (w.mean_title_minutes * 15)))) for _ in names]
    base = [1.0 / (rank ** w.alpha) for rank in range(1, w.titles + 1)]
    # New releases are drawn from the catalog tail and launch at random times.
    releases = {rng.randrange(w.titles // 2, w.titles): rng.uniform(0, w.duration_s)
                for _ in range(min(w.new_releases, w.titles // 2))}
    mean_segments = w.mean_watch_minutes * 15
    events: list[tuple[float, str, int]] = []
    sizes: dict[tuple[int, int, int], int] = {}
    total = 0
    while total < w.requests:
        start = _arrival(rng, w)
        weights = list(base)
        for title, launch in releases.items():
            age = start - launch
            weights[title] = 0.0 if age < 0 else base[0] * w.release_boost * 0.5 ** (age / w.release_half_life_s)
        title = rng.choices(range(w.titles), weights=weights)[0]
        rung = rng.choices(range(len(LADDER_KBPS)), weights=_RUNG_WEIGHTS)[0]
        first = 0 if rng.random() < 0.7 else rng.randrange(segments[title])
        watch = max(1, int(rng.expovariate(1.0 / mean_segments)))
        name, kbps = names[title], LADDER_KBPS[rung]
        prefix = f"/content/{name}/{kbps}/"
        for n in range(first, min(first + watch, segments[title])):
            size = sizes.get((title, rung, n))
            if size is None:
                size = sizes[(title, rung, n)] = segment_size(name, kbps, n)
            events.append((start + (n - first) * SEGMENT_SECONDS, f"{prefix}{n}.seg", size))
            total += 1
    events.sort()
    del events[w.requests:]
    interned: dict[str, str] = {}
    return Trace(times=[e[0] for e in events], keys=[interned.setdefault(e[1], e[1]) for e in events],
                 sizes=[e[2] for e in events])


def _arrival(rng: random.Random, w: SessionWorkload) -> float:
    """A session start time following the daily cycle (by rejection sampling)."""
    while True:
        t = rng.uniform(0, w.duration_s)
        phase = 2 * math.pi * ((t / 3600.0 - w.peak_hour) / 24.0)
        if rng.random() * (1 + w.daily_amplitude) <= 1 + w.daily_amplitude * math.cos(phase):
            return t
