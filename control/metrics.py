"""The control plane's own metrics (beside the HTTP ones every service has): plays,
steering time and misses, edge-message refusals, heartbeats, and gauges of the fleet,
the jobs and the catalog read at scrape time."""
from __future__ import annotations

import time

from aiohttp import web

from common.metrics import Counter, Histogram
from common.service import REGISTRY
from control.state import ControlState

PLAYS = web.AppKey("control_plays", Counter)
STEER_SECONDS = web.AppKey("control_steer_seconds", Histogram)
MISSES = web.AppKey("control_misses", Counter)
BAD_SIGNATURES = web.AppKey("control_bad_signatures", Counter)
HEARTBEATS = web.AppKey("control_heartbeats", Counter)
STALE = web.AppKey("control_stale", Counter)


def register_metrics(app: web.Application, st: ControlState) -> None:
    reg = app[REGISTRY]
    app[PLAYS] = reg.counter("ocsim_control_plays_total", "Play requests answered or refused, by client ISP",
                             ("isp",))
    app[STEER_SECONDS] = reg.histogram("ocsim_control_steering_seconds", "Time to rank candidates for one play",
                                       buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                0.025, 0.1))
    app[MISSES] = reg.counter("ocsim_control_steering_misses_total",
                              "content: the first choice did not hold the title; health: an edge of the "
                              "client's ISP was passed over for its health", ("kind",))
    app[BAD_SIGNATURES] = reg.counter("ocsim_control_bad_signatures_total",
                                      "Edge messages refused for a bad or missing signature", ("message",))
    app[HEARTBEATS] = reg.counter("ocsim_control_heartbeats_total", "Heartbeats accepted, by reported state",
                                  ("state",))
    app[STALE] = reg.counter("ocsim_control_stale_messages_total",
                             "Edge messages refused as replayed, reordered or off-clock", ("message",))
    reg.gauge("ocsim_control_edges", "Edges by health state", ("state",),
              callback=lambda: {(s,): float(n) for s, n in st.fleet.counts_by_state(time.time()).items()})
    reg.gauge("ocsim_control_jobs", "Pre-position jobs by state", ("state",),
              callback=lambda: {(s,): float(n) for s, n in st.jobs.counts_by_state().items()})
    reg.gauge("ocsim_control_titles", "Titles in the catalog", callback=lambda: float(len(st.catalog)))

