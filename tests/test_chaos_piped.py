"""chaos/piped.py: player.session rows -> one record per session, read like a player's report."""
from __future__ import annotations

import pytest

from chaos.metrics import METRICS, sps_windows, stream_started
from chaos.piped import COLUMNS, records

T0 = 1_000.0


def row(sid: str, phase: str, ts: float, state: str = "playing", startup: float | None = 0.4,
        rebuffer: float = 0.0, played: float = 0.0) -> list[object]:
    r = {"id": f"src-{int(ts * 1000):x}", "session": sid, "phase": phase, "ts": T0 + ts, "state": state, "startup_s": startup,
         "rebuffer_s": rebuffer, "played_s": played, "failovers": 0, "avg_bitrate_kbps": 800.0, "qoe_lin": 1.0}
    return [r[c] for c in COLUMNS]


ROWS = [
    row("a", "start", 1.0, startup=None), row("a", "progress", 1.5), row("a", "end", 2.0, "ended", rebuffer=1.0, played=3.0),
    row("b", "start", 1.2, startup=None), row("b", "end", 2.5, "failed", startup=None),
    row("c", "start", 3.1, startup=None), row("c", "progress", 3.4),  # still playing
]


def test_a_session_is_timed_by_its_start_and_read_from_its_latest_event() -> None:
    got = {r["play_id"]: r for r in records(ROWS, T0)}
    assert got["a"]["started_at_s"] == 1.0 and got["a"]["state"] == "ended" and got["a"]["errors"] == 0
    assert METRICS["rebuffer_ratio"].of_session(got["a"]) == 0.25
    assert METRICS["failed"].of_session(got["b"]) == 1.0 and METRICS["startup_s"].of_session(got["b"]) == float("inf")
    assert stream_started(got["c"]) and not got["c"]["ended"]  # counted in SPS before it ends


def test_only_ended_sessions_feed_the_per_session_metrics_but_starts_count_at_once() -> None:
    assert [r["play_id"] for r in records(ROWS, T0, ended_only=True)] == ["a", "b"]
    starts = [r["started_at_s"] for r in records(ROWS, T0) if stream_started(r)]
    assert sps_windows(starts, 0.0, 4.0, 2.0) == [0.5, 0.5]  # a in [0, 2), c in [2, 4); b never started


def test_rows_in_any_order_give_the_same_records() -> None:
    assert records(list(reversed(ROWS)), T0) == records(ROWS, T0)


def test_sessions_that_reuse_a_cached_play_id_stay_apart() -> None:
    again = [row("a", "end", 4.0, "failed", startup=None),  # failed before its start event
             row("a", "start", 5.0, startup=None), row("a", "end", 6.0, "ended", played=3.0)]
    got = records(ROWS + again, T0, ended_only=True)
    assert [(r["play_id"], r["state"]) for r in got if r["play_id"].startswith("a")] == [
        ("a", "ended"), ("a#2", "failed"), ("a#3", "ended")]
    assert [r["started_at_s"] for r in got if r["play_id"].startswith("a")] == [1.0, 4.0, 5.0]


def test_each_cohort_reads_only_its_own_source() -> None:
    from chaos.observer import cohort_src
    from chaos.piped import query_sql

    sql = query_sql(100.0, cohort_src("experiment"))
    assert "src = 'chaos-experiment'" in sql and "ts >= 100.000" in sql
    for bad in ("x' OR '1'='1", "a;b", ""):
        with pytest.raises(ValueError):
            query_sql(0.0, bad)
