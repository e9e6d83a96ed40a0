"""The offline half of the offload bench: a trace replayed through the edge's own eviction
policy on simulated edges, with or without pre-positioning and a nightly refresh.

Every night at midnight a refresh runs the control plane's planner (`plan_files`) over
files (a rendition of a title): the first night valued by the catalog's popularity
(`file_values`), later nights by what each file streamed the day before divided by its
size, with the catalog as the prior (`forecast_values`, the very function the live
control plane forecasts with when it reads the event pipeline). One copy per file, on
the title's rendezvous edge (steering's first choice); `headroom` of each edge stays
unpinned for what is new. The refresh unpins what is no longer valuable, then fills what
is (`sim.replay.refresh_pins`, the live agent's order). Offload = bytes served from the
edges / bytes requested, per day.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from control.placement import FileDemand, FileSpace, edge_budget, file_values, forecast_values, plan_files, \
    split_file_key
from control.steering import hrw_order
from edge.policy import EvictionPolicy, make_policy
from sim.replay import refresh_pins
from sim.trace import Trace

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class SimResult:
    daily: list[tuple[int, int]]  # (bytes served from the edges, bytes requested) of each day
    filled_bytes: int   # what the refreshes filled, in all

    def offload(self, first_day: int = 1) -> float:
        """Bytes from the edges / bytes requested over the days from `first_day` (0-based;
        1: the steady state, after the first day, which has no history)."""
        days = self.daily[first_day:] or self.daily
        return sum(h for h, _ in days) / max(1, sum(r for _, r in days))

    def day(self, i: int) -> float:
        hit, req = self.daily[i]
        return hit / max(1, req)


def file_of(key: str) -> str:
    """`/content/{title}/{rendition}/{n}.seg` -> "title/rendition"."""
    return key.rsplit("/", 1)[0][len("/content/"):]


def simulate(trace: Trace, file_objects: Mapping[str, Mapping[str, int]], edge_ids: Sequence[str], capacity: int,
             catalog_popularity: Mapping[str, float], ladders: Mapping[str, Sequence[int]], *, policy: str,
             headroom: float, preposition: bool) -> SimResult:
    """Replay `trace` day by day; `file_objects`: file key -> {cache key: size}."""
    file_size = {k: sum(v.values()) for k, v in file_objects.items()}
    first_choice: dict[str, int] = {}
    caches: list[EvictionPolicy] = [make_policy(policy, capacity) for _ in edge_ids]
    pinned: list[dict[str, int]] = [{} for _ in edge_ids]
    prior = file_values(catalog_popularity, ladders)
    budget = edge_budget(capacity, 0, 0, headroom=headroom)

    def plan(values: Mapping[str, float]) -> list[dict[str, int]]:
        demands = []
        for k, v in values.items():
            if v > 0 and k in file_size:
                title, rendition = split_file_key(k)
                demands.append(FileDemand(title, rendition, v, file_size[k]))
        placed = plan_files(demands, [FileSpace(e, budget) for e in edge_ids], max_replicas=1)
        return [{key: size for f in placed.fills[e] for key, size in file_objects[f].items()} for e in edge_ids]

    daily: list[tuple[int, int]] = []
    streamed: dict[str, float] = defaultdict(float)
    filled = 0
    night, i, n = 0.0, 0, len(trace)
    while i < n:
        if preposition:
            values = prior if night == 0.0 else forecast_values(
                {k: b / file_size[k] for k, b in streamed.items() if file_size.get(k)}, prior)
            for cache, have, want in zip(caches, pinned, plan(values)):
                filled += refresh_pins(cache, have, want, night)
        streamed.clear()
        end = night + DAY
        req = hit = 0
        while i < n and trace.times[i] < end:
            key, size, now = trace.keys[i], trace.sizes[i], trace.times[i]
            f = file_of(key)
            title = f.rsplit("/", 1)[0]
            e = first_choice.get(title)
            if e is None:
                e = first_choice[title] = list(edge_ids).index(hrw_order(title, list(edge_ids))[0])
            ok = caches[e].request(key, size, now)
            req += size
            hit += size if ok else 0
            streamed[f] += size
            i += 1
        daily.append((hit, req))
        night = end
    return SimResult(daily, filled)
