"""`ocsim plan`: input validation, the back-of-envelope formulas on hand-computed cases, the
model against the control plane's planner, and the search on small cases whose answer is known."""
from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from ocsim.topology import load_topology
from plan import envelope as env
from plan.inputs import PlanError, load_plan, parse_plan, window_seconds
from plan.model import placement_for, simulate_isp, top_files
from plan.output import topology_for, write_topology
from plan.search import search
from plan.workload import Scale, make_day

ROOT = Path(__file__).resolve().parent.parent

SMALL: dict[str, Any] = {
    "audience": {"isps": {"isp-a": 1000}, "daily_amplitude": 0.5, "peak_hour": 20.0, "mean_watch_minutes": 10.0},
    "catalog": {"titles": 40, "mean_duration_minutes": 20.0, "popularity_alpha": 0.9, "new_releases_per_day": 0},
    "ladder": {"kbps": [750, 3000], "share": [0.5, 0.5]},
    "targets": {"offload": 0.9, "startup_p90_s": 10.0, "rebuffer_ratio": 1.0, "origin_egress_cap": "100Gbit"},
    "edge": {"nic": "100Gbit", "policies": ["lru"], "fill_windows": ["02:00-14:00"], "preposition_share": 0.8,
             "extra_edges": 0, "options": [{"disk": "1GB", "cost": 1.0}]},
    "sim": {"titles": 20, "requests": 3000, "time_factor": 10.0, "seed": 3},
}


def small(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SMALL)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        t = doc
        for k in path:
            t = t[k]
        t[last] = value
    return doc


# --- inputs ---------------------------------------------------------------------------------

def test_the_example_plan_loads() -> None:
    p = load_plan(ROOT / "plans" / "example.toml")
    assert set(p.audience.peak_viewers) == {"isp-a", "isp-b", "isp-c"}
    assert abs(sum(p.ladder.share) - 1) < 1e-9


@pytest.mark.parametrize(("changes", "field"), [
    ({"ladder__share": [0.5, 0.4]}, "ladder.share: sums to 0.9"),
    ({"ladder__share": [1.0]}, "ladder.share"),
    ({"ladder__kbps": [3000, 750]}, "ladder.kbps"),
    ({"edge__fill_windows": ["02:00-26:00"]}, "edge.fill_windows[0]"),
    ({"edge__fill_windows": ["02:00"]}, "edge.fill_windows[0]"),
    ({"targets__offload": 1.5}, "targets.offload"),
    ({"targets__origin_egress_cap": "fast"}, "targets.origin_egress_cap"),
    ({"audience__isps": {"ISP A": 10}}, "audience.isps.ISP A"),
    ({"audience__isps": {"isp-a": 0}}, "audience.isps.isp-a"),
    ({"edge__policies": ["fifo"]}, "edge.policies[0]"),
    ({"edge__options": [{"disk": "1XB", "cost": 1}]}, "edge.options[0].disk"),
    ({"edge__options": [{"disk": "1GB"}]}, "edge.options[0].cost"),
    ({"edge__colour": "red"}, "edge.colour: unknown field"),
    ({"sim__titles": 41}, "sim.titles"),
    ({"catalog__new_releases_per_day": 30}, "catalog.new_releases_per_day"),
])
def test_bad_input_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(small(**changes))
    assert field in str(info.value)


def test_a_missing_table_is_named() -> None:
    doc = small()
    del doc["targets"]
    with pytest.raises(PlanError, match=r"^targets: required"):
        parse_plan(doc)


def test_flags_override_the_file_and_are_checked_the_same_way() -> None:
    p = load_plan(ROOT / "plans" / "example.toml", ["targets.offload=0.95", "audience.isps.isp-d=5000",
                                                    'edge.policies=["lru"]'])
    assert p.targets.offload == 0.95 and p.audience.peak_viewers["isp-d"] == 5000 and p.edge.policies == ("lru",)
    with pytest.raises(PlanError, match=r"ladder\.share: sums to"):
        load_plan(ROOT / "plans" / "example.toml", ["ladder.share=[0.5, 0.5, 0, 0, 0.1]"])
    with pytest.raises(PlanError, match="FIELD=VALUE"):
        load_plan(ROOT / "plans" / "example.toml", ["targets.offload"])


def test_window_seconds_cross_midnight() -> None:
    assert window_seconds("02:00-14:00") == 12 * 3600
    assert window_seconds("22:00-06:00") == 8 * 3600
    assert window_seconds("00:00-24:00") == 86_400


# --- back of envelope, by hand ------------------------------------------------------------------

