"""The playback session: a pure state machine over a simulated playback clock.

It owns the buffer, start-up, rebuffering, QoE accounting and failover
bookkeeping of one viewing; it does no IO and reads no clock. A driver (the
asyncio player, a Locust user, the simulator) fetches bytes and tells it what
happened, with times on one clock of its choosing::

    s = PlaybackSession(ladder_kbps=[235, 750, ...], segment_s=4.0, n_segments=N)
    s.start(now)                       # the user pressed play (else: first next_request)
    while not (s.all_downloaded or s.finished):
        req = s.next_request(now)      # SegmentRequest(index, bitrate_kbps) or None
        if req is None:                # buffer full
            wait s.wait_time(now) ...  # then ask again
            continue
        fetch it, timing started_at / finished_at, then
        s.on_segment_downloaded(req.index, req.bitrate_kbps, nbytes,
                                started_at, finished_at, edge=edge_id)
      on a failed request at edge E:
        nxt = s.fail_over(ranked_edges, E, FailureReason.X)   # records it, picks next
        if nxt is None: s.can_resteer() ? (re-steer; s.on_resteer()) : s.on_error(..., fatal=True)
    report = s.report()

Rules:

1. Time only moves forward, and only through the `now` / `finished_at` values
   the driver passes; `advance(now)` plays the buffer out up to `now`. Times
   earlier than the session clock are treated as "now" (clamped), never rewind.
2. One request is outstanding at a time: `next_request` returns the same
   request until it is downloaded or a failure (`on_failover`, `on_error`)
   invalidates it, so the ABR decides once per segment attempt.
3. States and their transitions are the table `_TRANSITIONS`.
4. Start-up delay runs from `start(now)` to the end of the first segment's
   download (first frame) and is not rebuffering. A rebuffer starts when the
   buffer runs dry before the last segment is downloaded, and ends when the
   next segment arrives.

Playing at speed X: the session clock is media time. The driver passes a
scaled clock, ``now = t0 + (monotonic() - t0_real) * X``, uses the same
clock for ``started_at`` / ``finished_at``, and sleeps ``wait_time(now) / X``
real seconds. The buffer then drains X times faster than real time, and
measured throughputs come out X times lower (bytes per media second), which is
exactly how the network looks to a player that consumes X times faster.

QoE_lin is Pensieve's linear QoE (Mao et al., SIGCOMM 2017, section 5.1):
sum over segments of q(R_n) - 4.3 x total rebuffer seconds - sum |q(R_n+1) - q(R_n)|,
with q(R) the bitrate in Mbit/s.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .abr import (
    AbrAlgorithm,
    FailoverPolicy,
    FailureReason,
    forget_on_resteer,
    make_abr,
    next_candidate,
)

__all__ = [
    "PlaybackSession",
    "PlaybackState",
    "QoEReport",
    "REBUFFER_PENALTY",
    "SegmentRequest",
    "SessionError",
    "qoe_lin",
]

REBUFFER_PENALTY = 4.3  # Pensieve's mu for QoE_lin, per second of rebuffering
_EPS = 1e-9  # float slack when comparing buffer levels against the cap
_THROUGHPUT_WINDOW = 20  # throughput samples handed to the ABR


class SessionError(ValueError):
    """The driver broke the session's protocol (a bug in the driver, not the network)."""


class PlaybackState(enum.Enum):
    STARTING = "starting"        # play pressed, no frame shown yet
    PLAYING = "playing"
    REBUFFERING = "rebuffering"  # buffer ran dry before the end
    ENDED = "ended"              # every segment downloaded and played out
    FAILED = "failed"            # aborted by a fatal error


class _Event(enum.Enum):
    SEGMENT = "segment"      # a segment finished downloading
    DRY = "dry"              # the buffer ran out, segments still to come
    DRAINED = "drained"      # the buffer ran out after the last segment
    FATAL = "fatal"          # the driver gave up


