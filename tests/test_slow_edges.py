"""player/slow_edges.py: when a player leaves an edge that answers too slowly (pure core)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from player.abr import FAILURE_RULES, FailoverPolicy, FailureReason, forget_on_resteer, next_candidate
from player.slow_edges import SlowEdgeRule, SlowEdges, faster_candidate


def test_a_segment_slower_than_its_duration_is_too_slow() -> None:
    rule = SlowEdgeRule(factor=1.0, abandon_factor=2.0)
    assert not rule.too_slow(3.9, 4.0)
    assert not rule.too_slow(4.0, 4.0)  # exactly in time still plays
    assert rule.too_slow(4.1, 4.0)
    assert rule.too_slow(1.5, 1.0)  # a short last segment is judged by its own length
    assert not rule.too_slow(10.0, 0.0)  # nothing to judge
    assert SlowEdgeRule(factor=2.0).too_slow(7.0, 4.0) is False
    assert rule.abandon_after(4.0) == 8.0
    default = SlowEdgeRule()  # a margin for a busy machine: under 2/3 of the bit rate
    assert not default.too_slow(5.9, 4.0) and default.too_slow(6.1, 4.0)
    assert default.abandon_after(4.0) == 10.0


@pytest.mark.parametrize("factor, abandon", [(0.0, 1.0), (-1.0, 1.0), (2.0, 1.0)])
def test_bad_rules_are_refused(factor: float, abandon: float) -> None:
    with pytest.raises(ValueError):
        SlowEdgeRule(factor=factor, abandon_factor=abandon)
    with pytest.raises(ValueError):
        SlowEdges(ttl_s=0)


def test_faster_candidate_keeps_steering_order_and_skips_slow_and_failed() -> None:
    ranked = ["e1", "e2", "e3"]
    assert faster_candidate(ranked, "e1", frozenset(), {}) == "e2"
    assert faster_candidate(ranked, "e1", {"e2"}, {}) == "e3"
    assert faster_candidate(ranked, "e1", frozenset(), {"e2": (FailureReason.TIMEOUT,)}) == "e3"
    assert faster_candidate(ranked, "e2", frozenset(), {}) == "e1"
    # nothing faster known: stay (None), never "back to steering"
    assert faster_candidate(ranked, "e1", {"e2", "e3"}, {}) is None
    assert faster_candidate(["e1"], "e1", frozenset(), {}) is None


def test_the_memory_ranks_slow_edges_last_until_they_expire_or_deliver() -> None:
    mem = SlowEdges(ttl_s=10.0)
    mem.mark("e1", now=100.0)
    assert mem.slow(105.0) == {"e1"}
    assert mem.rank(["e1", "e2", "e3"], 105.0) == ["e2", "e3", "e1"]
    assert mem.rank(["e1", "e2", "e3"], 110.0) == ["e1", "e2", "e3"]  # expired
    mem.mark("e2", now=200.0)
    mem.mark("e3", now=200.0)
    assert mem.rank(["e1", "e2", "e3"], 201.0) == ["e1", "e2", "e3"]  # all slow: steering's order
    mem.clear("e2")
    assert mem.rank(["e3", "e2"], 201.0) == ["e2", "e3"]
    assert mem.marked == 3


@given(ranked=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), unique=True),
       slow=st.sets(st.sampled_from(["a", "b", "c", "d", "e"])))
def test_rank_is_a_stable_partition_of_steering_order(ranked: list[str], slow: set[str]) -> None:
    mem = SlowEdges(ttl_s=5.0)
    for e in slow:
        mem.mark(e, 0.0)
    out = mem.rank(ranked, 1.0)
    assert sorted(out) == sorted(ranked)
    fast = [e for e in out if e not in slow]
    assert fast == [e for e in ranked if e not in slow] and out[:len(fast)] == fast
    assert out[len(fast):] == [e for e in ranked if e in slow]


def test_slow_is_retryable_and_forgotten_on_resteer_truncated_too() -> None:
    for why in (FailureReason.SLOW, FailureReason.TRUNCATED):
        assert FAILURE_RULES[why].retry_same_edge and not FAILURE_RULES[why].survives_resteer
        assert forget_on_resteer({"e1": (why,)}) == {}
    # a slow edge stays a candidate of last resort: never-failed edges first, then it
    assert next_candidate(["e1", "e2"], {"e1": (FailureReason.SLOW,)}) == "e2"
    assert next_candidate(["e1", "e2"], {"e1": (FailureReason.SLOW,), "e2": (FailureReason.CONNECT,)}) == "e1"
    # a cut body is retried on the same edge once (a corrupt one never is)
    assert next_candidate(["e1"], {"e1": (FailureReason.TRUNCATED,)}) == "e1"
    assert next_candidate(["e1"], {"e1": (FailureReason.CORRUPT,)}) is None
    assert next_candidate(["e1"], {"e1": (FailureReason.TRUNCATED,) * 2}, FailoverPolicy()) is None


def test_a_move_for_slowness_is_not_a_failure() -> None:
    from player.session import PlaybackSession

    s = PlaybackSession([235, 750], segment_s=4.0, n_segments=2)
    s.on_failover("e1", "e2", FailureReason.SLOW)
    q = s.report()
    assert q.slow_moves == 1 and q.failovers == 0 and q.errors == 0 and q.error_reasons == {}
    assert s.failures == {"e1": (FailureReason.SLOW,)}  # still weighs on the next choice