def test_mean_concurrency_and_peak_egress() -> None:
    assert env.mean_concurrency(16_000, 0.6).value == pytest.approx(10_000)
    # 1000 viewers x (1000 x 0.5 + 3000 x 0.5) kbit/s = 2 Gbit/s
    assert env.peak_egress(1000, [1000, 3000], [0.5, 0.5]).value == pytest.approx(2e9)


def test_appliances_round_up_against_the_usable_nic() -> None:
    assert env.appliances(2e9, 1e9, 0.8).value == 3  # 2 / 0.8 = 2.5 -> 3
    assert env.appliances(1.6e9, 1e9, 0.8).value == 2  # exactly 2
    assert env.appliances(1.0, 1e9, 0.8).value == 1


def test_daily_and_catalog_bytes() -> None:
    # 100 viewers x 86400 s x 8 Mbit/s / 8 = 8.64e12 bytes
    assert env.daily_bytes(100, 8000).value == pytest.approx(8.64e12)
    # 10 titles x 100 s x (1000 + 1000) kbit/s / 8 = 2.5e8 bytes
    assert env.catalog_bytes(10, 100, [1000, 1000]).value == pytest.approx(2.5e8)


def test_storage_for_offload_takes_the_densest_files() -> None:
    # two titles, weights 1 and 1/2; one rung of 8 kbit/s for 10 s = 10,000 bytes a file;
    # demand 1 and 0.5 (of 1.5): 60 % needs 0.9 -> the first file; 70 % needs 1.05 -> both
    assert env.storage_for_offload(0.6, 2, 1.0, 10, [8], [1.0]).value == pytest.approx(10_000)
    assert env.storage_for_offload(0.7, 2, 1.0, 10, [8], [1.0]).value == pytest.approx(20_000)
    # two rungs, one title: files by share: 0.75 of views at 1 kbit/s, 0.25 at 3 kbit/s;
    # demand 0.75 x 1 = 0.75 and 0.25 x 3 = 0.75: half the demand is the low rung (1250 bytes)
    assert env.storage_for_offload(0.5, 1, 1.0, 10, [1, 3], [0.75, 0.25]).value == pytest.approx(1250)


def test_fill_rate_and_origin_egress() -> None:
    assert env.fill_rate_needed(9e9, 3600).value == pytest.approx(2e7)  # 9 GB in an hour = 20 Mbit/s
    assert env.origin_egress(1e11, 0.9).value == pytest.approx(1e10)


def test_release_day_weight_matches_a_numeric_integral() -> None:
    boost, h, day = 5.0, 6 * 3600.0, 86_400.0
    steps = 2000
    total = 0.0
    for i in range(steps):  # launch time l, midpoint rule, of the weight integrated to the day's end
        launch = (i + 0.5) * day / steps
        total += (h / math.log(2)) * (1 - 2 ** (-(day - launch) / h))
    numeric = boost * total / steps / day
    assert env.release_day_weight(boost, h) == pytest.approx(numeric, rel=1e-4)


def test_every_figure_shows_its_formula_and_inputs() -> None:
    p = parse_plan(small())
    for figs in env.envelope(p).values():
        for f in figs:
            assert f.formula and f.inputs and "=" in f.line()


# --- the model against the control plane's planner ------------------------------------------------

def test_the_model_pins_what_the_control_plane_places() -> None:
    p = parse_plan(small())
    day = make_day(p, Scale(20, 3000, 10.0))
    ids = ["isp-a-1", "isp-a-2"]
    cap = 10**12
    top = top_files(day, 10**15)
    placed = placement_for(day, ids, cap, top)
    assert top == 40  # every file (20 titles x 2 rungs) fits
    # every file somewhere; the most valuable on both edges (replicas in proportion to value)
    assert {k for files in placed.values() for k in files} == {
        f"{t.id}/{r}" for t in day.catalog.titles.values() for r in t.renditions}
    assert set(placed["isp-a-1"]) & set(placed["isp-a-2"])
    run = simulate_isp(day, "isp-a", 2, cap, "lru", top, p.network, 1.0)
    assert run.requests == day.requests and run.hits == run.requests and run.offload == 1.0


def test_without_pre_positioning_the_first_request_of_each_object_is_a_miss() -> None:
    p = parse_plan(small())
    day = make_day(p, Scale(20, 3000, 10.0))
    run = simulate_isp(day, "isp-a", 1, 10**12, "lru", 0, p.network, 1.0)
    distinct = {(s.title, s.kbps, n) for s in day.sessions for n in range(s.first, s.first + s.count)}
    assert run.requests - run.hits == len(distinct)


# --- the search -------------------------------------------------------------------------------------

