"""The scenario parser: shipped files parse; every kind of bad input is refused with the
field named, before anything starts; the seeded timeline replays."""
from __future__ import annotations

from pathlib import Path

import pytest

from chaos.scenario import parse_scenario, timeline
from chaos.toxics import Latency
from common.errors import BadRequest

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "chaos" / "scenarios").glob("*.toml"))

BASE = """
name = "t"
duration_s = 30
seed = 5
[cohorts]
viewers = 6
[[steady_state]]
metric = "failed"
"""


def test_the_library_parses() -> None:
    assert len(SCENARIOS) >= 3
    for path in SCENARIOS:
        s = parse_scenario(path.read_text())
        assert s.name == path.stem and s.faults and s.steady_state


def test_a_full_scenario_parses_to_its_fields() -> None:
    s = parse_scenario(BASE + """
[[abort]]
metric = "failed"
max_excess = 0.5
[[fault]]
kind = "latency"
target = "link:player-edge"
at_s = [1, 4]
duration_s = 10
latency_s = 0.2
jitter_s = 0.05
[[fault]]
kind = "pause"
target = "edge:isp1-e1"
at_s = 2
duration_s = 5
[[fault]]
kind = "restart"
target = "edge:isp1-e1"
at_s = 20
""")
    assert (s.viewers, s.seed, s.duration_s) == (6, 5, 30.0)
    assert s.buffer_s == 60.0  # the players' default buffer cap
    assert parse_scenario(BASE.replace("[cohorts]", "[cohorts]\nbuffer_s = 8")).buffer_s == 8.0
    assert s.abort[0].max_excess == 0.5 and s.abort[0].min_sessions == 2
    assert s.faults[0].toxic == Latency("fault-0-latency", latency_s=0.2, jitter_s=0.05)
    assert s.faults[1].toxic is None and s.faults[2].duration_s == 0.0
    plan = timeline(s)
    assert plan == timeline(s)  # seeded: one seed, one timeline
    lat = next(tf for tf in plan if tf.fault.index == 0)
    assert 1 <= lat.start_s <= 4 and lat.end_s == pytest.approx(lat.start_s + 10)
    assert [tf.start_s for tf in plan] == sorted(tf.start_s for tf in plan)


