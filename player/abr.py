"""The ABR decision core: which bitrate to fetch next, and which edge to fail over to.

Pure: no asyncio, no IO, no clocks, and nothing but the standard library is
imported, because the same module runs under the asyncio player, under a Locust
user (gevent monkey-patching) and in the offline simulator. Time and measurements
are always passed in.

Rule 1: an algorithm sees only three things per decision::

    abr.choose(buffer_s, last_bitrate_kbps, throughput_samples_kbps, next_kbps=None) -> int

    buffer_s                  seconds of media buffered ahead of the play head, now
    last_bitrate_kbps         bitrate of the last segment downloaded (None: first one)
    throughput_samples_kbps   measured throughput of past segment downloads, oldest
                              first; the last one belongs to the last segment
    next_kbps                 optional: the real bit rate of the segment about to be
                              fetched, per rung (packaged media announce it per segment,
                              #EXT-X-BITRATE); None: each rung's nominal rate

and answers a bitrate of its ladder. Call it once per segment decision (the BBA
state below advances once per call); `reset()` forgets the state.

Rule 2: algorithms are made by name, `make_abr(name, ladder_kbps, **params)`:

``bba`` (default)
    Buffer-based adaptation, Huang et al., "A Buffer-Based Approach to Rate
    Adaptation", SIGCOMM 2014. Steady state is BBA-1: a rate map f(B) from buffer
    level to rate, R_min up to the reservoir r, R_max from r + cushion c on, linear
    in between, applied with the paper's hysteresis (Algorithm 1): switch up only
    once f(B) reaches the next higher rate, switch down only once it falls to the
    next lower one. Start-up is BBA-2's (section 5): while the buffer is still
    growing fast, step up one rung per segment if the last segment's download
    grew the buffer by more than a threshold (0.875 of the segment at an empty
    buffer, falling linearly to 0.5 at r + c; i.e. the segment came 8x, later 2x,
    faster than real time) and the measured throughput times a safety factor
    affords the next rung. Start-up ends for good when the buffer shrinks or the
    map asks for more than the start-up rate. Throughput is used nowhere else.
    On top of both: while the buffer drains (lower than at the previous decision)
    the rate never goes up.

    With `next_kbps`, "affords the next rung" compares the throughput with that rung's
    real next segment, not its nominal rate.

``throughput``
    The classic rate rule: harmonic mean of the last K throughput samples times a
    safety factor; the highest rung at or below it (the lowest rung without samples).
    With `next_kbps`, the highest rung whose real next segment fits the estimate: a
    VBR peak in a rung's next segment moves the choice down for that segment only.

Rule 3: failover is a table (`FAILURE_RULES`), not an if-chain. `next_candidate`
picks the next edge of a steering answer given what failed in this session;
None means "back to steering", which `FailoverPolicy.may_resteer` bounds.
"""
from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ABR_NAMES",
    "AbrAlgorithm",
    "BufferBasedAbr",
    "FAILURE_RULES",
    "FailoverPolicy",
    "FailureReason",
    "FailureRule",
    "ThroughputAbr",
    "forget_on_resteer",
    "harmonic_mean",
    "make_abr",
    "next_candidate",
]


class AbrAlgorithm(Protocol):
    """What the session and the drivers need from an ABR algorithm."""

    @property
    def name(self) -> str: ...

    @property
    def ladder_kbps(self) -> tuple[int, ...]: ...

    def choose(
        self,
        buffer_s: float,
        last_bitrate_kbps: int | None,
        throughput_samples_kbps: Sequence[float],
        next_kbps: Mapping[int, float] | None = None,
    ) -> int: ...

    def reset(self) -> None: ...


def _check_ladder(ladder_kbps: Sequence[int]) -> tuple[int, ...]:
    ladder = tuple(sorted(set(int(r) for r in ladder_kbps)))
    if not ladder:
        raise ValueError("the bitrate ladder is empty")
    if ladder[0] <= 0:
        raise ValueError(f"bitrates must be positive, got {ladder[0]}")
    return ladder


def _usable(samples: Sequence[float]) -> list[float]:
    # A zero-length download gives +inf, which is a fine (very fast) sample;
    # NaN and non-positive values carry no information.
    return [float(x) for x in samples if not math.isnan(x) and x > 0]


def harmonic_mean(samples: Sequence[float]) -> float | None:
    """Harmonic mean of the positive samples; None without any; +inf if all are +inf."""
    xs = _usable(samples)
    if not xs:
        return None
    inverse = sum(1.0 / x for x in xs)
    return math.inf if inverse == 0.0 else len(xs) / inverse


