"""The inputs of `ocsim plan`: an audience, a catalog, a ladder, targets and edge options.

Read from a TOML file (`plans/example.toml` spells out every field) and validated
strictly: every error is a `PlanError` naming the field (`ladder.share: sums to 0.9, must
sum to 1`), nothing is guessed. Pure: `parse_plan` takes the parsed document; only
`load_plan` reads a file.

    [audience]              peak concurrent viewers per ISP and the daily curve
    [catalog]               titles, durations, popularity skew, new releases and decay
    [ladder]                renditions (kbit/s) and the share of viewers settling on each
    [targets]               offload, start-up p90, rebuffer ratio, origin egress cap
    [network]               round trips the start-up model uses, a viewer's access rate
    [edge]                  NIC rate, utilisation, policies, fill windows, [[edge.options]]
    [sim]                   how big the simulated sample is, the seed, the search bounds
"""
from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.ids import is_isp, isp_rule_text
from common.sizes import parse_size
from control.window import DAY_MINUTES, parse_window
from edge.policy import POLICIES
from origin.link import parse_rate

__all__ = ["Audience", "CatalogSpec", "EdgeOption", "EdgeSpecs", "Ladder", "Network", "PlanError", "PlanInputs",
           "SimSpec", "Targets", "apply_overrides", "load_plan", "parse_plan", "window_seconds"]


class PlanError(ValueError):
    """A plan file that does not validate; the message names the field."""


@dataclass(frozen=True, slots=True)
class Audience:
    peak_viewers: dict[str, int]  # ISP -> peak concurrent viewers
    daily_amplitude: float  # concurrency(t) = mean * (1 + A cos(2 pi (h - peak_hour) / 24))
    peak_hour: float
    mean_watch_minutes: float


@dataclass(frozen=True, slots=True)
class CatalogSpec:
    titles: int
    mean_duration_minutes: float
    alpha: float  # Zipf exponent of title popularity
    new_releases_per_day: int
    release_boost: float  # a release's weight at launch, x the top title's
    release_half_life_hours: float


@dataclass(frozen=True, slots=True)
class Ladder:
    kbps: tuple[int, ...]
    share: tuple[float, ...]  # of viewers per rung, same order, sums to 1

    @property
    def mean_kbps(self) -> float:
        return sum(k * s for k, s in zip(self.kbps, self.share))


@dataclass(frozen=True, slots=True)
class Targets:
    offload: float  # bytes served by the edges / bytes viewers get, in [0, 1)
    startup_p90_s: float
    rebuffer_ratio: float
    origin_egress_cap_bps: int


@dataclass(frozen=True, slots=True)
class Network:
    edge_rtt_ms: float
    origin_rtt_ms: float
    viewer_mbps: float


@dataclass(frozen=True, slots=True)
class EdgeOption:
    disk_bytes: int
    cost: float


@dataclass(frozen=True, slots=True)
class EdgeSpecs:
    nic_bps: int
    max_utilization: float
    policies: tuple[str, ...]
    fill_windows: tuple[str, ...]  # "HH:MM-HH:MM" local time
    fill_share: float  # share of the NIC a fill may use inside its window
    preposition_share: float  # share of each disk pinned by pre-positioning
    options: tuple[EdgeOption, ...]
    extra_edges: int  # candidates: from the NIC minimum to minimum + extra_edges per ISP


@dataclass(frozen=True, slots=True)
class SimSpec:
    titles: int  # the simulated catalog (the scale factor is catalog.titles / titles)
    requests: int  # per ISP, the simulated day's segment requests (at most)
    seed: int
    time_budget_s: float
    time_factor: float  # simulated durations and watch times are the plan's / this
    warmup: bool  # replay a day before the measured one (steady state, not a cold start)


@dataclass(frozen=True, slots=True)
class PlanInputs:
    audience: Audience
    catalog: CatalogSpec
    ladder: Ladder
    targets: Targets
    network: Network
    edge: EdgeSpecs
    sim: SimSpec


