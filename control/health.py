"""The health of one edge, as the control plane sees it: a state machine written as tables.

DESIGN.md (Fleet): an edge heartbeats every second with its state (`up` or `draining`);
"Three missed heartbeats and steering stops sending clients there." STYLE.md: state
transitions are tables, not if-chains (h11's `_state.py` is the model).

States (`HEALTH_STATES`):

    up          heartbeats arrive on time, the edge says "up"            -> steer there
    suspect     1 or 2 heartbeat intervals missed                        -> steer there last
    down        3 or more intervals missed, or never heard from          -> never steer there
    draining    the edge says it is shutting down (heartbeats on time)   -> never steer there
    admin_down  an operator took it out (whatever the edge says)         -> never steer there

Rule 1: the state is a pure function of (operator flag, last reported state, liveness),
looked up in `HEALTH_TABLE`; liveness is a pure function of the time since the last
heartbeat, looked up in `LIVENESS_BY_MISSED`. `state_at(now)` only reads; time is passed
in, there is no clock, no timer and no "tick" that mutates anything, so a late tick
can never leave a stale state behind and tests need no sleeps.

Rule 2 (missed heartbeats, with grace): with interval I and grace G (default 0.5 I),

    missed(now) = max(0, floor((now - last_heartbeat - G) / I))

so an edge is `up` until 1.5 I after its last heartbeat, `suspect` from 1.5 I, and `down`
from 3.5 I (the third expected heartbeat is then half an interval late). The grace absorbs
network and scheduling jitter so an edge whose heartbeat is a little late does not flap
between `up` and `suspect` on every beat.

Rule 3: heartbeats are taken in time order; one older than the newest seen (a delayed
or reordered delivery) is ignored, so it can neither revive a dead edge nor undo a drain.

Rule 4: `admin_down` overrides everything and is left only by the operator (`on_admin(False)`);
heartbeats keep being recorded meanwhile, so on `admin_up` the edge is whatever its
heartbeats say at that moment (`up` if they kept coming, `down` if it died meanwhile).

Rule 5 (a partition is not a mass death; `hold_partitioned`): when every edge of one ISP has
gone silent at once (none `up` or `suspect`, draining and admin_down ones aside; two or more
silent edges whose last heartbeats lie within PARTITION_TOGETHER_S of each other), the likelier
story is that the ISP's path to the control plane broke, not that all its edges died together
(Apache Traffic Control's split-brain bugs dropped whole caches groups this way). Steering
then keeps them as `suspect` (steerable last, players fail over past a dead one) for
PARTITION_HOLD_S after the newest heartbeat any of them sent; longer silence is believed.
An edge of that ISP that still heartbeats makes its silent peers `down` as usual, and a lone
edge's silence, or edges that fell silent one after another, are believed.

`EVENT_TABLE` spells out the same machine edge by edge (state, event) -> state for readers
and tests; the tests check that the two tables agree.
"""
from __future__ import annotations

import enum
import math
from typing import Final

__all__ = [
    "EdgeHealth",
    "HealthState",
    "HEALTH_STATES",
    "STEERABLE_STATES",
    "REPORTED_STATES",
    "HEALTH_TABLE",
    "LIVENESS_BY_MISSED",
    "EVENT_TABLE",
    "liveness",
    "hold_partitioned",
    "PARTITION_HOLD_S",
]



class HealthState(enum.StrEnum):
    """An edge's health as steering sees it (a str, so JSON, metric labels and the
    simulator's plain strings compare equal to it)."""

    UP = "up"
    SUSPECT = "suspect"
    DOWN = "down"
    DRAINING = "draining"
    ADMIN_DOWN = "admin_down"


UP: Final = HealthState.UP
SUSPECT: Final = HealthState.SUSPECT
DOWN: Final = HealthState.DOWN
DRAINING: Final = HealthState.DRAINING
ADMIN_DOWN: Final = HealthState.ADMIN_DOWN

HEALTH_STATES: Final = tuple(HealthState)
STEERABLE_STATES: Final = frozenset({UP, SUSPECT})  # suspect only after every up edge
REPORTED_STATES: Final = (UP, DRAINING)  # what an edge may say (common.wire.EDGE_STATES)

# Liveness: how the heartbeats look, independent of what they say.
FRESH: Final = "fresh"  # 0 intervals missed
LATE: Final = "late"  # 1 or 2 missed
LOST: Final = "lost"  # 3 or more missed, or no heartbeat ever
PARTITION_HOLD_S: Final = 60.0
PARTITION_TOGETHER_S: Final = 3.0
SUSPECT_AFTER_MISSED: Final = 1
DOWN_AFTER_MISSED: Final = 3
LIVENESS_BY_MISSED: Final[tuple[str, ...]] = (FRESH, LATE, LATE)  # index = missed; beyond -> LOST
_LOST_INDEX: Final = len(LIVENESS_BY_MISSED)  # == DOWN_AFTER_MISSED

# (operator says down, last reported state or None, liveness) -> health state
HEALTH_TABLE: Final[dict[tuple[bool, str | None, str], HealthState]] = {
    (False, UP, FRESH): UP,
    (False, UP, LATE): SUSPECT,
    (False, UP, LOST): DOWN,
    (False, DRAINING, FRESH): DRAINING,
    (False, DRAINING, LATE): DRAINING,  # still leaving; never back to steerable by silence
    (False, DRAINING, LOST): DOWN,  # gone
    (False, None, LOST): DOWN,  # registered (or known) but never heard from
    **{(True, reported, live): ADMIN_DOWN
       for reported in (UP, DRAINING, None) for live in (FRESH, LATE, LOST)},
}