_S, _E = PlaybackState, _Event
_TRANSITIONS: Mapping[tuple[PlaybackState, _Event], PlaybackState] = {
    (_S.STARTING, _E.SEGMENT): _S.PLAYING,
    (_S.STARTING, _E.FATAL): _S.FAILED,
    (_S.PLAYING, _E.SEGMENT): _S.PLAYING,
    (_S.PLAYING, _E.DRY): _S.REBUFFERING,
    (_S.PLAYING, _E.DRAINED): _S.ENDED,
    (_S.PLAYING, _E.FATAL): _S.FAILED,
    (_S.REBUFFERING, _E.SEGMENT): _S.PLAYING,
    (_S.REBUFFERING, _E.FATAL): _S.FAILED,
}
_TERMINAL = frozenset({PlaybackState.ENDED, PlaybackState.FAILED})


@dataclass(frozen=True)
class SegmentRequest:
    index: int
    bitrate_kbps: int


def qoe_lin(bitrates_kbps: Sequence[int], rebuffer_s: float) -> float:
    """Pensieve's QoE_lin over a session's per-segment bitrates (kbit/s)."""
    mbps = [b / 1000.0 for b in bitrates_kbps]
    quality = sum(mbps)
    smoothness = sum(abs(b - a) for a, b in zip(mbps, mbps[1:]))
    return quality - REBUFFER_PENALTY * rebuffer_s - smoothness


@dataclass(frozen=True)
class QoEReport:
    """What one session delivered. Times are in session-clock (media) seconds."""

    state: str
    startup_s: float | None          # None: no frame was ever shown
    rebuffer_count: int
    rebuffer_s: float
    avg_bitrate_kbps: float
    switches: int
    failovers: int                   # moves to another edge (or back to steering)
    retries: int                     # retries on the same edge
    resteers: int
    errors: int                      # failed requests: on_failover + on_error calls
    error_reasons: Mapping[str, int]
    bytes: int
    bytes_per_edge: Mapping[str, int]
    segments: int                    # segments downloaded
    n_segments: int
    played_s: float
    qoe_lin: float
    abr: str
    slow_moves: int = 0              # moves to a faster edge (player.slow_edges): not failures

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_reasons"] = dict(self.error_reasons)
        d["bytes_per_edge"] = dict(self.bytes_per_edge)
        return d


