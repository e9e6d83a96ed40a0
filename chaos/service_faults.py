"""Faults made with a service's help: one table of kinds, their targets, fields and requests.

Rules of this module: pure data and plain functions; the runner (chaos/runner.py) sends the
requests. Each kind says which target it takes, which fields (with their type, default and
bounds), and what to ask at the start and at the end of the fault:

    origin_down   origin      the origin refuses connections (its link emulation, /admin/link)
    origin_503    origin      a share `error_rate` (default 1) of content answered 503
    origin_slow   origin      `latency_ms` before each response, optional `bandwidth_bps` cap
    disk_full     edge:ID     the edge's cache writes fail with ENOSPC (edge fault API)
    read_errors   edge:ID     reading cached objects fails with EIO (edge fault API)
    corrupt       edge:ID     every cached object's bytes flipped on disk, again every
                              `every_s` while the fault lasts (so new fills are hit too)
    clock_skew    edge:ID     the edge's clock `skew_s` off for token checks (edge fault API)
    partition     isp:NAME    the heartbeats (and every other call) of that ISP's edges to the
                              control plane are blackholed: accepted, never answered

A link setting of the origin is restored to what it was before the fault (the runner reads it
first), so faults of different kinds on the origin compose.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from common.errors import BadRequest

EDGE_TARGET = re.compile(r"^edge:[A-Za-z0-9._-]+$")
ISP_TARGET = re.compile(r"^isp:[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class FieldSpec:
    default: float | None  # None: required
    minimum: float = 0.0
    maximum: float = math.inf


@dataclass(frozen=True)
class ServiceFaultKind:
    target: str  # "origin" | "edge" | "isp"
    fields: dict[str, FieldSpec]
    meaning: str


SERVICE_FAULTS: dict[str, ServiceFaultKind] = {
    "origin_down": ServiceFaultKind("origin", {}, "origin refuses connections"),
    "origin_503": ServiceFaultKind("origin", {"error_rate": FieldSpec(1.0, 0.0, 1.0)}, "origin answers 503"),
    "origin_slow": ServiceFaultKind("origin", {"latency_ms": FieldSpec(None, 0.0, 60_000.0),
                                               "bandwidth_bps": FieldSpec(0.0, 0.0, 1e12)},
                                    "origin slow to answer"),
    "disk_full": ServiceFaultKind("edge", {}, "edge cache writes fail with ENOSPC"),
    "read_errors": ServiceFaultKind("edge", {}, "edge cache reads fail with EIO"),
    "corrupt": ServiceFaultKind("edge", {"every_s": FieldSpec(1.0, 0.1, 60.0)},
                                "cached objects corrupted on disk behind the edge's back"),
    "clock_skew": ServiceFaultKind("edge", {"skew_s": FieldSpec(None, -1e8, 1e8)}, "edge clock off"),
    "partition": ServiceFaultKind("isp", {}, "an ISP's edges cannot reach the control plane"),
}


def check_target(kind: str, target: str, where: str) -> None:
    want = SERVICE_FAULTS[kind].target
    ok = {"origin": target == "origin", "edge": bool(EDGE_TARGET.match(target)),
          "isp": bool(ISP_TARGET.match(target))}[want]
    if not ok:
        shape = {"origin": "origin", "edge": "edge:ID", "isp": "isp:NAME"}[want]
        raise BadRequest(f"{where}target: {kind!r} needs {shape}, not {target!r}")


def parse_params(kind: str, table: dict[str, Any], where: str) -> dict[str, float]:
    """The kind's fields from a [[fault]] table (the common keys already removed)."""
    spec = SERVICE_FAULTS[kind].fields
    for key in table:
        if key not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise BadRequest(f"{where}{key}: unknown field for {kind} (its fields: {known})")
    out: dict[str, float] = {}
    for key, f in spec.items():
        if key not in table:
            if f.default is None:
                raise BadRequest(f"{where}{key}: required for {kind}")
            out[key] = f.default
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadRequest(f"{where}{key}: must be a number")
        if not f.minimum <= value <= f.maximum:
            raise BadRequest(f"{where}{key}: must be in [{f.minimum:g}, {f.maximum:g}]")
        out[key] = float(value)
    return out


def origin_link_patch(kind: str, params: dict[str, float]) -> dict[str, Any]:
    """The /admin/link body that starts an origin fault."""
    if kind == "origin_down":
        return {"down": "refuse"}
    if kind == "origin_503":
        rate = params["error_rate"]
        return {"down": "503"} if rate >= 1.0 else {"error_rate": rate}
    if kind == "origin_slow":
        patch: dict[str, Any] = {"latency_ms": params["latency_ms"]}
        if params.get("bandwidth_bps"):
            patch["bandwidth_bps"] = int(params["bandwidth_bps"])
        return patch
    raise ValueError(kind)


def edge_fault_patch(kind: str, params: dict[str, float], on: bool) -> dict[str, Any]:
    """The PUT /faults body that starts (on) or ends an edge fault (corrupt is a POST)."""
    if kind == "disk_full":
        return {"disk_full": on}
    if kind == "read_errors":
        return {"read_errors": on}
    if kind == "clock_skew":
        return {"clock_skew_s": params["skew_s"] if on else 0.0}
    raise ValueError(kind)
