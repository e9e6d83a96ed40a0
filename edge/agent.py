"""The edge's control-plane agent: register, heartbeat, and run the fill plans the control
plane hands out (docs/CONTRACTS.md, "Edge <-> control").

Rules of this module:

1. The agent never takes the edge down. Control down, slow, answering garbage or
   answering with a bad signature: the agent logs, counts, retries with backoff, and the
   edge keeps serving.
2. Heartbeats run on a fixed-rate ticker (tick k is due at anchor + k * interval, so
   lateness does not accumulate); a late tick is skipped rather than stacked; each POST
   has a timeout shorter than the interval, so at most one heartbeat is ever in flight.
3. Nothing from the control plane is acted upon unless its reply carries a valid
   signature made with our edge key.
4. Fill plans are deduped by plan_id, run in the background within the plan's bandwidth
   cap (a token bucket, `FillPacer`), and reported in every heartbeat until a heartbeat
   that carried the final state ("done" or "failed") was acknowledged with a 200.

The decisions (pacing, backoff, tick schedule, plan state transitions) are plain code
with time passed in; the IO (aiohttp, sleeps) is in `EdgeAgent`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp

from common.logs import event
from common.wire import (
    CONTENT_TYPE,
    EDGE_HEADER,
    MAX_MESSAGE_BYTES,
    SIGNATURE_HEADER,
    BadMessage,
    BadSignature,
    ControlReply,
    FillPlan,
    FillPlanState,
    FillProgress,
    Heartbeat,
    Register,
)

__all__ = [
    "EdgeAgent",
    "EdgeStats",
    "FillPacer",
    "PlanState",
    "RegisterBackoff",
    "next_tick",
]

log = logging.getLogger("ocsim.edge.agent")

FILL_ATTEMPTS = 3  # one try and two retries, then the object counts as failed
FILL_RETRY_DELAY_S = 0.25  # times the attempt number
FILL_CONCURRENCY = 2
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.01, 60.0  # accepted range of heartbeat_interval_s from control
HEARTBEAT_TIMEOUT_FRACTION = 0.8  # of the interval: a heartbeat never outlives its tick
REGISTER_TIMEOUT_S = 2.0
DRAIN_TIMEOUT_S = 2.0
MAX_FINISHED_PLANS = 1000  # finished, reported plans kept for stats before the oldest are dropped


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("ocsim")
    except Exception:  # not installed (running from a checkout): the field is optional
        return ""


# ------------------------------------------------------------------ pure parts


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """What the edge tells the control plane about itself in each heartbeat."""

    capacity_bytes: int
    used_bytes: int
    objects: int
    req_rate: float
    byte_rate: float
    hit_ratio: float
    titles: list[str]


@dataclass(slots=True)
class FillPacer:
    """A token bucket over one plan's fill: after an object of N bytes, how long to wait
    so that the plan's average rate stays at or under `bandwidth_bps`.

    Kept as a theoretical arrival time (GCRA, ITU-T I.371): each object pushes `tat` by
    N*8/bps; the wait is `tat - now`. Idle time earns at most `burst_s` of credit, so a
    slow start does not license a burst later. `bandwidth_bps <= 0` means no cap. A single
    wait is bounded by `max_delay_s` (the debt still carries to the next object), so an
    absurdly small cap cannot park a fill for hours on one object.
    """

    bandwidth_bps: int
    start: float
    burst_s: float = 1.0
    max_delay_s: float = 30.0
    tat: float = field(init=False)

    def __post_init__(self) -> None:
        self.tat = self.start  # no credit at the start: the first object is paced too

    def delay_after(self, nbytes: int, now: float) -> float:
        if self.bandwidth_bps <= 0 or nbytes <= 0:
            return 0.0
        self.tat = max(self.tat, now - self.burst_s) + nbytes * 8 / self.bandwidth_bps
        return min(max(0.0, self.tat - now), self.max_delay_s)


@dataclass(slots=True)
class RegisterBackoff:
    """Exponential backoff with jitter for registration attempts: base * 2^n, capped."""

    base_s: float
    cap_s: float
    attempt: int = 0

    def next_delay(self, jitter: float) -> float:
        """`jitter` in [0, 1): the delay is drawn from [d/2, d) to spread a fleet's retries."""
        d = min(self.cap_s, self.base_s * float(1 << min(self.attempt, 30)))
        self.attempt += 1
        return d * (0.5 + 0.5 * jitter)

    def reset(self) -> None:
        self.attempt = 0


