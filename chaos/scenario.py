"""Chaos scenarios: a strict parser of chaos/scenarios/*.toml and the seeded fault timeline.

Rules of this module:
1. Everything wrong in a file is refused before anything starts, with the field named
   (`fault[1].latency_ms: unknown field ...`): unknown keys, kinds, targets or metrics,
   wrong types, and impossible timelines (a fault past the end, two process faults on one
   service at once, a restart given a duration).
2. Pure: `parse_scenario(text)` takes TOML text; `timeline(scenario)` draws the start of
   each fault whose `at_s` is a range from `random.Random(seed)`, so one seed replays one run.

The format (every key is listed in `_TOP`, `_COHORTS`, `_STEADY`, `_ABORT` and `_FAULT`):

    name = "edge-killed"            # required
    description = "..."
    seed = 7                        # the cohort split and the timeline draw from it
    duration_s = 40                 # how long the players run
    [cohorts]
    viewers = 8                     # total; two equal cohorts, control and experiment
    isp = "isp1"                    # blast radius: only viewers of this ISP (optional)
    experiment_failover = true      # false: the experiment cohort's players never fail over
    flash_crowd_at_s = 10           # from then on every viewer plays one new title (optional)
    buffer_s = 60                   # the players' buffer cap, in seconds of content (default 60):
                                    # a small one keeps them downloading all through a session
    [[steady_state]]                # the hypothesis, one per metric (chaos/metrics.py)
    metric = "startup_s"
    tolerance = 0.10                # experiment may be this share worse than control ...
    absolute = 0.0                  # ... plus this much in the metric's unit
    alpha = 0.05                    # significance of the one-sided test (chaos/verdict.py)
    [[abort]]                       # stop early when the experiment breaches this
    metric = "failed"
    max_excess = 0.5                # experiment mean - control mean (worse direction)
    min_sessions = 2                # per cohort, before the rule is judged
    [[fault]]
    kind = "kill"                   # a process fault (chaos/process.py), a service fault
                                    # (chaos/service_faults.py) or a toxic (chaos/toxics.py)
    target = "edge:isp1-e1"         # edge:ID | origin | control | isp:NAME | link:LINK
    at_s = 5                        # or [lo, hi]: drawn from the seed
    duration_s = 20                 # required except for restart
    # toxic or service-fault parameters inline, e.g. latency_s = 0.2
    edge = "isp1-e1"                # toxics only: just the proxies of the link with this edge
                                    # at one end (default: every proxy of the link)

The links (LINKS) are the four ocsim owns: player-edge (players -> an edge), edge-control
(an edge's heartbeats and fill plans), edge-origin (an edge's origin fills) and edge-peer (an
edge's asks to the other edges of its ISP, and theirs to it).
"""
from __future__ import annotations

import random
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from chaos.metrics import known_metrics
from chaos.process import PROCESS_FAULTS
from chaos.service_faults import SERVICE_FAULTS, check_target, parse_params
from chaos.toxics import TOXICS, Toxic, make_toxic
from common.errors import BadRequest

LINKS = ("player-edge", "edge-origin", "edge-control", "edge-peer")
_SERVICE_TARGET = re.compile(r"^(origin|control|edge:[A-Za-z0-9._-]+)$")
_EDGE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
_LINK_TARGET = re.compile(r"^link:(" + "|".join(LINKS) + ")$")

_TOP = {"name", "description", "seed", "duration_s", "cohorts", "steady_state", "abort", "fault"}
_COHORTS = {"viewers", "isp", "experiment_failover", "flash_crowd_at_s", "buffer_s"}
_STEADY = {"metric", "tolerance", "absolute", "alpha"}
_ABORT = {"metric", "max_excess", "min_sessions"}
_FAULT = {"kind", "target", "at_s", "duration_s"}


@dataclass(frozen=True)
class Hypothesis:
    metric: str
    tolerance: float = 0.0
    absolute: float = 0.0
    alpha: float = 0.05


@dataclass(frozen=True)
class AbortRule:
    metric: str
    max_excess: float
    min_sessions: int = 2


@dataclass(frozen=True)
class Fault:
    index: int
    kind: str
    target: str
    at_s: tuple[float, float]          # (lo, hi); lo == hi for a fixed start
    duration_s: float                  # 0 for an instantaneous fault (restart)
    toxic: Toxic | None = None         # network faults only
    params: dict[str, float] = field(default_factory=dict, hash=False)  # service faults only
    edge: str | None = None            # toxics only: the one edge whose proxies of the link get it

    @property
    def latest_end_s(self) -> float:
        return self.at_s[1] + self.duration_s


