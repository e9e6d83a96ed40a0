"""Unit and property tests of the steering ranker (control/steering.py): generated fleets, no IO."""
from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.steering import (
    ORIGIN_ID,
    Candidate,
    EdgeView,
    Ranking,
    SteeringRanker,
    hrw_order,
    hrw_score,
)

EXCLUDED = {"down", "draining", "admin_down"}
TITLES = [f"title-{i}" for i in range(40)]


def edge(eid: str, isp: str, state: str = "up", titles: frozenset[str] = frozenset(), weight: float = 1.0) -> EdgeView:
    return EdgeView(eid, isp, f"http://{eid}.test", state, titles, weight)


@st.composite
def fleets(draw: st.DrawFn, states: tuple[str, ...] = ("up", "up", "up", "suspect", "down", "draining", "admin_down"),
           min_size: int = 0) -> tuple[EdgeView, ...]:
    n = draw(st.integers(min_size, 24))
    n_isps = draw(st.integers(1, 5))
    out = []
    for i in range(n):
        out.append(EdgeView(
            edge_id=f"e{i}",
            isp=f"isp{draw(st.integers(0, n_isps - 1))}",
            url=f"http://127.0.0.1:{20000 + i}",
            state=draw(st.sampled_from(states)),
            titles=frozenset(draw(st.lists(st.sampled_from(TITLES), max_size=6))),
            weight=draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 4.0])),
        ))
    return tuple(out)


client_isp = st.one_of(st.none(), st.sampled_from(["isp0", "isp1", "isp2", "isp3", "isp4", "nowhere"]))
fast = settings(max_examples=150, deadline=None)


# ------------------------------------------------------------------ hash

def test_rendezvous_hash_is_stable_across_processes_and_versions() -> None:
    # Golden values: placement and steering in different processes (and releases) must agree.
    assert hrw_score("tears-of-steel", "edge-a1") == 10566087916759578384
    assert hrw_order("tears-of-steel", ["edge-a1", "edge-a2", "edge-b1", "edge-b2"]) == \
        ["edge-b2", "edge-a1", "edge-b1", "edge-a2"]


def test_rendezvous_spreads_titles_over_edges() -> None:
    edges = [f"e{i}" for i in range(5)]
    firsts = Counter(hrw_order(f"t{k}", edges)[0] for k in range(5000))
    assert set(firsts) == set(edges)
    assert all(800 < n < 1200 for n in firsts.values()), firsts


# ------------------------------------------------------------------ examples

def test_isp_edges_first_then_fallback_then_origin() -> None:
    edges = (edge("a1", "isp-a"), edge("a2", "isp-a"), edge("b1", "isp-b"), edge("b2", "isp-b"))
    r = SteeringRanker(max_candidates=3, origin_url="http://origin.test").rank("t1", "isp-a", edges, 0.0)
    assert [c.isp for c in r.candidates] == ["isp-a", "isp-a", "isp-b", "-"]
    assert [c.reason for c in r.candidates] == ["isp-rendezvous", "isp-rendezvous", "fallback-other-isp", "origin"]
    assert r.candidates[-1] == Candidate(ORIGIN_ID, "http://origin.test", "-", "origin")
    assert [c.edge_id for c in r.candidates[:2]] == hrw_order("t1", ["a1", "a2"])
    assert r.candidates[2].edge_id == hrw_order("t1", ["b1", "b2"])[0]
    other = {"b1", "b2"} - {r.candidates[2].edge_id}
    assert r.rejected == ((other.pop(), "other-isp"),)
    assert r.title == "t1" and r.isp == "isp-a"


def test_no_origin_unless_configured() -> None:
    r = SteeringRanker().rank("t1", "isp-a", (edge("a1", "isp-a", "down"),), 0.0)
    assert r.candidates == () and r.rejected == (("a1", "down"),)


def test_holder_is_preferred_over_rendezvous() -> None:
    first, second = hrw_order("t1", ["a1", "a2"])
    edges: tuple[EdgeView, ...] = (edge("a1", "isp-a"), edge("a2", "isp-a"))
    edges = tuple(e if e.edge_id != second else edge(second, "isp-a", titles=frozenset({"t1"})) for e in edges)
    r = SteeringRanker().rank("t1", "isp-a", edges, 0.0)
    assert [(c.edge_id, c.reason) for c in r.candidates] == [(second, "isp-holds-title"), (first, "isp-rendezvous")]


def test_suspect_only_after_every_up_edge_and_never_unhealthy() -> None:
    edges = (edge("a1", "isp-a", "suspect", frozenset({"t1"})), edge("a2", "isp-a"), edge("a3", "isp-a", "down"),
             edge("a4", "isp-a", "draining"), edge("a5", "isp-a", "admin_down"), edge("a6", "isp-a", "weird"))
    r = SteeringRanker().rank("t1", "isp-a", edges, 0.0)
    assert [c.edge_id for c in r.candidates] == ["a2", "a1"]
    assert dict(r.rejected) == {"a1": "suspect", "a3": "down", "a4": "draining", "a5": "admin_down", "a6": "down"}


