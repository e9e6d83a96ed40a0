"""The topology file: which ISPs exist and which address prefixes each announces.

One TOML file describes the networks; the control plane reads the `[isps]` table to map
client addresses to ISPs (longest prefix match), and `ocsim up` reuses the same file for
the whole topology (it owns the other top-level tables, which this module ignores):

    [isps.isp-a]
    prefixes = ["10.1.0.0/16", "fd00:1::/32"]
    edges = 2            # optional: how many edges `ocsim up` starts for this ISP

    [isps.isp-b]
    prefixes = ["10.2.0.0/16"]
    timezone = "America/New_York"   # optional, IANA; the ISP's local time (default UTC)
    fill_window = "02:00-14:00"     # optional: pre-position fills only in this local window
    fill_rate_bps = 1_200_000_000   # optional: per-edge fill rate of pre-positioning plans
    refresh_at = "03:00"            # optional: nightly refresh of the pinned set, local time

Validation is strict within `[isps]`: every error names the offending field
(`isps.isp-a.prefixes[1]: ...`) so a typo never silently routes clients to the fallback.
"""
from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.ids import is_isp, isp_rule_text
from control.window import FillWindow, check_tz, parse_time_of_day, parse_window

ISP_KEYS = frozenset({"prefixes", "edges", "timezone", "fill_window", "fill_rate_bps", "refresh_at"})
MAX_FILL_RATE_BPS = 10**12
MAX_EDGES_PER_ISP = 64


class TopologyError(ValueError):
    """A topology file that does not validate; the message names the file or the field.

    The one topology error: `ocsim.topology` (the whole-deployment file, whose [isps]
    part is read by `parse_topology` here) raises this same class."""


@dataclass(frozen=True, slots=True)
class IspSpec:
    name: str
    prefixes: tuple[str, ...]
    edges: int | None = None
    timezone: str = "UTC"
    fill_window: FillWindow | None = None
    fill_rate_bps: int | None = None
    refresh_at: int | None = None  # minutes after local midnight


@dataclass(frozen=True, slots=True)
class Topology:
    isps: dict[str, IspSpec] = field(default_factory=dict)

    def prefixes(self) -> dict[str, list[str]]:
        return {name: list(spec.prefixes) for name, spec in self.isps.items()}


def parse_topology(data: Mapping[str, Any], where: str = "topology") -> Topology:
    """A Topology from the parsed TOML document (top-level tables other than `isps` are ignored)."""
    raw = data.get("isps", {})
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: isps must be a table of [isps.NAME] tables")
    isps: dict[str, IspSpec] = {}
    seen: dict[str, str] = {}
    for name, table in raw.items():
        here = f"{where}: isps.{name}"
        if not is_isp(name):
            raise TopologyError(f"{here}: {isp_rule_text('ISP name')}")
        if not isinstance(table, dict):
            raise TopologyError(f"{here}: must be a table")
        unknown = sorted(set(table) - ISP_KEYS)
        if unknown:
            raise TopologyError(f"{here}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(ISP_KEYS))})")
        prefixes = table.get("prefixes")
        if not isinstance(prefixes, list):
            raise TopologyError(f"{here}.prefixes: required, a list of CIDR strings")
        normalized: list[str] = []
        for i, p in enumerate(prefixes):
            if not isinstance(p, str):
                raise TopologyError(f"{here}.prefixes[{i}]: must be a string like \"10.1.0.0/16\"")
            try:
                net = ipaddress.ip_network(p, strict=True)
            except ValueError as exc:
                raise TopologyError(f"{here}.prefixes[{i}]: {exc}") from None
            text = str(net)
            if text in seen:
                raise TopologyError(f"{here}.prefixes[{i}]: {text} is already announced by isps.{seen[text]}")
            seen[text] = name
            normalized.append(text)
        edges = table.get("edges")
        if edges is not None and (isinstance(edges, bool) or not isinstance(edges, int)
                                  or not 0 <= edges <= MAX_EDGES_PER_ISP):
            raise TopologyError(f"{here}.edges: must be an integer in [0, {MAX_EDGES_PER_ISP}]")
        tz = table.get("timezone", "UTC")
        try:
            tz = check_tz(tz)
        except ValueError as exc:
            raise TopologyError(f"{here}.timezone: {exc}") from None
        window = None
        if "fill_window" in table:
            try:
                window = parse_window(table["fill_window"], tz)
            except ValueError as exc:
                raise TopologyError(f"{here}.fill_window: {exc}") from None
        rate = table.get("fill_rate_bps")
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)
                                 or not 0 < rate <= MAX_FILL_RATE_BPS):
            raise TopologyError(f"{here}.fill_rate_bps: must be an integer in [1, {MAX_FILL_RATE_BPS}]")
        refresh_at = None
        if "refresh_at" in table:
            try:
                refresh_at = parse_time_of_day(table["refresh_at"])
            except ValueError as exc:
                raise TopologyError(f"{here}.refresh_at: {exc}") from None
        isps[name] = IspSpec(name, tuple(normalized), edges, tz, window, rate, refresh_at)
    return Topology(isps)


def load_topology(path: str | Path) -> Topology:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise TopologyError(f"{p}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{p}: {exc}") from None
    return parse_topology(data, str(p))
