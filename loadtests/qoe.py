"""The QoE a crowd feels, kept apart from Locust's request table.

Rules of this module:

1. Pure (stdlib and `player.session` only; never Locust, never gevent): the
   locustfile feeds it, pytest tests it, `loadtests.run` reads its CSV.
2. One `SessionRecord` per viewing: finished, failed, or still playing (a
   snapshot). A crowd's verdict is built from these records only.
3. A table merges records from many sources (a Locust process, or each worker of
   a distributed run): finished records accumulate, live snapshots replace the
   source's previous snapshot, so a run cut off mid-viewing still counts what its
   viewers watched and stalled, and nothing is counted twice.
4. The figures: failed sessions, rebuffer ratio (stalled time / watched time,
   media seconds), start-up p50/p90 (media seconds), average bitrate (weighted by
   segments). Segment-time percentiles stay in Locust's own `segment` row.
5. The event pipeline's `player.session` events are not made here: the locustfile
   emits them (start, progress, end) through `loadtests.session_events`.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from player.session import QoEReport

__all__ = ["QoeSummary", "QoeTable", "SessionRecord", "read_qoe_csv"]


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """What one viewing delivered (times in media seconds)."""

    startup_s: float | None   # None: no frame shown (yet)
    rebuffer_s: float
    played_s: float
    avg_bitrate_kbps: float
    segments: int
    failed: bool
    flash: bool

    @classmethod
    def of(cls, report: QoEReport | None, *, failed: bool, flash: bool) -> SessionRecord:
        if report is None:  # failed before the session could be sized
            return cls(None, 0.0, 0.0, 0.0, 0, failed, flash)
        return cls(report.startup_s, report.rebuffer_s, report.played_s, report.avg_bitrate_kbps,
                   report.segments, failed, flash)

    def to_wire(self) -> list[Any]:
        return list(astuple(self))

    @classmethod
    def from_wire(cls, raw: Sequence[Any]) -> SessionRecord:
        s, r, p, b, n, f, fl = raw
        return cls(None if s is None else float(s), float(r), float(p), float(b), int(n), bool(f), bool(fl))


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class QoeSummary:
    sessions: int            # finished + failed + still playing
    finished: int
    failed: int
    playing: int             # still playing when the snapshot was taken
    flash: int               # viewings of the flash crowd's title
    watched_s: float
    stalled_s: float
    rebuffer_ratio: float    # stalled / watched (0 when nothing was watched)
    startup_p50_s: float | None
    startup_p90_s: float | None
    avg_bitrate_kbps: float

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class QoeTable:
    """Session records from any number of sources (see rule 3)."""

    def __init__(self) -> None:
        self.finished: list[SessionRecord] = []
        self.live: dict[str, list[SessionRecord]] = {}

    def add_finished(self, record: SessionRecord) -> None:
        self.finished.append(record)

    def set_live(self, source: str, records: Iterable[SessionRecord]) -> None:
        self.live[source] = list(records)

    def merge_wire(self, source: str, data: dict[str, Any]) -> None:
        """Records a worker sent: its newly finished ones and its live snapshot."""
        self.finished.extend(SessionRecord.from_wire(r) for r in data.get("finished", ()))
        self.set_live(source, (SessionRecord.from_wire(r) for r in data.get("live", ())))

    def records(self) -> list[SessionRecord]:
        return self.finished + [r for recs in self.live.values() for r in recs]

    def summary(self) -> QoeSummary:
        recs = self.records()
        watched = sum(r.played_s for r in recs)
        stalled = sum(r.rebuffer_s for r in recs)
        startups = [r.startup_s for r in recs if r.startup_s is not None]
        segs = sum(r.segments for r in recs)
        failed = sum(1 for r in self.finished if r.failed)
        return QoeSummary(
            sessions=len(recs), finished=len(self.finished) - failed, failed=failed,
            playing=len(recs) - len(self.finished), flash=sum(1 for r in recs if r.flash),
            watched_s=round(watched, 3), stalled_s=round(stalled, 3),
            rebuffer_ratio=(stalled / watched) if watched > 0 else 0.0,
            startup_p50_s=_percentile(startups, 50), startup_p90_s=_percentile(startups, 90),
            avg_bitrate_kbps=round(sum(r.avg_bitrate_kbps * r.segments for r in recs) / segs, 1) if segs else 0.0)

    def to_csv(self) -> str:
        d = self.summary().to_dict()
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(list(d))
        w.writerow(["" if v is None else v for v in d.values()])
        return buf.getvalue()

    def format_table(self) -> str:
        s = self.summary()

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f} ms"
        return "\n".join([
            "QoE (what the viewers felt; segment times are in the request table above)",
            f"  sessions        {s.sessions}  (finished {s.finished}, failed {s.failed}, still playing {s.playing}"
            + (f", flash {s.flash}" if s.flash else "") + ")",
            f"  rebuffer ratio  {s.rebuffer_ratio * 100:.3f} %  ({s.stalled_s:.1f} s stalled of {s.watched_s:.1f} s "
            "watched)",
            f"  start-up        p50 {ms(s.startup_p50_s)}, p90 {ms(s.startup_p90_s)}",
            f"  avg bitrate     {s.avg_bitrate_kbps:.0f} kbit/s",
        ])


def read_qoe_csv(path: Path) -> dict[str, Any]:
    """The one-row QoE CSV the locustfile writes, back into typed values."""
    with path.open(newline="") as f:
        row = next(csv.DictReader(f))
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v == "":
            out[k] = None
        elif k in ("sessions", "finished", "failed", "playing", "flash"):
            out[k] = int(v)
        else:
            out[k] = float(v)
    return out