def test_unknown_isp_gets_the_fallback_ranking_over_all_edges() -> None:
    edges = tuple(edge(f"{isp}{i}", isp) for isp in ("a", "b", "c") for i in range(2))
    for isp in (None, "nowhere"):
        r = SteeringRanker(max_candidates=6).rank("t9", isp, edges, 0.0)
        assert [c.edge_id for c in r.candidates] == hrw_order("t9", [e.edge_id for e in edges])
        assert {c.reason for c in r.candidates} == {"fallback-other-isp"}


def test_max_candidates_caps_the_edges_not_the_origin() -> None:
    edges = tuple(edge(f"a{i}", "isp-a") for i in range(10))
    r = SteeringRanker(max_candidates=2, origin_url="http://o").rank("t", "isp-a", edges, 0.0)
    assert len(r.candidates) == 3 and r.candidates[-1].edge_id == ORIGIN_ID


def test_bounded_load_moves_a_hot_edge_behind_but_keeps_it() -> None:
    edges = (edge("a1", "isp-a"), edge("a2", "isp-a"))
    ranker = SteeringRanker(epsilon=0.25, window_s=10.0)
    seen = []
    demoted = 0
    for k in range(20):
        r = ranker.rank("hot", "isp-a", edges, k * 0.01)
        assert {c.edge_id for c in r.candidates} == {"a1", "a2"}
        ranker.record(r, k * 0.01)
        seen.append(r.candidates[0].edge_id)
        demoted += ("over-load-bound" in dict(r.rejected).values())
    counts = Counter(seen)
    assert len(counts) == 2 and max(counts.values()) <= math.ceil(1.25 * 20 / 2)  # at most 13 of 20, not 20
    assert demoted >= 20 - max(counts.values())
    # the window slides: after window_s the hot edge is first again
    first = hrw_order("hot", ["a1", "a2"])[0]
    assert ranker.rank("hot", "isp-a", edges, 100.0).candidates[0].edge_id == first
    assert ranker.loads(100.0) == {}


def test_record_ignores_empty_and_origin_rankings() -> None:
    ranker = SteeringRanker()
    ranker.record(Ranking("t", None, (), ()), 0.0)
    ranker.record(Ranking("t", None, (Candidate(ORIGIN_ID, "http://o", "-", "origin"),), ()), 0.0)
    assert ranker.loads(0.0) == {}


@pytest.mark.parametrize("kw", [{"epsilon": -0.1}, {"window_s": 0}, {"max_candidates": 0}, {"max_candidates": True},
                                {"epsilon": math.nan}])
def test_bad_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SteeringRanker(**kw)  # type: ignore[arg-type]


def test_a_list_and_a_tuple_rank_the_same_and_changes_to_a_list_are_seen() -> None:
    ranker = SteeringRanker()
    edges = [edge("a1", "isp-a"), edge("a2", "isp-a")]
    assert ranker.rank("t", "isp-a", edges, 0.0) == ranker.rank("t", "isp-a", tuple(edges), 0.0)
    edges[0] = edge("a1", "isp-a", "down")
    edges[1] = edge("a2", "isp-a", "down")
    assert ranker.rank("t", "isp-a", edges, 0.0).candidates == ()


# ------------------------------------------------------------------ properties over generated fleets

@fast
@given(fleets(), st.sampled_from(TITLES), client_isp, st.integers(1, 6))
def test_never_an_unhealthy_edge_and_every_one_is_rejected_with_its_state(
        edges: tuple[EdgeView, ...], title: str, isp: str | None, max_c: int) -> None:
    r = SteeringRanker(max_candidates=max_c).rank(title, isp, edges, 0.0)
    states = {e.edge_id: e.state for e in edges}
    assert len(r.candidates) <= max_c
    assert len({c.edge_id for c in r.candidates}) == len(r.candidates)
    assert all(states[c.edge_id] in ("up", "suspect") for c in r.candidates)
    rejected = dict(r.rejected)
    assert len(rejected) == len(r.rejected)  # an edge at most once
    for eid, state in states.items():
        if state in EXCLUDED:
            assert rejected[eid] == state
        if state == "suspect":
            assert rejected[eid] == "suspect"
    # the list is filled as far as healthy edges allow
    assert len(r.candidates) == min(max_c, sum(s in ("up", "suspect") for s in states.values()))


@fast
@given(fleets(), st.sampled_from(TITLES), client_isp)
def test_client_isp_first_up_before_suspect_holders_before_others(
        edges: tuple[EdgeView, ...], title: str, isp: str | None) -> None:
    r = SteeringRanker(max_candidates=30).rank(title, isp, edges, 0.0)
    by_id = {e.edge_id: e for e in edges}
    home = [c.isp == isp for c in r.candidates]
    assert home == sorted(home, reverse=True)  # all home candidates come first
    for section in (True, False):
        cands = [by_id[c.edge_id] for c in r.candidates if (c.isp == isp) == section]
        ups = [e.state == "up" for e in cands]
        assert ups == sorted(ups, reverse=True)
        for state in ("up", "suspect"):
            holds = [title in e.titles for e in cands if e.state == state]
            assert holds == sorted(holds, reverse=True)
            group = [e for e in cands if e.state == state]
            for holding in (True, False):
                ids = [e.edge_id for e in group if (title in e.titles) == holding]
                assert ids == hrw_order(title, ids)  # rendezvous order inside each class
    for c in r.candidates:
        if c.isp == isp:
            assert c.reason == ("isp-holds-title" if title in by_id[c.edge_id].titles else "isp-rendezvous")
        else:
            assert c.reason == "fallback-other-isp"