class PlaybackSession:
    """One viewing of one title; see the module docstring for the driver protocol."""

    def __init__(
        self,
        ladder_kbps: Sequence[int],
        segment_s: float = 4.0,
        n_segments: int = 1,
        abr: AbrAlgorithm | None = None,
        *,
        buffer_cap_s: float = 60.0,
        last_segment_s: float | None = None,
        failover_policy: FailoverPolicy | None = None,
        segment_kbps: Mapping[int, Sequence[float]] | None = None,
    ) -> None:
        if segment_s <= 0:
            raise ValueError("segment_s must be > 0")
        if n_segments < 1:
            raise ValueError("n_segments must be >= 1")
        if buffer_cap_s < segment_s:
            raise ValueError("buffer_cap_s must hold at least one segment")
        if last_segment_s is not None and not 0 < last_segment_s <= segment_s:
            raise ValueError("last_segment_s must be in (0, segment_s]")
        self.ladder_kbps = tuple(sorted(set(int(r) for r in ladder_kbps)))
        if not self.ladder_kbps:
            raise ValueError("the bitrate ladder is empty")
        self.segment_s = float(segment_s)
        self.n_segments = int(n_segments)
        self.last_segment_s = float(segment_s if last_segment_s is None else last_segment_s)
        self.buffer_cap_s = float(buffer_cap_s)
        self.abr: AbrAlgorithm = abr if abr is not None else make_abr("bba", self.ladder_kbps)
        self.policy = failover_policy if failover_policy is not None else FailoverPolicy()
        # rung -> the real bit rate of each of its segments (packaged media's #EXT-X-BITRATE);
        # handed to the ABR per decision. Ignored unless it covers every rung and segment.
        self.segment_kbps: dict[int, tuple[float, ...]] | None = None
        if segment_kbps is not None and set(segment_kbps) == set(self.ladder_kbps) and all(
                len(v) >= self.n_segments for v in segment_kbps.values()):
            self.segment_kbps = {r: tuple(float(x) for x in v) for r, v in segment_kbps.items()}

        self._state = PlaybackState.STARTING
        self._started_at: float | None = None
        self._clock: float | None = None
        self._buffer_s = 0.0
        self._played_s = 0.0
        self._startup_s: float | None = None
        self._rebuffer_count = 0
        self._rebuffer_s = 0.0
        self._next_index = 0
        self._outstanding: SegmentRequest | None = None
        self._bitrates: list[int] = []
        self._throughputs: list[float] = []
        self._bytes = 0
        self._bytes_per_edge: dict[str, int] = {}
        self._failovers = 0
        self._slow_moves = 0
        self._retries = 0
        self._resteers = 0
        self._errors = 0
        self._error_reasons: dict[str, int] = {}
        self._failures: dict[str, tuple[FailureReason, ...]] = {}

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> PlaybackState:
        return self._state

    @property
    def buffer_s(self) -> float:
        """Seconds buffered ahead of the play head, as of the session clock."""
        return self._buffer_s

    @property
    def clock(self) -> float | None:
        """The latest time the session has seen (None before the start)."""
        return self._clock

    @property
    def all_downloaded(self) -> bool:
        """Every segment is in; nothing later can change the QoE, the driver may stop."""
        return self._next_index >= self.n_segments

    @property
    def finished(self) -> bool:
        return self._state in _TERMINAL

    @property
    def failures(self) -> Mapping[str, tuple[FailureReason, ...]]:
        """Failed attempts per edge that still count for failover choices."""
        return dict(self._failures)

    @property
    def resteers(self) -> int:
        return self._resteers

    @property
    def throughput_samples_kbps(self) -> tuple[float, ...]:
        return tuple(self._throughputs)

    def _fire(self, event: _Event) -> None:
        try:
            self._state = _TRANSITIONS[(self._state, event)]
        except KeyError:
            raise SessionError(f"{event.value} is not possible while {self._state.value}") from None

    def _duration(self, index: int) -> float:
        return self.last_segment_s if index == self.n_segments - 1 else self.segment_s

    def segment_duration(self, index: int) -> float:
        """Media seconds segment `index` holds."""
        return self._duration(index)

    # ------------------------------------------------------------------ clock

    def start(self, now: float) -> None:
        """The user pressed play at `now`: start-up delay is measured from here."""
        if self._started_at is not None:
            raise SessionError("the session was already started")
        self._started_at = float(now)
        self._clock = float(now)

    def advance(self, now: float) -> None:
        """Play the buffer out up to `now` (rebuffer time accrues while dry)."""
        if self._started_at is None:
            self.start(now)
            return
        assert self._clock is not None
        if now <= self._clock:
            return
        dt = now - self._clock
        self._clock = float(now)
        if self._state is PlaybackState.REBUFFERING:
            self._rebuffer_s += dt
        elif self._state is PlaybackState.PLAYING:
            if dt < self._buffer_s - _EPS:
                self._buffer_s -= dt
                self._played_s += dt
                return
            self._played_s += self._buffer_s
            dry_for = max(0.0, dt - self._buffer_s)
            self._buffer_s = 0.0
            if self.all_downloaded:
                self._fire(_Event.DRAINED)
            else:
                self._fire(_Event.DRY)
                self._rebuffer_count += 1
                self._rebuffer_s += dry_for

    # --------------------------------------------------------------- requests

    def next_request(self, now: float) -> SegmentRequest | None:
        """The segment to fetch now, or None: wait `wait_time(now)` (buffer full) or stop."""
        self.advance(now)
        if self.finished or self.all_downloaded:
            return None
        if self._outstanding is not None:
            return self._outstanding
        if self._buffer_s + self._duration(self._next_index) > self.buffer_cap_s + _EPS:
            return None
        last = self._bitrates[-1] if self._bitrates else None
        i = self._next_index
        samples = self._throughputs[-_THROUGHPUT_WINDOW:]
        if self.segment_kbps is None:  # three arguments: an ABR written before next_kbps still works
            rate = self.abr.choose(self._buffer_s, last, samples)
        else:
            rate = self.abr.choose(self._buffer_s, last, samples, {r: v[i] for r, v in self.segment_kbps.items()})
        self._outstanding = SegmentRequest(self._next_index, rate)
        return self._outstanding

    def wait_time(self, now: float) -> float:
        """Seconds (session clock) until `next_request` has something to say.

        0 when a request is due; the time until the buffer has room for the next
        segment when it is full; the remaining playout once everything is downloaded
        (the driver may as well stop then); 0 once finished.
        """
        self.advance(now)
        if self.finished:
            return 0.0
        if self.all_downloaded:
            return self._buffer_s
        if self._outstanding is not None:
            return 0.0
        over = self._buffer_s + self._duration(self._next_index) - self.buffer_cap_s
        return over if over > _EPS else 0.0

    def on_segment_downloaded(
        self,
        index: int,
        bitrate_kbps: int,
        nbytes: int,
        started_at: float,
        finished_at: float,
        edge: str | None = None,
    ) -> None:
        """Segment `index` at `bitrate_kbps` arrived whole at `finished_at`."""
        if self.finished:
            raise SessionError(f"the session is {self._state.value}")
        if index != self._next_index:
            raise SessionError(f"expected segment {self._next_index}, got {index}")
        if bitrate_kbps not in self.ladder_kbps:
            raise SessionError(f"{bitrate_kbps} kbit/s is not in the ladder {self.ladder_kbps}")
        if nbytes < 0 or finished_at < started_at:
            raise SessionError("negative size or a download that ends before it starts")
        self.advance(finished_at)
        elapsed = finished_at - started_at
        self._throughputs.append(nbytes * 8 / 1000.0 / elapsed if elapsed > 0 else math.inf)
        if self._state is PlaybackState.STARTING:
            assert self._started_at is not None and self._clock is not None
            self._startup_s = self._clock - self._started_at
        self._fire(_Event.SEGMENT)
        self._buffer_s += self._duration(index)
        self._bitrates.append(int(bitrate_kbps))
        self._bytes += int(nbytes)
        if edge is not None:
            self._bytes_per_edge[edge] = self._bytes_per_edge.get(edge, 0) + int(nbytes)
        self._next_index += 1
        self._outstanding = None

    # ---------------------------------------------------------------- failures

    def on_failover(self, from_edge: str, to_edge: str | None, reason: FailureReason | str) -> None:
        """A request to `from_edge` failed for `reason`; the driver goes to `to_edge`.

        `to_edge` None means back to steering; equal to `from_edge` means a retry.
        Counts one error; invalidates the outstanding request (the ABR decides again).
        SLOW (an edge too slow to play from, player.slow_edges) is remembered for the next
        choice like a failure but counted apart, as a `slow_moves`, not an error.
        """
        why = FailureReason(reason)
        self._failures[from_edge] = self._failures.get(from_edge, ()) + (why,)
        if why is FailureReason.SLOW:
            self._slow_moves += 1
            self._outstanding = None
            return
        self._count_error(why.value)
        if to_edge == from_edge:
            self._retries += 1
        else:
            self._failovers += 1
        self._outstanding = None

    def fail_over(
        self, ranked: Sequence[str], from_edge: str, reason: FailureReason | str
    ) -> str | None:
        """Record a failure at `from_edge` and pick the next edge (None: re-steer or give up)."""
        why = FailureReason(reason)
        seen = dict(self._failures)
        seen[from_edge] = seen.get(from_edge, ()) + (why,)
        nxt = next_candidate(ranked, seen, self.policy)
        self.on_failover(from_edge, nxt, why)
        return nxt

    def can_resteer(self) -> bool:
        return self.policy.may_resteer(self._resteers)

    def on_resteer(self) -> None:
        """A fresh steering answer arrived: forget failures a new answer cures."""
        self._resteers += 1
        self._failures = forget_on_resteer(self._failures)

    def resteered(self, ranked: Sequence[str]) -> str | None:
        """A fresh steering answer arrived: the edge to try next in it (None: none left)."""
        self.on_resteer()
        return next_candidate(ranked, self.failures, self.policy)

    def on_error(self, reason: str, fatal: bool = False, now: float | None = None) -> None:
        """A failed request that is not a failover; `fatal` ends the session as FAILED."""
        if now is not None:
            self.advance(now)
        self._count_error(str(reason))
        self._outstanding = None
        if fatal and not self.finished:
            self._fire(_Event.FATAL)

    def _count_error(self, reason: str) -> None:
        self._errors += 1
        self._error_reasons[reason] = self._error_reasons.get(reason, 0) + 1

    # ------------------------------------------------------------------ report

    def report(self) -> QoEReport:
        n = len(self._bitrates)
        return QoEReport(
            state=self._state.value,
            startup_s=self._startup_s,
            rebuffer_count=self._rebuffer_count,
            rebuffer_s=self._rebuffer_s,
            avg_bitrate_kbps=(sum(self._bitrates) / n) if n else 0.0,
            switches=sum(1 for a, b in zip(self._bitrates, self._bitrates[1:]) if a != b),
            failovers=self._failovers,
            retries=self._retries,
            resteers=self._resteers,
            errors=self._errors,
            error_reasons=dict(self._error_reasons),
            bytes=self._bytes,
            bytes_per_edge=dict(self._bytes_per_edge),
            segments=n,
            n_segments=self.n_segments,
            played_s=self._played_s,
            qoe_lin=qoe_lin(self._bitrates, self._rebuffer_s),
            abr=self.abr.name,
            slow_moves=self._slow_moves,
        )