class _Ladder:
    """Rung arithmetic over a sorted ladder."""

    def __init__(self, ladder_kbps: Sequence[int]) -> None:
        self.rates = _check_ladder(ladder_kbps)
        self.lowest = self.rates[0]
        self.highest = self.rates[-1]

    def rung(self, rate: int) -> int:
        try:
            return self.rates.index(rate)
        except ValueError:
            raise ValueError(f"{rate} kbit/s is not in the ladder {self.rates}") from None

    def above(self, rate: int) -> int:
        """Next higher rate (R_max for R_max)."""
        i = self.rung(rate)
        return self.rates[min(i + 1, len(self.rates) - 1)]

    def below(self, rate: int) -> int:
        """Next lower rate (R_min for R_min)."""
        i = self.rung(rate)
        return self.rates[max(i - 1, 0)]

    def highest_at_most(self, kbps: float) -> int:
        """Highest rate <= kbps, or the lowest rate if none is."""
        best = self.lowest
        for r in self.rates:
            if r <= kbps:
                best = r
        return best


class BufferBasedAbr:
    """BBA-1 rate map with hysteresis, BBA-2 start-up, no up-switch while draining.

    `reservoir_s` and `cushion_s` are the paper's r and cu; they should fit under
    the player's buffer cap with room to spare (the paper keeps the top ~10% of
    the buffer as an upper reservoir), so R_max is reachable. Defaults suit a
    60 s buffer cap and 4 s segments.
    """

    name = "bba"

    def __init__(
        self,
        ladder_kbps: Sequence[int],
        *,
        reservoir_s: float = 10.0,
        cushion_s: float = 40.0,
        startup: bool = True,
        startup_safety: float = 0.9,
        startup_threshold_empty: float = 0.875,
        startup_threshold_full: float = 0.5,
    ) -> None:
        if reservoir_s < 0 or cushion_s <= 0:
            raise ValueError("reservoir must be >= 0 and cushion > 0")
        if not 0 < startup_safety <= 1:
            raise ValueError("startup_safety must be in (0, 1]")
        if not 0 <= startup_threshold_full <= startup_threshold_empty < 1:
            raise ValueError("need 0 <= startup_threshold_full <= startup_threshold_empty < 1")
        self._ladder = _Ladder(ladder_kbps)
        self.reservoir_s = float(reservoir_s)
        self.cushion_s = float(cushion_s)
        self.startup_enabled = startup
        self.startup_safety = float(startup_safety)
        self.startup_threshold_empty = float(startup_threshold_empty)
        self.startup_threshold_full = float(startup_threshold_full)
        self._in_startup = startup
        self._prev_buffer_s: float | None = None

    @property
    def ladder_kbps(self) -> tuple[int, ...]:
        return self._ladder.rates

    @property
    def in_startup(self) -> bool:
        """True while BBA-2's start-up phase may still ramp the rate up."""
        return self._in_startup

    def reset(self) -> None:
        self._in_startup = self.startup_enabled
        self._prev_buffer_s = None

    def rate_map(self, buffer_s: float) -> float:
        """f(B): the paper's piecewise-linear map from buffer level to rate (kbit/s)."""
        lo, hi = self._ladder.lowest, self._ladder.highest
        if buffer_s <= self.reservoir_s:
            return float(lo)
        if buffer_s >= self.reservoir_s + self.cushion_s:
            return float(hi)
        frac = (buffer_s - self.reservoir_s) / self.cushion_s
        return lo + frac * (hi - lo)

    def map_choice(self, buffer_s: float, last_bitrate_kbps: int | None) -> int:
        """BBA-1, Algorithm 1 of the paper (rate map plus hysteresis)."""
        ladder = self._ladder
        if buffer_s <= self.reservoir_s:
            return ladder.lowest
        if buffer_s >= self.reservoir_s + self.cushion_s:
            return ladder.highest
        if last_bitrate_kbps is None:
            return ladder.lowest
        f = self.rate_map(buffer_s)
        up, down = ladder.above(last_bitrate_kbps), ladder.below(last_bitrate_kbps)
        if f >= up:
            return max(r for r in ladder.rates if r < f)
        if f <= down:
            return min(r for r in ladder.rates if r > f)
        return last_bitrate_kbps

    def startup_choice(
        self, buffer_s: float, last_bitrate_kbps: int, throughput_samples_kbps: Sequence[float],
        next_kbps: Mapping[int, float] | None = None,
    ) -> int:
        """BBA-2 start-up: one rung up if the last download grew the buffer fast enough."""
        samples = _usable(throughput_samples_kbps)
        if not samples:
            return last_bitrate_kbps
        measured = samples[-1]
        # Downloading a V-second segment at rate R with throughput C takes V*R/C,
        # so the buffer grew by dB = V - V*R/C, i.e. dB/V = 1 - R/C.
        growth = 1.0 - last_bitrate_kbps / measured
        full = self.reservoir_s + self.cushion_s
        frac = min(1.0, max(0.0, buffer_s / full))
        threshold = self.startup_threshold_empty - frac * (
            self.startup_threshold_empty - self.startup_threshold_full
        )
        nxt = self._ladder.above(last_bitrate_kbps)
        cost = next_kbps.get(nxt, nxt) if next_kbps else nxt  # the real next segment, when known
        if growth > threshold and cost <= measured * self.startup_safety:
            return nxt
        return last_bitrate_kbps

    def choose(
        self,
        buffer_s: float,
        last_bitrate_kbps: int | None,
        throughput_samples_kbps: Sequence[float],
        next_kbps: Mapping[int, float] | None = None,
    ) -> int:
        if last_bitrate_kbps is not None:
            self._ladder.rung(last_bitrate_kbps)  # validates
        draining = self._prev_buffer_s is not None and buffer_s < self._prev_buffer_s
        self._prev_buffer_s = buffer_s
        mapped = self.map_choice(buffer_s, last_bitrate_kbps)
        if last_bitrate_kbps is None:
            # The first segment: nothing measured about this session yet.
            return mapped
        if self._in_startup:
            if draining:
                self._in_startup = False
            else:
                ramp = self.startup_choice(buffer_s, last_bitrate_kbps, throughput_samples_kbps, next_kbps)
                if mapped > ramp:
                    self._in_startup = False
                else:
                    return ramp
        if draining:
            return min(mapped, last_bitrate_kbps)
        return mapped


