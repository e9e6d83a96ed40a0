"""The edge's control-plane agent (edge/agent.py) against a small control plane in the test:
a real aiohttp server on loopback that checks signatures with the per-edge key, records
heartbeats and hands out fill plans. Plus the pure parts (pacer, ticker, backoff)."""
from __future__ import annotations

import asyncio
import math
import secrets
import socket
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from common.wire import (
    CONTENT_TYPE,
    EDGE_HEADER,
    SIGNATURE_HEADER,
    BadSignature,
    ControlReply,
    FillPlan,
    Heartbeat,
    Register,
    edge_key,
    sign,
    verify_signature,
)
from edge.agent import EdgeAgent, EdgeStats, FillPacer, RegisterBackoff, next_tick

pytestmark = pytest.mark.timeout(10)

EDGE = "edge-a1"
ISP = "isp-a"
INTERVAL = 0.05
TOKEN_KEYS = "k1:" + "ab" * 32
DEADLINE = 3.0


# ------------------------------------------------------------------ the in-test control plane


@dataclass
class Arrival:
    at: float  # loop time the heartbeat arrived
    msg: Heartbeat


@dataclass
class FakeControl:
    """Just enough of the control plane's edge API (docs/CONTRACTS.md) to drive an agent."""

    secret: bytes
    interval: float = INTERVAL
    token_keys: str = TOKEN_KEYS
    reply_signature: str = "good"  # "good" | "bad" | "missing" (for heartbeat replies)
    heartbeat_delay: float = 0.0
    known: set[str] = field(default_factory=set)
    registers: list[Register] = field(default_factory=list)
    heartbeats: list[Arrival] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # requests refused for a bad signature
    plans: list[FillPlan] = field(default_factory=list)
    finished_plans: set[str] = field(default_factory=set)
    plan_deliveries: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/edges/register", self.register)
        app.router.add_post("/v1/edges/{id}/heartbeat", self.heartbeat)
        return app

    async def wait(self, pred: Callable[[], bool], timeout: float = DEADLINE) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(pred), timeout)
            except TimeoutError:
                return False
        return True

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def _verified(self, request: web.Request) -> tuple[str, bytes, bytes]:
        edge_id = request.headers.get(EDGE_HEADER, "")
        assert request.content_type == CONTENT_TYPE
        key = edge_key(self.secret, edge_id)
        body = await request.read()
        try:
            verify_signature(key, body, request.headers.get(SIGNATURE_HEADER))
        except BadSignature as exc:
            self.refused.append(exc.reason)
            raise web.HTTPForbidden(text=exc.reason) from None
        return edge_id, key, body

    def _reply(self, key: bytes, edge_id: str, signature: str = "good") -> web.Response:
        plans = [p for p in self.plans if p.edge_id == edge_id and p.plan_id not in self.finished_plans]
        # Hand out every unfinished plan addressed to anyone: the agent must ignore others'.
        plans += [p for p in self.plans if p.edge_id != edge_id]
        if plans:
            self.plan_deliveries += 1
        body, sig = ControlReply(ts=time.time(), heartbeat_interval_s=self.interval, token_keys=self.token_keys,
                                 fill_plans=plans).seal(key)
        headers = {"Content-Type": CONTENT_TYPE}
        if signature == "good":
            headers[SIGNATURE_HEADER] = sig
        elif signature == "bad":
            headers[SIGNATURE_HEADER] = sign(b"not the edge key", body)
        return web.Response(body=body, headers=headers)

    async def register(self, request: web.Request) -> web.Response:
        edge_id, key, body = await self._verified(request)
        msg = Register.unpack(body)
        assert msg.edge_id == edge_id
        self.registers.append(msg)
        self.known.add(edge_id)
        await self._notify()
        return self._reply(key, edge_id)

    async def heartbeat(self, request: web.Request) -> web.Response:
        edge_id = request.match_info["id"]
        assert request.headers.get(EDGE_HEADER) == edge_id
        if edge_id not in self.known:
            await self._notify()
            raise web.HTTPNotFound(text="unknown edge")
        _, key, body = await self._verified(request)
        msg = Heartbeat.unpack(body)
        self.heartbeats.append(Arrival(asyncio.get_running_loop().time(), msg))
        for fill in msg.fills:
            if fill.state in ("done", "failed"):
                self.finished_plans.add(fill.plan_id)
        await self._notify()
        if self.heartbeat_delay:
            await asyncio.sleep(self.heartbeat_delay)
        return self._reply(key, edge_id, self.reply_signature)

    def fills_of(self, plan_id: str) -> list[Any]:
        return [f for a in self.heartbeats for f in a.msg.fills if f.plan_id == plan_id]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def secret() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
