"""The topology `ocsim up` starts: origin, control plane, ISPs and their edges, as frozen data.

One TOML file describes the whole thing, and it is the same file `ocsim control
--topology` reads: the control plane looks only at the `[isps]` table (prefixes, and an
optional edge count) and ignores the other top-level tables, which belong to `up`.
`[isps]` is validated here by the control plane's own parser (`control.topology`), so
a file `up` accepts is a file the control plane accepts. `topologies/default.toml`
spells out every field with its default; the built-in topology is `DEFAULT_TOPOLOGY`.

    [origin]                    # one origin, made "far" by link emulation
    port = 8000                 # 0 = ephemeral
    catalog = ""                # JSON/TOML catalog, relative to this file; "" = built-in
    media = ""                  # a media directory of `ocsim package`, relative to this file; "" = none
    media_only = false          # serve only the packaged titles of `media` (no synthetic catalog)
    latency_ms = 40.0
    bandwidth = "0"             # per-response cap (bits/s or 200Mbit, 1Gbit, ...)
    total_bandwidth = "400Mbit" # shared by all responses
    error_rate = 0.0
    args = []                   # extra `ocsim origin` flags

    [control]
    port = 8100
    args = []                   # extra `ocsim control` flags

    [edge]                      # what every edge gets unless its entry says otherwise
    capacity = "2GiB"
    policy = "s3tinylfu"
    args = []

    [isps.isp-a]
    prefixes = ["10.1.0.0/16"]
    edges = 2                   # optional: without [[edges]] entries, up starts
                                # this many edges isp-a-1, isp-a-2 on ephemeral ports

    [[edges]]                   # optional: explicit edges (id, isp, capacity, policy, port, args)
    id = "isp-a-1"
    isp = "isp-a"
    port = 8101

Edges live in a top-level `[[edges]]` array, not under `[isps.NAME]`, because the
control plane's parser allows only `prefixes` and an integer `edges` there. Every error
names its field (`edges[1].capacity: not a size: '2XB'`) and nothing starts.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common.sizes import format_size, parse_size
from common.ids import EDGE_ID_RULE, is_edge_id
from control.topology import TopologyError
from control.window import format_time_of_day
from control.topology import parse_topology as parse_control_topology
from edge.policy import DEFAULT_POLICY, POLICIES
from origin.link import parse_rate

__all__ = [
    "DEFAULT_TOPOLOGY",
    "ControlSpec",
    "EdgeSpec",
    "IspSpec",
    "OriginSpec",
    "Topology",
    "TopologyError",
    "load_topology",
    "parse_topology",
]

TOP_KEYS = frozenset({"origin", "control", "edge", "edges", "isps"})
ORIGIN_KEYS = frozenset({"port", "catalog", "media", "media_only", "latency_ms", "bandwidth", "total_bandwidth", "error_rate", "args"})
CONTROL_KEYS = frozenset({"port", "args"})
EDGE_DEFAULT_KEYS = frozenset({"capacity", "policy", "args"})
EDGE_KEYS = frozenset({"id", "isp", "capacity", "policy", "port", "args"})
DEFAULT_EDGES_PER_ISP = 1


@dataclass(frozen=True, slots=True)
class OriginSpec:
    port: int = 0
    catalog: str | None = None  # absolute path, or None for the built-in catalog
    latency_ms: float = 40.0
    bandwidth_bps: int = 0
    total_bandwidth_bps: int = 400_000_000
    error_rate: float = 0.0
    args: tuple[str, ...] = ()
    media: str | None = None    # absolute path of a media directory (`ocsim package --out`), or None
    media_only: bool = False


@dataclass(frozen=True, slots=True)
class ControlSpec:
    port: int = 0
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EdgeSpec:
    id: str
    isp: str
    capacity: int
    policy: str = DEFAULT_POLICY
    port: int = 0
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IspSpec:
    name: str
    prefixes: tuple[str, ...]
    edges: tuple[EdgeSpec, ...] = ()
    timezone: str = "UTC"  # pre-positioning: see control.topology (checked there)
    fill_window: str | None = None
    fill_rate_bps: int | None = None
    refresh_at: str | None = None


@dataclass(frozen=True, slots=True)
class Topology:
    origin: OriginSpec = field(default_factory=OriginSpec)
    control: ControlSpec = field(default_factory=ControlSpec)
    isps: Mapping[str, IspSpec] = field(default_factory=dict)

    @property
    def edges(self) -> list[EdgeSpec]:
        return [e for isp in self.isps.values() for e in isp.edges]

    def prefixes(self) -> dict[str, list[str]]:
        return {name: list(isp.prefixes) for name, isp in self.isps.items()}

    def with_ephemeral_ports(self) -> Topology:
        """The same topology with every port 0 (tests, the demo, a second `up` beside the first)."""
        isps = {name: replace(isp, edges=tuple(replace(e, port=0) for e in isp.edges))
                for name, isp in self.isps.items()}
        return replace(self, origin=replace(self.origin, port=0), control=replace(self.control, port=0), isps=isps)

    def with_extra_args(self, *args: str) -> Topology:
        """The same topology with `args` added to every service's command line (absent ones only)."""
        def more(have: tuple[str, ...]) -> tuple[str, ...]:
            return have + tuple(a for a in args if a not in have)
        isps = {name: replace(isp, edges=tuple(replace(e, args=more(e.args)) for e in isp.edges))
                for name, isp in self.isps.items()}
        return replace(self, origin=replace(self.origin, args=more(self.origin.args)),
                       control=replace(self.control, args=more(self.control.args)), isps=isps)

    def with_catalog(self, path: str | Path | None) -> Topology:
        return replace(self, origin=replace(self.origin, catalog=str(Path(path).resolve()) if path else None))

    def with_media(self, path: str | Path | None, only: bool = False) -> Topology:
        """The same topology with the origin serving the packaged titles under `path` (and only them)."""
        return replace(self, origin=replace(self.origin, media=str(Path(path).resolve()) if path else None,
                                            media_only=bool(path) and only))

    def to_toml(self) -> str:
        """This topology as a TOML file `parse_topology` reads back equal (every field explicit)."""
        o, c = self.origin, self.control
        lines = [
            "# ocsim topology (generated); read by `ocsim up` and `ocsim control --topology`",
            "[origin]",
            f"port = {o.port}",
            f"catalog = {_q(o.catalog or '')}",
            f"media = {_q(o.media or '')}",
            f"media_only = {'true' if o.media_only else 'false'}",
            f"latency_ms = {float(o.latency_ms)!r}",
            f"bandwidth = {_q(str(o.bandwidth_bps))}",
            f"total_bandwidth = {_q(str(o.total_bandwidth_bps))}",
            f"error_rate = {float(o.error_rate)!r}",
            f"args = {_list(o.args)}",
            "",
            "[control]",
            f"port = {c.port}",
            f"args = {_list(c.args)}",
        ]
        for isp in self.isps.values():
            lines += ["", f"[isps.{isp.name}]", f"prefixes = {_list(isp.prefixes)}", f"edges = {len(isp.edges)}",
                      f"timezone = {_q(isp.timezone)}"]
            if isp.fill_window is not None:
                lines.append(f"fill_window = {_q(isp.fill_window)}")
            if isp.fill_rate_bps is not None:
                lines.append(f"fill_rate_bps = {isp.fill_rate_bps}")
            if isp.refresh_at is not None:
                lines.append(f"refresh_at = {_q(isp.refresh_at)}")
        for e in self.edges:
            lines += ["", "[[edges]]", f"id = {_q(e.id)}", f"isp = {_q(e.isp)}", f"capacity = {e.capacity}",
                      f"policy = {_q(e.policy)}", f"port = {e.port}", f"args = {_list(e.args)}"]
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        """One line per ISP, for humans."""
        return "; ".join(f"{isp.name} {','.join(isp.prefixes)}: "
                         + ", ".join(f"{e.id} ({format_size(e.capacity)}, {e.policy})" for e in isp.edges)
                         for isp in self.isps.values())


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def _list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


