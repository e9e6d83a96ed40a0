"""Synthetic request traces, seeded and reproducible.

Three generators:

* :func:`zipf_trace` — the independent reference model (IRM): each request picks one of
  N objects with probability proportional to ``1 / rank**alpha``. Objects are of equal
  size (the validation workload; libCacheSim uses the same model) or, with ``sizes``,
  of a heavy-tailed size drawn once per object independently of its rank: ``lognormal``
  or ``pareto`` (see :data:`SIZE_MODELS`).
* :func:`video_objects_trace` — IRM over the objects an edge really holds for a video
  catalog: per title a master playlist, per rung a media playlist and an init segment,
  and the 4 s segments of every rung (sizes by the live content model). A title's
  popularity is Zipf; within a title, every session fetches the master playlist, the
  playlist and init segment of its rung, then segments (earlier ones more often).
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

__all__ = ["LADDER_KBPS", "SEGMENT_SECONDS", "SIZE_MODELS", "SessionWorkload", "object_sizes",
           "segment_size", "session_trace", "video_objects_trace", "zipf_trace"]

LADDER_KBPS = DEFAULT_LADDER  # the live content model's ladder and segment duration
# Share of sessions settling on each rung (bandwidth-limited clients sit low).
_RUNG_WEIGHTS = (0.05, 0.10, 0.20, 0.30, 0.35)


# Heavy-tailed object size models (bytes), drawn once per object:
#  lognormal: median 32 KB, sigma 2 (half the objects within 8-128 KB, a long tail of MBs);
#  pareto: minimum 4 KB, shape 1.2 (mean ~24 KB; a few objects carry most of the bytes).
# Both are capped at 64 MB so one object never dwarfs a small cache.
SIZE_MODELS: tuple[str, ...] = ("lognormal", "pareto")
_MAX_OBJECT = 64 << 20


def object_sizes(objects: int, model: str, seed: int = 0) -> list[int]:
    """``objects`` sizes from ``model`` (one of :data:`SIZE_MODELS`), seeded."""
    rng = random.Random(f"sizes:{model}:{seed}")
    if model == "lognormal":
        draw = [rng.lognormvariate(math.log(32_000), 2.0) for _ in range(objects)]
    elif model == "pareto":
        draw = [4_000 * rng.paretovariate(1.2) for _ in range(objects)]
    else:
        raise ValueError(f"unknown size model {model!r}; choose from {', '.join(SIZE_MODELS)}")
    return [max(1, min(_MAX_OBJECT, int(size))) for size in draw]


def zipf_trace(objects: int, requests: int, alpha: float, object_size: int = 4000,
               seed: int = 0, duration_s: float = 86400.0, sizes: str | None = None) -> Trace:
    """IRM Zipf(alpha) over ``objects`` objects named "0".."N-1" by rank; every object is
    ``object_size`` bytes, or (``sizes`` = a model of :data:`SIZE_MODELS`) of its own size."""
    if objects <= 0 or requests < 0:
        raise ValueError("objects must be > 0 and requests >= 0")
    rng = random.Random(seed)
    cum = list(accumulate(1.0 / (rank ** alpha) for rank in range(1, objects + 1)))
    ranks = rng.choices(range(objects), cum_weights=cum, k=requests)
    ids = [str(rank) for rank in range(objects)]
    step = duration_s / max(requests, 1)
    if sizes is None:
        size_list = [object_size] * requests
    else:
        per_object = object_sizes(objects, sizes, seed)
        size_list = [per_object[r] for r in ranks]
    return Trace(times=[i * step for i in range(requests)], keys=[ids[r] for r in ranks], sizes=size_list)


def video_objects_trace(titles: int, requests: int, alpha: float, seed: int = 0,
                        duration_s: float = 86400.0, mean_title_minutes: float = 45.0) -> Trace:
    """IRM over a video catalog's objects of every kind (see the module docstring).

    Per title: ``master.m3u8`` (~1 KB, weight 1 per session), per rung ``{kbps}/index.m3u8``
    (~60 bytes per segment listed) and ``{kbps}/init.mp4`` (~1.2 KB), each weighted by the
    rung's share of sessions, and ``{kbps}/{n}.seg`` (bitrate x 4 s / 8, the live content
    model) weighted by the rung's share x (1 - 1/180)**n (viewers drop off; a mean watch of
    ~12 minutes), so a session makes ~180 segment requests per playlist fetch."""
    rng = random.Random(seed)
    # objects as (title, kbps, n, segments): n = -1 master playlist, -2 media playlist,
    # -3 init segment; keys and sizes are built only for the objects requested.
    objects: list[tuple[str, int, int, int]] = []
    weights: list[float] = []
    decay = 1.0 / (12 * 15)  # a mean watch of ~12 min of 4 s segments
    for rank in range(1, titles + 1):
        name = f"v{rank:04d}"
        popularity = 1.0 / rank ** alpha
        segments = max(1, int(rng.expovariate(1.0 / (mean_title_minutes * 15))))
        objects.append((name, 0, -1, segments))
        weights.append(popularity)
        for kbps, share in zip(LADDER_KBPS, _RUNG_WEIGHTS):
            objects += [(name, kbps, -2, segments), (name, kbps, -3, segments)]
            weights += [popularity * share, popularity * share]
            objects += [(name, kbps, n, segments) for n in range(segments)]
            weights += [popularity * share * (1 - decay) ** n for n in range(segments)]
    picks = rng.choices(range(len(objects)), cum_weights=list(accumulate(weights)), k=requests)
    made: dict[int, tuple[str, int]] = {}
    keys: list[str] = []
    sizes: list[int] = []
    for i in picks:
        entry = made.get(i)
        if entry is None:
            entry = made[i] = _video_object(*objects[i])
        keys.append(entry[0])
        sizes.append(entry[1])
    step = duration_s / max(requests, 1)
    return Trace(times=[i * step for i in range(requests)], keys=keys, sizes=sizes)


def _video_object(name: str, kbps: int, n: int, segments: int) -> tuple[str, int]:
    if n == -1:
        return f"/content/{name}/master.m3u8", 600 + 80 * len(LADDER_KBPS)
    if n == -2:
        return f"/content/{name}/{kbps}/index.m3u8", 200 + 60 * segments
    if n == -3:
        return f"/content/{name}/{kbps}/init.mp4", 1200
    return f"/content/{name}/{kbps}/{n}.seg", segment_size(name, kbps, n)


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