def next_tick(anchor: float, interval: float, k: int, now: float) -> tuple[int, float]:
    """The next tick index after `k` and its due time on the grid anchor + i*interval,
    skipping ticks already in the past (a late heartbeat is skipped, never stacked)."""
    k += 1
    due = anchor + k * interval
    if due < now:
        k += math.ceil((now - due) / interval)
        due = anchor + k * interval
    return k, due


@dataclass(slots=True)
class PlanState:
    """One fill plan's progress on this edge."""

    plan: FillPlan
    started_at: float
    state: FillPlanState = FillPlanState.RUNNING  # on the edge a plan starts running; only that has a way out
    done_objects: int = 0
    done_bytes: int = 0
    failed_objects: int = 0
    unpinned_objects: int = 0  # filled, but gone again before it could be pinned
    finished_at: float | None = None
    reported: bool = False  # the final state reached control in an acknowledged heartbeat

    @property
    def total_objects(self) -> int:
        return len(self.plan.paths)

    @property
    def finished(self) -> bool:
        return self.state.terminal

    def finish(self, now: float) -> None:
        new = FillPlanState.FAILED if self.failed_objects else FillPlanState.DONE
        if self.state.terminal:
            raise RuntimeError(f"plan {self.plan.plan_id}: {self.state} -> {new}")
        self.state, self.finished_at = new, now

    def progress(self) -> FillProgress:
        return FillProgress(plan_id=self.plan.plan_id, state=self.state, done_objects=self.done_objects,
                            total_objects=self.total_objects, done_bytes=self.done_bytes,
                            failed_objects=self.failed_objects)


# ------------------------------------------------------------------ the agent