@fast
@given(fleets(), st.lists(st.sampled_from(TITLES), min_size=1, max_size=10, unique=True), client_isp)
def test_first_choice_is_stable_and_deterministic(edges: tuple[EdgeView, ...], titles: list[str],
                                                  isp: str | None) -> None:
    a, b = SteeringRanker(), SteeringRanker()
    for title in titles:
        first = a.rank(title, isp, edges, 0.0)
        assert a.rank(title, isp, edges, 1.0) == first  # unchanged fleet, no recorded load
        assert b.rank(title, isp, list(edges), 5.0) == first  # another ranker, another container


@fast
@given(fleets(min_size=2), st.data(), client_isp)
def test_removing_an_edge_moves_only_the_titles_it_was_first_for(edges: tuple[EdgeView, ...], data: st.DataObject,
                                                                 isp: str | None) -> None:
    gone = data.draw(st.sampled_from([e.edge_id for e in edges]))
    after = tuple(e for e in edges if e.edge_id != gone)
    ranker = SteeringRanker()
    moved = 0
    for title in TITLES:
        before = ranker.rank(title, isp, edges, 0.0).candidates
        now = ranker.rank(title, isp, after, 0.0).candidates
        if before and before[0].edge_id != gone:
            assert now[0] == before[0], title
        elif before:
            moved += 1
    # HRW minimal disruption: the moved titles are exactly the ones the removed edge had
    assert moved == sum(1 for t in TITLES if (c := ranker.rank(t, isp, edges, 0.0).candidates) and c[0].edge_id == gone)


@settings(max_examples=40, deadline=None)
@given(fleets(states=("up", "up", "up", "down", "draining")), client_isp, st.sampled_from([0.1, 0.25, 0.5, 1.0]),
       st.lists(st.sampled_from(TITLES[:8]), min_size=1, max_size=8))
def test_load_bound_holds_over_many_plays(edges: tuple[EdgeView, ...], isp: str | None, eps: float,
                                          hot: list[str]) -> None:
    """Mirrokni et al. 2018: no edge ever gets more than ceil((1+eps) x its weighted fair share)."""
    ranker = SteeringRanker(epsilon=eps, window_s=1e9)
    isps = [isp, "isp0", "isp1", None]
    for k in range(400):  # a skewed workload: a few hot titles, clients from a few ISPs
        r = ranker.rank(hot[k % len(hot)], isps[k % len(isps)], edges, float(k))
        ranker.record(r, float(k))
    loads = ranker.loads(400.0)
    up = [e for e in edges if e.state == "up"]
    for group in {e.isp for e in up}:
        members = [e for e in up if e.isp == group]
        total = sum(loads.get(e.edge_id, 0) for e in members)
        wsum = sum(e.weight for e in members)
        for e in members:
            fair = total * e.weight / wsum
            assert loads.get(e.edge_id, 0) <= (1 + eps) * fair + 1, (e.edge_id, loads, fair)


@settings(max_examples=30, deadline=None)
@given(fleets(states=("up",), min_size=1), st.sampled_from(TITLES))
def test_one_hot_title_spreads_only_as_far_as_the_bound_requires(edges: tuple[EdgeView, ...], title: str) -> None:
    ranker = SteeringRanker(epsilon=0.25, window_s=1e9)
    isp = edges[0].isp
    for k in range(200):
        ranker.record(ranker.rank(title, isp, edges, float(k)), float(k))
    loads = ranker.loads(200.0)
    assert sum(loads.values()) == 200
    assert set(loads) <= {e.edge_id for e in edges if e.isp == isp}  # never leaves the ISP


def test_ranking_says_content_miss_and_health_miss() -> None:
    r = SteeringRanker()
    holder = [edge("a1", "isp-a", titles=frozenset({"t"})), edge("a2", "isp-a")]
    ranked = r.rank("t", "isp-a", holder, 0.0)
    assert not ranked.content_miss and not ranked.health_miss
    ranked = r.rank("u", "isp-a", holder, 0.0)  # nobody holds u: the first choice misses
    assert ranked.content_miss and not ranked.health_miss
    sick = [edge("a1", "isp-a", "down", titles=frozenset({"t"})), edge("a2", "isp-a"), edge("b1", "isp-b")]
    ranked = r.rank("t", "isp-a", sick, 0.0)  # the holder is down: both
    assert ranked.content_miss and ranked.health_miss
    assert not r.rank("t", "isp-b", sick, 0.0).health_miss  # isp-b's edges are all fine
    assert r.rank("t", None, sick, 0.0).health_miss  # unknown client network: any ISP counts
    assert not r.rank("t", "isp-a", [], 0.0).content_miss  # nothing offered, nothing missed