@dataclass(frozen=True)
class Scenario:
    name: str
    duration_s: float
    viewers: int
    seed: int = 0
    description: str = ""
    isp: str | None = None
    steady_state: tuple[Hypothesis, ...] = ()
    abort: tuple[AbortRule, ...] = ()
    faults: tuple[Fault, ...] = field(default_factory=tuple)
    experiment_failover: bool = True
    flash_crowd_at_s: float | None = None
    buffer_s: float = 60.0  # the players' buffer cap (content seconds)


@dataclass(frozen=True)
class TimedFault:
    fault: Fault
    start_s: float
    end_s: float


# --- typed field readers ---------------------------------------------------------------------

def _unknown(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise BadRequest(f"{where}{key}: unknown field (known: {', '.join(sorted(allowed))})")


def _num(where: str, table: dict[str, Any], key: str, default: float | None = None,
         *, minimum: float = 0.0, strict: bool = False) -> float:
    if key not in table:
        if default is None:
            raise BadRequest(f"{where}{key}: required")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{where}{key}: must be a number")
    if value < minimum or (strict and value == minimum):
        raise BadRequest(f"{where}{key}: must be {'>' if strict else '>='} {minimum}")
    return float(value)


def _int(where: str, table: dict[str, Any], key: str, default: int | None = None,
         *, minimum: int = 0) -> int:
    if key not in table:
        if default is None:
            raise BadRequest(f"{where}{key}: required")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{where}{key}: must be an integer")
    if value < minimum:
        raise BadRequest(f"{where}{key}: must be >= {minimum}")
    return value


def _str(where: str, table: dict[str, Any], key: str, default: str | None = None) -> str:
    if key not in table:
        if default is None:
            raise BadRequest(f"{where}{key}: required")
        return default
    value = table[key]
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where}{key}: must be a non-empty string")
    return value