class _ControlRefused(Exception):
    """Control answered, but not with something we can use (status, signature, shape)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


class EdgeAgent:
    """Registers the edge with the control plane, heartbeats, and runs fill plans.

    Counters: `heartbeats_sent` counts heartbeats control acknowledged (200 with a valid
    signature); `heartbeat_failures` the others; `bad_replies` the replies refused for a
    missing or bad signature or a malformed body.

    `fill_sleep` and `fill_clock` pace fills and space retries (inject them in tests);
    the heartbeat ticker runs on the event loop's own clock.
    """

    def __init__(self, edge_id: str, isp: str, public_url: str, control_url: str, edge_key: bytes, *,
                 stats: Callable[[], EdgeStats],
                 fill_object: Callable[[str], Awaitable[int]],
                 pin: Callable[[str], bool],
                 on_token_keys: Callable[[str], None],
                 heartbeat_interval: float = 1.0, policy: str = "", clock: Callable[[], float] = time.time,
                 session: aiohttp.ClientSession | None = None,
                 fill_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 fill_clock: Callable[[], float] = time.monotonic,
                 fill_concurrency: int = FILL_CONCURRENCY,
                 register_backoff_max: float = 5.0) -> None:
        self.edge_id = edge_id
        self.isp = isp
        self.public_url = public_url
        self.control_url = control_url.rstrip("/")
        self._key = edge_key
        self._stats = stats
        self._fill_object = fill_object
        self._pin = pin
        self._on_token_keys = on_token_keys
        self._interval = _clamp_interval(heartbeat_interval)
        self._policy = policy
        self._clock = clock
        self._session = session
        self._own_session = session is None
        self._fill_sleep = fill_sleep
        self._fill_clock = fill_clock
        self._fill_concurrency = max(1, fill_concurrency)
        self._backoff = RegisterBackoff(base_s=min(0.1, self._interval), cap_s=max(register_backoff_max, 0.01))
        self._version = _version()

        self._registered = False
        self._registered_event = asyncio.Event()
        self._seq = 0
        self._registration_ts = 0.0
        self._heartbeats_sent = 0
        self._heartbeat_failures = 0
        self._bad_replies = 0
        self._registrations = 0
        self._last_error: str | None = None
        self._token_keys = ""
        self._plans: dict[str, PlanState] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._fill_tasks: set[asyncio.Task[None]] = set()
        self._draining = False

    # -------------------------------------------------------------- public surface

    @property
    def registered(self) -> bool:
        return self._registered

    @property
    def heartbeats_sent(self) -> int:
        return self._heartbeats_sent

    @property
    def heartbeat_failures(self) -> int:
        return self._heartbeat_failures

    @property
    def bad_replies(self) -> int:
        return self._bad_replies

    @property
    def registrations(self) -> int:
        return self._registrations

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def plans(self) -> dict[str, PlanState]:
        return self._plans

    @property
    def heartbeat_interval(self) -> float:
        return self._interval

    async def wait_registered(self, timeout: float | None = None) -> bool:
        """True once registered (now or within `timeout` seconds)."""
        try:
            await asyncio.wait_for(self._registered_event.wait(), timeout)
        except TimeoutError:
            return False
        return self._registered

    async def start(self) -> None:
        """Start registering and heartbeating in the background; returns at once."""
        if self._loop_task is not None:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._loop_task = asyncio.create_task(self._run(), name=f"edge-agent-{self.edge_id}")

    async def drain(self) -> None:
        """Stop heartbeating and tell control, once, that this edge is draining."""
        self._draining = True
        await self._cancel_loop()
        if not self._registered or self._session is None:
            event(log, "drain without registration", edge=self.edge_id)
            return
        try:
            await self._heartbeat("draining", timeout=DRAIN_TIMEOUT_S)
            event(log, "drain announced", edge=self.edge_id)
        except Exception as exc:  # draining must go on whatever control says
            self._note_failure(f"drain heartbeat: {_describe(exc)}")
            event(log, "drain heartbeat failed", level=logging.WARNING, edge=self.edge_id, error=_describe(exc))

    async def stop(self) -> None:
        """Cancel the heartbeat loop and fills, close the session if it is ours."""
        await self._cancel_loop()
        tasks = list(self._fill_tasks)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    # -------------------------------------------------------------- loop

    async def _cancel_loop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._draining:
            await self._register_until_accepted()
            await self._heartbeat_while_registered()

    async def _register_until_accepted(self) -> None:
        self._backoff.reset()
        while True:
            try:
                await self._register()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self._backoff.next_delay(random.random())
                self._note_failure(f"register: {_describe(exc)}", heartbeat=False)
                event(log, "register failed", level=logging.WARNING, edge=self.edge_id,
                      control=self.control_url, error=_describe(exc), retry_in_s=round(delay, 3),
                      attempt=self._backoff.attempt)
                await asyncio.sleep(delay)

    async def _heartbeat_while_registered(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self._interval
        anchor, k = loop.time(), 0
        failing = False
        while self._registered:
            if self._interval != interval:  # control changed the rate: re-anchor the grid
                interval, anchor, k = self._interval, loop.time(), 0
            k, due = next_tick(anchor, interval, k, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self._heartbeat("up", timeout=interval * HEARTBEAT_TIMEOUT_FRACTION)
                if failing:
                    event(log, "heartbeats recovered", edge=self.edge_id)
                failing = False
            except asyncio.CancelledError:
                raise
            except _ControlRefused as exc:
                if exc.status == 404:
                    self._set_registered(False)
                    self._note_failure("heartbeat: control does not know us (404); registering again")
                    event(log, "forgotten by control", level=logging.WARNING, edge=self.edge_id)
                    return
                failing = self._heartbeat_failed(exc, failing)
            except Exception as exc:
                failing = self._heartbeat_failed(exc, failing)

    def _heartbeat_failed(self, exc: Exception, failing: bool) -> bool:
        self._note_failure(f"heartbeat: {_describe(exc)}")
        # One warning when heartbeats start failing; the rest at debug, so a control
        # outage does not flood the log with a line a second per edge.
        event(log, "heartbeat failed", level=logging.DEBUG if failing else logging.WARNING,
              edge=self.edge_id, error=_describe(exc), failures=self._heartbeat_failures)
        return True

    def _note_failure(self, reason: str, *, heartbeat: bool = True) -> None:
        self._last_error = reason
        if heartbeat:
            self._heartbeat_failures += 1

    def _set_registered(self, value: bool) -> None:
        self._registered = value
        if value:
            self._registered_event.set()
        else:
            self._registered_event.clear()

    # -------------------------------------------------------------- requests

    async def _register(self) -> None:
        stats = self._stats()
        msg = Register(edge_id=self.edge_id, isp=self.isp, url=self.public_url,
                       capacity_bytes=int(stats.capacity_bytes), ts=self._clock(),
                       policy=self._policy, version=self._version)
        reply = await self._post("/v1/edges/register", msg.seal(self._key), REGISTER_TIMEOUT_S)
        self._registration_ts = msg.ts  # heartbeats name the registration they belong to
        self._registrations += 1
        self._set_registered(True)
        self._last_error = None
        event(log, "registered", edge=self.edge_id, control=self.control_url, registrations=self._registrations)
        self._apply(reply)

    async def _heartbeat(self, state: str, timeout: float) -> None:
        stats = self._stats()
        sent = [p for p in self._plans.values() if not p.reported]
        fills = [p.progress() for p in sent]
        final = [p for p, f in zip(sent, fills) if f.state != FillPlanState.RUNNING]  # as of this heartbeat
        self._seq += 1
        msg = Heartbeat(edge_id=self.edge_id, isp=self.isp, url=self.public_url, seq=self._seq, ts=self._clock(),
                        state=state, capacity_bytes=int(stats.capacity_bytes), used_bytes=int(stats.used_bytes),
                        objects=int(stats.objects), req_rate=float(stats.req_rate),
                        byte_rate=float(stats.byte_rate), hit_ratio=float(stats.hit_ratio),
                        titles=list(stats.titles), fills=fills, registration_ts=self._registration_ts)
        reply = await self._post(f"/v1/edges/{quote(self.edge_id, safe='')}/heartbeat",
                                 msg.seal(self._key), timeout)
        self._heartbeats_sent += 1
        for p in final:
            p.reported = True
        self._forget_old_plans()
        self._apply(reply)

    async def _post(self, path: str, sealed: tuple[bytes, str], timeout: float) -> ControlReply:
        assert self._session is not None, "start() first"
        body, signature = sealed
        headers = {EDGE_HEADER: self.edge_id, SIGNATURE_HEADER: signature, "Content-Type": CONTENT_TYPE}
        async with self._session.post(self.control_url + path, data=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            if resp.status != 200:
                raise _ControlRefused(f"control answered {resp.status}", resp.status)
            if resp.content_length is not None and resp.content_length > MAX_MESSAGE_BYTES:
                raise self._refused("reply too large")
            raw = await resp.content.read(MAX_MESSAGE_BYTES + 1)
            try:
                return ControlReply.unseal(self._key, raw, resp.headers.get(SIGNATURE_HEADER))
            except (BadSignature, BadMessage) as exc:
                raise self._refused(f"reply refused: {exc.reason}") from None

    def _refused(self, reason: str) -> _ControlRefused:
        self._bad_replies += 1
        event(log, "control reply refused", level=logging.WARNING, edge=self.edge_id, reason=reason)
        return _ControlRefused(reason)

    # -------------------------------------------------------------- replies

    def _apply(self, reply: ControlReply) -> None:
        interval = _clamp_interval(reply.heartbeat_interval_s)
        if interval != self._interval:
            event(log, "heartbeat interval changed", edge=self.edge_id, interval_s=interval)
            self._interval = interval
            self._backoff.base_s = min(0.1, interval)
        if reply.token_keys and reply.token_keys != self._token_keys:
            try:
                self._on_token_keys(reply.token_keys)
                self._token_keys = reply.token_keys
                event(log, "token keys updated", edge=self.edge_id)
            except Exception as exc:  # a bad keyring must not stop heartbeats
                self._last_error = f"token keys: {_describe(exc)}"
                event(log, "token keys refused", level=logging.WARNING, edge=self.edge_id, error=_describe(exc))
        for plan in reply.fill_plans:
            self._accept_plan(plan)

    def _accept_plan(self, plan: FillPlan) -> None:
        if plan.plan_id in self._plans or self._draining:
            return
        if plan.edge_id != self.edge_id:
            event(log, "fill plan for another edge ignored", level=logging.WARNING, edge=self.edge_id,
                  plan=plan.plan_id, plan_edge=plan.edge_id)
            return
        state = PlanState(plan=plan, started_at=self._clock())
        self._plans[plan.plan_id] = state
        event(log, "fill plan started", edge=self.edge_id, plan=plan.plan_id, job=plan.job_id,
              objects=len(plan.paths), bandwidth_bps=plan.bandwidth_bps, pin=plan.pin)
        task = asyncio.create_task(self._run_plan(state), name=f"fill-{plan.plan_id}")
        self._fill_tasks.add(task)
        task.add_done_callback(self._fill_tasks.discard)

    def _forget_old_plans(self) -> None:
        excess = len(self._plans) - MAX_FINISHED_PLANS
        if excess <= 0:
            return
        for plan_id in [pid for pid, p in self._plans.items() if p.reported][:excess]:
            del self._plans[plan_id]

    # -------------------------------------------------------------- fills

    async def _run_plan(self, state: PlanState) -> None:
        plan = state.plan
        pacer = FillPacer(plan.bandwidth_bps, start=self._fill_clock())
        paths = iter(plan.paths)  # shared by the workers: each path is taken once

        async def worker() -> None:
            for path in paths:
                nbytes = await self._fill_one(plan, path)
                if nbytes is None:
                    state.failed_objects += 1
                    continue
                state.done_objects += 1
                state.done_bytes += nbytes
                if plan.pin and not self._pin(path):
                    state.unpinned_objects += 1
                    event(log, "filled object not pinned (absent)", level=logging.WARNING,
                          edge=self.edge_id, plan=plan.plan_id, path=path)
                delay = pacer.delay_after(nbytes, self._fill_clock())
                if delay > 0:
                    await self._fill_sleep(delay)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self._fill_concurrency, max(1, len(plan.paths)))):
                    tg.create_task(worker())
        except Exception as exc:  # pin() or the pacer raising is a bug here, not a reason to die silently
            log.exception("fill plan %s crashed", plan.plan_id)
            state.failed_objects = max(1, state.total_objects - state.done_objects)
            self._last_error = f"fill plan {plan.plan_id}: {_describe(exc)}"
        state.finish(self._clock())
        event(log, "fill plan finished", edge=self.edge_id, plan=plan.plan_id, state=state.state,
              done_objects=state.done_objects, failed_objects=state.failed_objects, done_bytes=state.done_bytes,
              seconds=round(state.finished_at - state.started_at, 3) if state.finished_at is not None else None)

    async def _fill_one(self, plan: FillPlan, path: str) -> int | None:
        """Bytes filled, or None once all attempts failed."""
        for attempt in range(1, FILL_ATTEMPTS + 1):
            try:
                return int(await self._fill_object(path))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                final = attempt == FILL_ATTEMPTS
                event(log, "fill object failed", level=logging.WARNING if final else logging.INFO,
                      edge=self.edge_id, plan=plan.plan_id, path=path, attempt=attempt, error=_describe(exc),
                      giving_up=final)
                if not final:
                    await self._fill_sleep(FILL_RETRY_DELAY_S * attempt)
        return None


def _clamp_interval(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        return 1.0
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, seconds))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
