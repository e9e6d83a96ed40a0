"""The synthetic day of a plan's audience: a catalog and viewing sessions, seeded. Pure.

One generator feeds both sides of the check: the simulator replays these sessions
(`plan.model`) and `ocsim plan --validate` plays the very same sessions against live
edges (`plan.validate`). The shape is the simulator's `sessions` workload
(`sim.workload.session_trace`): Zipf titles, new releases drawn from the catalog's tail
that launch at a random time with `release_boost` x the top title's weight and halve
every half-life, a daily cycle of session starts, a session settling on one rung (drawn
by the ladder's shares), starting at the beginning 70 % of the time, and watching an
exponential number of consecutive 4 s segments.

Scaling (`Scale`): the simulated catalog is `titles` of the plan's (one factor for the
catalog and for the disks); the viewers are sampled so a day has about `requests`
segment requests over all ISPs (the ISPs keep their relative sizes). `time_factor`
shortens durations and watch times alike, which the live check needs to fit a machine.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from common.content import SEGMENT_SECONDS, Catalog, Title
from plan.envelope import DAY_S, release_day_weight
from plan.inputs import PlanInputs

__all__ = ["Day", "Scale", "Session", "make_day"]

MIN_DURATION_S = 60.0
MAX_DURATION_S = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Scale:
    titles: int  # simulated catalog size
    requests: int  # segment requests of the day, over all ISPs (about)
    time_factor: float = 1.0  # durations and watch times are divided by this
    warmup: bool = False  # also draw the day before, replayed first and not counted (steady state)


@dataclass(frozen=True, slots=True)
class Session:
    start_s: float  # second of the day
    isp: str
    title: str
    kbps: int
    first: int  # first segment
    count: int  # consecutive segments watched


@dataclass(frozen=True, slots=True)
class Day:
    catalog: Catalog  # popularity = the title's expected share of the day's plays
    sessions: tuple[Session, ...]  # by start time
    catalog_factor: float  # plan titles / simulated titles (disks are divided by it)
    warmup: tuple[Session, ...] = ()  # the day before (start_s < 0): replayed first, not counted
    _sizes: dict[tuple[str, int], list[int]] = field(default_factory=dict, compare=False, repr=False)
    memo: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    def segment_sizes(self, title: str, kbps: int) -> list[int]:
        """Bytes of every segment of one file, by the live content model (memoized)."""
        got = self._sizes.get((title, kbps))
        if got is None:
            got = self._sizes[(title, kbps)] = [s.length for s in self.catalog.get(title).segments(kbps)]
        return got

    def file_bytes(self, title: str, kbps: int) -> int:
        return sum(self.segment_sizes(title, kbps))

    @property
    def requests(self) -> int:
        return sum(s.count for s in self.sessions)


def _arrival(rng: random.Random, amplitude: float, peak_hour: float) -> float:
    while True:
        t = rng.uniform(0, DAY_S)
        phase = 2 * math.pi * ((t / 3600.0 - peak_hour) / 24.0)
        if rng.random() * (1 + amplitude) <= 1 + amplitude * math.cos(phase):
            return t


def make_day(p: PlanInputs, scale: Scale, seed: int | None = None) -> Day:
    rng = random.Random(p.sim.seed if seed is None else seed)
    c, a, lad = p.catalog, p.audience, p.ladder
    n = scale.titles
    factor = c.titles / n
    mean_s = c.mean_duration_minutes * 60 / scale.time_factor
    durations = [min(MAX_DURATION_S, max(MIN_DURATION_S / scale.time_factor, rng.expovariate(1 / mean_s)))
                 for _ in range(n)]
    durations = [max(SEGMENT_SECONDS, round(d / SEGMENT_SECONDS) * SEGMENT_SECONDS) for d in durations]
    names = [f"t{i:05d}" for i in range(n)]
    base = [1.0 / (rank ** c.alpha) for rank in range(1, n + 1)]
    n_releases = min(n // 2, round(c.new_releases_per_day / factor)) if c.new_releases_per_day else 0
    if c.new_releases_per_day and n_releases == 0 and rng.random() < c.new_releases_per_day / factor:
        n_releases = 1  # a fraction of a release a day at this scale: one, sometimes
    tail = list(range(n // 2, n))
    rng.shuffle(tail)
    releases = {i: rng.uniform(0, DAY_S) for i in tail[:n_releases]}
    half_life = c.release_half_life_hours * 3600
    prior = list(base)
    for i in releases:
        prior[i] = base[0] * release_day_weight(c.release_boost, half_life)
    total = sum(prior)
    catalog = Catalog.of(Title(names[i], float(durations[i]), lad.kbps, round(prior[i] / total, 9))
                         for i in range(n))

    # sessions: about scale.requests segment requests over all ISPs, ISPs by their size
    mean_watch = max(1.0, a.mean_watch_minutes * 60 / scale.time_factor / SEGMENT_SECONDS)
    # Every ISP gets the same sample: each one's real day is far denser than any sample, so
    # sampling by size would make a smaller ISP look colder (more first-time misses) than it is.
    def draw(day_start: float) -> list[Session]:
        """A day of sessions; `day_start` -DAY_S is the day before (no release has launched yet)."""
        out: list[Session] = []
        for isp in a.peak_viewers:
            want = scale.requests / len(a.peak_viewers)
            got = 0
            while got < want:
                start = day_start + _arrival(rng, a.daily_amplitude, a.peak_hour)
                weights = list(base)
                for i, launch in releases.items():
                    age = start - launch
                    weights[i] = 0.0 if age < 0 else base[0] * c.release_boost * 0.5 ** (age / half_life)
                t = rng.choices(range(n), weights=weights)[0]
                kbps = rng.choices(lad.kbps, weights=lad.share)[0]
                segs = math.ceil(durations[t] / SEGMENT_SECONDS - 1e-9)
                first = 0 if rng.random() < 0.7 else rng.randrange(segs)
                watch = min(segs - first, max(1, int(rng.expovariate(1.0 / mean_watch))))
                out.append(Session(start, isp, names[t], kbps, first, watch))
                got += watch
        out.sort(key=lambda s: (s.start_s, s.isp, s.title))
        return out

    sessions = draw(0.0)
    warmup = draw(-DAY_S) if scale.warmup else []
    return Day(catalog, tuple(sessions), factor, tuple(warmup))