async def control(secret: bytes) -> AsyncIterator[tuple[FakeControl, str]]:
    fake = FakeControl(secret)
    server = TestServer(fake.app(), host="127.0.0.1", port=0)
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


# ------------------------------------------------------------------ the edge side


@dataclass
class FakeEdge:
    """The edge server's side of the agent: stats, a cache to fill, pins, token keys."""

    sizes: dict[str, int] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)  # path -> failures before success (99 = always)
    gate: asyncio.Event | None = None
    filled: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    token_keys: list[str] = field(default_factory=list)

    def stats(self) -> EdgeStats:
        return EdgeStats(capacity_bytes=10**9, used_bytes=sum(self.sizes.get(p, 1000) for p in self.filled), objects=len(self.filled),
                         req_rate=1.5, byte_rate=1e6, hit_ratio=0.75, titles=["t1"])

    async def fill_object(self, path: str) -> int:
        self.attempts.append(path)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail.get(path, 0) > 0:
            self.fail[path] -= 1
            raise RuntimeError(f"upstream said no to {path}")
        self.filled.append(path)
        return self.sizes.get(path, 1000)

    def pin(self, path: str) -> bool:
        self.pinned.append(path)
        return path in self.filled


AgentFactory = Callable[..., Awaitable[EdgeAgent]]


@pytest.fixture
async def make_agent(secret: bytes) -> AsyncIterator[AgentFactory]:
    agents: list[EdgeAgent] = []

    async def make(control_url: str, edge: FakeEdge, *, start: bool = True, **kw: Any) -> EdgeAgent:
        kw.setdefault("register_backoff_max", 0.1)
        agent = EdgeAgent(EDGE, ISP, "http://127.0.0.1:9/", control_url, edge_key(secret, EDGE),
                          stats=edge.stats, fill_object=edge.fill_object, pin=edge.pin,
                          on_token_keys=edge.token_keys.append, heartbeat_interval=INTERVAL, policy="lru", **kw)
        agents.append(agent)
        if start:
            await agent.start()
        return agent

    yield make
    for agent in agents:
        await agent.stop()


