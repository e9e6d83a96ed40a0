"""Unit and property tests of the edge health state machine (control/health.py). Time is a number."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.health import (
    EVENT_TABLE,
    HEALTH_STATES,
    HEALTH_TABLE,
    STEERABLE_STATES,
    EdgeHealth,
    liveness,
)


def beating(at: float = 100.0, state: str = "up", interval: float = 1.0) -> EdgeHealth:
    h = EdgeHealth(interval)
    h.on_heartbeat(at, state)
    return h


def test_never_heard_from_is_down() -> None:
    h = EdgeHealth()
    assert h.state_at(0.0) == "down" and h.missed_at(0.0) is None and h.last_heartbeat is None


@pytest.mark.parametrize(("age", "missed", "state"), [
    (0.0, 0, "up"), (1.0, 0, "up"), (1.49, 0, "up"),  # on time, or late within the grace
    (1.5, 1, "suspect"), (2.49, 1, "suspect"), (2.5, 2, "suspect"), (3.49, 2, "suspect"),
    (3.5, 3, "down"), (100.0, 99, "down"),
])
def test_missed_heartbeats_with_half_an_interval_of_grace(age: float, missed: int, state: str) -> None:
    h = beating(100.0)
    assert h.missed_at(100.0 + age) == missed
    assert h.state_at(100.0 + age) == state


def test_interval_and_grace_scale() -> None:
    h = EdgeHealth(interval=2.0)
    h.on_heartbeat(0.0, "up")
    assert [h.state_at(t) for t in (2.9, 3.0, 6.9, 7.0)] == ["up", "suspect", "suspect", "down"]
    h = EdgeHealth(interval=1.0, grace=0.0)
    h.on_heartbeat(0.0, "up")
    assert [h.state_at(t) for t in (0.99, 1.0, 2.99, 3.0)] == ["up", "suspect", "suspect", "down"]


def test_a_heartbeat_revives_a_down_edge() -> None:
    h = beating(0.0)
    assert h.state_at(10.0) == "down"
    h.on_heartbeat(10.0, "up")
    assert h.state_at(10.0) == "up"


def test_draining_is_never_steerable_and_turns_down_when_silent() -> None:
    h = beating(0.0, "draining")
    assert h.state_at(0.5) == "draining" and h.state_at(2.0) == "draining"
    assert h.state_at(3.5) == "down"
    assert not h.steerable_at(0.5)


def test_admin_down_overrides_and_admin_up_restores_what_heartbeats_say() -> None:
    h = beating(0.0)
    h.on_admin(True)
    assert h.state_at(0.1) == "admin_down" and h.admin_down
    h.on_heartbeat(1.0, "up")  # still recorded
    assert h.state_at(1.1) == "admin_down"
    h.on_admin(False)
    assert h.state_at(1.1) == "up"
    h.on_admin(True)
    h.on_admin(False)
    assert h.state_at(10.0) == "down"  # it died meanwhile


def test_out_of_order_heartbeats_are_ignored() -> None:
    h = beating(10.0, "draining")
    h.on_heartbeat(9.0, "up")  # delayed delivery of an older heartbeat
    assert h.reported_state == "draining" and h.last_heartbeat == 10.0
    assert h.state_at(10.5) == "draining"


def test_time_before_the_last_heartbeat_counts_as_fresh() -> None:
    assert beating(10.0).state_at(5.0) == "up"


@pytest.mark.parametrize("bad", ["down", "suspect", "", "UP", None])
def test_edges_may_only_report_up_or_draining(bad: object) -> None:
    with pytest.raises(ValueError):
        EdgeHealth().on_heartbeat(0.0, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", [{"interval": 0}, {"interval": -1}, {"interval": math.inf}, {"interval": math.nan},
                                {"grace": -0.1}, {"grace": math.nan}])
def test_bad_parameters(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EdgeHealth(**kw)


def test_non_finite_heartbeat_time_is_refused() -> None:
    with pytest.raises(ValueError):
        EdgeHealth().on_heartbeat(math.nan, "up")


def test_tables_cover_every_reachable_input_and_name_only_known_states() -> None:
    for admin in (False, True):
        for reported in ("up", "draining"):
            for live in ("fresh", "late", "lost"):
                assert HEALTH_TABLE[(admin, reported, live)] in HEALTH_STATES
        assert HEALTH_TABLE[(admin, None, "lost")] in HEALTH_STATES
    assert set(HEALTH_TABLE.values()) == set(HEALTH_STATES)
    for (state, _event), nxt in EVENT_TABLE.items():
        assert state in HEALTH_STATES and nxt in HEALTH_STATES
    assert STEERABLE_STATES == {"up", "suspect"}
    assert [liveness(m) for m in (None, 0, 1, 2, 3, 4)] == ["lost", "fresh", "late", "late", "lost", "lost"]


# ------------------------------------------------------------------ the two tables agree

def _apply_events(state: str, events: list[str]) -> str:
    for ev in events:
        state = EVENT_TABLE.get((state, ev), state)
    return state


@pytest.mark.parametrize("start_reported", ["up", "draining"])
@pytest.mark.parametrize("admin", [False, True])
def test_event_table_walk_matches_state_at(start_reported: str, admin: bool) -> None:
    """Walk time forward from one heartbeat; the event table and state_at must agree at every step."""
    h = beating(0.0, start_reported)
    h.on_admin(admin)
    state = _apply_events("down", [f"hb:{start_reported}"] + (["admin:down"] if admin else []))
    assert state == h.state_at(0.0)
    prev_missed = 0
    for k in range(1, 60):
        now = k * 0.1
        missed = h.missed_at(now)
        assert missed is not None
        if prev_missed < 1 <= missed:
            state = _apply_events(state, ["miss:1"])
        if prev_missed < 3 <= missed:
            state = _apply_events(state, ["miss:3"])
        prev_missed = missed
        assert state == h.state_at(now), now


# ------------------------------------------------------------------ property: random event sequences

event = st.one_of(
    st.tuples(st.just("hb"), st.floats(0, 5, allow_nan=False), st.sampled_from(["up", "draining"])),
    st.tuples(st.just("admin"), st.just(0.0), st.booleans()),
    st.tuples(st.just("wait"), st.floats(0, 5, allow_nan=False), st.just(None)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(event, max_size=30), st.floats(0.1, 3.0))
def test_state_is_a_pure_function_of_last_heartbeat_and_flags(events: list[tuple[str, float, object]],
                                                              interval: float) -> None:
    h = EdgeHealth(interval)
    now = 0.0
    last: float | None = None
    reported: str | None = None
    admin = False
    for kind, dt, arg in events:
        now += dt
        if kind == "hb":
            h.on_heartbeat(now, arg)  # type: ignore[arg-type]
            last, reported = now, arg  # type: ignore[assignment]
        elif kind == "admin":
            h.on_admin(bool(arg))
            admin = bool(arg)
        state = h.state_at(now)
        assert state in HEALTH_STATES
        assert state == h.state_at(now)  # querying changes nothing
        assert state == HEALTH_TABLE[(h.admin_down, h.reported_state, liveness(h.missed_at(now)))]
        # the model, written as an if-chain on purpose (the code under test is a table)
        if admin:
            expected = "admin_down"
        elif last is None:
            expected = "down"
        else:
            age = now - last
            missed = max(0, math.floor((age - 0.5 * interval) / interval)) if age >= 0.5 * interval else 0
            if missed >= 3:
                expected = "down"
            elif reported == "draining":
                expected = "draining"
            else:
                expected = "up" if missed == 0 else "suspect"
        assert state == expected
        # never steerable unless up (or suspect) and reported up and heard within 3.5 intervals
        if state in STEERABLE_STATES:
            assert not admin and reported == "up" and last is not None and now - last < 3.5 * interval + 1e-9


# ---------------------------------------------------------------- Rule 5: partitions

def test_a_whole_isp_gone_silent_at_once_is_held_as_suspect_not_dropped() -> None:
    from control.health import PARTITION_HOLD_S, SUSPECT, HealthState, hold_partitioned
    down = HealthState.DOWN
    both = [(down, 100.0), (down, 100.4)]
    assert hold_partitioned(both, 105.0) == [SUSPECT, SUSPECT]
    assert hold_partitioned(both, 100.4 + PARTITION_HOLD_S + 1) == [down, down]  # long silence is believed
    # one edge still heartbeats: its silent peer is really down
    assert hold_partitioned([(down, 100.0), (HealthState.UP, 104.9)], 105.0) == [down, HealthState.UP]
    # a lone edge, or edges that died one after another, are believed
    assert hold_partitioned([(down, 100.0)], 105.0) == [down]
    assert hold_partitioned([(down, 90.0), (down, 100.0)], 105.0) == [down, down]
    # draining / admin_down are left alone; never heard from stays down
    assert hold_partitioned([(down, 100.0), (down, 100.1), (HealthState.DRAINING, 104.0), (down, None)],
                            105.0) == [SUSPECT, SUSPECT, HealthState.DRAINING, down]


def test_the_fleet_keeps_steering_to_an_isp_whose_heartbeats_are_cut_off() -> None:
    from common.wire import Register
    from control.fleet import Fleet
    fleet = Fleet()
    now = 1_000_000.0
    for e, isp in (("a1", "isp-a"), ("a2", "isp-a"), ("b1", "isp-b"), ("b2", "isp-b")):
        fleet.register(Register(e, isp, f"http://127.0.0.1:1/{e}", 1, now), now)
    # isp-a's heartbeats stop (partition); isp-b's one edge b1 dies, b2 keeps beating
    from control.health import EdgeHealth
    fleet.edges["b2"].health.on_heartbeat(now + 9.5, "up")
    states = {v.edge_id: v.state for v in fleet.views(now + 10)}
    assert states == {"a1": "suspect", "a2": "suspect", "b1": "down", "b2": "up"}
    assert isinstance(fleet.edges["a1"].health, EdgeHealth)