def _catalog_bytes(p: Any) -> int:
    day = make_day(p, Scale(p.sim.titles, 0, p.sim.time_factor))
    return sum(day.file_bytes(t.id, k) for t in day.catalog.titles.values() for k in t.renditions) \
        * int(day.catalog_factor * p.sim.time_factor)


def test_search_picks_the_cheapest_option_that_meets_the_targets() -> None:
    base = parse_plan(small())
    full = _catalog_bytes(base)
    # 1 % of the catalog cannot reach 90 %; 2x and 4x the catalog pin all of it (offload 1.0);
    # 2x is cheaper, so it is the answer
    p = parse_plan(small(edge__options=[{"disk": int(full * 0.01), "cost": 1.0}, {"disk": full * 2, "cost": 2.0},
                                        {"disk": full * 4, "cost": 3.0}]))
    day = make_day(p, Scale(p.sim.titles, p.sim.requests, p.sim.time_factor, p.sim.warmup))
    result = search(p, day)
    assert result.best is not None
    assert result.best.choice.option.disk_bytes == full * 2
    assert result.best.offload == 1.0
    assert result.best.choice.edges == (("isp-a", 1),)
    small_disk = [e for e in result.evaluated if e.choice.option.disk_bytes == int(full * 0.01)]
    assert small_disk and "offload" in small_disk[0].failures


def test_search_says_which_target_fails_and_what_would_meet_it() -> None:
    base = parse_plan(small())
    full = _catalog_bytes(base)
    p = parse_plan(small(edge__options=[{"disk": int(full * 0.01), "cost": 1.0}]))
    result = search(p, make_day(p, Scale(p.sim.titles, p.sim.requests, p.sim.time_factor, p.sim.warmup)))
    assert result.best is None
    text = " ".join(result.shortfalls)
    assert "offload 90.0% is not met" in text and "lower bound" in text and "TB per ISP" in text and "is below it" in text


def test_search_stops_at_its_time_budget_and_says_so() -> None:
    p = parse_plan(small(sim__time_budget_s=1.0, edge__options=[{"disk": "1GB", "cost": 1}, {"disk": "2GB", "cost": 2}]))
    ticks = iter(range(0, 1000, 5))  # every clock read is 5 s later
    result = search(p, make_day(p, Scale(p.sim.titles, p.sim.requests, p.sim.time_factor, p.sim.warmup)),
                    clock=lambda: float(next(ticks)))
    assert not result.complete
    assert any("time budget" in s for s in result.shortfalls)


def test_the_chosen_topology_loads_with_the_real_loader(tmp_path: Path) -> None:
    base = parse_plan(small())
    full = _catalog_bytes(base)
    p = parse_plan(small(edge__options=[{"disk": full * 2, "cost": 1.0}], audience__isps={"isp-a": 1000, "isp-b": 500}))
    result = search(p, make_day(p, Scale(p.sim.titles, p.sim.requests, p.sim.time_factor, p.sim.warmup)))
    assert result.best is not None
    path = write_topology(topology_for(p, result.best), tmp_path / "topology.toml")
    topo = load_topology(path)
    assert {e.id for e in topo.edges} == {"isp-a-1", "isp-b-1"}
    assert all(e.capacity == full * 2 and e.policy == "lru" for e in topo.edges)
    assert topo.isps["isp-a"].fill_window == "02:00-14:00"
    assert tomllib.loads(path.read_text())["origin"]["total_bandwidth"] == str(p.targets.origin_egress_cap_bps)


def test_the_cli_refuses_bad_input_with_the_field_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from plan.cli import main
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "plans" / "example.toml").read_text().replace("share = [0.05, 0.10, 0.20, 0.30, 0.35]",
                                                                         "share = [0.05, 0.10, 0.20, 0.30, 0.30]"))
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ladder.share: sums to 0.95, must sum to 1" in err and "Traceback" not in err


def test_a_warm_up_day_is_lived_but_not_counted() -> None:
    p = parse_plan(small())
    cold = make_day(p, Scale(20, 3000, 10.0))
    warm = make_day(p, Scale(20, 3000, 10.0, warmup=True))
    assert warm.sessions == cold.sessions and warm.warmup and all(s.start_s < 0 for s in warm.warmup)
    cap = 2 * 10**8
    r_cold = simulate_isp(cold, "isp-a", 1, cap, "lru", 0, p.network, 1.0)
    r_warm = simulate_isp(warm, "isp-a", 1, cap, "lru", 0, p.network, 1.0)
    assert r_warm.requests == r_cold.requests == cold.requests
    assert r_warm.hits > r_cold.hits  # the caches start the counted day holding yesterday's titles