class ThroughputAbr:
    """Rate rule: highest rung <= safety x harmonic mean of the last `window` samples."""

    name = "throughput"

    def __init__(self, ladder_kbps: Sequence[int], *, window: int = 5, safety: float = 0.9) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        if not 0 < safety <= 1:
            raise ValueError("safety must be in (0, 1]")
        self._ladder = _Ladder(ladder_kbps)
        self.window = int(window)
        self.safety = float(safety)

    @property
    def ladder_kbps(self) -> tuple[int, ...]:
        return self._ladder.rates

    def reset(self) -> None:
        pass

    def estimate_kbps(self, throughput_samples_kbps: Sequence[float]) -> float | None:
        """Safety-scaled harmonic mean of the last `window` samples, or None."""
        recent = list(throughput_samples_kbps)[-self.window:]
        mean = harmonic_mean(recent)
        return None if mean is None else mean * self.safety

    def choose(
        self,
        buffer_s: float,
        last_bitrate_kbps: int | None,
        throughput_samples_kbps: Sequence[float],
        next_kbps: Mapping[int, float] | None = None,
    ) -> int:
        estimate = self.estimate_kbps(throughput_samples_kbps)
        if estimate is None:
            return self._ladder.lowest
        if next_kbps:
            fits = [r for r in self._ladder.rates if next_kbps.get(r, r) <= estimate]
            return max(fits) if fits else self._ladder.lowest
        return self._ladder.highest_at_most(estimate)


# Each constructor checks its own keyword parameters (an unknown one is a TypeError).
_ABR_BY_NAME: dict[str, Callable[..., AbrAlgorithm]] = {"bba": BufferBasedAbr, "throughput": ThroughputAbr}

ABR_NAMES: tuple[str, ...] = tuple(_ABR_BY_NAME)


def make_abr(name: str = "bba", ladder_kbps: Sequence[int] = (235, 750, 1750, 3000, 5800),
             **params: float | int | bool) -> AbrAlgorithm:
    """Build an ABR algorithm by name ("bba" or "throughput"); params go to its constructor."""
    factory = _ABR_BY_NAME.get(name.strip().lower())
    if factory is None:
        raise ValueError(f"unknown ABR {name!r}; choose one of {', '.join(ABR_NAMES)}")
    return factory(ladder_kbps, **params)


# --------------------------------------------------------------------------- failover