def _tables(where: str, doc: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise BadRequest(f"{where}: must be an array of tables ([[{key}]])")
    return value


def _metric(where: str, table: dict[str, Any]) -> str:
    name = _str(where, table, "metric")
    if name not in known_metrics():
        raise BadRequest(f"{where}metric: unknown metric {name!r} (known: {', '.join(known_metrics())})")
    return name


# --- the parser ------------------------------------------------------------------------------

def _fault(i: int, t: dict[str, Any], duration: float) -> Fault:
    where = f"fault[{i}]."
    kind = _str(where, t, "kind")
    target = _str(where, t, "target")
    is_process = kind in PROCESS_FAULTS
    is_service = kind in SERVICE_FAULTS
    if not is_process and not is_service and kind not in TOXICS:
        known = ", ".join([*PROCESS_FAULTS, *SERVICE_FAULTS, *TOXICS])
        raise BadRequest(f"{where}kind: unknown fault {kind!r} (known: {known})")
    if is_process and not _SERVICE_TARGET.match(target):
        raise BadRequest(f"{where}target: {kind!r} needs a service (edge:ID, origin, control), not {target!r}")
    if is_service:
        check_target(kind, target, where)
    if not is_process and not is_service and not _LINK_TARGET.match(target):
        raise BadRequest(f"{where}target: {kind!r} needs a link (link:{' | link:'.join(LINKS)}), not {target!r}")
    if is_process:
        _unknown(where, t, _FAULT)
    raw_at = t.get("at_s")
    if isinstance(raw_at, list):
        if len(raw_at) != 2:
            raise BadRequest(f"{where}at_s: a range is [lo, hi]")
        lo = _num(where, {"at_s": raw_at[0]}, "at_s")
        hi = _num(where, {"at_s": raw_at[1]}, "at_s")
        if hi < lo:
            raise BadRequest(f"{where}at_s: impossible range [{lo}, {hi}] (hi < lo)")
    else:
        lo = hi = _num(where, t, "at_s")
    if kind == "restart":
        if "duration_s" in t:
            raise BadRequest(f"{where}duration_s: a restart is instantaneous; it takes no duration")
        length = 0.0
    else:
        length = _num(where, t, "duration_s", strict=True)
    if hi + length > duration:
        raise BadRequest(f"{where}at_s: impossible timeline: the fault may end at {hi + length:g} s, "
                         f"after the experiment's duration_s = {duration:g}")
    toxic = None
    edge = None
    params: dict[str, float] = {}
    rest = {k: v for k, v in t.items() if k not in _FAULT}
    if is_service:
        params = parse_params(kind, rest, where)
    elif not is_process:
        if "edge" in rest:
            edge = _str(where, rest, "edge")
            if not _EDGE_ID.match(edge):
                raise BadRequest(f"{where}edge: {edge!r} is not an edge id ([A-Za-z0-9._-]+)")
            del rest["edge"]
        toxic = make_toxic(kind, f"fault-{i}-{kind}", rest, where=f"fault[{i}]")
    return Fault(i, kind, target, (lo, hi), length, toxic, params, edge)


def _check_overlaps(faults: list[Fault]) -> None:
    """Two faults on one service at once cannot both happen (pause a killed edge? a full disk
    on a killed edge?); only toxics compose."""
    for a in faults:
        for b in faults:
            if b.index <= a.index or a.target != b.target or a.toxic or b.toxic:
                continue
            if a.at_s[0] <= b.latest_end_s and b.at_s[0] <= a.latest_end_s:
                raise BadRequest(f"fault[{b.index}].at_s: impossible timeline: {b.kind} on {b.target} "
                                 f"may overlap fault[{a.index}] ({a.kind})")


def parse_scenario(text: str, *, known_services: set[str] | None = None) -> Scenario:
    """Parse and check a scenario; `known_services` (e.g. {"edge:isp1-e1", "origin"}), when
    given, also refuses process faults on services the topology does not have."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"not valid TOML: {exc}") from None
    _unknown("", doc, _TOP)
    name = _str("", doc, "name")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise BadRequest("description: must be a string")
    duration = _num("", doc, "duration_s", strict=True)
    seed = _int("", doc, "seed", 0)
    cohorts = doc.get("cohorts")
    if not isinstance(cohorts, dict):
        raise BadRequest("cohorts: required table ([cohorts] with viewers = N)")
    _unknown("cohorts.", cohorts, _COHORTS)
    viewers = _int("cohorts.", cohorts, "viewers", minimum=2)
    isp = _str("cohorts.", cohorts, "isp") if "isp" in cohorts else None
    failover = cohorts.get("experiment_failover", True)
    if not isinstance(failover, bool):
        raise BadRequest("cohorts.experiment_failover: must be true or false")
    crowd = _num("cohorts.", cohorts, "flash_crowd_at_s") if "flash_crowd_at_s" in cohorts else None
    buffer_s = _num("cohorts.", cohorts, "buffer_s", 60.0, strict=True)

    steady = []
    for i, t in enumerate(_tables("steady_state", doc, "steady_state")):
        where = f"steady_state[{i}]."
        _unknown(where, t, _STEADY)
        alpha = _num(where, t, "alpha", 0.05, strict=True)
        if alpha >= 0.5:
            raise BadRequest(f"{where}alpha: must be < 0.5")
        steady.append(Hypothesis(_metric(where, t), _num(where, t, "tolerance", 0.0),
                                 _num(where, t, "absolute", 0.0), alpha))
    if not steady:
        raise BadRequest("steady_state: at least one [[steady_state]] metric is required")
    aborts = []
    for i, t in enumerate(_tables("abort", doc, "abort")):
        where = f"abort[{i}]."
        _unknown(where, t, _ABORT)
        aborts.append(AbortRule(_metric(where, t), _num(where, t, "max_excess"),
                                _int(where, t, "min_sessions", 2, minimum=1)))
    faults = [_fault(i, t, duration) for i, t in enumerate(_tables("fault", doc, "fault"))]
    if known_services is not None:
        for f in faults:
            if f.toxic is None and f.kind in PROCESS_FAULTS and f.target not in known_services:
                raise BadRequest(f"fault[{f.index}].target: no service {f.target!r} in this topology "
                                 f"(known: {', '.join(sorted(known_services))})")
            if f.edge is not None and f"edge:{f.edge}" not in known_services:
                edges = sorted(s[5:] for s in known_services if s.startswith("edge:"))
                raise BadRequest(f"fault[{f.index}].edge: no edge {f.edge!r} in this topology "
                                 f"(known: {', '.join(edges)})")
    _check_overlaps(faults)
    if crowd is not None and crowd >= duration:
        raise BadRequest(f"cohorts.flash_crowd_at_s: impossible timeline: {crowd:g} is not before "
                         f"duration_s = {duration:g}")
    return Scenario(name, duration, viewers, seed, description, isp, tuple(steady), tuple(aborts),
                    tuple(faults), failover, crowd, buffer_s)


def timeline(scenario: Scenario) -> list[TimedFault]:
    """Each fault's start (drawn from the seed when `at_s` is a range) and end, by start."""
    rng = random.Random(f"timeline:{scenario.seed}")
    out = []
    for f in scenario.faults:
        start = f.at_s[0] if f.at_s[0] == f.at_s[1] else rng.uniform(*f.at_s)
        out.append(TimedFault(f, start, start + f.duration_s))
    return sorted(out, key=lambda tf: (tf.start_s, tf.fault.index))
