"""The topology file: which ISPs exist and which address prefixes each announces.

One TOML file describes the networks; the control plane reads the `[isps]` table to map
client addresses to ISPs (longest prefix match), and `ocsim up` reuses the same file for
the whole topology (it owns the other top-level tables, which this module ignores):

    [isps.isp-a]
    prefixes = ["10.1.0.0/16", "fd00:1::/32"]
    edges = 2            # optional: how many edges `ocsim up` starts for this ISP

    [isps.isp-b]
    prefixes = ["10.2.0.0/16"]

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

ISP_KEYS = frozenset({"prefixes", "edges"})
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
        isps[name] = IspSpec(name, tuple(normalized), edges)
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
