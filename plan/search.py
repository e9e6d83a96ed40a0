"""The simulated search: candidate topologies, judged against the targets. Pure (no IO).

Candidates are every (policy, fill window, disk option) with, per ISP, from the NIC
minimum (`plan.envelope.appliances`) to that plus `edge.extra_edges` edges. Each ISP of
each candidate is replayed by `plan.model.simulate_isp` on the scaled day; an ISP takes
the fewest edges that meet its per-ISP targets (offload, start-up p90), and the fleet is
then judged on the fleet-wide ones (offload, origin egress cap, rebuffer ratio). The
cheapest candidate that meets every target wins (ties: the higher offload). If none
does, `SearchResult.shortfalls` says, per target, the best any candidate reached and
what would meet it: never a silent best effort.

Full-scale figures from the scaled day: bytes scale by `bytes_factor` (the envelope's
bytes a day / the simulated bytes of that ISP), so origin egress per hour is
origin bytes simulated x bytes_factor x 8 / 3600. The rebuffer model: bytes that the
origin cap or an edge's NIC cannot carry in an hour are bytes viewers wait for, so
rebuffer ratio = (origin bytes over the cap + edge bytes over the NIC) / bytes streamed.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plan.envelope import appliances, daily_bytes, mean_concurrency, peak_egress, storage_for_offload, \
    release_day_weight
from plan.inputs import EdgeOption, PlanInputs, window_seconds
from plan.model import IspRun, simulate_isp, top_files
from plan.workload import Day

__all__ = ["Choice", "Evaluated", "SearchResult", "search"]


@dataclass(frozen=True, slots=True)
class Choice:
    policy: str
    window: str
    option: EdgeOption
    edges: tuple[tuple[str, int], ...]  # (isp, edges), in the plan's ISP order

    @property
    def cost(self) -> float:
        return sum(n for _, n in self.edges) * self.option.cost

    def describe(self) -> str:
        per = ", ".join(f"{isp} x{n}" for isp, n in self.edges)
        return f"{per}; {self.option.disk_bytes / 1e12:g} TB each, {self.policy}, fill {self.window}"


@dataclass(slots=True)
class Evaluated:
    choice: Choice
    runs: dict[str, IspRun]
    offload: float
    hit_ratio: float
    origin_peak_bps: float
    startup_p90_s: float
    rebuffer_ratio: float
    failures: list[str] = field(default_factory=list)

    @property
    def meets(self) -> bool:
        return not self.failures


@dataclass(slots=True)
class SearchResult:
    evaluated: list[Evaluated]
    runs: list[tuple[str, str, EdgeOption, IspRun]]  # (policy, window, option, run): every replay
    best: Evaluated | None
    shortfalls: list[str]
    elapsed_s: float
    complete: bool  # False: the time budget stopped the search early (said in shortfalls too)
    min_edges: dict[str, int]
    bytes_factor: dict[str, float]  # real bytes per simulated byte, per ISP


def _bytes_factor(p: PlanInputs, day: Day) -> dict[str, float]:
    out = {}
    for isp, peak in p.audience.peak_viewers.items():
        mean = mean_concurrency(peak, p.audience.daily_amplitude).value
        real = daily_bytes(mean, p.ladder.mean_kbps).value
        sim = sum(sum(day.segment_sizes(s.title, s.kbps)[s.first:s.first + s.count])
                  for s in day.sessions if s.isp == isp)
        out[isp] = real / max(1, sim)
    return out


def _time_scale(p: PlanInputs, day: Day) -> dict[str, float]:
    """Real plays per simulated play, per ISP (the steering load window lasts that many x)."""
    out = {}
    for isp, peak in p.audience.peak_viewers.items():
        real = mean_concurrency(peak, p.audience.daily_amplitude).value * 86_400 / (p.audience.mean_watch_minutes * 60)
        out[isp] = real / max(1, sum(1 for s in day.sessions if s.isp == isp))
    return out


def sim_bytes(p: PlanInputs, day: Day, real_bytes: float) -> int:
    """Real bytes (a disk, a fill budget) at the simulated scale: catalog and time factors."""
    return int(real_bytes / (day.catalog_factor * p.sim.time_factor))


def judge(p: PlanInputs, choice: Choice, runs: dict[str, IspRun], factor: dict[str, float]) -> Evaluated:
    t = p.targets
    served = sum(r.bytes for r in runs.values())
    origin = sum(r.origin_bytes for r in runs.values())
    offload = 1 - origin / served if served else 0.0
    hits = sum(r.hits for r in runs.values()) / max(1, sum(r.requests for r in runs.values()))
    origin_hour = [sum(r.origin_by_hour[h] * factor[r.isp] for r in runs.values()) for h in range(24)]
    origin_peak = max(origin_hour) * 8 / 3600
    cap_hour = t.origin_egress_cap_bps * 3600 / 8
    nic_hour = p.edge.nic_bps * 3600 / 8
    over = sum(max(0.0, o - cap_hour) for o in origin_hour)
    over += sum(max(0.0, r.edge_peak_hour_bytes * factor[r.isp] - nic_hour) * r.edges for r in runs.values())
    total = sum(r.bytes * factor[r.isp] for r in runs.values())
    rebuffer = over / total if total else 0.0
    startup = max((r.startup_p90() for r in runs.values()), default=0.0)
    fails = []
    for r in runs.values():
        if r.offload < t.offload:
            fails.append(f"offload {r.isp}")
        if r.startup_p90() > t.startup_p90_s:
            fails.append(f"startup {r.isp}")
    if offload < t.offload:
        fails.append("offload")
    if origin_peak > t.origin_egress_cap_bps:
        fails.append("origin egress")
    if rebuffer > t.rebuffer_ratio:
        fails.append("rebuffer")
    return Evaluated(choice, runs, offload, hits, origin_peak, startup, rebuffer, fails)


def search(p: PlanInputs, day: Day, *, clock: Callable[[], float] = time.monotonic,
           progress: Callable[[str], None] | None = None) -> SearchResult:
    started = clock()
    isps = list(p.audience.peak_viewers)
    factor = _bytes_factor(p, day)
    tscale = _time_scale(p, day)
    nmin = {isp: int(appliances(peak_egress(v, p.ladder.kbps, p.ladder.share).value, p.edge.nic_bps,
                                p.edge.max_utilization).value) for isp, v in p.audience.peak_viewers.items()}
    cache: dict[tuple[str, str, int, int, str], IspRun] = {}
    all_runs: list[tuple[str, str, EdgeOption, IspRun]] = []
    evaluated: list[Evaluated] = []
    complete = True
    for policy in p.edge.policies:
        for window in p.edge.fill_windows:
            fill_cap = p.edge.nic_bps * p.edge.fill_share * window_seconds(window) / 8  # bytes per edge per window
            for option in p.edge.options:
                if clock() - started > p.sim.time_budget_s:
                    complete = False
                    break
                cap = sim_bytes(p, day, option.disk_bytes)
                pin_per_edge = sim_bytes(p, day, min(p.edge.preposition_share * option.disk_bytes, fill_cap))
                per_isp: dict[str, IspRun] = {}
                for isp in isps:
                    chosen: IspRun | None = None
                    for n in range(nmin[isp], nmin[isp] + p.edge.extra_edges + 1):
                        key = (policy, window, option.disk_bytes, n, isp)
                        run = cache.get(key)
                        if run is None:
                            top = top_files(day, pin_per_edge * n)
                            run = cache[key] = simulate_isp(day, isp, n, cap, policy, top, p.network, tscale[isp])
                            all_runs.append((policy, window, option, run))
                        if chosen is None or not _isp_ok(p, chosen):
                            chosen = run
                    assert chosen is not None
                    per_isp[isp] = chosen
                choice = Choice(policy, window, option, tuple((isp, per_isp[isp].edges) for isp in isps))
                ev = judge(p, choice, per_isp, factor)
                evaluated.append(ev)
                if progress:
                    progress(f"{choice.describe()}: offload {ev.offload:.1%}, cost {choice.cost:g}"
                             + (f", fails {', '.join(ev.failures)}" if ev.failures else ", meets all targets"))
    ok = [e for e in evaluated if e.meets]
    best = min(ok, key=lambda e: (e.choice.cost, -e.offload)) if ok else None
    shortfalls = [] if best else _shortfalls(p, evaluated, nmin)
    if not complete:
        shortfalls.append(f"the search stopped at its time budget (sim.time_budget_s = {p.sim.time_budget_s:g}) "
                          f"after {len(evaluated)} candidates; raise it or offer fewer options")
    return SearchResult(evaluated, all_runs, best, shortfalls, clock() - started, complete, nmin, factor)


def _isp_ok(p: PlanInputs, r: IspRun) -> bool:
    return r.offload >= p.targets.offload and r.startup_p90() <= p.targets.startup_p90_s


def _shortfalls(p: PlanInputs, evaluated: list[Evaluated], nmin: dict[str, int]) -> list[str]:
    """Per target no candidate met: the best reached, and what would meet it."""
    if not evaluated:
        return ["no candidate was evaluated"]
    t, c, lad = p.targets, p.catalog, p.ladder
    out = []
    best_off = max(evaluated, key=lambda e: e.offload)
    if best_off.offload < t.offload:
        store = storage_for_offload(t.offload, c.titles, c.alpha, c.mean_duration_minutes * 60, lad.kbps, lad.share,
                                    c.new_releases_per_day,
                                    release_day_weight(c.release_boost, c.release_half_life_hours * 3600)).value
        largest = p.edge.options[-1].disk_bytes
        most = max(nmin.values()) + p.edge.extra_edges
        out.append(f"offload {t.offload:.1%} is not met: the best candidate reaches {best_off.offload:.1%} "
                   f"({best_off.choice.describe()}); the envelope's lower bound for {t.offload:.0%} is "
                   f"{store / 1e12:.2f} TB per ISP, and the largest option, {largest / 1e12:g} TB x up to {most} edges "
                   f"= {largest * most / 1e12:g} TB per ISP, "
                   + ("is below it" if largest * most < store else
                      "is above it but not enough once the planner's replicas and first-request misses are counted")
                   + "; offer larger disks (edge.options) or more edges (edge.extra_edges)")
    for isp in p.audience.peak_viewers:
        runs = [e.runs[isp] for e in evaluated if isp in e.runs]
        if runs and all(r.offload < t.offload for r in runs) and best_off.offload >= t.offload:
            r = max(runs, key=lambda r: r.offload)
            out.append(f"offload {t.offload:.1%} in {isp} is not met: the best is {r.offload:.1%} with {r.edges} edges "
                       f"of {r.policy}; offer larger disks (edge.options) or more edges (edge.extra_edges)")
    failing = {f for e in evaluated for f in e.failures}
    if any(f.startswith("startup") for f in failing) and all(any(f.startswith("startup") for f in e.failures)
                                                             for e in evaluated):
        best = min(evaluated, key=lambda e: e.startup_p90_s)
        out.append(f"start-up p90 {t.startup_p90_s:g} s is not met: the best candidate gives {best.startup_p90_s:.2f} s "
                   f"({best.choice.describe()}); it needs targets.startup_p90_s >= {best.startup_p90_s:.2f}, a faster "
                   f"access network (network.viewer_mbps) or a nearer origin (network.origin_rtt_ms)")
    if all("origin egress" in e.failures for e in evaluated):
        best = min(evaluated, key=lambda e: e.origin_peak_bps)
        peak = sum(peak_egress(v, lad.kbps, lad.share).value for v in p.audience.peak_viewers.values())
        out.append(f"origin egress cap {t.origin_egress_cap_bps / 1e9:g} Gbit/s is not met: the best candidate needs "
                   f"{best.origin_peak_bps / 1e9:.2f} Gbit/s at peak ({best.choice.describe()}); raise "
                   f"targets.origin_egress_cap to >= {best.origin_peak_bps / 1e9:.2f} Gbit/s, or reach offload >= "
                   f"{1 - t.origin_egress_cap_bps / peak:.1%} at peak")
    if all("rebuffer" in e.failures for e in evaluated):
        best = min(evaluated, key=lambda e: e.rebuffer_ratio)
        out.append(f"rebuffer ratio {t.rebuffer_ratio:g} is not met: the best candidate gives {best.rebuffer_ratio:.4f} "
                   f"({best.choice.describe()}); it needs more origin egress or NIC headroom (edge.max_utilization)")
    if not out:  # each target is met by some candidate, never all by one
        best = min(evaluated, key=lambda e: len(e.failures))
        out.append(f"no candidate meets every target at once; the closest ({best.choice.describe()}) fails "
                   f"{', '.join(best.failures)}; offer larger disks or more edges")
    return out
