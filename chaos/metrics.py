"""Steady-state metrics: one table of per-session values read from a player's session report.

Rules of this module:
1. Pure: a metric is a function of one session report (the dict `ocsim play --json` prints)
   and says which direction is worse; nothing here reads sockets or clocks.
2. A session that never started has no start-up time: it counts as infinitely slow
   (`math.inf`), which the rank test of chaos/verdict.py orders correctly.
3. A rate is not a property of one session: `sps` (stream starts per second, the metric
   Netflix's ChAP watches) is counted per time window over a cohort's sessions
   (`sps_windows`), and the verdict compares the windows of the two cohorts.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Report = Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    name: str
    worse: Literal["higher", "lower"]
    of_session: Callable[[Report], float]
    meaning: str
    binary: bool = False  # 0 or 1 per session: a share, judged by a test of two proportions


def _failed(r: Report) -> float:
    return 0.0 if r.get("state") == "ended" and not r.get("errors") else 1.0


def _startup(r: Report) -> float:
    value = r.get("startup_s")
    return math.inf if value is None else float(value)


def _rebuffer_ratio(r: Report) -> float:
    stalled = float(r.get("rebuffer_s") or 0.0)
    played = float(r.get("played_s") or 0.0)
    return stalled / (played + stalled) if played + stalled > 0 else 0.0


def _rebuffered(r: Report) -> float:
    return 1.0 if float(r.get("rebuffer_s") or 0.0) > 0 else 0.0


def _field(name: str) -> Callable[[Report], float]:
    return lambda r: float(r.get(name) or 0.0)


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("failed", "higher", _failed, "1 when the session did not play to the end without errors", binary=True),
    Metric("startup_s", "higher", _startup, "seconds to first frame (inf when it never started)"),
    Metric("rebuffer_ratio", "higher", _rebuffer_ratio, "stalled time / (played + stalled)"),
    Metric("rebuffer_s", "higher", _field("rebuffer_s"), "seconds stalled"),
    Metric("rebuffered", "higher", _rebuffered, "1 when the session stalled at least once (the share of "
                                                 "sessions that rebuffer: a median of ratios hides it)", binary=True),
    Metric("failovers", "higher", _field("failovers"), "switches to another edge after a failure"),
    Metric("avg_bitrate_kbps", "lower", _field("avg_bitrate_kbps"), "mean bitrate played"),
    Metric("qoe_lin", "lower", _field("qoe_lin"), "linear QoE score"),
    Metric("off_isp", "higher", _field("off_isp"),
           "share of the edges that served the session that belong to another ISP (transit)"),
)}


def values(metric: str, reports: list[Report]) -> list[float]:
    return [METRICS[metric].of_session(r) for r in reports]


@dataclass(frozen=True)
class RateMetric:
    name: str
    worse: Literal["higher", "lower"]
    meaning: str


RATE_METRICS: dict[str, RateMetric] = {m.name: m for m in (
    RateMetric("sps", "lower", "stream starts per second: sessions that reached their first frame, "
                               "counted per window by the time they started"),
)}
SPS_WINDOW_S = 2.0


def is_binary(name: str) -> bool:
    return name in METRICS and METRICS[name].binary


def worse_of(name: str) -> Literal["higher", "lower"]:
    return METRICS[name].worse if name in METRICS else RATE_METRICS[name].worse


def known_metrics() -> list[str]:
    return [*METRICS, *RATE_METRICS]


def sps_windows(starts: list[float], t_from: float, t_to: float, window_s: float = SPS_WINDOW_S) -> list[float]:
    """Stream starts per second in each whole window of `window_s` in [t_from, t_to);
    `starts` are the times (s, experiment clock) at which successful sessions began."""
    n = int((t_to - t_from) // window_s)
    counts = [0] * max(0, n)
    for t in starts:
        i = int((t - t_from) // window_s)
        if 0 <= i < n:
            counts[i] += 1
    return [c / window_s for c in counts]


def stream_started(r: Report) -> bool:
    return r.get("startup_s") is not None