# --- parsing ---------------------------------------------------------------------------------

def _table(data: Mapping[str, Any], key: str, allowed: frozenset[str], where: str) -> dict[str, Any]:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise TopologyError(f"{where}: {key}: must be a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise TopologyError(f"{where}: {key}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")
    return raw


def _port(value: Any, here: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise TopologyError(f"{here}: must be a port number in [0, 65535] (0 = ephemeral)")
    return value


def _number(value: Any, here: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise TopologyError(f"{here}: must be a number in [{lo:g}, {hi:g}]")
    return float(value)


def _rate(value: Any, here: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise TopologyError(f"{here}: must be a rate like \"400Mbit\" or a number of bits/s")
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise TopologyError(f"{here}: {exc}") from None


def _size(value: Any, here: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TopologyError(f"{here}: must be a size like \"2GiB\" or a number of bytes")
    try:
        n = parse_size(value)
    except ValueError as exc:
        why = str(exc)
        raise TopologyError(f"{here}: {why}" if why.startswith("not a size") else
                            f"{here}: not a size: {value!r} ({why})") from None
    if n <= 0:
        raise TopologyError(f"{here}: must be more than 0 bytes")
    return n


def _policy(value: Any, here: str) -> str:
    if not isinstance(value, str) or value not in POLICIES:
        raise TopologyError(f"{here}: unknown eviction policy {value!r} (choose from {', '.join(POLICIES)})")
    return value


def _args(value: Any, here: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise TopologyError(f"{here}: must be a list of strings (extra command-line flags)")
    return tuple(value)


def parse_topology(data: Mapping[str, Any], *, base_dir: str | Path | None = None,
                   where: str = "topology") -> Topology:
    """A Topology from a parsed TOML document; relative paths are taken from `base_dir`."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise TopologyError(f"{where}: {unknown[0]}: unknown table (allowed: {', '.join(sorted(TOP_KEYS))})")

    o = _table(data, "origin", ORIGIN_KEYS, where)
    catalog = o.get("catalog", "")
    if not isinstance(catalog, str):
        raise TopologyError(f"{where}: origin.catalog: must be a file name (\"\" = built-in catalog)")
    catalog_path: str | None = None
    if catalog:
        p = Path(catalog)
        if not p.is_absolute():
            p = Path(base_dir or ".") / p
        if not p.is_file():
            raise TopologyError(f"{where}: origin.catalog: no such file: {str(p)!r}")
        catalog_path = str(p.resolve())
    media = o.get("media", "")
    if not isinstance(media, str):
        raise TopologyError(f"{where}: origin.media: must be a directory name (\"\" = no packaged media)")
    media_path: str | None = None
    if media:
        m = Path(media)
        if not m.is_absolute():
            m = Path(base_dir or ".") / m
        if not m.is_dir():
            raise TopologyError(f"{where}: origin.media: no such directory: {str(m)!r} "
                                "(make one with `ocsim package ... --out DIR`)")
        media_path = str(m.resolve())
    media_only = o.get("media_only", False)
    if not isinstance(media_only, bool):
        raise TopologyError(f"{where}: origin.media_only: must be true or false")
    if media_only and media_path is None:
        raise TopologyError(f"{where}: origin.media_only: needs origin.media")
    origin = OriginSpec(
        port=_port(o.get("port", 0), f"{where}: origin.port"),
        catalog=catalog_path,
        latency_ms=_number(o.get("latency_ms", 40.0), f"{where}: origin.latency_ms", 0, 60_000),
        bandwidth_bps=_rate(o.get("bandwidth", 0), f"{where}: origin.bandwidth"),
        total_bandwidth_bps=_rate(o.get("total_bandwidth", "400Mbit"), f"{where}: origin.total_bandwidth"),
        error_rate=_number(o.get("error_rate", 0.0), f"{where}: origin.error_rate", 0, 1),
        args=_args(o.get("args", []), f"{where}: origin.args"),
        media=media_path,
        media_only=media_only,
    )
    c = _table(data, "control", CONTROL_KEYS, where)
    control = ControlSpec(port=_port(c.get("port", 0), f"{where}: control.port"),
                          args=_args(c.get("args", []), f"{where}: control.args"))
    d = _table(data, "edge", EDGE_DEFAULT_KEYS, where)
    default_capacity = _size(d.get("capacity", "2GiB"), f"{where}: edge.capacity")
    default_policy = _policy(d.get("policy", DEFAULT_POLICY), f"{where}: edge.policy")
    default_args = _args(d.get("args", []), f"{where}: edge.args")

    # the control plane's own rules for [isps], so both read the file the same way
    control_view = parse_control_topology(data, where)
    if not control_view.isps:
        raise TopologyError(f"{where}: isps: at least one [isps.NAME] table is required")

    listed: dict[str, list[EdgeSpec]] = {name: [] for name in control_view.isps}
    raw_edges = data.get("edges", [])
    if not isinstance(raw_edges, list):
        raise TopologyError(f"{where}: edges: must be an array of tables ([[edges]])")
    seen_ids: set[str] = set()
    for i, e in enumerate(raw_edges):
        here = f"{where}: edges[{i}]"
        if not isinstance(e, dict):
            raise TopologyError(f"{here}: must be a table")
        bad = sorted(set(e) - EDGE_KEYS)
        if bad:
            raise TopologyError(f"{here}.{bad[0]}: unknown field (allowed: {', '.join(sorted(EDGE_KEYS))})")
        isp = e.get("isp")
        if not isinstance(isp, str) or isp not in listed:
            raise TopologyError(f"{here}.isp: must name an [isps.NAME] table (one of {', '.join(listed)}), "
                                f"got {isp!r}")
        edge_id = e.get("id")
        if not is_edge_id(edge_id):
            raise TopologyError(f"{here}.id: required, {EDGE_ID_RULE}, got {edge_id!r}")
        if edge_id in seen_ids:
            raise TopologyError(f"{here}.id: duplicate edge id {edge_id!r}")
        seen_ids.add(edge_id)
        listed[isp].append(EdgeSpec(
            id=edge_id, isp=isp,
            capacity=_size(e.get("capacity", default_capacity), f"{here}.capacity"),
            policy=_policy(e.get("policy", default_policy), f"{here}.policy"),
            port=_port(e.get("port", 0), f"{here}.port"),
            args=_args(e.get("args", list(default_args)), f"{here}.args"),
        ))

    isps: dict[str, IspSpec] = {}
    for name, spec in control_view.isps.items():
        edges = listed[name]
        if edges and spec.edges is not None and spec.edges != len(edges):
            raise TopologyError(f"{where}: isps.{name}.edges: says {spec.edges} but [[edges]] lists "
                                f"{len(edges)} edge(s) of {name}")
        if not edges:
            count = DEFAULT_EDGES_PER_ISP if spec.edges is None else spec.edges
            if count < 1:  # `ocsim up` would start a topology that can serve nobody in this ISP
                raise TopologyError(f"{where}: isps.{name}.edges: an ISP needs at least 1 edge, got {count}")
            for n in range(1, count + 1):
                edge_id = f"{name}-{n}"
                if edge_id in seen_ids:
                    raise TopologyError(f"{where}: isps.{name}.edges: generated edge id {edge_id!r} "
                                        f"is already used in [[edges]]")
                seen_ids.add(edge_id)
                edges.append(EdgeSpec(edge_id, name, default_capacity, default_policy, 0, default_args))
        isps[name] = IspSpec(name, spec.prefixes, tuple(edges), spec.timezone,
                             spec.fill_window.range_text if spec.fill_window is not None else None,
                             spec.fill_rate_bps,
                             format_time_of_day(spec.refresh_at) if spec.refresh_at is not None else None)

    ports = [("origin.port", origin.port), ("control.port", control.port)]
    ports += [(f"edges[{e.id}].port", e.port) for isp in isps.values() for e in isp.edges]
    used: dict[int, str] = {}
    for what, port in ports:
        if port and port in used:
            raise TopologyError(f"{where}: {what}: port {port} is also {used[port]}")
        used[port] = what
    return Topology(origin, control, isps)


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; TopologyError names the file and the field."""
    p = Path(path)
    where = f"topology {p}"
    try:
        data = tomllib.loads(p.read_text())
    except OSError as exc:
        raise TopologyError(f"{where}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{where}: not valid TOML: {exc}") from None
    return parse_topology(data, base_dir=p.parent, where=where)


# The built-in topology of `ocsim up` and `ocsim demo` (topologies/default.toml is the same,
# with comments): a far origin, a control plane, two ISPs with two edges each.
DEFAULT_TOPOLOGY_TOML = """
[origin]
port = 8000
catalog = ""
latency_ms = 40.0
bandwidth = "0"
total_bandwidth = "400Mbit"
error_rate = 0.0
args = []

[control]
port = 8100
args = []

[edge]
capacity = "2GiB"
policy = "s3tinylfu"
args = []

[isps.isp-a]
prefixes = ["10.1.0.0/16"]
edges = 2

[isps.isp-b]
prefixes = ["10.2.0.0/16"]
edges = 2

[[edges]]
id = "isp-a-1"
isp = "isp-a"
port = 8101

[[edges]]
id = "isp-a-2"
isp = "isp-a"
port = 8102

[[edges]]
id = "isp-b-1"
isp = "isp-b"
port = 8201

[[edges]]
id = "isp-b-2"
isp = "isp-b"
port = 8202
"""

DEFAULT_TOPOLOGY: Topology = parse_topology(tomllib.loads(DEFAULT_TOPOLOGY_TOML), where="built-in topology")