# The same machine as transitions, for readers and for the tests (which check agreement).
# Events: "hb:up" / "hb:draining" (an on-time heartbeat saying that), "miss:1" (the first
# missed interval), "miss:3" (the third), "admin:down", "admin:up".
EVENT_TABLE: Final[dict[tuple[HealthState, str], HealthState]] = {
    (UP, "hb:up"): UP,
    (UP, "hb:draining"): DRAINING,
    (UP, "miss:1"): SUSPECT,
    (UP, "admin:down"): ADMIN_DOWN,
    (SUSPECT, "hb:up"): UP,
    (SUSPECT, "hb:draining"): DRAINING,
    (SUSPECT, "miss:3"): DOWN,
    (SUSPECT, "admin:down"): ADMIN_DOWN,
    (DOWN, "hb:up"): UP,
    (DOWN, "hb:draining"): DRAINING,
    (DOWN, "admin:down"): ADMIN_DOWN,
    (DRAINING, "hb:up"): UP,  # a restarted edge
    (DRAINING, "hb:draining"): DRAINING,
    (DRAINING, "miss:3"): DOWN,
    (DRAINING, "admin:down"): ADMIN_DOWN,
    (ADMIN_DOWN, "hb:up"): ADMIN_DOWN,
    (ADMIN_DOWN, "hb:draining"): ADMIN_DOWN,
    (ADMIN_DOWN, "admin:down"): ADMIN_DOWN,
    # admin:up leaves ADMIN_DOWN for whatever HEALTH_TABLE says without the flag.
    # A (state, event) pair not listed leaves the state unchanged.
}


def liveness(missed: int | None) -> str:
    """FRESH / LATE / LOST for a number of missed intervals (None: never heard from)."""
    if missed is None or missed >= len(LIVENESS_BY_MISSED):
        return LOST
    return LIVENESS_BY_MISSED[missed]


def hold_partitioned(edges: list[tuple[HealthState, float | None]], now: float,
                     hold_s: float = PARTITION_HOLD_S) -> list[HealthState]:
    """Rule 5 for the edges of one ISP, given as (state, last heartbeat or None): the states
    steering should use. Pure."""
    if any(st in STEERABLE_STATES for st, _ in edges):
        return [st for st, _ in edges]
    silent = [last for st, last in edges if st is DOWN and last is not None]
    if len(silent) < 2 or max(silent) - min(silent) > PARTITION_TOGETHER_S or now - max(silent) > hold_s:
        return [st for st, _ in edges]
    return [SUSPECT if st is DOWN and last is not None else st for st, last in edges]


class EdgeHealth:
    """One edge's health: feed heartbeats and operator actions, ask `state_at(now)`."""

    __slots__ = ("interval", "grace", "_last", "_reported", "_admin_down", "_row")

    def __init__(self, interval: float = 1.0, grace: float | None = None) -> None:
        """`interval`: the heartbeat period (s); `grace`: slack before an interval counts
        as missed (default half an interval)."""
        if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
            raise ValueError("interval must be a positive number of seconds")
        g = 0.5 * interval if grace is None else grace
        if not (isinstance(g, (int, float)) and math.isfinite(g) and g >= 0):
            raise ValueError("grace must be a non-negative number of seconds")
        self.interval = float(interval)
        self.grace = float(g)
        self._last: float | None = None
        self._reported: str | None = None
        self._admin_down = False
        self._row = self._table_row()

    def _table_row(self) -> tuple[HealthState, ...]:
        """HEALTH_TABLE's row for the current flags, indexed by min(missed, _LOST_INDEX):
        state_at runs per edge per play request, so the table is read once per event, not
        once per query."""
        a, r = self._admin_down, self._reported
        return tuple(HEALTH_TABLE[(a, r, liveness(m if r is not None else None))] for m in range(_LOST_INDEX + 1))

    # ---------------------------------------------------------------- events

    def on_heartbeat(self, now: float, reported_state: str) -> None:
        """A heartbeat received at `now` saying `reported_state` ("up" or "draining")."""
        if reported_state not in REPORTED_STATES:
            raise ValueError(f"reported state must be one of {REPORTED_STATES}, not {reported_state!r}")
        if not math.isfinite(now):
            raise ValueError("now must be finite")
        if self._last is not None and now < self._last:
            return  # Rule 3: out of order
        self._last = float(now)
        if reported_state != self._reported:
            self._reported = reported_state
            self._row = self._table_row()

    def on_admin(self, down: bool) -> None:
        """The operator takes the edge out (`down=True`) or puts it back (`down=False`)."""
        self._admin_down = bool(down)
        self._row = self._table_row()

    # ---------------------------------------------------------------- queries

    def missed_at(self, now: float) -> int | None:
        """Whole heartbeat intervals missed at `now` (Rule 2); None if never heard from."""
        if self._last is None:
            return None
        late = now - self._last - self.grace
        if late < 0:
            return 0
        return int(late // self.interval)

    def state_at(self, now: float) -> HealthState:
        """The health state at `now`: one of HEALTH_STATES. Pure; changes nothing."""
        last = self._last
        if last is None:
            return self._row[_LOST_INDEX]
        late = now - last - self.grace
        if late < 0:
            return self._row[0]
        missed = int(late // self.interval)
        return self._row[missed if missed < _LOST_INDEX else _LOST_INDEX]

    def steerable_at(self, now: float) -> bool:
        return self.state_at(now) in STEERABLE_STATES

    @property
    def last_heartbeat(self) -> float | None:
        return self._last

    @property
    def reported_state(self) -> str | None:
        return self._reported

    @property
    def admin_down(self) -> bool:
        return self._admin_down

    def __repr__(self) -> str:
        return (f"EdgeHealth(interval={self.interval}, last={self._last}, "
                f"reported={self._reported}, admin_down={self._admin_down})")
