"""The fault proxy: an asyncio TCP proxy on 127.0.0.1 in front of one target, with toxics.

Rules of this module:
1. This is the IO rim only: it reads chunks, asks chaos/toxics.py what to do with them and
   does it (forward, wait, close, reset). Every decision lives in the toxics.
2. Toxics are added and removed while the proxy runs; a live connection sees the change on
   its next chunk (as in Toxiproxy).
3. Randomness is injected: each accepted connection draws its own `random.Random` from the
   proxy's seeded generator, in accept order, so one seed replays one run.
4. `close()` ends every connection it opened: a proxy never outlives its experiment.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
from collections.abc import Iterable
from typing import Any

from chaos.toxics import Cut, Delay, Forward, LinkState, Toxic, close_chain, run_chain


class FaultProxy:
    """`FaultProxy(target_host, target_port, seed=1)`; `await start()`; `url`/`port`."""

    def __init__(self, target_host: str, target_port: int, *, seed: int = 0,
                 listen_host: str = "127.0.0.1", listen_port: int = 0,
                 toxics: Iterable[Toxic] = ()) -> None:
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self._rng = random.Random(seed)
        self._toxics: dict[str, Toxic] = {}
        for toxic in toxics:
            self.add_toxic(toxic)
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.port = 0
        self.accepted = 0

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.port}"

    # --- toxics at run time ------------------------------------------------------------------

    def add_toxic(self, toxic: Toxic) -> None:
        if toxic.name in self._toxics:
            raise ValueError(f"toxic {toxic.name!r} is already on this proxy")
        self._toxics[toxic.name] = toxic

    def remove_toxic(self, name: str) -> None:
        self._toxics.pop(name, None)

    def clear(self) -> None:
        self._toxics.clear()

    def toxics(self, direction: str) -> list[Toxic]:
        return [t for t in self._toxics.values() if t.direction == direction]

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- one connection ----------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn_rng = random.Random(self._rng.getrandbits(64))
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            await self._serve(client_r, client_w, conn_rng)
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            _abort(client_w)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                     conn_rng: random.Random) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            _reset(client_w)
            return
        done = asyncio.Event()
        outcome: list[Cut] = []

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: str) -> None:
            link = LinkState(rng=random.Random(conn_rng.getrandbits(64)))
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        for action in close_chain(self.toxics(direction), link):
                            if isinstance(action, Delay):
                                await asyncio.sleep(action.seconds)
                        if dst.can_write_eof():
                            dst.write_eof()
                        return
                    for action in run_chain(self.toxics(direction), data, link):
                        if isinstance(action, Delay):
                            await asyncio.sleep(action.seconds)
                        elif isinstance(action, Forward):
                            dst.write(action.data)
                            await dst.drain()
                        else:
                            outcome.append(action)
                            done.set()
                            return
            except (ConnectionError, OSError):
                outcome.append(Cut(reset=True))
                done.set()

        tasks = [asyncio.create_task(pipe(client_r, up_w, "upstream")),
                 asyncio.create_task(pipe(up_r, client_w, "downstream"))]
        ended = asyncio.create_task(done.wait())
        both: asyncio.Future[list[None]] = asyncio.gather(*tasks)
        try:
            # Either a toxic cut the connection, or both directions reached end of stream.
            waiters: list[asyncio.Future[Any]] = [ended, both]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            both.cancel()  # the gather first, so its outcome is ours to read
            for task in (*tasks, ended):
                task.cancel()
            await asyncio.gather(both, *tasks, ended, return_exceptions=True)
            if outcome and outcome[0].reset:
                _reset(client_w)
            else:
                with contextlib.suppress(ConnectionError, OSError):
                    await client_w.drain()
                client_w.close()
            _abort(up_w)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _abort(writer: asyncio.StreamWriter) -> None:
    if not writer.transport.is_closing():
        writer.transport.abort()
