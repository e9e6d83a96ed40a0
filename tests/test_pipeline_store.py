"""The event store and the views, on hand-computed events (no NATS, no clock)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from common.events import EdgeFill, EdgeRequest, Event, EventsDropped, Payload, PlayerSession, SteerPlay, encode, pack_frame
from pipeline.collector import decode_and_commit
from pipeline.query import BadQuery, check_readonly, open_readonly, run
from pipeline.store import EventStore
from pipeline.views import SERIES, VIEWS, parse_since, series_sql, view_sql

T0 = 1_700_000_000.0  # a whole hour: 1_700_000_000 / 3600 = 472222.2, so pick buckets inside it
MB = 1_000_000


def req(edge: str, isp: str, path: str, nbytes: int, cache: str, *, ts_ttfb: float = 0.01, size: int | None = MB,
        session: str | None = None, status: int = 200) -> EdgeRequest:
    title = path.split("/")[2]
    return EdgeRequest(edge, isp, path, title, 750, 0, status, nbytes, size, cache, ts_ttfb, 0.1, session)


def end(session: str, isp: str, edge: str, startup: float, rebuf: float, played: float, kbps: float) -> PlayerSession:
    return PlayerSession(session, "end", "t1", isp, edge, "done", startup, 1 if rebuf else 0, rebuf, kbps, 0, 0, 0,
                         MB, 10, played, 1.0, True)


def start(session: str, isp: str) -> PlayerSession:
    return PlayerSession(session, "start", "t1", isp, None, "starting", None, 0, 0.0, 0.0, 0, 0, 0, 0, 0, 0.0, 0.0,
                         None)


def events(items: list[tuple[float, Payload]]) -> list[Event]:
    return [Event(f"e{i}", T0 + dt, "test", p) for i, (dt, p) in enumerate(items)]


HAND: list[tuple[float, Payload]] = [
    # isp-a, edge-a1: 3 hits of 1 MB, 1 cold miss (0.5 MB sent of a 1 MB file, a Range), in second 0..3
    (0.1, req("edge-a1", "isp-a", "/content/t1/750/0.seg", MB, "hit", ts_ttfb=0.01, session="p1")),
    (0.2, req("edge-a1", "isp-a", "/content/t1/750/0.seg", MB, "hit", ts_ttfb=0.02, session="p1")),
    (1.5, req("edge-a1", "isp-a", "/content/t1/750/1.seg", MB, "hit", ts_ttfb=0.03, session="p2")),
    (2.5, req("edge-a1", "isp-a", "/content/t2/750/0.seg", MB // 2, "cold", ts_ttfb=0.5, session="p2", status=206)),
    # isp-b, edge-b1: an evicted miss (whole file) and a coalesced one, no session; a 403 with no cache outcome
    (3.0, req("edge-b1", "isp-b", "/content/t1/750/0.seg", MB, "evicted", ts_ttfb=0.2)),
    (3.1, req("edge-b1", "isp-b", "/content/t1/750/0.seg", MB, "coalesced", ts_ttfb=0.3)),
    (3.2, req("edge-b1", "isp-b", "/content/t1/750/0.seg", 20, "none", ts_ttfb=0.0, size=None, status=403)),
    # fills: edge-a1 1 MB from origin for t2; edge-b1 1 MB from origin and 1 MB from a peer
    (2.4, EdgeFill("edge-a1", "isp-a", "/content/t2/750/0.seg", "t2", "origin", MB, 0.4, "stored")),
    (2.9, EdgeFill("edge-b1", "isp-b", "/content/t1/750/0.seg", "t1", "origin", MB, 0.2, "stored")),
    (2.95, EdgeFill("edge-b1", "isp-b", "/content/t1/750/1.seg", "t1", "peer", MB, 0.1, "stored")),
    # steering: p1 chosen edge held the title; p2 was a content miss; p3 a health miss
    (0.0, SteerPlay("p1", "t1", "isp-a", ("edge-a1",), True, False, False)),
    (1.0, SteerPlay("p2", "t2", "isp-a", ("edge-a1", "edge-a2"), False, True, False)),
    (1.1, SteerPlay("p3", "t1", "isp-b", ("edge-b1",), False, False, True)),
    # sessions
    (0.05, start("p1", "isp-a")),
    (1.05, start("p2", "isp-a")),
    (1.2, start("p3", "isp-b")),
    (5.0, end("p1", "isp-a", "edge-a1", 0.4, 0.0, 30.0, 3000.0)),
    (6.0, end("p2", "isp-a", "edge-a1", 0.8, 2.0, 10.0, 1000.0)),
    (7.0, EventsDropped(5, 5, 0)),
]


@pytest.fixture
def store(tmp_path: Path) -> EventStore:
    s = EventStore(tmp_path / "ev.duckdb", parquet_dir=tmp_path / "parquet")
    s.commit(events(HAND), now=T0 + 8)
    return s


def q(store: EventStore, sql: str, params: dict[str, object] | None = None) -> list[list[Any]]:
    return run(store.reader(), sql, params).rows


def view(store: EventStore, name: str) -> dict[str, list[Any]]:
    res = run(store.reader(), view_sql(name), {"since": T0 - 10} if "$since" in view_sql(name) else None)
    return {"columns": res.columns, "rows": res.rows}


def test_ids_are_stored_once(store: EventStore) -> None:
    assert store.count() == len(HAND)
    again = store.commit(events(HAND) + events(HAND[:3]), now=T0 + 9)
    assert again.stored == 0 and again.offered == len(HAND) + 3
    assert store.count() == len(HAND)


def test_edges_view(store: EventStore) -> None:
    v = view(store, "edges")
    cols = v["columns"]
    rows = {r[1]: dict(zip(cols, r)) for r in v["rows"]}
    a, b = rows["edge-a1"], rows["edge-b1"]
    assert (a["requests"], a["bytes"], a["hits"], a["misses"], a["cold"]) == (4, 3.5 * MB, 3, 1, 1)
    assert a["hit_ratio"] == pytest.approx(0.75)
    assert (b["requests"], b["hits"], b["misses"], b["evicted"], b["coalesced"]) == (3, 0, 2, 1, 1)
    assert b["hit_ratio"] == 0.0  # the 403 is not a content request
    # TTFB median of 0.01, 0.02, 0.03, 0.5 (linear interpolation): 0.025
    assert a["ttfb_p50"] == pytest.approx(0.025)


def test_offload_view(store: EventStore) -> None:
    v = view(store, "offload")
    rows = {r[0]: dict(zip(v["columns"], r)) for r in v["rows"]}
    assert rows["isp-a"]["to_players"] == 3.5 * MB and rows["isp-a"]["from_origin"] == MB
    assert rows["isp-a"]["offload"] == pytest.approx(1 - 1 / 3.5)
    assert rows["isp-b"]["from_peers"] == MB
    assert rows["isp-b"]["offload"] == pytest.approx(1 - MB / (2 * MB + 20))


def test_miss_causes_join_steering_with_the_edge(store: EventStore) -> None:
    v = view(store, "miss_causes")
    got = {(r[0], r[1]): r[2] for r in v["rows"]}
    # the cold miss belongs to p2, whose steering was a content miss; isp-b's misses carry no session
    assert got == {("isp-a", "content"): 1, ("isp-b", "unjoined"): 2}
    s = {r[0]: r[1:] for r in view(store, "steering_misses")["rows"]}
    assert s == {"isp-a": [2, 1, 0], "isp-b": [1, 0, 1]}


def test_popularity_is_bytes_over_file_size(store: EventStore) -> None:
    rows = view(store, "popularity")["rows"]
    got = {(r[0], r[1]): r[3] for r in rows}
    assert got[("isp-a", "/content/t1/750/0.seg")] == 2.0
    assert got[("isp-a", "/content/t2/750/0.seg")] == 0.5  # half a file streamed (Range)
    assert got[("isp-b", "/content/t1/750/0.seg")] == 2.0  # the 403 does not count
    titles = {(r[0], r[1]): r[2] for r in view(store, "title_popularity")["rows"]}
    assert titles == {("isp-a", "t1"): 3.0, ("isp-a", "t2"): 0.5, ("isp-b", "t1"): 2.0}
    # a sliding window: from T0 + 1 only the later requests count
    late = run(store.reader(), view_sql("popularity"), {"since": T0 + 1}).rows
    assert {(r[0], r[1]): r[3] for r in late}[("isp-a", "/content/t1/750/1.seg")] == 1.0
    assert ("isp-a", "/content/t1/750/0.seg") not in {(r[0], r[1]) for r in late}


def test_qoe_view(store: EventStore) -> None:
    v = view(store, "qoe")
    (a,) = [dict(zip(v["columns"], r)) for r in v["rows"] if r[0] == "isp-a"]
    assert a["sessions"] == 2 and a["startup_s"] == pytest.approx(0.6)
    assert a["rebuffer_ratio"] == pytest.approx(2.0 / 42.0)
    assert a["bitrate_kbps"] == pytest.approx((3000 * 30 + 1000 * 10) / 40)
    assert view(store, "dropped")["rows"][0][:2] == ["test", 5]


def test_series(store: EventStore) -> None:
    def series(metric: str, by: str = "isp", step: str = "1s") -> dict[str, list[tuple[float, float]]]:
        sql, params = series_sql(metric, by, step, T0 - 1)
        out: dict[str, list[tuple[float, float]]] = {}
        for t, key, value in q(store, sql, params):
            out.setdefault(key, []).append((t - T0, value))
        return out

    assert series("sps") == {"isp-a": [(0.0, 1.0), (1.0, 1.0)], "isp-b": [(1.0, 1.0)]}
    assert series("bytes_to_players", step="10s") == {"isp-a": [(0.0, 0.35 * MB)], "isp-b": [(0.0, 0.2 * MB + 2)]}
    assert series("hit_ratio", by="edge", step="10s") == {"edge-a1": [(0.0, 0.75)], "edge-b1": [(0.0, 0.0)]}
    assert series("misses.cold", step="10s") == {"isp-a": [(0.0, 0.1)]}
    offload = series("offload", step="10s")
    assert offload["isp-a"][0][1] == pytest.approx(1 - 1 / 3.5)
    assert series("rebuffer_ratio", step="10s")["isp-a"][0][1] == pytest.approx(2 / 42)
    for name in SERIES:  # every series runs
        series(name, by="edge", step="1m")


def test_every_view_runs_on_an_empty_store(tmp_path: Path) -> None:
    s = EventStore(tmp_path / "empty.duckdb")
    for name, v in VIEWS.items():
        run(s.reader(), v.sql, {"since": 0.0} if "$since" in v.sql else None)


def test_bad_parameters_are_4xx() -> None:
    from common.errors import BadRequest
    for args in [("nope", "isp", "1s"), ("sps", "title", "1s"), ("sps", "isp", "5s")]:
        with pytest.raises(BadRequest):
            series_sql(*args, since=0.0)
    with pytest.raises(BadRequest):
        view_sql("nope")
    for bad in ["yesterday", "-5", "1e300", "9999h"]:
        with pytest.raises(BadRequest):
            parse_since(bad, T0)
    assert parse_since("90s", T0) == T0 - 90 and parse_since(None, T0) == T0 - 300 and parse_since("5", T0) == 5.0


@pytest.mark.parametrize("sql", [
    "DELETE FROM edge_request", "INSERT INTO edge_request SELECT * FROM edge_request", "DROP TABLE steer_play",
    "COPY edge_request TO '/tmp/x.parquet'", "ATTACH '/tmp/x.duckdb' AS x", "SELECT 1; SELECT 2",
    "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/passwd'", "SELECT getenv('HOME')",
    "PRAGMA database_list", "SET threads = 1", "CREATE TABLE x AS SELECT 1", "SELECT * FROM glob('/*')",
])
def test_the_read_path_cannot_write_or_escape(store: EventStore, sql: str) -> None:
    con = store.reader()
    with pytest.raises(BadQuery):
        check_readonly(con, sql)


def test_bad_sql_carries_the_engines_message(store: EventStore) -> None:
    con = store.reader()
    with pytest.raises(BadQuery, match="nope"):
        check_readonly(con, "SELECT nope FROM edge_request")
        run(con, "SELECT nope FROM edge_request")
    with pytest.raises(BadQuery, match="(?i)parser"):
        check_readonly(con, "SELEC 1")
    check_readonly(con, "SELECT count(*) FROM edge_request, range(3)")


def test_parquet_rolls_by_hour(store: EventStore, tmp_path: Path) -> None:
    assert store.roll_parquet(T0 + 10) == []  # the hour is not over yet
    hour_end = (int(T0 // 3600) + 1) * 3600
    written = store.roll_parquet(hour_end + 61)
    assert {p.parent.name for p in written} >= {"edge_request", "steer_play", "player_session"}
    n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{tmp_path}/parquet/*/*.parquet', "
                                 "union_by_name=true)").fetchone()
    assert n is not None and n[0] == len(HAND)
    assert store.roll_parquet(hour_end + 61) == []  # nothing dirty any more


def test_read_only_open_of_several_stores_unions_them(store: EventStore, tmp_path: Path) -> None:
    other = EventStore(tmp_path / "other.duckdb")
    other.commit([Event("x1", T0, "t", SteerPlay("p9", "t1", "isp-a", (), None, False, False))])
    store.close()
    other.close()
    con = open_readonly([tmp_path / "ev.duckdb", tmp_path / "other.duckdb"])
    assert run(con, "SELECT count(*) FROM steer_play").rows == [[4]]
    with pytest.raises(duckdb.Error):
        duckdb.connect(str(tmp_path / "ev.duckdb"), read_only=True).execute("DELETE FROM steer_play")


def test_decode_and_commit_counts_bad_events(tmp_path: Path) -> None:
    s = EventStore(tmp_path / "d.duckdb")
    good = [encode(e) for e in events(HAND[:5])]
    out = decode_and_commit(s, [pack_frame(good + [b"\xc1"]), b"junk"], now=T0)
    assert (out.events, out.stored) == (5, 5)
    assert out.rejected == {"malformed": 2}
