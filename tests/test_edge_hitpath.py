"""The edge hit path (edge/hitpath.py) against a real aiohttp server on loopback, under
uvloop and the stock loop: full and ranged bodies, keep-alive reuse, a slow reader that
forces EAGAIN, pipelined requests behind a buffered response, disconnects, the page-cache
warm-up, the executor fallback, and the RAM hot tier.

The server runs in a thread with its own loop (made by `common.service.new_event_loop`,
so OCSIM_LOOP picks it); the client is a plain blocking socket, so the tests control
exactly how fast bytes are read and when the connection dies.
"""
from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from common.service import new_event_loop
from edge.hitpath import HitSender, HotTier, send_bytes

BIG = 8 * 1024 * 1024 + 12345


def _content(n: int, seed: int) -> bytes:
    block = bytes((i * 31 + seed) % 251 for i in range(4096))
    return (block * (n // len(block) + 1))[:n]


class Server:
    """An aiohttp app serving files through HitSender, in a thread with its own loop."""

    def __init__(self, root: Path, loop_name: str, **sender_kw: Any) -> None:
        self.root = root
        self.loop_name = loop_name
        self.sender = HitSender(**sender_kw)
        self.hot = HotTier(1024 * 1024)
        self.fds: dict[str, int] = {}
        self.port = 0
        self.errors: list[BaseException] = []
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.loop_type = ""

    def fd(self, name: str) -> int:
        if name not in self.fds:
            self.fds[name] = os.open(self.root / name, os.O_RDONLY)
        return self.fds[name]

    async def _file(self, request: web.Request) -> web.StreamResponse:
        fd = self.fd(request.match_info["name"])
        size = os.fstat(fd).st_size
        offset = int(request.query.get("offset", 0))
        count = int(request.query.get("count", size - offset))
        resp = web.StreamResponse(status=200 if "count" not in request.query else 206)
        resp.content_length = count
        resp.headers["X-Cache"] = "HIT"
        try:
            await self.sender.send(request, resp, fd, offset, count)
        except BaseException as exc:  # the test asserts none escape
            self.errors.append(exc)
            raise
        return resp

    async def _big_response(self, request: web.Request) -> web.Response:
        return web.Response(body=_content(int(request.query["n"]), 7))

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """Like a miss streamed while filling: many writes, the last ones may stay buffered."""
        data = _content(int(request.query["n"]), 9)
        if "sndbuf" in request.query:  # a small kernel buffer: the transport has to queue
            sock = request.transport.get_extra_info("socket")  # type: ignore[union-attr]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, int(request.query["sndbuf"]))
        resp = web.StreamResponse()
        resp.content_length = len(data)
        await resp.prepare(request)
        for i in range(0, len(data), 48 * 1024):
            await resp.write(data[i:i + 48 * 1024])
        await resp.write_eof()
        return resp

    async def _hot(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info["name"]
        data = self.hot.get(key)
        if data is None:
            data = (self.root / key).read_bytes()
            self.hot.put(key, data)
        if request.query.get("mode") == "stream":
            resp = web.StreamResponse()
            resp.content_length = len(data)
            await send_bytes(request, resp, data)
            return resp
        return HotTier.response(data, headers={"X-Cache": "HIT"})

    async def _main(self) -> None:
        self.loop_type = type(asyncio.get_running_loop()).__module__
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/f/{name}", self._file)  # also answers HEAD
        app.router.add_get("/big", self._big_response)
        app.router.add_get("/hot/{name}", self._hot)
        app.router.add_get("/stream", self._stream)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _run(self) -> None:
        os.environ["OCSIM_LOOP"] = self.loop_name
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(self._main())

    def __enter__(self) -> Server:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        for fd in self.fds.values():
            os.close(fd)

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        s = socket.socket()
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(10)
        s.connect(("127.0.0.1", self.port))
        return s


class Reader:
    """Minimal HTTP/1.1 response reader over a blocking socket (Content-Length bodies)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self, n: int = 65536) -> None:
        data = self.sock.recv(n)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def response(self, pace: float = 0.0, chunk: int = 65536) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers["content-length"])
        parts = [self.buf[:n]]
        got = len(parts[0])
        self.buf = self.buf[n:]
        while got < n:
            if pace:
                time.sleep(pace)
            data = self.sock.recv(min(chunk, n - got))
            if not data:
                raise EOFError(f"body truncated at {got} of {n}")
            parts.append(data)
            got += len(data)
        return status, headers, b"".join(parts)


def eventually(cond: Any, timeout: float = 5.0) -> bool:
    """The server thread updates its counters just after the client has the bytes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("hits")
    out = {"small": _content(16 * 1024, 1), "seg": _content(2 * 1024 * 1024 + 77, 2),
           "big": _content(BIG, 3), "tiny": b"x"}
    for name, data in out.items():
        with open(root / name, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    out["_root"] = str(root).encode()
    return out


@pytest.fixture(params=["uvloop", "asyncio"])
def server(request: pytest.FixtureRequest, files: dict[str, bytes]) -> Iterator[Server]:
    with Server(Path(files["_root"].decode()), request.param) as srv:
        yield srv
    assert not srv.errors, srv.errors


def test_runs_under_the_requested_loop(server: Server) -> None:
    assert server.loop_type.startswith("uvloop" if server.loop_name == "uvloop" else "asyncio")


@pytest.mark.parametrize("name", ["tiny", "small", "seg", "big"])
def test_full_body(server: Server, files: dict[str, bytes], name: str) -> None:
    with server.connect() as s:
        s.sendall(get(f"/f/{name}"))
        status, headers, body = Reader(s).response()
    assert status == 200 and headers["x-cache"] == "HIT"
    assert body == files[name]
    assert eventually(lambda: server.sender.stats["sendfile"] == 1)
    assert server.sender.stats["fallback"] == 0


def test_ranges(server: Server, files: dict[str, bytes]) -> None:
    cases = [(0, 1), (1, 100), (4095, 4097), (1_000_000, 1_048_576 + 3), (len(files["seg"]) - 10, 10)]
    with server.connect() as s:
        r = Reader(s)
        for off, cnt in cases:
            s.sendall(get(f"/f/seg?offset={off}&count={cnt}"))
            status, headers, body = r.response()
            assert status == 206 and int(headers["content-length"]) == cnt
            assert body == files["seg"][off:off + cnt]


def test_keep_alive_many_sequential_requests(server: Server, files: dict[str, bytes]) -> None:
    with server.connect() as s:
        r = Reader(s)
        for i in range(200):
            name = ("small", "tiny", "seg")[i % 3] if i % 20 else "big"
            s.sendall(get(f"/f/{name}"))
            status, headers, body = r.response()
            assert status == 200 and "close" not in headers.get("connection", "").lower()
            assert body == files[name], (i, name)
    assert server.sender.stats["aborted"] == 0


def test_head_sends_headers_only(server: Server, files: dict[str, bytes]) -> None:
    with server.connect() as s:
        s.sendall(f"HEAD /f/seg HTTP/1.1\r\nHost: t\r\n\r\n".encode() + get("/f/small"))
        r = Reader(s)
        while b"\r\n\r\n" not in r.buf:
            r._fill()
        head, r.buf = r.buf.split(b"\r\n\r\n", 1)
        assert b" 200 " in head and f"Content-Length: {len(files['seg'])}".encode() in head
        assert r.response()[2] == files["small"]  # no body bytes came between the two


def test_slow_reader_forces_eagain(server: Server, files: dict[str, bytes]) -> None:
    with server.connect(rcvbuf=64 * 1024) as s:
        r = Reader(s)
        s.sendall(get("/f/big"))
        t0 = time.monotonic()
        _, _, body = r.response(pace=0.0005, chunk=256 * 1024)
        assert body == files["big"]
        s.sendall(get("/f/small"))  # the connection is still good afterwards
        assert r.response()[2] == files["small"]
    assert eventually(lambda: server.sender.stats["waits"] > 0)
    assert time.monotonic() - t0 < 10


def test_pipelined_hit_behind_a_buffered_response(server: Server, files: dict[str, bytes]) -> None:
    """A hit right behind a large aiohttp-written response must not overtake its bytes."""
    with server.connect(rcvbuf=32 * 1024) as s:
        r = Reader(s)
        for _ in range(3):
            s.sendall(get("/stream?n=200000&sndbuf=16384") + get("/stream?n=40000") + get("/f/seg")
                      + get("/stream?n=1000000") + get("/f/small"))
            time.sleep(0.05)  # the server blocks on a full socket with bytes still buffered
            assert r.response(pace=0.0002, chunk=16 * 1024)[2] == _content(200000, 9)
            assert r.response()[2] == _content(40000, 9)
            assert r.response()[2] == files["seg"]
            assert r.response(pace=0.0002, chunk=16 * 1024)[2] == _content(1_000_000, 9)
            assert r.response()[2] == files["small"]
    assert eventually(lambda: server.sender.stats["flushes"] >= 1)


def test_client_disconnect_mid_body(server: Server, files: dict[str, bytes]) -> None:
    for _ in range(3):
        s = server.connect(rcvbuf=32 * 1024)
        s.sendall(get("/f/big"))
        assert s.recv(1000)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # RST with most of the body unsent
    assert eventually(lambda: server.sender.stats["aborted"] == 3)
    with server.connect() as s:  # the server is fine
        s.sendall(get("/f/seg"))
        assert Reader(s).response()[2] == files["seg"]


def test_cold_pages_are_warmed_off_the_loop(server: Server, files: dict[str, bytes]) -> None:
    # POSIX_FADV_DONTNEED is advice the kernel may ignore, so whether the pages really left
    # the page cache is not ours to decide: the probe is told they are cold.
    server.sender._resident = lambda fd, offset, count: False  # type: ignore[method-assign]
    with server.connect() as s:
        s.sendall(get("/f/seg"))
        assert Reader(s).response()[2] == files["seg"]
    assert eventually(lambda: server.sender.stats["warmed"] == 1)


def test_the_residency_probe_sees_cached_pages(server: Server, files: dict[str, bytes]) -> None:
    fd = server.fd("seg")
    os.pread(fd, len(files["seg"]), 0)  # now certainly in the page cache
    assert server.sender._resident(fd, 0, len(files["seg"]))


@pytest.mark.parametrize("loop_name", ["uvloop", "asyncio"])
def test_executor_fallback(files: dict[str, bytes], loop_name: str) -> None:
    with Server(Path(files["_root"].decode()), loop_name, use_sendfile=False) as srv, srv.connect() as s:
        r = Reader(s)
        for name in ("big", "small", "tiny"):
            s.sendall(get(f"/f/{name}"))
            assert r.response()[2] == files[name]
        s.sendall(get("/f/seg?offset=5&count=300000"))
        assert r.response()[2] == files["seg"][5:300005]
    assert eventually(lambda: srv.sender.stats["fallback"] == 4) and srv.sender.stats["sendfile"] == 0
    assert not srv.errors


def test_hot_tier_serves_from_ram(server: Server, files: dict[str, bytes]) -> None:
    with server.connect() as s:
        r = Reader(s)
        for mode in ("", "?mode=stream") * 3:
            s.sendall(get(f"/hot/small{mode}"))
            status, headers, body = r.response()
            assert status == 200 and body == files["small"]
    assert eventually(lambda: server.hot.hits == 5) and len(server.hot) == 1


def test_hot_tier_budget_and_lru() -> None:
    t = HotTier(100, max_object_bytes=40)
    assert t.put("a", b"a" * 40) and t.put("b", b"b" * 40)
    assert t.get("a") is not None  # a is now the most recent
    assert t.put("c", b"c" * 40)  # evicts b, the least recent
    assert t.get("b") is None and t.get("a") and t.get("c")
    assert t.used == 80 and len(t) == 2
    assert not t.put("huge", b"h" * 41) and "huge" not in t
    t.put("a", b"A" * 10)  # replace shrinks
    assert t.used == 50 and t.get("a") == b"A" * 10
    t.discard("a")
    t.discard("missing")
    assert t.used == 40 and len(t) == 1
    assert HotTier.response(b"0123456789", offset=2, count=3).body == b"234"


def test_client_gone_before_the_headers_is_an_abort_not_an_error() -> None:
    """wrk closing its connections at the end of a run: the headers' write finds the transport
    closing (aiohttp raises ClientConnectionResetError); that is the client's choice, counted
    as an abort, never an exception for aiohttp to log as a 500."""
    from aiohttp import ClientConnectionResetError

    class Transport:
        aborted = False

        def is_closing(self) -> bool:
            return True

        def abort(self) -> None:
            self.aborted = True

    class Request:
        method = "GET"
        transport = Transport()

    class Response:
        status = 200
        closed = False

        async def prepare(self, request: Any) -> None:
            raise ClientConnectionResetError("Cannot write to closing transport")

        def force_close(self) -> None:
            self.closed = True

    sender, resp = HitSender(probe_page_cache=False), Response()
    asyncio.run(sender.send(Request(), resp, -1, 0, 10))  # type: ignore[arg-type]
    assert sender.stats["aborted"] == 1 and resp.closed