class StartupFailover:
    """Failover bookkeeping before the session exists (same calls as PlaybackSession);
    `replay` hands the history to the session once the playlists say how long it is."""

    def __init__(self, policy: FailoverPolicy) -> None:
        self.policy = policy
        self.failures: dict[str, tuple[FailureReason, ...]] = {}
        self.resteers = 0
        self._log: list[tuple[str, str | None, FailureReason | None, str | None]] = []

    def fail_over(self, ranked: Sequence[str], from_edge: str, reason: FailureReason) -> str | None:
        self.failures[from_edge] = self.failures.get(from_edge, ()) + (reason,)
        nxt = next_candidate(ranked, self.failures, self.policy)
        self._log.append(("failover", from_edge, reason, nxt))
        return nxt

    def can_resteer(self) -> bool:
        return self.policy.may_resteer(self.resteers)

    def on_resteer(self) -> None:
        self.resteers += 1
        self.failures = forget_on_resteer(self.failures)
        self._log.append(("resteer", None, None, None))

    def resteered(self, ranked: Sequence[str]) -> str | None:
        """A fresh steering answer arrived: the edge to try next in it (None: none left)."""
        self.on_resteer()
        return next_candidate(ranked, self.failures, self.policy)

    def counts(self) -> dict[str, Any]:
        """The failover fields of a report, for a session that never got to start."""
        reasons: dict[str, int] = {}
        failovers = retries = 0
        for what, from_edge, reason, to_edge in self._log:
            if what == "failover":
                assert reason is not None
                reasons[reason.value] = reasons.get(reason.value, 0) + 1
                if to_edge == from_edge:
                    retries += 1
                else:
                    failovers += 1
        return {"failovers": failovers, "retries": retries, "resteers": self.resteers,
                "errors": sum(reasons.values()), "error_reasons": reasons}

    def replay(self, session: PlaybackSession) -> None:
        for what, from_edge, reason, to_edge in self._log:
            if what == "failover":
                assert from_edge is not None and reason is not None
                session.on_failover(from_edge, to_edge, reason)
            else:
                session.on_resteer()