def window_seconds(text: str) -> float:
    """Length of a fill window "HH:MM-HH:MM" in seconds (one that crosses midnight too)."""
    w = parse_window(text)
    minutes = (w.end_min - w.start_min) % DAY_MINUTES or DAY_MINUTES
    return minutes * 60.0


# --- field readers ---------------------------------------------------------------------------

def _table(doc: Mapping[str, Any], key: str, allowed: frozenset[str]) -> dict[str, Any]:
    raw = doc.get(key)
    if not isinstance(raw, dict):
        raise PlanError(f"{key}: required, a table [{key}]")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise PlanError(f"{key}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
    return raw


def _num(t: Mapping[str, Any], where: str, key: str, lo: float, hi: float, default: float | None = None,
         *, lo_open: bool = False, hi_open: bool = False) -> float:
    v = t.get(key, default)
    name = f"{where}.{key}"
    if v is None:
        raise PlanError(f"{name}: required")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise PlanError(f"{name}: must be a number")
    if v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
        raise PlanError(f"{name}: must be in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}, "
                        f"got {v:g}")
    return float(v)


def _int(t: Mapping[str, Any], where: str, key: str, lo: int, hi: int, default: int | None = None) -> int:
    v = t.get(key, default)
    name = f"{where}.{key}"
    if v is None:
        raise PlanError(f"{name}: required")
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise PlanError(f"{name}: must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _rate(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise PlanError(f"{name}: must be a rate like \"100Gbit\" or a number of bits/s")
    try:
        bps = parse_rate(v)
    except ValueError as exc:
        raise PlanError(f"{name}: {exc}") from None
    if bps <= 0:
        raise PlanError(f"{name}: must be more than 0 bits/s")
    return bps


def _size(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise PlanError(f"{name}: must be a size like \"100TB\" or a number of bytes")
    try:
        n = parse_size(v)
    except ValueError as exc:
        raise PlanError(f"{name}: {exc}") from None
    if n <= 0:
        raise PlanError(f"{name}: must be more than 0 bytes")
    return n


def parse_plan(doc: Mapping[str, Any]) -> PlanInputs:
    """PlanInputs from a parsed TOML document; PlanError names the first bad field."""
    allowed_top = {"audience", "catalog", "ladder", "targets", "network", "edge", "sim"}
    unknown = sorted(set(doc) - allowed_top)
    if unknown:
        raise PlanError(f"{unknown[0]}: unknown table (allowed: {', '.join(sorted(allowed_top))})")

    a = _table(doc, "audience", frozenset({"isps", "daily_amplitude", "peak_hour", "mean_watch_minutes"}))
    isps = a.get("isps")
    if not isinstance(isps, dict) or not isps:
        raise PlanError("audience.isps: required, a table of ISP name = peak concurrent viewers")
    peak: dict[str, int] = {}
    for name, v in isps.items():
        if not is_isp(name):
            raise PlanError(f"audience.isps.{name}: {isp_rule_text('ISP name')}")
        peak[name] = _int(isps, "audience.isps", name, 1, 10**9)
    audience = Audience(peak, _num(a, "audience", "daily_amplitude", 0, 1, 0.6, hi_open=True),
                        _num(a, "audience", "peak_hour", 0, 24, 21.0, hi_open=True),
                        _num(a, "audience", "mean_watch_minutes", 0, 600, 20.0, lo_open=True))

    c = _table(doc, "catalog", frozenset({"titles", "mean_duration_minutes", "popularity_alpha",
                                          "new_releases_per_day", "release_boost", "release_half_life_hours"}))
    catalog = CatalogSpec(_int(c, "catalog", "titles", 1, 10**6),
                          _num(c, "catalog", "mean_duration_minutes", 0, 360, lo_open=True),
                          _num(c, "catalog", "popularity_alpha", 0, 3, 0.9),
                          _int(c, "catalog", "new_releases_per_day", 0, 1000, 0),
                          _num(c, "catalog", "release_boost", 0, 1000, 5.0),
                          _num(c, "catalog", "release_half_life_hours", 0, 24 * 365, 12.0, lo_open=True))
    if catalog.new_releases_per_day > catalog.titles // 2:
        raise PlanError(f"catalog.new_releases_per_day: at most half the catalog ({catalog.titles // 2}), "
                        f"got {catalog.new_releases_per_day}")

    lt = _table(doc, "ladder", frozenset({"kbps", "share"}))
    kbps, share = lt.get("kbps"), lt.get("share")
    if not isinstance(kbps, list) or not kbps or not all(isinstance(k, int) and not isinstance(k, bool)
                                                         and 0 < k <= 100_000 for k in kbps):
        raise PlanError("ladder.kbps: required, a list of bitrates in kbit/s (1 to 100000)")
    if sorted(kbps) != kbps or len(set(kbps)) != len(kbps):
        raise PlanError("ladder.kbps: must be distinct and in increasing order")
    if not isinstance(share, list) or len(share) != len(kbps):
        raise PlanError(f"ladder.share: required, one share per rung of ladder.kbps ({len(kbps)})")
    for i, s in enumerate(share):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s <= 1:
            raise PlanError(f"ladder.share[{i}]: must be a number in [0, 1]")
    if abs(sum(share) - 1.0) > 1e-6:
        raise PlanError(f"ladder.share: sums to {sum(share):g}, must sum to 1")
    ladder = Ladder(tuple(kbps), tuple(float(s) for s in share))

    t = _table(doc, "targets", frozenset({"offload", "startup_p90_s", "rebuffer_ratio", "origin_egress_cap"}))
    if "origin_egress_cap" not in t:
        raise PlanError("targets.origin_egress_cap: required, a rate like \"40Gbit\"")
    targets = Targets(_num(t, "targets", "offload", 0, 1, hi_open=True),
                      _num(t, "targets", "startup_p90_s", 0, 120, 2.0, lo_open=True),
                      _num(t, "targets", "rebuffer_ratio", 0, 1, 0.01),
                      _rate(t["origin_egress_cap"], "targets.origin_egress_cap"))

    n = doc.get("network", {})
    if not isinstance(n, dict):
        raise PlanError("network: must be a table")
    bad = sorted(set(n) - {"edge_rtt_ms", "origin_rtt_ms", "viewer_mbps"})
    if bad:
        raise PlanError(f"network.{bad[0]}: unknown field (allowed: edge_rtt_ms, origin_rtt_ms, viewer_mbps)")
    network = Network(_num(n, "network", "edge_rtt_ms", 0, 10_000, 20.0),
                      _num(n, "network", "origin_rtt_ms", 0, 10_000, 120.0),
                      _num(n, "network", "viewer_mbps", 0, 100_000, 25.0, lo_open=True))

    e = _table(doc, "edge", frozenset({"nic", "max_utilization", "policies", "fill_windows", "fill_share",
                                       "preposition_share", "options", "extra_edges"}))
    if "nic" not in e:
        raise PlanError("edge.nic: required, a rate like \"100Gbit\"")
    policies = e.get("policies", ["s3tinylfu"])
    if not isinstance(policies, list) or not policies:
        raise PlanError("edge.policies: must be a non-empty list of eviction policies")
    for i, p in enumerate(policies):
        if p not in POLICIES:
            raise PlanError(f"edge.policies[{i}]: unknown eviction policy {p!r} (choose from {', '.join(POLICIES)})")
    windows = e.get("fill_windows", ["02:00-14:00"])
    if not isinstance(windows, list) or not windows:
        raise PlanError("edge.fill_windows: must be a non-empty list of \"HH:MM-HH:MM\"")
    for i, w in enumerate(windows):
        try:
            if not isinstance(w, str):
                raise ValueError(f"{w!r} is not a time range HH:MM-HH:MM")
            parse_window(w)
            if window_seconds(w) > 86_400:
                raise ValueError("longer than a day")
        except ValueError as exc:
            raise PlanError(f"edge.fill_windows[{i}]: {exc}") from None
    options_raw = e.get("options")
    if not isinstance(options_raw, list) or not options_raw:
        raise PlanError("edge.options: required, an array of [[edge.options]] tables (disk, cost)")
    options: list[EdgeOption] = []
    for i, o in enumerate(options_raw):
        here = f"edge.options[{i}]"
        if not isinstance(o, dict):
            raise PlanError(f"{here}: must be a table")
        bad = sorted(set(o) - {"disk", "cost"})
        if bad:
            raise PlanError(f"{here}.{bad[0]}: unknown field (allowed: cost, disk)")
        if "disk" not in o:
            raise PlanError(f"{here}.disk: required, a size like \"100TB\"")
        options.append(EdgeOption(_size(o["disk"], f"{here}.disk"), _num(o, here, "cost", 0, 1e9, lo_open=True)))
    if len({o.disk_bytes for o in options}) != len(options):
        raise PlanError("edge.options: two options have the same disk size")
    edge = EdgeSpecs(_rate(e["nic"], "edge.nic"), _num(e, "edge", "max_utilization", 0, 1, 0.8, lo_open=True),
                     tuple(policies), tuple(windows), _num(e, "edge", "fill_share", 0, 1, 0.3, lo_open=True),
                     _num(e, "edge", "preposition_share", 0, 1, 0.8),
                     tuple(sorted(options, key=lambda o: o.disk_bytes)), _int(e, "edge", "extra_edges", 0, 16, 1))

    s = doc.get("sim", {})
    if not isinstance(s, dict):
        raise PlanError("sim: must be a table")
    bad = sorted(set(s) - {"titles", "requests", "seed", "time_budget_s", "time_factor", "warmup"})
    if bad:
        raise PlanError(f"sim.{bad[0]}: unknown field (allowed: requests, seed, time_budget_s, time_factor, titles, "
                        f"warmup)")
    if not isinstance(s.get("warmup", True), bool):
        raise PlanError("sim.warmup: must be true or false")
    sim = SimSpec(_int(s, "sim", "titles", 2, 100_000, min(catalog.titles, 200)),
                  _int(s, "sim", "requests", 1000, 10**7, 60_000), _int(s, "sim", "seed", 0, 2**31, 1),
                  _num(s, "sim", "time_budget_s", 1, 3600, 60.0), _num(s, "sim", "time_factor", 1, 1000, 10.0),
                  bool(s.get("warmup", True)))
    if sim.titles > catalog.titles:
        raise PlanError(f"sim.titles: at most catalog.titles ({catalog.titles}), got {sim.titles}")
    return PlanInputs(audience, catalog, ladder, targets, network, edge, sim)


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`FIELD=VALUE` flags over the file: `targets.offload=0.95`, `audience.isps.isp-a=50000`,
    `edge.policies=["lru"]`. VALUE is a TOML value (a bare word is taken as a string)."""
    for item in overrides:
        name, sep, text = item.partition("=")
        parts = name.strip().split(".")
        if not sep or not all(parts):
            raise PlanError(f"--set {item!r}: must be FIELD=VALUE, e.g. targets.offload=0.95")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        table = doc
        for k in parts[:-1]:
            nxt = table.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise PlanError(f"--set {item!r}: {k} is not a table")
            table = nxt
        table[parts[-1]] = value
    return doc


def load_plan(path: str | Path, overrides: list[str] | None = None) -> PlanInputs:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as exc:
        raise PlanError(f"{p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(f"{p}: not valid TOML: {exc}") from None
    doc = apply_overrides(doc, overrides or [])
    try:
        return parse_plan(doc)
    except PlanError as exc:
        raise PlanError(f"{p}: {exc}") from None
