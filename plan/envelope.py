"""Back-of-envelope sizing: every number from the inputs, with its formula. Pure: no IO.

Each function returns a `Figure`: a value, its unit, the formula it came from and the
inputs it used, so `ocsim plan` can print the derivation the way a system-design answer
shows its work. The simulator (`plan.model`) checks these numbers; they are the first
guess, not the answer.

Model (stated once, used everywhere here):

* Concurrency follows the daily curve c(t) = mean * (1 + A cos(2 pi (h - peak) / 24)),
  so mean = peak / (1 + A) and a day holds mean * 86400 viewer-seconds.
* A viewer streams the ladder's mean bitrate, sum(kbps_r * share_r).
* Titles have Zipf(alpha) popularity p_i = 1 / i^alpha and the catalog's mean duration;
  a new release launches at a uniform time of day with weight boost * p_1 and halves
  every half-life (its weight averaged over the day is `release_day_weight`).
* A file is one rendition of a title; its demand is p_i * share_r (views) x bitrate, its
  size is bitrate x duration, so files are stored densest first (p_i * share_r): the
  working set for an offload target is the smallest such prefix whose demand reaches it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from plan.inputs import PlanInputs, window_seconds

__all__ = ["Figure", "appliances", "catalog_bytes", "daily_bytes", "envelope", "fill_rate_needed",
           "mean_concurrency", "origin_egress", "peak_egress", "release_day_weight", "storage_for_offload"]

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float
    unit: str
    formula: str
    inputs: dict[str, float | str] = field(default_factory=dict)

    def line(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.inputs.items())
        return f"{self.name} = {_human(self.value, self.unit)}   [{self.formula}; {shown}]"


def _fmt(v: float | str) -> str:
    if isinstance(v, str):
        return v
    return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.4e}"


def _human(v: float, unit: str) -> str:
    if unit == "bit/s":
        for div, name in ((1e12, "Tbit/s"), (1e9, "Gbit/s"), (1e6, "Mbit/s")):
            if abs(v) >= div:
                return f"{v / div:,.2f} {name}"
        return f"{v:,.0f} bit/s"
    if unit == "B":
        for div, name in ((1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB")):
            if abs(v) >= div:
                return f"{v / div:,.2f} {name}"
        return f"{v:,.0f} B"
    return f"{v:,.4g} {unit}".rstrip()


def mean_concurrency(peak: float, amplitude: float) -> Figure:
    return Figure("mean concurrency", peak / (1 + amplitude), "viewers", "peak / (1 + A)",
                  {"peak": peak, "A": amplitude})


def peak_egress(peak: float, kbps: Sequence[int], share: Sequence[float]) -> Figure:
    mean_kbps = sum(k * s for k, s in zip(kbps, share))
    return Figure("peak egress", peak * mean_kbps * 1000, "bit/s", "peak viewers x sum(kbps_r x share_r) x 1000",
                  {"peak": peak, "mean_kbps": mean_kbps})


def appliances(egress_bps: float, nic_bps: float, utilization: float) -> Figure:
    n = max(1, math.ceil(egress_bps / (nic_bps * utilization) - 1e-9))
    return Figure("appliances", n, "edges", "ceil(peak egress / (NIC x max utilisation))",
                  {"egress_bps": egress_bps, "nic_bps": nic_bps, "utilization": utilization})


def daily_bytes(mean_viewers: float, mean_kbps: float) -> Figure:
    return Figure("bytes streamed a day", mean_viewers * DAY_S * mean_kbps * 1000 / 8, "B",
                  "mean concurrency x 86400 s x mean kbps x 1000 / 8", {"mean": mean_viewers, "mean_kbps": mean_kbps})


def catalog_bytes(titles: int, duration_s: float, kbps: Sequence[int]) -> Figure:
    return Figure("catalog bytes", titles * duration_s * sum(kbps) * 1000 / 8, "B",
                  "titles x duration x sum(kbps_r) x 1000 / 8",
                  {"titles": titles, "duration_s": duration_s, "sum_kbps": sum(kbps)})


def release_day_weight(boost: float, half_life_s: float, day_s: float = DAY_S) -> float:
    """A release's weight (x the top title's) averaged over a day in which it launches at a
    uniform time: boost * E_l[integral_l^T 2^-(t-l)/h dt] / T, which is
    boost * (h / ln2) * (1 - (h / (T ln2)) * (1 - 2^(-T/h))) / T."""
    k = half_life_s / math.log(2)
    return boost * k * (1 - (k / day_s) * (1 - 2 ** (-day_s / half_life_s))) / day_s


def storage_for_offload(target: float, titles: int, alpha: float, duration_s: float, kbps: Sequence[int],
                        share: Sequence[float], releases: int = 0, release_weight: float = 0.0) -> Figure:
    """Bytes an ISP must hold so that the files held carry `target` of the demand (files
    densest first). Releases are extra titles of weight `release_weight` (x the top title's)."""
    weights = [1.0 / (i ** alpha) for i in range(1, titles + 1)] + [release_weight] * releases
    mean_kbps = sum(k * s for k, s in zip(kbps, share))
    files = sorted(((w * s, w * s * k, k * duration_s * 1000 / 8) for w in weights for k, s in zip(kbps, share)
                    if s > 0), key=lambda f: -f[0])
    total = sum(f[1] for f in files)
    need = target * total
    have = stored = 0.0
    for _, demand, size in files:
        if have >= need - 1e-12 * total:
            break
        have += demand
        stored += size
    return Figure(f"storage for {target:.0%} offload", stored, "B",
                  "smallest set of files, densest (p_i x share_r) first, whose demand p_i x share_r x kbps_r "
                  "reaches target x total", {"target": target, "titles": titles, "alpha": alpha,
                                             "duration_s": duration_s, "mean_kbps": mean_kbps,
                                             "releases": releases})


def fill_rate_needed(fill_bytes: float, window_s: float) -> Figure:
    return Figure("fill rate needed", fill_bytes * 8 / window_s, "bit/s", "bytes to fill x 8 / window seconds",
                  {"fill_bytes": fill_bytes, "window_s": window_s})


def origin_egress(peak_egress_bps: float, offload: float) -> Figure:
    return Figure("origin egress at peak", peak_egress_bps * (1 - offload), "bit/s", "peak egress x (1 - offload)",
                  {"peak_egress_bps": peak_egress_bps, "offload": offload})


def envelope(p: PlanInputs) -> dict[str, list[Figure]]:
    """The whole derivation: per ISP, then the fleet. Keys are section names."""
    out: dict[str, list[Figure]] = {}
    a, c, lad, e = p.audience, p.catalog, p.ladder, p.edge
    duration_s = c.mean_duration_minutes * 60
    rel_w = release_day_weight(c.release_boost, c.release_half_life_hours * 3600)
    cat = catalog_bytes(c.titles, duration_s, lad.kbps)
    store = storage_for_offload(p.targets.offload, c.titles, c.alpha, duration_s, lad.kbps, lad.share,
                                c.new_releases_per_day, rel_w)
    title_bytes = duration_s * sum(lad.kbps) * 1000 / 8
    total_peak = 0.0
    for isp, peak in a.peak_viewers.items():
        mean = mean_concurrency(peak, a.daily_amplitude)
        egress = peak_egress(peak, lad.kbps, lad.share)
        total_peak += egress.value
        n = appliances(egress.value, e.nic_bps, e.max_utilization)
        figs = [mean, egress, n, daily_bytes(mean.value, lad.mean_kbps), store,
                Figure("storage per edge", store.value / n.value, "B", "storage for the target / appliances",
                       {"storage": store.value, "edges": n.value})]
        # every release goes to every edge of the ISP (at launch it is the most valuable file)
        fill = c.new_releases_per_day * title_bytes
        for w in e.fill_windows:
            f = fill_rate_needed(fill, window_seconds(w))
            figs.append(Figure(f"daily release fill per edge in {w}", f.value, "bit/s",
                               "new releases/day x duration x sum(kbps_r) / 8 x 8 / window seconds",
                               {"releases": c.new_releases_per_day, "title_bytes": title_bytes,
                                "window_s": window_seconds(w), "nic_fill_bps": e.nic_bps * e.fill_share}))
        out[isp] = figs
    fleet = [cat, Figure("peak egress, all ISPs", total_peak, "bit/s", "sum over ISPs", {"isps": len(a.peak_viewers)}),
             origin_egress(total_peak, p.targets.offload),
             Figure("offload the origin cap needs", max(0.0, 1 - p.targets.origin_egress_cap_bps / total_peak), "",
                    "1 - origin cap / peak egress", {"cap_bps": p.targets.origin_egress_cap_bps,
                                                     "peak_bps": total_peak})]
    out["fleet"] = fleet
    return out
