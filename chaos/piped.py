"""A cohort's sessions as its event pipeline saw them: `player.session` rows -> session records.

The runner (chaos/runner.py) polls its pipeline's collector (chaos/observer.py; read API
`POST /v1/query`, one cohort's `src` at a time) every 0.5 s and turns the rows into one
record per session, shaped like the players' reports that chaos/metrics.py reads
(`started_at_s`, `state`, `errors`, `startup_s`, `rebuffer_s`, `played_s`, ...).

Rules of this module:
1. Pure: rows in, records out; the run's clock origin (`epoch0`, epoch seconds) is a parameter.
2. A session's start time is its `start` event's `ts`; its QoE is that of its latest event
   (by `ts`, then the publisher's event counter): a session still playing counts as started (SPS) as
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

COLUMNS = ("id", "session", "phase", "ts", "state", "startup_s", "rebuffer_s", "played_s", "failovers",
           "avg_bitrate_kbps", "qoe_lin")
# the metrics these records carry; others (off_isp) still come from the players' reports
PIPED_METRICS = ("failed", "startup_s", "rebuffer_ratio", "rebuffer_s", "rebuffered", "failovers",
                 "avg_bitrate_kbps", "qoe_lin")


def query_sql(since_epoch: float, src: str) -> str:
    """One cohort's rows: its players publish under `src` (chaos/observer.py)."""
    if not src.replace("-", "").isalnum():
        raise ValueError(f"not a source name: {src!r}")
    return (f"SELECT {', '.join(COLUMNS)} FROM player_session "
            f"WHERE ts >= {since_epoch:.3f} AND src = '{src}'")


def _order(r: dict[str, Any]) -> tuple[float, int, str]:
    eid = str(r["id"])
    prefix, _, n = eid.rpartition("-")
    try:
        return float(r["ts"]), int(n, 16), prefix  # one source's counter breaks a tie of ts
    except ValueError:
        return float(r["ts"]), 0, eid


def records(rows: list[list[Any]], epoch0: float, *, ended_only: bool = False) -> list[dict[str, Any]]:
    """One record per session, in order of start; `ended_only` keeps those whose end is in.

    A viewer that starts a title again from its cached play answer reuses the answer's play
    id, so one id can carry several sessions of one viewer, one after another: an event after
    an `end` of its id begins the next session (`ID#2`, `ID#3`, ...)."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in sorted((dict(zip(COLUMNS, row)) for row in rows), key=_order):
        by_id.setdefault(str(row["session"]), []).append(row)
    out = []
    for sid, events in by_id.items():
        parts: list[list[dict[str, Any]]] = [[]]
        for r in events:
            if parts[-1] and parts[-1][-1]["phase"] == "end":
                parts.append([])
            parts[-1].append(r)
        for k, part in enumerate(parts):
            last = part[-1]
            ended = last["phase"] == "end"
            if ended_only and not ended:
                continue
            start = next((float(r["ts"]) for r in part if r["phase"] == "start"), float(part[0]["ts"]))
            out.append({
                "play_id": sid if k == 0 else f"{sid}#{k + 1}", "state": last["state"], "ended": ended,
                "errors": 0 if last["state"] == "ended" else 1,
                "startup_s": last["startup_s"], "rebuffer_s": last["rebuffer_s"] or 0.0,
                "played_s": last["played_s"] or 0.0, "failovers": last["failovers"] or 0,
                "avg_bitrate_kbps": last["avg_bitrate_kbps"] or 0.0, "qoe_lin": last["qoe_lin"] or 0.0,
                "started_at_s": round(start - epoch0, 3),
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
