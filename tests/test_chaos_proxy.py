"""The fault proxy on loopback: each toxic has an effect a test observes (no fixed sleeps;
every wait is bounded by a timeout and every time is measured)."""
from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from chaos.proxy import FaultProxy
from chaos.toxics import (Blackhole, Bandwidth, Cut, Forward, Latency, LinkState, Reset, SlowClose,
                          Truncate, make_toxic, run_chain)
from common.errors import BadRequest

BODY = bytes(range(256)) * 400  # 102_400 bytes


class Upstream:
    """`echo` echoes what it gets; `blob` answers any line with BODY and closes."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.server: asyncio.Server | None = None
        self.port = 0

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            if self.mode == "echo":
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            else:
                await r.readline()
                w.write(BODY)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def echo() -> AsyncIterator[Upstream]:
    async with Upstream("echo") as up:
        yield up


@pytest.fixture
async def blob() -> AsyncIterator[Upstream]:
    async with Upstream("blob") as up:
        yield up


async def roundtrip(port: int, payload: bytes = b"ping\n") -> float:
    loop = asyncio.get_running_loop()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    t0 = loop.time()
    w.write(payload)
    await w.drain()
    got = await asyncio.wait_for(r.readexactly(len(payload)), 5)
    elapsed = loop.time() - t0
    assert got == payload
    w.close()
    return elapsed


async def fetch_all(port: int, timeout: float = 5.0) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET\n")
    await w.drain()
    try:
        return await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()


async def test_without_toxics_bytes_pass_unchanged(echo: Upstream, blob: Upstream) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as proxy:
        await roundtrip(proxy.port, b"hello world\n")
    async with FaultProxy("127.0.0.1", blob.port) as proxy:
        assert await fetch_all(proxy.port) == BODY


async def test_latency_adds_the_injected_delay_within_its_jitter(echo: Upstream) -> None:
    async with FaultProxy("127.0.0.1", echo.port, seed=3) as proxy:
        base = min([await roundtrip(proxy.port) for _ in range(3)])
        proxy.add_toxic(Latency("lag", latency_s=0.2, jitter_s=0.05))
        timed = [await roundtrip(proxy.port) for _ in range(3)]
    for t in timed:
        added = t - base
        assert 0.15 <= added <= 0.25 + 0.2, (base, timed)  # upper slack: a loaded 2-core box


async def test_bandwidth_caps_the_rate(blob: Upstream) -> None:
    loop = asyncio.get_running_loop()
    async with FaultProxy("127.0.0.1", blob.port, toxics=[Bandwidth("cap", rate_bytes_s=400_000)]) as p:
        t0 = loop.time()
        assert await fetch_all(p.port) == BODY
        elapsed = loop.time() - t0
    # 102_400 bytes at 400 kB/s take at least 0.256 s
    assert elapsed >= len(BODY) / 400_000 * 0.95, elapsed


async def test_truncate_cuts_after_n_bytes(blob: Upstream) -> None:
    async with FaultProxy("127.0.0.1", blob.port, toxics=[Truncate("cut", after_bytes=1000)]) as p:
        got = await fetch_all(p.port)
    assert got == BODY[:1000]


async def test_reset_is_seen_by_the_client(blob: Upstream) -> None:
    async with FaultProxy("127.0.0.1", blob.port, toxics=[Reset("rst")]) as p:
        with pytest.raises(ConnectionResetError):
            await fetch_all(p.port)


async def test_blackhole_accepts_and_never_answers_until_removed(echo: Upstream) -> None:
    async with FaultProxy("127.0.0.1", echo.port, toxics=[Blackhole("hole", direction="upstream")]) as p:
        r, w = await asyncio.open_connection("127.0.0.1", p.port)  # the connect succeeds
        w.write(b"ping\n")
        await w.drain()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.readexactly(5), 0.5)
        w.close()
        p.remove_toxic("hole")  # removed at run time: the next connection is served
        await roundtrip(p.port)


async def test_slow_close_delays_the_end_of_stream(blob: Upstream) -> None:
    loop = asyncio.get_running_loop()
    async with FaultProxy("127.0.0.1", blob.port, toxics=[SlowClose("slow", delay_s=0.3)]) as p:
        r, w = await asyncio.open_connection("127.0.0.1", p.port)
        w.write(b"GET\n")
        await w.drain()
        body = await asyncio.wait_for(r.readexactly(len(BODY)), 5)
        t_body = loop.time()
        assert await asyncio.wait_for(r.read(), 5) == b""
        waited = loop.time() - t_body
        w.close()
    assert body == BODY
    assert waited >= 0.25, waited


async def test_toxic_added_at_run_time_hits_a_live_connection(echo: Upstream) -> None:
    async with FaultProxy("127.0.0.1", echo.port) as p:
        r, w = await asyncio.open_connection("127.0.0.1", p.port)
        w.write(b"one\n")
        assert await asyncio.wait_for(r.readexactly(4), 5) == b"one\n"
        p.add_toxic(Truncate("cut", after_bytes=2))
        w.write(b"two\n")
        assert await asyncio.wait_for(r.read(), 5) == b"tw"
        w.close()


async def test_probability_picks_a_seeded_share_of_connections(blob: Upstream) -> None:
    async def pattern(seed: int) -> list[bool]:
        toxic = Truncate("cut", after_bytes=10, probability=0.5)
        async with FaultProxy("127.0.0.1", blob.port, seed=seed, toxics=[toxic]) as p:
            return [len(await fetch_all(p.port)) == 10 for _ in range(16)]

    first = await pattern(11)
    assert 0 < sum(first) < 16
    assert await pattern(11) == first  # one seed, one run


async def test_target_down_resets_the_client() -> None:
    async with Upstream("echo") as up:
        port = up.port
    async with FaultProxy("127.0.0.1", port) as p:
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await roundtrip(p.port)


# --- the pure core ---------------------------------------------------------------------------

def test_jitter_is_bounded_and_replayable() -> None:
    toxic = Latency("lag", latency_s=0.1, jitter_s=0.03)
    a = [toxic.delay_for(r) for r in [random.Random(5)] for _ in range(200)]
    b = [toxic.delay_for(r) for r in [random.Random(5)] for _ in range(200)]
    assert a == b
    assert all(0.07 <= d <= 0.13 for d in a)


def test_chain_truncates_then_stops() -> None:
    link = LinkState(rng=random.Random(0))
    chain = [Truncate("t", after_bytes=5)]
    assert run_chain(chain, b"abc", link) == [Forward(b"abc")]
    assert run_chain(chain, b"defgh", link) == [Forward(b"de"), Cut()]
    assert run_chain(chain, b"x", link) == [Cut()]


def test_make_toxic_names_the_bad_field() -> None:
    with pytest.raises(BadRequest, match=r"fault\[0\]\.latency_ms: unknown field"):
        make_toxic("latency", "x", {"latency_ms": 3}, where="fault[0]")
    with pytest.raises(BadRequest, match=r"fault\[0\]\.kind: unknown toxic 'lag'"):
        make_toxic("lag", "x", {}, where="fault[0]")
    with pytest.raises(BadRequest, match=r"fault\[1\]\.after_bytes: must be an integer"):
        make_toxic("truncate", "x", {"after_bytes": 1.5}, where="fault[1]")
    with pytest.raises(BadRequest, match=r"probability must be in \[0, 1\]"):
        make_toxic("blackhole", "x", {"probability": 2}, where="fault[2]")
