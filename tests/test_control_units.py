"""Pure parts of the control plane: the topology schema, job/plan bookkeeping, the fleet's
replay defences, and the SQLite store's round trips."""
from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.content import Catalog, Title
from common.errors import BadRequest, Conflict, NotFound
from common.wire import FillProgress, Heartbeat, Register
from control.fleet import Fleet
from control.jobs import PLAN_TRANSITIONS, TERMINAL, Job, JobBook, build_plans, title_paths
from control.store import Store
from control.topology import TopologyError, load_topology, parse_topology


# ------------------------------------------------------------------ topology

def test_topology_parses_and_normalizes(tmp_path: Path) -> None:
    p = tmp_path / "t.toml"
    p.write_text('[origin]\nlatency_ms = 80\n[isps.isp-a]\nprefixes = ["10.1.0.0/16", "FD00:1::/32"]\nedges = 2\n'
                 '[isps.isp-b]\nprefixes = []\n')
    topo = load_topology(p)
    assert topo.prefixes() == {"isp-a": ["10.1.0.0/16", "fd00:1::/32"], "isp-b": []}
    assert topo.isps["isp-a"].edges == 2 and topo.isps["isp-b"].edges is None


@pytest.mark.parametrize("text,field", [
    ('isps = 3', "isps must be a table"),
    ('[isps.ISP]\nprefixes = []', "isps.ISP"),
    ('[isps.a]\nprefix = ["10.0.0.0/8"]', "isps.a: unknown field(s) prefix"),
    ('[isps.a]\nedges = 1', "isps.a.prefixes: required"),
    ('[isps.a]\nprefixes = "10.0.0.0/8"', "isps.a.prefixes: required"),
    ('[isps.a]\nprefixes = ["10.0.0.0/8", 7]', "isps.a.prefixes[1]"),
    ('[isps.a]\nprefixes = ["10.0.0.1/8"]', "isps.a.prefixes[0]: 10.0.0.1/8 has host bits set"),
    ('[isps.a]\nprefixes = ["banana"]', "isps.a.prefixes[0]"),
    ('[isps.a]\nprefixes = ["10.0.0.0/8"]\n[isps.b]\nprefixes = ["10.0.0.0/8"]',
     "isps.b.prefixes[0]: 10.0.0.0/8 is already announced by isps.a"),
    ('[isps.a]\nprefixes = []\nedges = -1', "isps.a.edges"),
    ('[isps.a]\nprefixes = []\nedges = true', "isps.a.edges"),
])
def test_topology_errors_name_the_field(text: str, field: str) -> None:
    with pytest.raises(TopologyError) as err:
        parse_topology(tomllib.loads(text))
    assert field in str(err.value)


def test_topology_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="No such file"):
        load_topology(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[isps\n")
    with pytest.raises(TopologyError, match="bad.toml"):
        load_topology(tmp_path / "bad.toml")


# ------------------------------------------------------------------ jobs

T1 = Title("t1", 10.0, (235, 750))  # 3 segments per rendition
T2 = Title("t2", 4.0, (235,))


def test_title_paths_cover_master_playlists_and_segments() -> None:
    assert title_paths(T1, (235,)) == ["/content/t1/master.m3u8", "/content/t1/235/index.m3u8",
                                       "/content/t1/235/0.seg", "/content/t1/235/1.seg", "/content/t1/235/2.seg"]
    assert len(title_paths(T1)) == 1 + 2 + 6


def test_build_plans_one_per_edge_and_split_when_large() -> None:
    plans = build_plans("j", {"e1": ("t1", "t2"), "e2": ("t2",)}, {"t1": T1, "t2": T2}, None, 1000, 5.0)
    assert [(p.plan_id, p.edge_id, p.titles, p.total_objects) for p in plans] == [
        ("j-1", "e1", ("t1", "t2"), 9 + 3), ("j-2", "e2", ("t2",), 3)]
    assert plans[0].total_bytes == T1.total_bytes() + T2.total_bytes()
    small = build_plans("j", {"e1": ("t1", "t2")}, {"t1": T1, "t2": T2}, None, 0, 5.0, max_paths=4)
    assert all(p.total_objects <= 4 for p in small)
    assert [x for p in small for x in p.paths] == title_paths(T1) + title_paths(T2)
    assert {p.edge_id for p in small} == {"e1"} and len({p.plan_id for p in small}) == len(small)


def test_plan_transitions_never_leave_a_terminal_state() -> None:
    for (state, _event), nxt in PLAN_TRANSITIONS.items():
        assert state not in TERMINAL
        assert nxt in ("running", "done", "failed")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["e1", "e2", "e3"]), st.sampled_from(["j-1", "j-2", "zz"]),
                          st.sampled_from(["running", "done", "failed", "bogus"]), st.integers(-5, 50)),
                max_size=30))