@pytest.mark.parametrize("extra, message", [
    ("colour = 1\n", r"^steady_state\[0\]\.colour: unknown field"),
    ("[[fault]]\nkind = 'meteor'\ntarget = 'origin'\nat_s = 1\nduration_s = 1\n",
     r"fault\[0\]\.kind: unknown fault 'meteor'"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'moon'\nat_s = 1\nduration_s = 1\n",
     r"fault\[0\]\.target: 'kill' needs a service"),
    ("[[fault]]\nkind = 'latency'\ntarget = 'edge:a'\nat_s = 1\nduration_s = 1\n",
     r"fault\[0\]\.target: 'latency' needs a link"),
    ("[[fault]]\nkind = 'latency'\ntarget = 'link:player-edge'\nat_s = 1\nduration_s = 1\nlatency_ms = 5\n",
     r"fault\[0\]\.latency_ms: unknown field for toxic 'latency'"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'origin'\nat_s = 1\nduration_s = 1\nsignal = 9\n",
     r"fault\[0\]\.signal: unknown field"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'origin'\nat_s = 25\nduration_s = 10\n",
     r"fault\[0\]\.at_s: impossible timeline: the fault may end at 35 s"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'origin'\nat_s = [9, 3]\nduration_s = 1\n",
     r"fault\[0\]\.at_s: impossible range"),
    ("[[fault]]\nkind = 'restart'\ntarget = 'origin'\nat_s = 1\nduration_s = 3\n",
     r"fault\[0\]\.duration_s: a restart is instantaneous"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'origin'\nat_s = 1\nduration_s = 0\n",
     r"fault\[0\]\.duration_s: must be > 0"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'edge:x'\nat_s = 1\nduration_s = 10\n"
     "[[fault]]\nkind = 'pause'\ntarget = 'edge:x'\nat_s = 5\nduration_s = 2\n",
     r"fault\[1\]\.at_s: impossible timeline: pause on edge:x may overlap fault\[0\] \(kill\)"),
    ("[[steady_state]]\nmetric = 'spx'\n", r"steady_state\[1\]\.metric: unknown metric 'spx'"),
    ("[[fault]]\nkind = 'disk_full'\ntarget = 'origin'\nat_s = 1\nduration_s = 1\n", r"fault\[0\]\.target: 'disk_full' needs edge:ID"),
    ("[[fault]]\nkind = 'origin_slow'\ntarget = 'origin'\nat_s = 1\nduration_s = 1\n", r"fault\[0\]\.latency_ms: required for origin_slow"),
    ("[[fault]]\nkind = 'partition'\ntarget = 'isp:a'\nat_s = 1\nduration_s = 1\nlatency_s = 1\n", r"fault\[0\]\.latency_s: unknown field for partition"),
    ("[[steady_state]]\nmetric = 'failed'\nalpha = 0.9\n", r"steady_state\[1\]\.alpha: must be < 0.5"),
    ("[[abort]]\nmetric = 'failed'\n", r"abort\[0\]\.max_excess: required"),
    ("[[fault]]\nkind = 'latency'\ntarget = 'link:edge-cdn'\nat_s = 1\nduration_s = 1\n",
     r"fault\[0\]\.target: 'latency' needs a link \(link:player-edge \| link:edge-origin"),
    ("[[fault]]\nkind = 'latency'\ntarget = 'link:player-edge'\nat_s = 1\nduration_s = 1\nedge = 3\n",
     r"fault\[0\]\.edge: must be a non-empty string"),
    ("[[fault]]\nkind = 'latency'\ntarget = 'link:player-edge'\nat_s = 1\nduration_s = 1\nedge = 'a/b'\n",
     r"fault\[0\]\.edge: 'a/b' is not an edge id"),
    ("[[fault]]\nkind = 'kill'\ntarget = 'edge:x'\nat_s = 1\nduration_s = 1\nedge = 'x'\n",
     r"fault\[0\]\.edge: unknown field"),
    ("[[fault]]\nkind = 'disk_full'\ntarget = 'edge:x'\nat_s = 1\nduration_s = 1\nedge = 'x'\n",
     r"fault\[0\]\.edge: unknown field for disk_full"),
])
def test_bad_input_names_the_field(extra: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_scenario(BASE + extra)


@pytest.mark.parametrize("text, message", [
    ("colour = 1\n" + BASE, r"^colour: unknown field"),
    ("name = 'x'\nduration_s = 1\n", r"cohorts: required table"),
    ("name = 'x'\nduration_s = 1\n[cohorts]\nviewers = 1\n", r"cohorts\.viewers: must be >= 2"),
    ("name = 'x'\nduration_s = '10'\n", r"duration_s: must be a number"),
    ("name = 'x'\nduration_s = 1\n[cohorts]\nviewers = 4\n", r"steady_state: at least one"),
    ("name = = 'x'", r"not valid TOML"),
    ("name = 'x'\nduration_s = 1\n[cohorts]\nviewers = 4\nbuffer_s = 0\n", r"cohorts\.buffer_s: must be > 0"),
])
def test_bad_documents_are_refused(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_scenario(text)


def test_known_services_refuse_a_missing_edge() -> None:
    text = BASE + "[[fault]]\nkind = 'kill'\ntarget = 'edge:nope'\nat_s = 1\nduration_s = 1\n"
    with pytest.raises(BadRequest, match=r"fault\[0\]\.target: no service 'edge:nope'"):
        parse_scenario(text, known_services={"edge:isp1-e1", "origin", "control"})


@pytest.mark.parametrize("link", ["player-edge", "edge-control", "edge-origin", "edge-peer"])
def test_a_toxic_goes_on_any_of_the_four_links_and_on_one_edge_of_it(link: str) -> None:
    s = parse_scenario(BASE + f"""
[[fault]]
kind = "truncate"
target = "link:{link}"
at_s = 1
duration_s = 5
after_bytes = 1000
[[fault]]
kind = "latency"
target = "link:{link}"
edge = "isp-a-1"
at_s = 1
duration_s = 5
latency_s = 0.1
""")
    assert [f.target for f in s.faults] == [f"link:{link}"] * 2
    assert s.faults[0].edge is None and s.faults[1].edge == "isp-a-1"
    assert s.faults[1].toxic == Latency("fault-1-latency", latency_s=0.1)  # `edge` is not the toxic's


def test_known_services_refuse_a_missing_edge_of_a_link_toxic() -> None:
    text = BASE + "[[fault]]\nkind = 'reset'\ntarget = 'link:edge-peer'\nedge = 'nope'\nat_s = 1\nduration_s = 1\n"
    with pytest.raises(BadRequest, match=r"fault\[0\]\.edge: no edge 'nope' in this topology \(known: isp1-e1\)"):
        parse_scenario(text, known_services={"edge:isp1-e1", "origin", "control"})
