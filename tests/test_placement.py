"""Unit and property tests of the placement planner (control/placement.py) and its agreement with steering."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.placement import EdgeSpace, PlacementPlan, TitleDemand, plan_placement, target_replicas
from control.steering import EdgeView, SteeringRanker, hrw_order

fast = settings(max_examples=150, deadline=None)


@st.composite
def demands(draw: st.DrawFn, max_size: int = 30) -> list[TitleDemand]:
    ids = draw(st.lists(st.integers(0, 200), unique=True, max_size=max_size))
    return [TitleDemand(f"t{i}", draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0, 3.0, 10.0])),
                        draw(st.integers(0, 5_000))) for i in ids]


@st.composite
def spaces(draw: st.DrawFn, titles: list[str] | None = None, min_size: int = 0) -> list[EdgeSpace]:
    n = draw(st.integers(min_size, 10))
    pool = titles or [f"t{i}" for i in range(20)]
    return [EdgeSpace(f"e{i}", draw(st.integers(0, 30_000)),
                      frozenset(draw(st.lists(st.sampled_from(pool), max_size=3)))) for i in range(n)]


def apply(plan: PlacementPlan, edges: list[EdgeSpace]) -> dict[str, set[str]]:
    return {e.edge_id: set(e.holds) | set(plan.assignments[e.edge_id]) for e in edges}


# ------------------------------------------------------------------ examples

def test_replicas_follow_popularity() -> None:
    assert [target_replicas(p, 10.0, 4) for p in (10.0, 5.0, 2.0, 1.0, 0.0)] == [4, 2, 1, 1, 1]
    assert target_replicas(10.0, 10.0, 4, max_replicas=2) == 2
    assert target_replicas(0.0, 0.0, 3) == 1 and target_replicas(1.0, 1.0, 0) == 0


def test_first_copy_goes_where_steering_goes_first() -> None:
    edges = [EdgeSpace(f"e{i}", 10_000) for i in range(4)]
    plan = plan_placement([TitleDemand("a", 1.0, 100), TitleDemand("b", 0.2, 100)], edges)
    assert plan.replicas == {"a": 4, "b": 1}
    assert plan.assignments[hrw_order("b", [e.edge_id for e in edges])[0]] in (("a", "b"), ("b", "a"))
    assert all("a" in ts for ts in plan.assignments.values())
    assert plan.unplaced == ()


def test_a_holder_counts_as_a_replica_and_gets_no_fill() -> None:
    ids = ["e0", "e1", "e2"]
    not_first = hrw_order("a", ids)[2]
    edges = [EdgeSpace(e, 1_000, frozenset({"a"}) if e == not_first else frozenset()) for e in ids]
    plan = plan_placement([TitleDemand("a", 1.0, 10), TitleDemand("z", 3.0, 10)], edges)
    assert plan.replicas["a"] == 1 and all("a" not in ts for ts in plan.assignments.values())


def test_what_fits_nowhere_is_unplaced_and_the_least_popular_lose_space_first() -> None:
    edges = [EdgeSpace("e0", 100), EdgeSpace("e1", 100)]
    plan = plan_placement([TitleDemand("big", 5.0, 101), TitleDemand("hot", 5.0, 100), TitleDemand("cold", 1.0, 100)],
                          edges)
    assert plan.unplaced == ("big", "cold")
    assert plan.replicas == {"big": 0, "hot": 2, "cold": 0}
    assert plan.assignments == {"e0": ("hot",), "e1": ("hot",)}


def test_headroom_keeps_a_share_free() -> None:
    edges = [EdgeSpace("e0", 1000)]
    assert plan_placement([TitleDemand("a", 1.0, 900)], edges, headroom=0.2).unplaced == ("a",)
    assert plan_placement([TitleDemand("a", 1.0, 800)], edges, headroom=0.2).unplaced == ()


def test_no_edges_places_nothing_and_no_titles_fills_nothing() -> None:
    plan = plan_placement([TitleDemand("a", 1.0, 1)], [])
    assert plan == PlacementPlan({}, ("a",), {"a": 0})
    assert plan_placement([], [EdgeSpace("e0", 5)]) == PlacementPlan({"e0": ()}, (), {})


@pytest.mark.parametrize(("titles", "edges", "kw"), [
    ([TitleDemand("a", 1.0, 1), TitleDemand("a", 2.0, 1)], [], {}),
    ([TitleDemand("a", -1.0, 1)], [], {}),
    ([TitleDemand("a", float("nan"), 1)], [], {}),
    ([TitleDemand("a", 1.0, -1)], [], {}),
    ([], [EdgeSpace("e", 1), EdgeSpace("e", 2)], {}),
    ([], [], {"headroom": 1.0}),
    ([], [], {"headroom": -0.1}),
    ([], [], {"max_replicas": 0}),
])
def test_bad_input_is_refused(titles: list[TitleDemand], edges: list[EdgeSpace], kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        plan_placement(titles, edges, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ properties

@fast
@given(demands(), spaces(), st.sampled_from([0.0, 0.1, 0.5]), st.one_of(st.none(), st.integers(1, 4)))
def test_never_over_capacity_and_replicas_add_up(titles: list[TitleDemand], edges: list[EdgeSpace], headroom: float,
                                                 max_replicas: int | None) -> None:
    plan = plan_placement(titles, edges, headroom=headroom, max_replicas=max_replicas)
    size = {t.title: t.size_bytes for t in titles}
    assert set(plan.assignments) == {e.edge_id for e in edges}
    for e in edges:
        filled = plan.assignments[e.edge_id]
        assert list(filled) == sorted(set(filled))
        assert not set(filled) & e.holds  # a holder gets no fill
        assert sum(size[t] for t in filled) <= e.free_bytes * (1 - headroom)
    after = apply(plan, edges)
    for t in titles:
        on = sum(t.title in held for held in after.values())
        assert plan.replicas[t.title] == on
        if t.title in plan.unplaced:
            assert on == 0
        else:
            assert on >= 1
        n_filled = sum(t.title in plan.assignments[e.edge_id] for e in edges)
        if n_filled:
            cap = len(edges) if max_replicas is None else min(len(edges), max_replicas)
            assert on <= max(cap, on - n_filled)  # fills never push a title past its target
    assert plan == plan_placement(list(reversed(titles)), edges, headroom=headroom, max_replicas=max_replicas)


@fast
@given(demands(), st.integers(1, 10), st.one_of(st.none(), st.integers(1, 6)))
def test_with_room_more_popular_titles_get_at_least_as_many_replicas(titles: list[TitleDemand], n: int,
                                                                     max_replicas: int | None) -> None:
    edges = [EdgeSpace(f"e{i}", 10**9) for i in range(n)]
    plan = plan_placement(titles, edges, max_replicas=max_replicas)
    assert plan.unplaced == ()
    ranked = sorted(titles, key=lambda t: t.popularity)
    for lo, hi in zip(ranked, ranked[1:]):
        assert plan.replicas[lo.title] <= plan.replicas[hi.title]
    for t in titles:
        assert 1 <= plan.replicas[t.title] <= (n if max_replicas is None else min(n, max_replicas))


@fast
@given(demands(max_size=15), st.integers(1, 8), st.data())
def test_placed_titles_are_where_steering_sends_clients_first(titles: list[TitleDemand], n: int,
                                                              data: st.DataObject) -> None:
    """With capacity to spare, steering's first choice (after the fills) is the planner's first copy."""
    held_before = data.draw(st.lists(st.sampled_from([t.title for t in titles] or ["x"]), max_size=n))
    edges = [EdgeSpace(f"e{i}", 10**9, frozenset(held_before[i:i + 1])) for i in range(n)]
    plan = plan_placement(titles, edges)
    after = apply(plan, edges)
    views = tuple(EdgeView(e.edge_id, "isp-a", f"http://{e.edge_id}", "up", frozenset(after[e.edge_id]))
                  for e in edges)
    ranker = SteeringRanker()
    for t in titles:
        first = ranker.rank(t.title, "isp-a", views, 0.0).candidates[0].edge_id
        assert t.title in after[first]  # steering sends the client to a copy
        if not any(t.title in e.holds for e in edges):  # the planner chose every copy itself
            assert first == hrw_order(t.title, [e.edge_id for e in edges])[0]
            assert t.title in plan.assignments[first]


@fast
@given(demands(), spaces(min_size=1))
def test_the_first_copy_is_the_first_rendezvous_edge_with_room(titles: list[TitleDemand],
                                                                edges: list[EdgeSpace]) -> None:
    plan = plan_placement(titles, edges)
    ids = [e.edge_id for e in edges]
    by_id = {e.edge_id: e for e in edges}
    for t in titles:
        if any(t.title in e.holds for e in edges) or t.title in plan.unplaced:
            continue
        order = hrw_order(t.title, ids)
        first_fill = next(e for e in order if t.title in plan.assignments[e])
        # every edge before it in rendezvous order was full for this title
        for e in order[:order.index(first_fill)]:
            used = sum(next(x.size_bytes for x in titles if x.title == s) for s in plan.assignments[e])
            assert by_id[e].free_bytes - used < t.size_bytes