def test_job_state_and_progress_follow_reports(reports: list[tuple[str, str, str, int]]) -> None:
    plans = build_plans("j", {"e1": ("t1",), "e2": ("t2",)}, {"t1": T1, "t2": T2}, None, 0, 0.0)
    job = Job("j", "isp-a", ("t1", "t2"), None, 0, 0.0, plans)
    book = JobBook()
    book.add(job)
    seen_terminal: dict[str, str] = {}
    for edge, pid, state, done in reports:
        book.report(edge, [FillProgress(pid, state, done, 99, max(done, 0))], 1.0)
        for p in plans:
            if p.plan_id in seen_terminal:
                assert p.state == seen_terminal[p.plan_id]  # final is final
            elif p.terminal:
                seen_terminal[p.plan_id] = p.state
            assert 0 <= p.done_objects <= p.total_objects
        assert 0.0 <= job.progress <= 1.0
    states = {p.state for p in plans}
    if states == {"done"}:
        assert job.state == "done" and job.progress == 1.0
    elif states <= TERMINAL:
        assert job.state == "failed"
    elif states == {"pending"}:
        assert job.state == "pending"
    else:
        assert job.state == "running"


def test_sweep_fails_plans_of_vanished_edges_only() -> None:
    plans = build_plans("j", {"e1": ("t1",), "e2": ("t2",)}, {"t1": T1, "t2": T2}, None, 0, 0.0)
    book = JobBook()
    book.add(Job("j", "isp-a", ("t1", "t2"), None, 0, 0.0, plans))
    assert book.sweep(50.0, 60.0, lambda e: e == "e1") == []
    failed = book.sweep(70.0, 60.0, lambda e: e == "e1")
    assert [p.edge_id for p in failed] == ["e2"] and "unavailable" in failed[0].error
    assert book.jobs["j"].state == "running"
    dirty_plans, dirty_jobs = book.take_dirty()
    assert [p.plan_id for p in dirty_plans] == ["j-2"] and [j.id for j in dirty_jobs] == ["j"]
    assert book.take_dirty() == ([], [])


