"""Tests of the pure playback session (player/session.py) with an injected clock.

The "network" here is arithmetic: a fake link turns bytes into a finish time,
so whole sessions run in microseconds with no sleeps (h11's style of joining a
state machine to a fake peer).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from player.abr import BufferBasedAbr, FailoverPolicy, FailureReason, make_abr
from player.session import (
    PlaybackSession,
    PlaybackState,
    QoEReport,
    SegmentRequest,
    SessionError,
    qoe_lin,
)

LADDER = (235, 750, 1750, 3000, 5800)
SEG = 4.0


class ScriptedAbr:
    """Answers a fixed list of bitrates, recording what it was shown."""

    name = "scripted"

    def __init__(self, rates: Sequence[int]) -> None:
        self._rates = list(rates)
        self.seen: list[tuple[float, int | None]] = []

    @property
    def ladder_kbps(self) -> tuple[int, ...]:
        return LADDER

    def choose(self, buffer_s: float, last: int | None, samples: Sequence[float]) -> int:
        self.seen.append((buffer_s, last))
        return self._rates[len(self.seen) - 1]

    def reset(self) -> None:
        pass


def seg_bytes(rate_kbps: int, duration: float = SEG) -> int:
    return int(rate_kbps * 1000 / 8 * duration)


def download(s: PlaybackSession, req: SegmentRequest, start: float, took: float, edge: str = "e1") -> float:
    end = start + took
    s.on_segment_downloaded(req.index, req.bitrate_kbps, seg_bytes(req.bitrate_kbps), start, end, edge=edge)
    return end


def run(
    s: PlaybackSession,
    bandwidth_kbps: Callable[[int], float],
    t0: float = 0.0,
    on_decision: Callable[[PlaybackSession, SegmentRequest], None] | None = None,
) -> float:
    """Drive a session to the end over a fake link; returns the final clock."""
    now = t0
    s.start(now)
    while not (s.all_downloaded or s.finished):
        req = s.next_request(now)
        if req is None:
            wait = s.wait_time(now)
            assert wait > 0
            now += wait
            continue
        if on_decision is not None:
            on_decision(s, req)
        took = seg_bytes(req.bitrate_kbps) * 8 / 1000 / bandwidth_kbps(req.index)
        now = download(s, req, now, took)
    now += s.wait_time(now)
    s.advance(now)
    return now


# ------------------------------------------------------------------ start-up


def test_startup_delay_is_time_to_first_segment() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=10)
    s.start(100.0)
    assert s.state is PlaybackState.STARTING
    req = s.next_request(100.5)  # steering and the manifest took 0.5 s
    assert req == SegmentRequest(0, 235)
    s.advance(101.0)  # nothing plays before the first frame
    assert s.buffer_s == 0.0 and s.state is PlaybackState.STARTING
    download(s, req, 100.5, 1.0)
    assert s.state.value == "playing"
    assert s.buffer_s == SEG
    r = s.report()
    assert r.startup_s == pytest.approx(1.5)
    assert r.rebuffer_count == 0 and r.rebuffer_s == 0.0


def test_first_next_request_starts_the_session() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=2)
    req = s.next_request(5.0)
    assert req is not None
    download(s, req, 5.0, 2.0)
    assert s.report().startup_s == pytest.approx(2.0)


def test_no_frame_no_startup() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=2)
    s.start(0.0)
    s.on_error("connect", fatal=True, now=3.0)
    r = s.report()
    assert r.startup_s is None and r.state == "failed" and r.rebuffer_count == 0


# ------------------------------------------------------------------ playback and rebuffering


def test_playback_drains_the_buffer() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=10)
    s.start(0.0)
    download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)
    s.advance(2.5)
    assert s.buffer_s == pytest.approx(2.5)
    assert s.report().played_s == pytest.approx(1.5)


def test_slow_download_causes_one_rebuffer_of_the_right_length() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)  # buffer 4 s at t=1
    req = s.next_request(t)
    assert req is not None and req.index == 1
    s.advance(4.0)
    assert s.state is PlaybackState.PLAYING and s.buffer_s == pytest.approx(1.0)
    s.advance(6.0)  # dry at t=5
    assert s.state.value == "rebuffering"
    assert s.report().rebuffer_count == 1
    assert s.report().rebuffer_s == pytest.approx(1.0)  # ongoing, counted up to now
    download(s, req, t, 7.0)  # arrives at t=8: stalled 5 -> 8
    assert s.state is PlaybackState.PLAYING
    assert s.buffer_s == SEG
    r = s.report()
    assert r.rebuffer_count == 1
    assert r.rebuffer_s == pytest.approx(3.0)
    assert r.startup_s == pytest.approx(1.0)  # start-up is not rebuffering
    assert r.played_s == pytest.approx(4.0)


def test_rebuffer_without_intermediate_advance() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)
    download(s, s.next_request(t) or pytest.fail(), t, 7.0)
    r = s.report()
    assert r.rebuffer_count == 1 and r.rebuffer_s == pytest.approx(3.0)


def test_two_stalls_count_twice() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=4)
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)  # t=1, buffer 4
    t = download(s, s.next_request(t) or pytest.fail(), t, 5.0)  # t=6, stalled 5..6
    t = download(s, s.next_request(t) or pytest.fail(), t, 6.0)  # t=12, stalled 10..12
    r = s.report()
    assert r.rebuffer_count == 2
    assert r.rebuffer_s == pytest.approx(3.0)


def test_session_ends_after_the_last_segment_plays_out() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=2, last_segment_s=1.5)
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 0.5)
    t = download(s, s.next_request(t) or pytest.fail(), t, 0.5)
    assert s.all_downloaded and not s.finished
    assert s.next_request(t) is None
    assert s.wait_time(t) == pytest.approx(5.5 - 0.5)  # 4 + 1.5 buffered, 0.5 already played
    s.advance(t + 100.0)  # the end is not a rebuffer
    assert s.state is PlaybackState.ENDED and s.finished
    r = s.report()
    assert r.rebuffer_count == 0 and r.played_s == pytest.approx(5.5)
    assert s.wait_time(t + 200.0) == 0.0


# ------------------------------------------------------------------ buffer cap


def test_full_buffer_means_wait() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=10, buffer_cap_s=12.0)
    s.start(0.0)
    t = 0.0
    for _ in range(3):
        t = download(s, s.next_request(t) or pytest.fail(), t, 0.1)
    assert s.buffer_s == pytest.approx(12.0 - 0.2)
    assert s.next_request(t) is None
    assert s.wait_time(t) == pytest.approx(3.8)
    assert s.next_request(t + 3.0) is None
    assert s.wait_time(t + 3.0) == pytest.approx(0.8)
    req = s.next_request(t + 3.8)
    assert req is not None and req.index == 3
    assert s.wait_time(t + 3.8) == 0.0


def test_buffer_never_exceeds_the_cap_over_a_fast_link() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=50, buffer_cap_s=30.0)
    peak = 0.0

    def watch(sess: PlaybackSession, req: SegmentRequest) -> None:
        nonlocal peak
        peak = max(peak, sess.buffer_s + SEG)

    run(s, lambda i: 1e6, on_decision=watch)
    assert peak <= 30.0 + 1e-6
    assert s.report().rebuffer_count == 0


def test_cap_must_hold_a_segment() -> None:
    with pytest.raises(ValueError):
        PlaybackSession(LADDER, SEG, n_segments=3, buffer_cap_s=3.0)


# ------------------------------------------------------------------ requests


def test_outstanding_request_is_stable_until_resolved() -> None:
    abr = ScriptedAbr([235, 750, 3000])
    s = PlaybackSession(LADDER, SEG, n_segments=5, abr=abr)
    s.start(0.0)
    first = s.next_request(0.0)
    assert s.next_request(0.1) is first
    assert len(abr.seen) == 1
    s.on_failover("e1", "e2", FailureReason.CONNECT)
    again = s.next_request(0.2)
    assert again == SegmentRequest(0, 750)  # decided afresh, same index
    assert len(abr.seen) == 2


def test_abr_sees_buffer_and_last_rate() -> None:
    abr = ScriptedAbr([235, 750, 750])
    s = PlaybackSession(LADDER, SEG, n_segments=3, abr=abr)
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)
    s.next_request(t + 1.0)
    assert abr.seen == [(0.0, None), (3.0, 235)]


def test_protocol_errors() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    with pytest.raises(SessionError):
        s.on_segment_downloaded(1, 235, 100, 0.0, 1.0)
    with pytest.raises(SessionError):
        s.on_segment_downloaded(0, 1000, 100, 0.0, 1.0)
    with pytest.raises(SessionError):
        s.on_segment_downloaded(0, 235, 100, 1.0, 0.5)
    with pytest.raises(SessionError):
        s.start(1.0)


def test_time_never_rewinds() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)
    s.advance(3.0)
    s.advance(2.0)
    assert s.clock == 3.0 and s.buffer_s == pytest.approx(2.0)


# ------------------------------------------------------------------ QoE


def test_qoe_lin_hand_computed() -> None:
    # quality 0.235 + 0.75 + 0.75 + 3.0 = 4.735; smoothness 0.515 + 0 + 2.25 = 2.765;
    # rebuffering 4.3 x 2 = 8.6  ->  4.735 - 8.6 - 2.765 = -6.63
    assert qoe_lin([235, 750, 750, 3000], 2.0) == pytest.approx(-6.63)
    assert qoe_lin([], 0.0) == 0.0
    assert qoe_lin([5800] * 3, 0.0) == pytest.approx(17.4)


def test_session_qoe_hand_computed() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=4, abr=ScriptedAbr([235, 750, 750, 3000]))
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)  # t=1, buffer 4
    t = download(s, s.next_request(t) or pytest.fail(), t, 6.0)  # t=7, stalled 5..7 (2 s)
    t = download(s, s.next_request(t) or pytest.fail(), t, 1.0)
    t = download(s, s.next_request(t) or pytest.fail(), t, 1.0)
    r = s.report()
    assert r.rebuffer_count == 1 and r.rebuffer_s == pytest.approx(2.0)
    assert r.startup_s == pytest.approx(1.0)
    assert r.switches == 2
    assert r.avg_bitrate_kbps == pytest.approx(1183.75)
    assert r.qoe_lin == pytest.approx(-6.63)
    assert r.bytes == sum(seg_bytes(b) for b in (235, 750, 750, 3000))
    assert r.segments == 4 and r.abr == "scripted"


def test_report_to_dict_has_the_promised_keys() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=2)
    run(s, lambda i: 10_000.0)
    d = s.report().to_dict()
    for key in ("startup_s", "rebuffer_count", "rebuffer_s", "avg_bitrate_kbps", "switches",
                "failovers", "errors", "bytes", "qoe_lin", "bytes_per_edge"):
        assert key in d
    assert isinstance(d["bytes_per_edge"], dict) and d["bytes_per_edge"] == {"e1": d["bytes"]}
    assert isinstance(s.report(), QoEReport)


def test_bytes_per_edge() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3, abr=ScriptedAbr([235, 235, 235]))
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 0.1, edge="a")
    t = download(s, s.next_request(t) or pytest.fail(), t, 0.1, edge="b")
    t = download(s, s.next_request(t) or pytest.fail(), t, 0.1, edge="b")
    assert s.report().bytes_per_edge == {"a": seg_bytes(235), "b": 2 * seg_bytes(235)}


# ------------------------------------------------------------------ failover bookkeeping


def test_fail_over_down_the_list_then_resteer() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3, failover_policy=FailoverPolicy(max_resteers=1))
    s.start(0.0)
    ranked = ["e1", "e2"]
    assert s.fail_over(ranked, "e1", FailureReason.CONNECT) == "e2"
    assert s.fail_over(ranked, "e2", "connect") is None  # list exhausted: back to steering
    assert s.can_resteer()
    s.on_resteer()
    # Connect failures outlive the re-steer; a fresh answer with a new edge is used.
    assert s.fail_over(["e1", "e2", "e3"], "e2", FailureReason.CONNECT) == "e3"
    assert not s.can_resteer()
    r = s.report()
    assert (r.failovers, r.retries, r.resteers, r.errors) == (3, 0, 1, 3)
    assert r.error_reasons == {"connect": 3}


def test_transient_failure_retries_the_same_edge_when_alone() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    assert s.fail_over(["e1"], "e1", FailureReason.TIMEOUT) == "e1"
    assert s.fail_over(["e1"], "e1", FailureReason.TIMEOUT) is None  # 2 attempts per edge
    r = s.report()
    assert r.retries == 1 and r.failovers == 1 and r.errors == 2


def test_resteer_cures_token_and_transient_failures() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    s.on_failover("e1", None, FailureReason.FORBIDDEN)
    s.on_failover("e2", None, FailureReason.CORRUPT)
    s.on_failover("e3", None, FailureReason.SERVER_ERROR)
    s.on_resteer()
    assert s.failures == {"e2": (FailureReason.CORRUPT,)}
    assert s.fail_over(["e2", "e1"], "e2", FailureReason.CORRUPT) == "e1"


def test_fatal_error_fails_the_session() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    t = download(s, s.next_request(0.0) or pytest.fail(), 0.0, 1.0)
    s.on_error("no edge left", fatal=True, now=t + 1.0)
    assert s.state is PlaybackState.FAILED and s.finished
    assert s.next_request(t + 2.0) is None and s.wait_time(t + 2.0) == 0.0
    r = s.report()
    assert r.errors == 1 and r.error_reasons == {"no edge left": 1}
    with pytest.raises(SessionError):
        s.on_segment_downloaded(1, 235, 1, t, t + 1)


def test_non_fatal_error_only_counts() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=3)
    s.start(0.0)
    s.next_request(0.0)
    s.on_error("bad playlist")
    assert s.state is PlaybackState.STARTING and s.report().errors == 1


# ------------------------------------------------------------------ whole sessions over a fake link


def test_fast_link_reaches_the_top_rate_without_stalls() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=60)
    run(s, lambda i: 50_000.0)
    r = s.report()
    assert r.rebuffer_count == 0 and r.state == "ended"
    assert r.startup_s is not None and r.startup_s < 0.1
    assert s.throughput_samples_kbps[-1] == pytest.approx(50_000.0)
    assert r.avg_bitrate_kbps > 3000


def test_link_collapse_drives_bba_down() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=80)
    rates: list[int] = []
    run(s, lambda i: 50_000.0 if i < 30 else 500.0,
        on_decision=lambda sess, req: rates.append(req.bitrate_kbps))
    assert max(rates[:30]) == 5800
    # Around a 500 kbit/s link BBA alternates between the two rungs that bracket it.
    assert set(rates[35:]) == {235, 750}
    assert s.report().rebuffer_count == 0  # the 56 s buffer absorbed the collapse


def test_throughput_rule_session() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=20, abr=make_abr("throughput", LADDER))
    run(s, lambda i: 2000.0)
    r = s.report()
    assert r.abr == "throughput" and r.rebuffer_count == 0
    assert r.avg_bitrate_kbps > 1500


@settings(max_examples=60, deadline=None)
@given(
    bandwidths=st.lists(st.floats(min_value=100.0, max_value=100_000.0), min_size=1, max_size=40),
    cap=st.sampled_from([8.0, 20.0, 60.0]),
    name=st.sampled_from(["bba", "throughput"]),
)
def test_session_invariants_over_random_links(bandwidths: list[float], cap: float, name: str) -> None:
    n = len(bandwidths)
    s = PlaybackSession(LADDER, SEG, n_segments=n, abr=make_abr(name, LADDER), buffer_cap_s=cap)
    seen: list[tuple[float, int]] = []
    last: list[int] = []

    def check(sess: PlaybackSession, req: SegmentRequest) -> None:
        assert sess.buffer_s + SEG <= cap + 1e-6
        assert req.bitrate_kbps in LADDER
        if name == "bba" and seen and last and sess.buffer_s < seen[-1][0]:
            assert req.bitrate_kbps <= last[-1]  # no switch up while draining
        seen.append((sess.buffer_s, req.bitrate_kbps))
        last.append(req.bitrate_kbps)

    end = run(s, lambda i: bandwidths[i], on_decision=check)
    r = s.report()
    assert r.state == "ended" and r.segments == n
    assert r.played_s == pytest.approx(n * SEG)
    assert r.startup_s is not None and r.startup_s > 0
    # Wall time = start-up + playing + stalled (waits for a full buffer overlap playing).
    assert end == pytest.approx(r.startup_s + r.played_s + r.rebuffer_s)
    assert r.rebuffer_s >= 0 and (r.rebuffer_count == 0) == (r.rebuffer_s == 0)
    assert r.qoe_lin == pytest.approx(qoe_lin(last, r.rebuffer_s))


def test_bba_abr_instance_default() -> None:
    s = PlaybackSession(LADDER, SEG, n_segments=1)
    assert isinstance(s.abr, BufferBasedAbr)


def test_startup_failover_resteers_and_hands_its_history_to_the_session() -> None:
    from player.abr import FailoverPolicy, FailureReason
    from player.session import PlaybackSession, StartupFailover

    book = StartupFailover(FailoverPolicy(max_attempts_per_edge=1, max_resteers=2))
    assert book.fail_over(["a", "b"], "a", FailureReason.SERVER_ERROR) == "b"
    assert book.fail_over(["a", "b"], "b", FailureReason.CONNECT) is None
    assert book.can_resteer()
    assert book.resteered(["a", "b"]) == "a"  # a 5xx is forgiven by a fresh answer, a refused connect is not
    assert book.counts()["failovers"] == 2 and book.resteers == 1
    s = PlaybackSession([235, 750], n_segments=3)
    book.replay(s)
    assert s.resteers == 1 and s.report().failovers == 2
    assert s.resteered(["b", "a"]) == "a"  # the session goes on with the same rules