class FailureReason(enum.Enum):
    """Why a request to an edge failed, as the driver classifies it."""

    CONNECT = "connect"            # refused, reset, DNS, connect timeout: the edge is gone
    TIMEOUT = "timeout"            # connected, then stalled past the read timeout
    SERVER_ERROR = "server_error"  # 5xx (502/504 while the origin is down, 503 draining)
    FORBIDDEN = "forbidden"        # 403: the token was refused (expired, rotated key)
    NOT_FOUND = "not_found"        # 404
    CORRUPT = "corrupt"            # bytes failed verification, or a malformed answer
    TRUNCATED = "truncated"        # the body ended (connection closed) before its Content-Length
    SLOW = "slow"                  # the edge delivers far below the rendition's bit rate (player.slow_edges)


@dataclass(frozen=True)
class FailureRule:
    retry_same_edge: bool    # may this edge be tried again in this steering answer?
    survives_resteer: bool   # does the failure still count after a fresh steering answer?


FAILURE_RULES: Mapping[FailureReason, FailureRule] = {
    # A refused connection will be refused again; fresh steering should drop the edge
    # anyway after three missed heartbeats, but until then we must not go back.
    FailureReason.CONNECT: FailureRule(retry_same_edge=False, survives_resteer=True),
    # Transient: one more try is allowed; a re-steer starts afresh.
    FailureReason.TIMEOUT: FailureRule(retry_same_edge=True, survives_resteer=False),
    FailureReason.SERVER_ERROR: FailureRule(retry_same_edge=True, survives_resteer=False),
    # The token is the problem, not the edge: a re-steer brings fresh tokens.
    FailureReason.FORBIDDEN: FailureRule(retry_same_edge=False, survives_resteer=False),
    FailureReason.NOT_FOUND: FailureRule(retry_same_edge=False, survives_resteer=False),
    # An edge that served bad bytes is not trusted again in this session.
    FailureReason.CORRUPT: FailureRule(retry_same_edge=False, survives_resteer=True),
    # A body cut short is what a lost connection looks like, and what an edge does when it
    # finds, after sending, that the object changed under the send (edge/hitpath.py): the
    # bytes were never accepted, so the same edge is asked once more (it refetches).
    FailureReason.TRUNCATED: FailureRule(retry_same_edge=True, survives_resteer=False),
    # Slow is not broken: the edge may still be the best left (player.slow_edges, rule 3).
    FailureReason.SLOW: FailureRule(retry_same_edge=True, survives_resteer=False),
}


@dataclass(frozen=True)
class FailoverPolicy:
    """Bounds on retries: attempts per edge per steering answer, and re-steers per session.

    `enabled=False` switches failover off (a chaos experiment's control of the player's
    resilience): only steering's first edge is ever tried (retries on it as the rules allow)
    and steering is never asked again, so the first edge that fails for good ends the session."""

    max_attempts_per_edge: int = 2
    max_resteers: int = 2
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts_per_edge < 1 or self.max_resteers < 0:
            raise ValueError("need max_attempts_per_edge >= 1 and max_resteers >= 0")

    def may_resteer(self, resteers_done: int) -> bool:
        """True if the session may ask steering again after `resteers_done` re-steers."""
        return self.enabled and resteers_done < self.max_resteers


def _eligible(reasons: Sequence[FailureReason], policy: FailoverPolicy) -> bool:
    if len(reasons) >= policy.max_attempts_per_edge:
        return False
    return all(FAILURE_RULES[r].retry_same_edge for r in reasons)


def next_candidate(
    ranked: Sequence[str],
    failures: Mapping[str, Sequence[FailureReason]],
    policy: FailoverPolicy = FailoverPolicy(),
) -> str | None:
    """The next edge to try, or None to go back to steering.

    Edges that never failed come first, in steering's rank order; then edges
    whose failures allow a retry (transient ones, below the per-edge attempt
    limit), fewest failures first. An edge with a non-retryable failure
    (`FAILURE_RULES`) is never chosen.
    """
    best: tuple[int, int, str] | None = None
    for rank, edge in enumerate(ranked if policy.enabled else ranked[:1]):
        reasons = failures.get(edge, ())
        if not _eligible(reasons, policy):
            continue
        key = (len(reasons), rank, edge)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def forget_on_resteer(
    failures: Mapping[str, Sequence[FailureReason]],
) -> dict[str, tuple[FailureReason, ...]]:
    """The failures that still count once a fresh steering answer arrives."""
    kept: dict[str, tuple[FailureReason, ...]] = {}
    for edge, reasons in failures.items():
        left = tuple(r for r in reasons if FAILURE_RULES[r].survives_resteer)
        if left:
            kept[edge] = left
    return kept
