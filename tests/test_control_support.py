"""Test support for the control-plane tests: a simulated edge that speaks the real wire
protocol (signed msgpack register/heartbeat) and plays fill plans forward on command.

It is a module of helpers, plus a couple of checks of the helpers themselves.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.wire import CONTENT_TYPE, EDGE_HEADER, SIGNATURE_HEADER, ControlReply, FillPlan, FillProgress, \
    Heartbeat, Message, Register, edge_key

FLEET_SECRET = bytes(range(32))
OPERATOR_TOKEN = "test-operator-token-0123456789"
TOKEN_KEY = "k1:" + "ab" * 32
TOPOLOGY = """
[isps.isp-a]
prefixes = ["10.1.0.0/16"]

[isps.isp-b]
prefixes = ["10.2.0.0/16"]
"""


class Poster(Protocol):
    async def __call__(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        ...


def aiohttp_poster(session: Any, base: str) -> Poster:
    """A Poster over an aiohttp ClientSession (or a pytest-aiohttp TestClient with base '')."""
    async def post(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        async with session.post(base + path, data=body, headers=headers) as resp:
            return resp.status, await resp.read(), dict(resp.headers)
    return post


class ControlRefused(AssertionError):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"control answered {status}: {body[:200]!r}")
        self.status = status


@dataclass
class SimEdge:
    """An edge without a cache: registers, heartbeats, and reports fill plans as told."""

    post: Poster
    edge_id: str
    isp: str
    url: str = ""
    capacity_bytes: int = 50 * 10**9
    used_bytes: int = 0
    secret: bytes = FLEET_SECRET
    seq: int = 0
    registration_ts: float = 0.0
    titles: set[str] = field(default_factory=set)
    plans: dict[str, FillPlan] = field(default_factory=dict)
    progress: dict[str, FillProgress] = field(default_factory=dict)  # reported until acknowledged final
    acked_final: set[str] = field(default_factory=set)
    auto_fill: bool = False  # complete each plan over two heartbeats
    replies: int = 0

    def __post_init__(self) -> None:
        self.url = self.url or f"http://127.0.0.1:9/{self.edge_id}"
        self.key = edge_key(self.secret, self.edge_id)

    async def send(self, path: str, msg: Message, *, key: bytes | None = None,
                   signature: str | None = None) -> ControlReply:
        body, sig = msg.seal(key or self.key)
        headers = {EDGE_HEADER: self.edge_id, SIGNATURE_HEADER: signature or sig, "Content-Type": CONTENT_TYPE}
        status, raw, rheaders = await self.post(path, body, headers)
        if status != 200:
            raise ControlRefused(status, raw)
        reply = ControlReply.unseal(self.key, raw, rheaders.get(SIGNATURE_HEADER))
        self.replies += 1
        for plan in reply.fill_plans:
            assert plan.edge_id == self.edge_id
            if plan.plan_id not in self.plans:
                self.plans[plan.plan_id] = plan
                self.progress[plan.plan_id] = FillProgress(plan.plan_id, "running", 0, len(plan.paths), 0)
        return reply

    async def register(self) -> ControlReply:
        self.seq = 0
        self.registration_ts = time.time()
        return await self.send("/v1/edges/register", Register(self.edge_id, self.isp, self.url,
                                                              self.capacity_bytes, self.registration_ts))

    def heartbeat_msg(self, state: str = "up") -> Heartbeat:
        self.seq += 1
        return Heartbeat(edge_id=self.edge_id, isp=self.isp, url=self.url, seq=self.seq, ts=time.time(),
                         state=state, capacity_bytes=self.capacity_bytes, used_bytes=self.used_bytes,
                         objects=0, req_rate=0.0, byte_rate=0.0, hit_ratio=0.0, titles=sorted(self.titles),
                         fills=list(self.progress.values()), registration_ts=self.registration_ts)

    async def heartbeat(self, state: str = "up") -> ControlReply:
        if self.auto_fill:
            for pid, fp in list(self.progress.items()):
                if fp.done_objects == 0:
                    self.set_progress(pid, "running", fp.total_objects // 2)
                else:
                    self.set_progress(pid, "done", fp.total_objects)
        msg = self.heartbeat_msg(state)
        try:
            reply = await self.send(f"/v1/edges/{self.edge_id}/heartbeat", msg)
        except ControlRefused as exc:
            if exc.status == 404:  # control forgot us (restart): register again, like a real edge
                return await self.register()
            raise
        for fp in msg.fills:  # acknowledged: a final state need not be reported again
            if fp.state in ("done", "failed"):
                self.progress.pop(fp.plan_id, None)
                self.acked_final.add(fp.plan_id)
        return reply

    def set_progress(self, plan_id: str, state: str, done_objects: int, done_bytes: int | None = None) -> None:
        plan = self.plans[plan_id]
        self.progress[plan_id] = FillProgress(plan_id, state, done_objects, len(plan.paths),
                                              done_bytes if done_bytes is not None else done_objects * 1000)
        if state == "done":
            for path in plan.paths:
                self.titles.add(path.split("/")[2])


class Heartbeater:
    """Runs `edge.heartbeat()` every `interval` seconds in the background until stopped."""

    def __init__(self, edge: SimEdge, interval: float = 0.2) -> None:
        self.edge, self.interval = edge, interval
        self.errors: list[BaseException] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Heartbeater:
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            try:
                await self.edge.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # control restarting: keep trying, like a real edge
                self.errors.append(exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns a truthy value (returned) or `timeout` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s; last: {last!r}")
        await asyncio.sleep(interval)


def bearer(token: str = OPERATOR_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_sim_edge_messages_are_signed_with_the_edge_key() -> None:
    async def never(path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        raise AssertionError("no network here")

    edge = SimEdge(never, "e1", "isp-a")
    msg = edge.heartbeat_msg()
    body, sig = msg.seal(edge.key)
    assert Heartbeat.unseal(edge_key(FLEET_SECRET, "e1"), body, sig) == msg
    assert edge.heartbeat_msg().seq == msg.seq + 1