def test_space_for_counts_plans_in_flight_so_jobs_never_double_book() -> None:
    plans = build_plans("j", {"e1": ("t1",)}, {"t1": T1}, None, 0, 0.0)
    book = JobBook()
    book.add(Job("j", "isp-a", ("t1",), None, 0, 0.0, plans))
    pending = plans[0].total_bytes
    assert pending > 0
    space = book.space_for("e1", pending + 100, frozenset())
    assert space.free_bytes == 100 and space.holds == frozenset({"t1"})  # in flight: held, bytes booked
    book.report("e1", [FillProgress(plans[0].plan_id, "running", 1, plans[0].total_objects, pending // 2)], 1.0)
    assert book.space_for("e1", pending + 100, frozenset()).free_bytes == 100 + pending // 2
    book.report("e1", [FillProgress(plans[0].plan_id, "done", plans[0].total_objects,
                                    plans[0].total_objects, pending)], 2.0)
    assert book.space_for("e1", 500, frozenset()).holds == frozenset()  # done but no longer reported
    assert book.space_for("e1", 500, frozenset({"t1"})) == book.space_for("e1", 500, frozenset({"t1", "x"}))
    assert book.space_for("e1", 500, frozenset({"t1"})).holds == frozenset({"t1"})
    assert book.space_for("e2", 500, frozenset({"t1"})).holds == frozenset()


def test_a_job_with_nothing_left_to_fill_is_done_not_failed() -> None:
    assert Job("j", "isp-a", ("t1",), None, 0, 0.0, []).state == "done"
    assert Job("j", "isp-a", ("t1",), None, 0, 0.0, []).progress == 1.0
    assert Job("j", "isp-a", ("t1",), None, 0, 0.0, [], ("t1",), "no room").state == "failed"


# ------------------------------------------------------------------ fleet

def _reg(ts: float, edge: str = "e1") -> Register:
    return Register(edge, "isp-a", "http://127.0.0.1:1", 1000, ts)


def _hb(seq: int, ts: float, edge: str = "e1", state: str = "up", reg: float = 1_000_000.0) -> Heartbeat:
    return Heartbeat(edge, "isp-a", "http://127.0.0.1:1", seq, ts, state, 1000, 10, 1, 0.0, 0.0, 0.0, ["t1"],
                     registration_ts=reg)


def test_fleet_refuses_replays_and_skewed_clocks() -> None:
    fleet = Fleet()
    now = 1_000_000.0
    with pytest.raises(NotFound):
        fleet.heartbeat(_hb(1, now), now)
    fleet.register(_reg(now), now)
    fleet.heartbeat(_hb(1, now), now)
    with pytest.raises(Conflict):
        fleet.heartbeat(_hb(1, now + 1), now + 1)  # seq not increasing
    with pytest.raises(Conflict):
        fleet.heartbeat(_hb(2, now - 31), now)  # 31 s old
    with pytest.raises(Conflict):
        fleet.heartbeat(_hb(2, now + 31), now)  # 31 s in the future
    with pytest.raises(Conflict):
        fleet.register(_reg(now), now + 1)  # a replayed registration cannot reset the sequence
    fleet.heartbeat(_hb(2, now + 1), now + 1)
    fleet.register(_reg(now + 2), now + 2)  # a new registration starts a new sequence
    fleet.heartbeat(_hb(1, now + 2, reg=now + 2), now + 2)
    assert fleet.get("e1").titles == frozenset({"t1"}) and fleet.state("e1", now + 2) == "up"
    assert fleet.state("e1", now + 2 + 3.6) == "down"
    with pytest.raises(BadRequest):
        fleet.register(Register("bad id!", "isp-a", "http://x", 1, now), now)
    with pytest.raises(BadRequest):
        fleet.register(Register("e2", "isp-a", "file:///etc/passwd", 1, now), now)


def test_fleet_views_are_reused_while_nothing_changes() -> None:
    fleet = Fleet()
    now = time.time()
    fleet.register(_reg(now), now)
    v1 = fleet.views(now)
    assert fleet.views(now + 0.1) is v1
    fleet.heartbeat(_hb(1, now, reg=now), now)  # titles changed
    v2 = fleet.views(now)
    assert v2 is not v1 and v2[0].titles == frozenset({"t1"})
    assert fleet.views(now + 10)[0].state == "down"


# ------------------------------------------------------------------ store

def test_store_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.merge_catalog([T1, T2])
    store.retire_title("t2")
    store.merge_catalog([T1, T2])  # the origin still lists it: it stays retired
    catalog, retired = store.load_catalog()
    assert list(catalog.titles) == ["t1"] and retired == {"t2"}
    store.put_title(T2)
    assert sorted(store.load_catalog()[0].titles) == ["t1", "t2"]
    store.add_plays({("isp-a", "t1"): 2})
    store.add_plays({("isp-a", "t1"): 3, ("-", "t2"): 1})
    assert store.load_plays() == {("isp-a", "t1"): 5, ("-", "t2"): 1}
    plans = build_plans("j", {"e1": ("t1",)}, {"t1": T1}, (235,), 10, 1.0)
    job = Job("j", "isp-a", ("t1",), (235,), 10, 1.0, plans, ("t9",), "", 1.0)
    store.insert_job(job)
    plans[0].apply("running")
    plans[0].done_objects = 2
    store.save_progress(plans, [job])
    store.set_admin("e1", True)
    store.close()
    store = Store(tmp_path / "s.db")
    (loaded,) = store.load_jobs(now=9.0)
    assert loaded.to_json() == job.to_json()
    assert loaded.plans[0].paths == plans[0].paths and loaded.plans[0].last_seen == 9.0
    assert store.load_admin() == {"e1": True}
    assert Catalog.of(store.load_catalog()[0].titles.values()).get("t1") == T1
