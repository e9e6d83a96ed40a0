"""A cohort's sessions as its event pipeline saw them: `player.session` rows -> session records.

The runner (chaos/runner.py), when each cohort's copy runs its own pipeline, polls the
collector's read API (`POST /v1/query`) every 0.5 s and turns the rows into one
record per session, shaped like the players' reports that chaos/metrics.py reads
(`started_at_s`, `state`, `errors`, `startup_s`, `rebuffer_s`, `played_s`, ...).

Rules of this module:
1. Pure: rows in, records out; the run's clock origin (`epoch0`, epoch seconds) is a parameter.
2. A session's start time is its `start` event's `ts`; its QoE is that of its latest event
   (`end` over `progress` over `start`): a session still playing counts as started (SPS) as
   soon as a progress event carries its start-up time, and counts in the per-session metrics
   only once its `end` event is in (`ended_only`).
3. `errors` in the events counts every failed request (the session's, recovered or not, plus
   the unrecovered one); the players' reports count only the unrecovered one. So a record's
   `errors` is 1 when the session did not play to the end (`state != "ended"`), else 0: the
   `failed` metric then means the same from either source.
"""
from __future__ import annotations

from typing import Any

from common.eventsink import EventSink
from common.events import Payload

COLUMNS = ("session", "phase", "ts", "state", "startup_s", "rebuffer_s", "played_s", "failovers",
           "avg_bitrate_kbps", "qoe_lin")
PHASE_RANK = {"start": 0, "progress": 1, "end": 2}
# the metrics these records carry; others (off_isp) still come from the players' reports
PIPED_METRICS = ("failed", "startup_s", "rebuffer_ratio", "rebuffer_s", "failovers", "avg_bitrate_kbps", "qoe_lin")


def query_sql(since_epoch: float) -> str:
    return (f"SELECT {', '.join(COLUMNS)} FROM player_session WHERE ts >= {since_epoch:.3f} "
            f"ORDER BY ts, session")


def records(rows: list[list[Any]], epoch0: float, *, ended_only: bool = False) -> list[dict[str, Any]]:
    """One record per session, in order of start; `ended_only` keeps those whose end is in."""
    best: dict[str, tuple[int, float, dict[str, Any]]] = {}
    starts: dict[str, float] = {}
    for row in rows:
        r = dict(zip(COLUMNS, row))
        sid, phase, ts = str(r["session"]), str(r["phase"]), float(r["ts"])
        if phase == "start":
            starts[sid] = min(ts, starts.get(sid, ts))
        rank = PHASE_RANK.get(phase, -1)
        old = best.get(sid)
        if old is None or (rank, ts) >= (old[0], old[1]):
            best[sid] = (rank, ts, r)
    out = []
    for sid, (rank, ts, r) in best.items():
        if ended_only and rank != PHASE_RANK["end"]:
            continue
        ended = rank == PHASE_RANK["end"]
        out.append({
            "play_id": sid, "state": r["state"], "ended": ended,
            "errors": 0 if r["state"] == "ended" else 1,
            "startup_s": r["startup_s"], "rebuffer_s": r["rebuffer_s"] or 0.0, "played_s": r["played_s"] or 0.0,
            "failovers": r["failovers"] or 0, "avg_bitrate_kbps": r["avg_bitrate_kbps"] or 0.0,
            "qoe_lin": r["qoe_lin"] or 0.0,
            "started_at_s": round(starts.get(sid, ts) - epoch0, 3),
        })
    out.sort(key=lambda x: (x["started_at_s"], x["play_id"]))
    return out


class TapSink(EventSink):
    """One session's view of its cohort's sink: forwards every event, remembers the play id."""

    def __init__(self, inner: EventSink) -> None:
        self.inner = inner
        self.src = inner.src
        self.play_id: str | None = None

    def emit(self, payload: Payload) -> None:
        self.play_id = str(getattr(payload, "session", "")) or self.play_id
        self.inner.emit(payload)

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        self.inner.emit_fields(cls, values)

    @property
    def enabled(self) -> bool:
        return self.inner.enabled
