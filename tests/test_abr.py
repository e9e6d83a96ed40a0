"""Unit and property tests of the pure ABR core (player/abr.py): no IO, no clocks."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from player.abr import (
    ABR_NAMES,
    FAILURE_RULES,
    BufferBasedAbr,
    FailoverPolicy,
    FailureReason,
    ThroughputAbr,
    forget_on_resteer,
    harmonic_mean,
    make_abr,
    next_candidate,
)

LADDER = (235, 750, 1750, 3000, 5800)
R, C = 10.0, 40.0  # reservoir, cushion (the defaults)


def bba1(**kw: float) -> BufferBasedAbr:
    """Steady-state BBA-1 only (no start-up phase)."""
    return BufferBasedAbr(LADDER, reservoir_s=R, cushion_s=C, startup=False, **kw)


def buffer_for(rate: float) -> float:
    """The buffer level where the rate map f(B) equals `rate`."""
    return R + C * (rate - LADDER[0]) / (LADDER[-1] - LADDER[0])


# ------------------------------------------------------------------ rate map


def test_rate_map_is_piecewise_linear() -> None:
    abr = bba1()
    assert abr.rate_map(0.0) == 235
    assert abr.rate_map(R) == 235
    assert abr.rate_map(R + C / 2) == pytest.approx(235 + 0.5 * (5800 - 235))
    assert abr.rate_map(R + C) == 5800
    assert abr.rate_map(1000.0) == 5800


@pytest.mark.parametrize("last", [None, *LADDER])
@pytest.mark.parametrize("buffer_s", [0.0, 3.0, R])
def test_reservoir_gives_lowest_rate(buffer_s: float, last: int | None) -> None:
    assert bba1().choose(buffer_s, last, [50_000.0]) == 235


@pytest.mark.parametrize("last", [None, *LADDER])
@pytest.mark.parametrize("buffer_s", [R + C, R + C + 0.5, 60.0])
def test_upper_reservoir_gives_highest_rate(buffer_s: float, last: int | None) -> None:
    assert bba1().choose(buffer_s, last, [1.0]) == 5800


def test_cushion_middle() -> None:
    b = R + C / 2  # f(B) = 3017.5
    assert bba1().choose(b, 1750, []) == 3000  # f >= next higher (3000): up
    assert bba1().choose(b, 3000, []) == 3000  # between neighbours: stay
    assert bba1().choose(b, 5800, []) == 5800  # f above next lower (3000): stay (hysteresis)
    assert bba1().choose(b, 235, []) == 3000  # up to max{R_i < f}, several rungs at once


def test_hysteresis_up_needs_the_next_higher_rate() -> None:
    at = buffer_for(1750)
    assert bba1().choose(at - 0.01, 750, []) == 750
    assert bba1().choose(at + 0.01, 750, []) == 1750


def test_hysteresis_down_needs_the_next_lower_rate() -> None:
    at = buffer_for(1750)
    assert bba1().choose(at + 0.01, 3000, []) == 3000
    assert bba1().choose(at - 0.01, 3000, []) == 1750  # down to min{R_i > f}
    assert bba1().choose(buffer_for(1000), 5800, []) == 1750  # several rungs at once


def test_first_decision_uses_the_map_without_history() -> None:
    abr = BufferBasedAbr(LADDER)
    assert abr.choose(0.0, None, []) == 235


def test_unknown_last_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        bba1().choose(20.0, 1000, [])


# ------------------------------------------------------------------ start-up (BBA-2)


def test_startup_ramps_up_one_rung_per_fast_segment() -> None:
    abr = BufferBasedAbr(LADDER)
    assert abr.choose(0.0, None, []) == 235
    fast = [10_000.0]
    assert abr.choose(4.0, 235, fast) == 750
    assert abr.choose(7.5, 750, fast * 2) == 1750
    assert abr.choose(11.0, 1750, fast * 3) == 3000
    # 3000 at 10 Mbit/s grows the buffer by only 0.7 of a segment: below the threshold.
    assert abr.choose(13.0, 3000, fast * 4) == 3000
    assert abr.in_startup  # the map (750 here) is still below the start-up rate


def test_startup_does_not_ramp_on_slow_segments() -> None:
    abr = BufferBasedAbr(LADDER)
    abr.choose(0.0, None, [])
    assert abr.choose(2.0, 235, [500.0]) == 235
    assert abr.in_startup


def test_startup_respects_the_safety_factor() -> None:
    # The buffer grew fast enough (235 at 2000 kbit/s: dB/V = 0.88 > 0.85); the safety decides.
    abr = BufferBasedAbr(LADDER, startup_safety=0.3)
    abr.choose(0.0, None, [])
    assert abr.choose(3.6, 235, [2000.0]) == 235  # 0.3 x 2000 = 600 < 750
    abr2 = BufferBasedAbr(LADDER, startup_safety=0.9)
    abr2.choose(0.0, None, [])
    assert abr2.choose(3.6, 235, [2000.0]) == 750


def test_startup_ends_when_the_buffer_shrinks() -> None:
    abr = BufferBasedAbr(LADDER)
    abr.choose(0.0, None, [])
    abr.choose(4.0, 235, [10_000.0])
    assert abr.choose(7.5, 750, [10_000.0] * 2) == 1750
    assert abr.choose(6.0, 1750, [10_000.0] * 3) == 235  # reservoir, and draining
    assert not abr.in_startup
    # Throughput no longer matters: only the map does.
    assert abr.choose(12.0, 235, [10_000.0] * 4) == 235


def test_startup_ends_when_the_map_catches_up() -> None:
    abr = BufferBasedAbr(LADDER)
    abr.choose(0.0, None, [])
    assert abr.choose(4.0, 235, [10_000.0]) == 750
    assert abr.choose(R + C, 750, [10_000.0] * 2) == 5800
    assert not abr.in_startup


def test_reset_restores_startup() -> None:
    abr = BufferBasedAbr(LADDER)
    abr.choose(10.0, None, [])
    abr.choose(5.0, 235, [])
    assert not abr.in_startup
    abr.reset()
    assert abr.in_startup


def test_no_switch_up_while_draining_even_below_the_map() -> None:
    abr = bba1()
    abr.choose(45.0, 235, [])  # remembered buffer level
    # f(40) is far above 750, but the buffer went down since the last decision.
    assert abr.choose(40.0, 750, []) == 750
    # Growing again: the map applies.
    assert abr.choose(41.0, 750, []) == 3000


# ------------------------------------------------------------------ BBA properties

buffers = st.floats(min_value=0.0, max_value=120.0, allow_nan=False)
rates = st.sampled_from(LADDER)
last_rates = st.one_of(st.none(), rates)
samples = st.lists(
    st.one_of(
        st.floats(min_value=-10.0, max_value=1e6),
        st.sampled_from([math.inf, math.nan, 0.0]),
    ),
    max_size=8,
)


@given(steps=st.lists(st.tuples(buffers, samples), min_size=1, max_size=30), startup=st.booleans())
def test_bba_choice_is_in_the_ladder(steps: list[tuple[float, list[float]]], startup: bool) -> None:
    abr = BufferBasedAbr(LADDER, startup=startup)
    last: int | None = None
    for b, xs in steps:
        last = abr.choose(b, last, xs)
        assert last in LADDER


@given(steps=st.lists(st.tuples(buffers, samples), min_size=2, max_size=40), startup=st.booleans())
def test_bba_never_switches_up_while_the_buffer_drains(
    steps: list[tuple[float, list[float]]], startup: bool
) -> None:
    abr = BufferBasedAbr(LADDER, startup=startup)
    last: int | None = None
    prev_b: float | None = None
    for b, xs in steps:
        rate = abr.choose(b, last, xs)
        if last is not None and prev_b is not None and b < prev_b:
            assert rate <= last
        last, prev_b = rate, b


@given(b1=buffers, b2=buffers, last=last_rates, xs=samples, startup=st.booleans())
def test_bba_is_monotone_in_buffer_at_fixed_last_rate(
    b1: float, b2: float, last: int | None, xs: list[float], startup: bool
) -> None:
    lo, hi = sorted((b1, b2))
    a = BufferBasedAbr(LADDER, startup=startup).choose(lo, last, xs)
    b = BufferBasedAbr(LADDER, startup=startup).choose(hi, last, xs)
    assert a <= b


@given(b=st.floats(min_value=R + 1e-6, max_value=R + C - 1e-6), last=rates)
def test_bba1_hysteresis_moves_only_past_a_neighbour(b: float, last: int) -> None:
    f = bba1().rate_map(b)
    rate = bba1().choose(b, last, [])
    if rate > last:
        assert f >= LADDER[LADDER.index(last) + 1]
    if rate < last:
        assert f <= LADDER[LADDER.index(last) - 1]


# ------------------------------------------------------------------ throughput rule


def test_harmonic_mean() -> None:
    assert harmonic_mean([]) is None
    assert harmonic_mean([0.0, -1.0, math.nan]) is None
    assert harmonic_mean([1000.0, 4000.0]) == pytest.approx(1600.0)
    assert harmonic_mean([math.inf]) == math.inf
    assert harmonic_mean([math.inf, 1000.0]) == pytest.approx(2000.0)


def test_throughput_rule() -> None:
    abr = ThroughputAbr(LADDER, window=5, safety=0.9)
    assert abr.choose(30.0, None, []) == 235  # nothing measured
    assert abr.choose(0.0, 5800, [1000.0, 4000.0]) == 750  # 0.9 x 1600 = 1440
    assert abr.choose(0.0, None, [3400.0]) == 3000  # 3060
    assert abr.choose(0.0, None, [3300.0]) == 1750  # 2970
    assert abr.choose(0.0, None, [100.0]) == 235  # below the ladder: the lowest
    assert abr.choose(0.0, None, [math.inf]) == 5800


def test_throughput_rule_uses_only_the_last_k_samples() -> None:
    abr = ThroughputAbr(LADDER, window=3, safety=1.0)
    assert abr.choose(0.0, None, [100.0] * 10 + [7000.0] * 3) == 5800
    assert abr.choose(0.0, None, [7000.0] * 10 + [100.0]) == 235


def test_throughput_rule_ignores_the_buffer() -> None:
    abr = ThroughputAbr(LADDER)
    assert {abr.choose(b, 235, [2000.0]) for b in (0.0, 10.0, 59.0)} == {1750}


@given(b=buffers, last=last_rates, xs=samples)
def test_throughput_choice_is_in_the_ladder_and_affordable(
    b: float, last: int | None, xs: list[float]
) -> None:
    abr = ThroughputAbr(LADDER)
    rate = abr.choose(b, last, xs)
    assert rate in LADDER
    est = abr.estimate_kbps(xs)
    if rate > LADDER[0]:
        assert est is not None and rate <= est


# ------------------------------------------------------------------ factory


def test_make_abr() -> None:
    assert ABR_NAMES == ("bba", "throughput")
    assert isinstance(make_abr("bba", LADDER), BufferBasedAbr)
    assert isinstance(make_abr("BBA", LADDER), BufferBasedAbr)
    t = make_abr("throughput", LADDER, window=3, safety=0.5)
    assert isinstance(t, ThroughputAbr) and t.window == 3 and t.safety == 0.5
    assert make_abr().name == "bba"
    assert make_abr("bba", [5800, 235, 750]).ladder_kbps == (235, 750, 5800)
    with pytest.raises(ValueError, match="unknown ABR"):
        make_abr("pensieve", LADDER)
    with pytest.raises(ValueError):
        make_abr("bba", [])
    with pytest.raises(ValueError):
        make_abr("bba", [0, 235])


# ------------------------------------------------------------------ failover

F = FailureReason


def test_failover_walks_the_ranked_list() -> None:
    ranked = ["a", "b", "c"]
    assert next_candidate(ranked, {}) == "a"
    assert next_candidate(ranked, {"a": [F.CONNECT]}) == "b"
    assert next_candidate(ranked, {"a": [F.CONNECT], "b": [F.CORRUPT]}) == "c"
    assert next_candidate(ranked, {"a": [F.CONNECT], "b": [F.CONNECT], "c": [F.FORBIDDEN]}) is None
    assert next_candidate([], {}) is None


def test_failover_prefers_untried_edges_then_retries_transient_ones() -> None:
    ranked = ["a", "b"]
    assert next_candidate(ranked, {"a": [F.TIMEOUT]}) == "b"
    assert next_candidate(ranked, {"a": [F.TIMEOUT], "b": [F.CONNECT]}) == "a"
    both = {"a": [F.SERVER_ERROR], "b": [F.TIMEOUT]}
    assert next_candidate(ranked, both) == "a"  # equal failures: rank decides


def test_failover_bounds_retries_per_edge() -> None:
    policy = FailoverPolicy(max_attempts_per_edge=2)
    assert next_candidate(["a"], {"a": [F.TIMEOUT]}, policy) == "a"
    assert next_candidate(["a"], {"a": [F.TIMEOUT, F.TIMEOUT]}, policy) is None
    assert next_candidate(["a"], {"a": [F.TIMEOUT]}, FailoverPolicy(max_attempts_per_edge=1)) is None


def test_failover_switched_off_stays_on_the_first_edge_and_never_resteers() -> None:
    off = FailoverPolicy(enabled=False)
    assert next_candidate(["a", "b"], {}, off) == "a"
    assert next_candidate(["a", "b"], {"a": [F.TIMEOUT]}, off) == "a"  # a retry on the same edge
    assert next_candidate(["a", "b"], {"a": [F.TIMEOUT, F.TIMEOUT]}, off) is None  # never b
    assert next_candidate(["a", "b"], {"a": [F.CONNECT]}, off) is None
    assert not off.may_resteer(0) and FailoverPolicy().may_resteer(0)


def test_a_connect_failure_is_never_retried() -> None:
    policy = FailoverPolicy(max_attempts_per_edge=10)
    assert next_candidate(["a"], {"a": [F.CONNECT]}, policy) is None


def test_resteer_budget() -> None:
    policy = FailoverPolicy(max_resteers=2)
    assert [policy.may_resteer(n) for n in range(4)] == [True, True, False, False]
    assert not FailoverPolicy(max_resteers=0).may_resteer(0)
    with pytest.raises(ValueError):
        FailoverPolicy(max_attempts_per_edge=0)


def test_forget_on_resteer_keeps_only_lasting_failures() -> None:
    kept = forget_on_resteer(
        {"a": [F.CONNECT, F.TIMEOUT], "b": [F.FORBIDDEN], "c": [F.CORRUPT], "d": [F.SERVER_ERROR]}
    )
    assert kept == {"a": (F.CONNECT,), "c": (F.CORRUPT,)}


def test_every_reason_has_a_rule() -> None:
    assert set(FAILURE_RULES) == set(FailureReason)


edges = st.sampled_from(["a", "b", "c", "d", "e"])


@given(
    ranked=st.lists(edges, unique=True, max_size=5),
    failures=st.dictionaries(edges, st.lists(st.sampled_from(list(FailureReason)), max_size=3)),
    per_edge=st.integers(min_value=1, max_value=4),
)
def test_failover_choice_is_a_permitted_candidate(
    ranked: list[str], failures: dict[str, list[FailureReason]], per_edge: int
) -> None:
    policy = FailoverPolicy(max_attempts_per_edge=per_edge)
    pick = next_candidate(ranked, failures, policy)
    if pick is None:
        return
    assert pick in ranked
    reasons = failures.get(pick, [])
    assert len(reasons) < per_edge
    assert all(FAILURE_RULES[r].retry_same_edge for r in reasons)
    # Never a retry while an edge that has not failed at all is still available.
    if reasons:
        assert all(failures.get(e) for e in ranked)


# --- the real size of the next segment (packaged media's #EXT-X-BITRATE) -----------------------

def test_throughput_rule_weighs_the_real_next_segment() -> None:
    abr = ThroughputAbr((235, 750, 1750, 3000), safety=0.9)
    samples = [2000.0] * 5  # estimate 1800 kbit/s
    assert abr.choose(10.0, 750, samples) == 1750
    assert abr.choose(10.0, 750, samples, {235: 240, 750: 760, 1750: 1900, 3000: 3100}) == 750  # a VBR peak
    assert abr.choose(10.0, 750, samples, {235: 200, 750: 700, 1750: 1500, 3000: 1790}) == 3000  # a quiet scene
    assert abr.choose(10.0, 750, samples, {235: 5000, 750: 6000, 1750: 7000, 3000: 8000}) == 235  # none fits


def test_bba_start_up_affords_the_next_rung_by_its_real_next_segment() -> None:
    abr = BufferBasedAbr((235, 750, 1750), reservoir_s=R, cushion_s=C)
    assert abr.startup_choice(4.0, 235, [10_000.0]) == 750
    assert abr.startup_choice(4.0, 235, [10_000.0], {235: 240, 750: 9_500, 1750: 20_000}) == 235
    assert abr.startup_choice(4.0, 235, [10_000.0], {235: 240, 750: 800, 1750: 1800}) == 750


def test_the_session_hands_each_decision_the_next_segments_real_rates() -> None:
    from player.session import PlaybackSession

    class Recorder:
        name = "recorder"
        ladder_kbps = (235, 750)
        seen: list[object] = []

        def choose(self, buffer_s: float, last: int | None, samples: object, next_kbps: object = None) -> int:
            self.seen.append(next_kbps)
            return 235

        def reset(self) -> None:
            pass

    rec = Recorder()
    sizes = {235: (250, 220), 750: (800, 700)}
    s = PlaybackSession((235, 750), segment_s=4.0, n_segments=2, abr=rec, segment_kbps=sizes)
    s.start(0.0)
    req = s.next_request(0.0)
    assert req is not None and req.index == 0
    s.on_segment_downloaded(0, 235, 1000, 0.0, 0.1)
    assert s.next_request(0.1) is not None
    assert rec.seen == [{235: 250.0, 750: 800.0}, {235: 220.0, 750: 700.0}]
    partial = PlaybackSession((235, 750), n_segments=2, abr=rec, segment_kbps={235: (1, 2)})
    assert partial.segment_kbps is None  # not every rung: nominal rates
