"""Pre-positioning by file: budget, valuation, replicas, windows, on hand-computed cases."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from control.jobs import Job, JobBook, JobState, PlanRecord, build_file_plans
from control.placement import ALL_SPACE_PINNED, NO_ROOM, FileDemand, FileSpace, edge_budget, file_values, \
    forecast_values, plan_files, rendition_shares
from control.steering import hrw_order
from control.topology import TopologyError, parse_topology
from control.window import is_open, next_open, parse_window
from common.content import Title
from common.wire import FillPlanState

GIB = 1 << 30


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


# ------------------------------------------------------------------ budget

def test_budget_is_capacity_less_pinned_less_in_flight_not_less_used() -> None:
    # a full 2 GiB edge (used == capacity) with 0.5 GiB pinned and 0.25 GiB promised to a plan
    assert edge_budget(2 * GIB, GIB // 2, GIB // 4) == 2 * GIB - GIB // 2 - GIB // 4
    # nothing pinned, nothing in flight: the whole edge, however full of unpinned objects
    assert edge_budget(2 * GIB, 0, 0) == 2 * GIB
    # a refresh may also reuse what earlier jobs placed (it can unpin it)
    assert edge_budget(1000, 600, 100, 500, refresh=True) == 800
    assert edge_budget(1000, 600, 100, 500) == 300
    # never negative; headroom keeps a share back
    assert edge_budget(1000, 900, 200) == 0
    assert edge_budget(1000, 0, 0, headroom=0.1) == 900


def test_job_book_counts_in_flight_bytes_and_placed_files() -> None:
    book = JobBook()
    done = PlanRecord("j1-1", "j1", "e1", ("a",), ("/p",), 0, 1.0, FillPlanState.DONE, total_bytes=300,
                      files=("a/235", "a/750"), file_sizes=(100, 200))
    running = PlanRecord("j2-1", "j2", "e1", ("b",), ("/q",), 0, 2.0, FillPlanState.RUNNING, done_bytes=40,
                         total_bytes=100, files=("b/235",), file_sizes=(100,), unpin_files=("a/750",))
    book.add(Job("j1", "isp-a", ("a",), None, 0, 1.0, [done]))
    book.add(Job("j2", "isp-a", ("b",), None, 0, 2.0, [running]))
    assert book.in_flight_bytes("e1") == 60
    assert book.placed_files("e1") == {"a/235": 100, "b/235": 100}  # a/750 unpinned by the later plan
    assert book.in_flight_bytes("e2") == 0 and book.placed_files("e2") == {}


# ------------------------------------------------------------------ valuation

def test_file_value_splits_a_title_by_rendition_share_and_takes_file_keys_as_is() -> None:
    ladder = [235, 750, 1750, 3000, 5800]
    assert rendition_shares(ladder) == pytest.approx({235: 0.05, 750: 0.10, 1750: 0.20, 3000: 0.30, 5800: 0.35})
    assert rendition_shares([235, 750]) == {235: 0.5, 750: 0.5}  # another ladder: equal shares
    v = file_values({"a": 10.0, "b/750": 7.0}, {"a": ladder, "b": [235, 750]})
    assert v["a/5800"] == pytest.approx(3.5) and v["a/235"] == pytest.approx(0.5)
    assert v["b/750"] == 7.0 and v["b/235"] == 0.0  # a per-file view (the pipeline's) wins; absent is 0
    with pytest.raises(ValueError, match="popularity"):
        file_values({"a": -1.0}, {"a": ladder})


def test_forecast_is_measured_plus_the_prior_scaled_to_the_measured_total() -> None:
    prior = {"a/235": 1.0, "b/235": 1.0, "c/235": 2.0}  # total 4
    # measured total 6 (the retired "gone/235" does not count): scale 6 / 4 = 1.5
    got = forecast_values({"a/235": 6.0, "gone/235": 100.0}, prior)
    assert got == {"a/235": 6.0 + 1.5, "b/235": 1.5, "c/235": 3.0}
    # a new release nobody streamed yet (c) ranks by the catalog, below what did stream
    assert sorted(got, key=lambda k: -got[k]) == ["a/235", "c/235", "b/235"]
    assert forecast_values({}, prior) == {k: 0.0 for k in prior}  # nothing measured: callers use the prior
    with pytest.raises(ValueError, match="measured"):
        forecast_values({"a/235": -1.0}, prior)


def test_most_valuable_files_first_until_the_budget_is_used() -> None:
    files = [FileDemand("a", 5800, 3.5, 600), FileDemand("a", 3000, 3.0, 300), FileDemand("b", 5800, 1.0, 300),
             FileDemand("b", 235, 0.1, 50)]
    plan = plan_files(files, [FileSpace("e1", 950)])
    assert plan.fills == {"e1": ("a/5800", "a/3000", "b/235")}  # b/5800 no longer fits after 900 bytes
    assert plan.left_out == {"b/5800": NO_ROOM}
    pinned = plan_files(files, [FileSpace("e1", 0), FileSpace("e2", 0)])
    assert set(pinned.left_out.values()) == {ALL_SPACE_PINNED} and pinned.fills == {"e1": (), "e2": ()}


# ------------------------------------------------------------------ replicas

def test_replicas_in_proportion_to_value_in_the_titles_rendezvous_order() -> None:
    edges = [FileSpace(f"e{i}", 10**9) for i in range(4)]
    files = [FileDemand("hot", 3000, 4.0, 10), FileDemand("warm", 3000, 2.0, 10), FileDemand("mild", 3000, 1.4, 10),
             FileDemand("tail", 3000, 0.1, 10)]
    plan = plan_files(files, edges)
    ids = [e.edge_id for e in edges]
    # round(v / 4.0 * 4 edges): hot 4, warm 2, mild round(1.4) = 1, tail max(1, round(0.1)) = 1
    assert {k: len(v) for k, v in plan.placed.items()} == {"hot/3000": 4, "warm/3000": 2, "mild/3000": 1,
                                                           "tail/3000": 1}
    for f in files:  # the copies are on the first edges steering ranks for the title
        assert plan.placed[f.key] == tuple(hrw_order(f.title, ids)[:len(plan.placed[f.key])])
    # every file of a title lands on the same first edge
    two = plan_files([FileDemand("t", 235, 1.0, 1), FileDemand("t", 750, 1.0, 1)], edges, max_replicas=1)
    assert two.placed["t/235"] == two.placed["t/750"] == (hrw_order("t", ids)[0],)


def test_refresh_keeps_valuable_held_files_and_unpins_the_rest() -> None:
    edges = [FileSpace("e1", 1000, frozenset({"old/235", "keep/235"}))]
    files = [FileDemand("new", 235, 5.0, 600), FileDemand("keep", 235, 3.0, 300), FileDemand("old", 235, 0.5, 300)]
    plan = plan_files(files, edges, refresh=True)
    assert plan.fills == {"e1": ("new/235",)} and plan.unpins == {"e1": ("old/235",)}
    assert plan.placed == {"new/235": ("e1",), "keep/235": ("e1",)} and plan.left_out == {"old/235": NO_ROOM}
    # without refresh nothing held is ever unpinned, and a held file costs nothing more
    same = plan_files(files, [FileSpace("e1", 700, frozenset({"old/235", "keep/235"}))])
    assert same.unpins == {"e1": ()} and same.fills == {"e1": ("new/235",)}


def test_plans_list_unpins_first_sources_and_the_master_playlist_once() -> None:
    title = Title("t", 8.0, (235, 750), 1.0)
    placement = plan_files([FileDemand("t", 750, 2.0, 1), FileDemand("t", 235, 1.0, 1)],
                           [FileSpace("e1", 10, frozenset({"u/235"}))], refresh=True)
    plans = build_file_plans("j", placement, {"t": title, "u": Title("u", 4.0, (235,), 0.0)}, 0, 0.0,
                             {"e1": ["http://peer"]})
    (p,) = plans
    assert p.paths == ("/content/t/master.m3u8", "/content/t/750/index.m3u8", "/content/t/750/0.seg",
                       "/content/t/750/1.seg", "/content/t/235/index.m3u8", "/content/t/235/0.seg",
                       "/content/t/235/1.seg")
    assert p.files == ("t/750", "t/235") and p.unpin_files == ("u/235",)
    assert p.fill_plan().unpin == ["/content/u/235/index.m3u8", "/content/u/235/0.seg"]
    assert p.fill_plan().sources == ["http://peer"]


def test_a_job_that_placed_less_than_asked_is_partial() -> None:
    plan = PlanRecord("j-1", "j", "e1", ("a",), ("/p",), 0, 0.0, FillPlanState.DONE)
    assert Job("j", "isp-a", ("a",), None, 0, 0.0, [plan], left_out={"b/235": NO_ROOM}).state is JobState.PARTIAL
    assert Job("j", "isp-a", ("a",), None, 0, 0.0, [plan]).state is JobState.DONE
    assert Job("j", "isp-a", ("a",), None, 0, 0.0, [], left_out={"b/235": NO_ROOM}).state is JobState.FAILED


# ------------------------------------------------------------------ windows

def test_window_across_midnight_in_local_time() -> None:
    w = parse_window("22:00-06:00", "America/New_York")  # EST = UTC-5 in December
    assert is_open(w, utc(2026, 12, 2, 3, 30))  # 22:30 local
    assert is_open(w, utc(2026, 12, 2, 10, 59))  # 05:59 local
    assert not is_open(w, utc(2026, 12, 2, 11, 0))  # 06:00 local: end is exclusive
    assert next_open(w, utc(2026, 12, 2, 12, 0)) == utc(2026, 12, 3, 3, 0)  # 07:00 -> 22:00 the same day
    assert next_open(w, utc(2026, 12, 2, 4, 0)) == utc(2026, 12, 2, 4, 0)  # open: now


def test_window_in_a_zone_ahead_of_utc_and_across_a_dst_change() -> None:
    w = parse_window("02:00-14:00", "Asia/Tokyo")  # UTC+9, no DST
    assert not is_open(w, utc(2026, 12, 1, 16, 59))  # 01:59 local on the 2nd
    assert is_open(w, utc(2026, 12, 1, 17, 0))  # 02:00 local
    assert next_open(w, utc(2026, 12, 1, 6, 0)) == utc(2026, 12, 1, 17, 0)  # 15:00 local -> 02:00 next day
    ny = parse_window("02:00-14:00", "America/New_York")
    # 8 March 2026: clocks go from 02:00 EST to 03:00 EDT, so 02:00 does not exist; opens at 07:00 UTC
    assert next_open(ny, utc(2026, 3, 8, 6, 0)) == utc(2026, 3, 8, 7, 0)
    assert next_open(ny, utc(2026, 3, 9, 3, 0)) == utc(2026, 3, 9, 6, 0)  # 02:00 EDT = 06:00 UTC


@pytest.mark.parametrize("text, tz, match", [
    ("25:00-03:00", "UTC", "time of day"), ("02:00", "UTC", "time range"),
    ("02:00-14:00", "Mars/Olympus", "unknown time zone")])
def test_bad_windows_are_refused(text: str, tz: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_window(text, tz)


def test_topology_window_fields_and_their_errors() -> None:
    t = parse_topology({"isps": {"isp-a": {"prefixes": ["10.1.0.0/16"], "timezone": "Europe/Paris",
                                           "fill_window": "02:00-14:00", "fill_rate_bps": 1_200_000_000,
                                           "refresh_at": "03:00"}}})
    spec = t.isps["isp-a"]
    assert (str(spec.fill_window), spec.fill_rate_bps, spec.refresh_at) == ("02:00-14:00 Europe/Paris",
                                                                            1_200_000_000, 180)
    for field, value in (("fill_window", "2-14"), ("timezone", "Nowhere/X"), ("refresh_at", "3am"),
                         ("fill_rate_bps", -1)):
        with pytest.raises(TopologyError, match=f"isps.isp-a.{field}"):
            parse_topology({"isps": {"isp-a": {"prefixes": ["10.1.0.0/16"], field: value}}})


# ------------------------------------------------------------------ wire compatibility

def test_added_wire_fields_are_left_off_while_default_so_older_peers_still_decode() -> None:
    from common.wire import FillPlan, Heartbeat

    hb = Heartbeat("e1", "isp-a", "http://127.0.0.1:1", 1, 1.0, "up", 10, 5, 1, 0.0, 0.0, 0.0)
    assert "pinned_bytes" not in hb.to_wire()  # what an older control plane reads unchanged
    assert Heartbeat.unpack(hb.pack()) == hb  # and an older edge's heartbeat decodes with 0
    with_pins = Heartbeat("e1", "isp-a", "http://127.0.0.1:1", 2, 1.0, "up", 10, 5, 1, 0.0, 0.0, 0.0,
                          pinned_bytes=4)
    assert Heartbeat.unpack(with_pins.pack()).pinned_bytes == 4
    plan = FillPlan("p", "j", "e1", ["/content/t/master.m3u8"], 0, 0.0)
    assert "unpin" not in plan.to_wire() and FillPlan.unpack(plan.pack()) == plan


def test_the_cli_exit_code_says_a_job_placed_less_than_asked() -> None:
    from control.preposition_cli import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL, build_parser, exit_code

    assert (exit_code("done"), exit_code("partial"), exit_code("failed")) == (EXIT_OK, EXIT_PARTIAL, EXIT_FAILED)
    assert EXIT_PARTIAL not in (EXIT_OK, EXIT_FAILED)
    args = build_parser().parse_args(["--isp", "isp-a", "--refresh", "--now"])
    assert args.refresh and args.now and args.top is None


def test_a_window_whose_start_is_its_end_is_the_whole_day() -> None:
    w = parse_window("03:00-03:00", "UTC")
    assert all(is_open(w, 86400.0 * 3 + m * 60.0) for m in range(0, 24 * 60, 7))