async def eventually(pred: Callable[[], bool], timeout: float = DEADLINE) -> bool:
    """For agent-side state, which has no event to wait on: poll until true or the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def plan(plan_id: str, paths: list[str], *, bps: int = 0, pin: bool = True, edge_id: str = EDGE) -> FillPlan:
    return FillPlan(plan_id=plan_id, job_id="job-1", edge_id=edge_id, paths=paths, bandwidth_bps=bps,
                    issued_at=time.time(), pin=pin)


def seg_paths(n: int, title: str = "t1") -> list[str]:
    return [f"/content/{title}/750/{i}.seg" for i in range(n)]


# ------------------------------------------------------------------ registration and heartbeats


async def test_registers_then_sends_signed_heartbeats_at_the_interval(
        control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    edge = FakeEdge()
    agent = await make_agent(url, edge)

    assert await agent.wait_registered(DEADLINE)
    assert await fake.wait(lambda: len(fake.heartbeats) >= 8)

    (reg,) = fake.registers
    assert (reg.edge_id, reg.isp, reg.url, reg.capacity_bytes, reg.policy) == (EDGE, ISP, "http://127.0.0.1:9/", 10**9, "lru")
    assert fake.refused == []  # every request verified with edge_key(fleet_secret, id)
    beats = [a.msg for a in fake.heartbeats]
    assert [b.seq for b in beats] == sorted({b.seq for b in beats})  # strictly increasing
    assert all(b.state == "up" and b.edge_id == EDGE and b.hit_ratio == 0.75 and b.titles == ["t1"] for b in beats)
    assert all(abs(b.ts - time.time()) < 5 for b in beats)

    # About one per interval (the ticker's grid itself is tested on next_tick below; a
    # loaded machine may skip a tick, hence the slack above).
    times = [a.at for a in fake.heartbeats]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert INTERVAL * 0.7 < statistics.mean(gaps) < INTERVAL * 2.0, gaps

    assert agent.registered and agent.heartbeats_sent >= 7 and agent.last_error is None
    assert edge.token_keys == [TOKEN_KEYS]  # applied once, not once per reply


async def test_control_interval_is_applied(control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    fake.interval = 0.02
    agent = await make_agent(url, FakeEdge())
    assert await agent.wait_registered(DEADLINE)
    assert agent.heartbeat_interval == 0.02
    assert await fake.wait(lambda: len(fake.heartbeats) >= 10)


@pytest.mark.parametrize("signature", ["bad", "missing"])
async def test_reply_without_a_good_signature_is_refused(
        control: tuple[FakeControl, str], make_agent: AgentFactory, signature: str) -> None:
    fake, url = control
    fake.reply_signature = signature  # for heartbeat replies; the register reply stays good
    agent = await make_agent(url, FakeEdge())

    assert await fake.wait(lambda: len(fake.heartbeats) >= 4)
    assert await eventually(lambda: agent.bad_replies >= 3)
    assert agent.heartbeats_sent == 0
    assert agent.last_error is not None and "signature" in agent.last_error
    assert agent.registered  # a bad reply is not a reason to stop


async def test_forged_plan_is_not_run(control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    fake.reply_signature = "bad"
    edge = FakeEdge()
    agent = await make_agent(url, edge)
    assert await fake.wait(lambda: len(fake.heartbeats) >= 1)
    fake.plans.append(plan("p-forged", seg_paths(2)))  # from now on, only in badly signed replies
    assert await fake.wait(lambda: len(fake.heartbeats) >= 5)
    assert await eventually(lambda: agent.bad_replies >= 4)
    assert agent.plans == {} and edge.attempts == []


async def test_control_down_at_start_then_up(secret: bytes, make_agent: AgentFactory) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    agent = await make_agent(url, FakeEdge())

    assert await eventually(lambda: agent.last_error is not None)
    assert agent.last_error is not None and agent.last_error.startswith("register")
    assert not agent.registered

    fake = FakeControl(secret)
    server = TestServer(fake.app(), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        assert await agent.wait_registered(DEADLINE)
        assert await fake.wait(lambda: len(fake.heartbeats) >= 2)
        assert len(fake.registers) == 1
    finally:
        await agent.stop()
        await server.close()


async def test_heartbeat_404_registers_again(control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    agent = await make_agent(url, FakeEdge())
    assert await fake.wait(lambda: len(fake.heartbeats) >= 2)
    seq_before = fake.heartbeats[-1].msg.seq

    fake.known.clear()  # control restarted and forgot us
    assert await fake.wait(lambda: len(fake.registers) == 2)
    n = len(fake.heartbeats)
    assert await fake.wait(lambda: len(fake.heartbeats) >= n + 2)
    assert agent.registrations == 2 and agent.registered
    assert fake.heartbeats[-1].msg.seq > seq_before  # seq keeps increasing across registrations


async def test_slow_control_does_not_stack_heartbeats(
        control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    agent = await make_agent(url, FakeEdge())
    assert await agent.wait_registered(DEADLINE)
    fake.heartbeat_delay = 0.5  # ten intervals: every heartbeat times out at the agent
    n = len(fake.heartbeats)
    assert await fake.wait(lambda: len(fake.heartbeats) >= n + 6)
    times = [a.at for a in fake.heartbeats[n:]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # One in flight at a time: each times out (0.8 interval) before the next can leave.
    assert min(gaps) > INTERVAL * 0.3, gaps
    assert statistics.mean(gaps) < INTERVAL * 2.0, gaps
    assert agent.heartbeat_failures >= 3 and agent.last_error == "heartbeat: timeout"
    assert agent.registered


async def test_drain_sends_draining_and_stops(control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    agent = await make_agent(url, FakeEdge())
    assert await fake.wait(lambda: len(fake.heartbeats) >= 2)

    await agent.drain()
    assert fake.heartbeats[-1].msg.state == "draining"
    n = len(fake.heartbeats)
    assert not await fake.wait(lambda: len(fake.heartbeats) > n, timeout=INTERVAL * 4)
    assert all(a.msg.state == "up" for a in fake.heartbeats[:-1])


# ------------------------------------------------------------------ fill plans


async def test_fill_plan_runs_pins_and_reports_until_done(
        control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    paths = seg_paths(5)
    edge = FakeEdge(sizes={p: 1000 + i for i, p in enumerate(paths)}, gate=asyncio.Event())
    fake.plans.append(plan("p1", paths))
    fake.plans.append(plan("p-other", ["/content/t9/750/0.seg"], edge_id="edge-b1"))  # not ours
    agent = await make_agent(url, edge)

    # Control repeats the plan until it hears "done"; the agent runs it once.
    assert await fake.wait(lambda: fake.plan_deliveries >= 3 and len(fake.fills_of("p1")) >= 2)
    assert fake.fills_of("p1")[0].state == "running"
    edge.gate.set()  # type: ignore[union-attr]

    assert await fake.wait(lambda: "p1" in fake.finished_plans)
    assert sorted(edge.attempts) == sorted(paths)  # each path fetched exactly once
    assert sorted(edge.pinned) == sorted(paths)
    final = fake.fills_of("p1")[-1]
    assert (final.state, final.done_objects, final.total_objects, final.done_bytes, final.failed_objects) == \
        ("done", 5, 5, sum(edge.sizes.values()), 0)
    dones = [f.done_objects for f in fake.fills_of("p1")]
    assert dones == sorted(dones)

    # Once a heartbeat carrying "done" was acknowledged, later heartbeats drop the plan,
    # but the agent keeps it for stats.
    n = len(fake.heartbeats)
    assert await fake.wait(lambda: len(fake.heartbeats) >= n + 2)
    assert all(not a.msg.fills for a in fake.heartbeats[n:])
    assert set(agent.plans) == {"p1"} and agent.plans["p1"].state == "done"


async def test_fill_plan_without_pin(control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    edge = FakeEdge()
    fake.plans.append(plan("p-nopin", seg_paths(3), pin=False))
    await make_agent(url, edge)
    assert await fake.wait(lambda: "p-nopin" in fake.finished_plans)
    assert len(edge.filled) == 3 and edge.pinned == []


async def test_failing_path_fails_the_plan_after_retries(
        control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    paths = seg_paths(4)
    bad, flaky = paths[1], paths[2]
    edge = FakeEdge(fail={bad: 99, flaky: 1})
    slept: list[float] = []

    async def no_wait(seconds: float) -> None:
        slept.append(seconds)

    fake.plans.append(plan("p-fail", paths))
    agent = await make_agent(url, edge, fill_sleep=no_wait)

    assert await fake.wait(lambda: "p-fail" in fake.finished_plans)
    assert edge.attempts.count(bad) == 3  # one try and two retries
    assert edge.attempts.count(flaky) == 2  # a retry that works counts as done
    final = fake.fills_of("p-fail")[-1]
    assert (final.state, final.done_objects, final.failed_objects, final.total_objects) == ("failed", 3, 1, 4)
    assert bad not in edge.pinned
    assert sorted(slept) == [0.25, 0.25, 0.5]  # retry backoff, through the injected sleep
    assert agent.plans["p-fail"].state == "failed"


async def test_fill_respects_the_bandwidth_cap(control: tuple[FakeControl, str], make_agent: AgentFactory) -> None:
    fake, url = control
    paths = seg_paths(6)
    edge = FakeEdge(sizes={p: 100_000 + 1000 * i for i, p in enumerate(paths)})
    now = [1000.0]
    delays: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)

    bps = 2_000_000
    fake.plans.append(plan("p-capped", paths, bps=bps))
    await make_agent(url, edge, fill_sleep=fake_sleep, fill_clock=lambda: now[0])

    assert await fake.wait(lambda: "p-capped" in fake.finished_plans)
    total = sum(edge.sizes.values())
    assert len(delays) == len(paths)
    assert math.isclose(sum(delays), total * 8 / bps, rel_tol=1e-9)
    assert fake.fills_of("p-capped")[-1].done_bytes == total


# ------------------------------------------------------------------ pure parts


def test_pacer_holds_the_average_under_the_cap() -> None:
    p = FillPacer(8_000, start=0.0)  # 1000 bytes/s
    assert p.delay_after(1000, now=0.0) == pytest.approx(1.0)
    assert p.delay_after(1000, now=1.0) == pytest.approx(1.0)
    # The fetch itself took 0.4 s of the 1 s budget: wait only the rest.
    assert p.delay_after(1000, now=2.4) == pytest.approx(0.6)


def test_pacer_idle_credit_is_bounded_by_burst() -> None:
    p = FillPacer(8_000, start=0.0, burst_s=1.0)
    # Idle for 100 s: at most 1 s of credit, so a 3 s object still waits 2 s.
    assert p.delay_after(3000, now=100.0) == pytest.approx(2.0)


def test_pacer_unlimited_and_bounded() -> None:
    assert FillPacer(0, start=0.0).delay_after(10**9, now=0.0) == 0.0
    p = FillPacer(8, start=0.0, max_delay_s=30.0)
    assert p.delay_after(1000, now=0.0) == 30.0  # one wait is bounded ...
    assert p.delay_after(1, now=30.0) == 30.0  # ... but the debt carries over


def test_next_tick_is_fixed_rate_and_skips_missed_ticks() -> None:
    assert next_tick(10.0, 1.0, 0, now=10.2) == (1, 11.0)
    assert next_tick(10.0, 1.0, 1, now=11.3) == (2, 12.0)  # late by 0.3: no drift
    assert next_tick(10.0, 1.0, 2, now=15.5) == (6, 16.0)  # three ticks missed: skipped, not stacked


def test_register_backoff_doubles_to_a_cap() -> None:
    b = RegisterBackoff(base_s=0.1, cap_s=1.0)
    full = [b.next_delay(jitter=1.0) for _ in range(6)]
    assert full == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    b.reset()
    assert b.next_delay(jitter=0.0) == pytest.approx(0.05)
