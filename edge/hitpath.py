"""The edge's hit path: put cached bytes on the wire with as little work per byte and per
request as the loop allows.

Rules of this module (measured with `bench/edge_bench.py`; numbers in the lead's report):

1. **Disk hits go out with `os.sendfile` on the connection's own socket**, under every
   loop. aiohttp's `FileResponse` relies on `loop.sendfile`, which uvloop lacks, so it
   falls back to 256 KiB reads through a thread pool (three executor hops per request plus
   one per chunk). `HitSender.send` instead prepares the response (headers leave through
   the transport as usual), checks the transport's write buffer is empty, then calls
   `os.sendfile(socket_fd, file_fd, offset, n)` until done: page cache -> socket, no copy
   into Python, no executor, no per-chunk task switch.
2. **EAGAIN waits on a `dup()` of the socket.** uvloop (and the stock loop) refuse
   `add_writer` on a fd a transport owns; a dup'ed descriptor is a different fd on the
   same socket, so registering it is allowed, and holding it pins the socket: if the
   transport closes meanwhile, its fd number cannot be recycled under us. The dup is
   made only when a send does not finish in one go (a 16 KiB hit never pays for it).
3. **The loop never blocks on disk.** `sendfile` reads the file synchronously, so a range
   that is not in the page cache would stall the loop. Before sending, two 1-byte
   `preadv(RWF_NOWAIT)` probes (first and last byte of the range) ask the kernel whether
   the pages are resident; if not, one executor call reads the range to warm the cache
   (the Linux stand-in for FreeBSD's `SF_NODISKIO`, which Open Connect uses for this).
4. **Keep-alive stays correct.** The body bypasses aiohttp's `StreamWriter`, so after the
   sendfile we account for it the way a write would (`output_size`, `length`) and let
   `resp.write_eof()` finish the message with nothing left to write, exactly what
   `FileResponse._sendfile` does after `loop.sendfile`.
5. **Disconnects are quiet.** EPIPE/ECONNRESET (or a transport that went away) abort the
   connection and `send` returns; the caller's handler returns `resp` normally and
   aiohttp does not reuse the connection. A file shorter than promised is the same: the
   connection is aborted so the client sees a truncated body, never a wrong one.
6. **No raw socket, no sendfile.** TLS transports (no plain socket) get a fallback that
   reads 1 MiB chunks in the executor and writes them through aiohttp.

The hot tier (`HotTier`) keeps small popular objects in RAM, the way Open Connect locks
its most popular files in memory: no open/stat/close, no probe, no sendfile setup. What
was measured fastest for serving a RAM object is a plain `web.Response(body=view)`:
aiohttp then coalesces headers and body into one `writev` (a prepared `StreamResponse`
sends headers at `prepare()` and the body in a second syscall). `HotTier.response`
builds that; `send_bytes` is the equivalent for a caller that already built a
`StreamResponse` (it uses the same single write when it can).

The fast lane (`FastLane`, `install_fast_lane`) answers the simplest and commonest request
of all, a plain keep-alive `GET` of a RAM-tier object, without aiohttp's per-request
machinery (parser objects, request, router, middleware, response, writer: most of a 16 KiB
hit's CPU). It is the connection's protocol and wraps aiohttp's `RequestHandler`:

* a request is taken by the fast lane only when its whole header block is buffered and
  it is exactly `GET <path> HTTP/1.1` with visible-ASCII, token-named headers, none of
  which is about a body, ranges, conditionals or the connection (`simple_get_target`),
  and the server's callback says it is a RAM hit it can answer (else None);
* a buffered head with a bare LF or CR line end goes to aiohttp at once (it would never
  end in CRLF CRLF, so waiting for more would hang the client);
* anything else - and every byte after it on that connection - goes to the wrapped
  aiohttp handler unchanged, which then owns the connection for good (responses stay in
  order: the fast lane's are already in the transport's buffer, in request order);
* keep-alive, backpressure and shutdown stay aiohttp's: the wrapped handler sees
  `connection_made`/`connection_lost`/`pause_writing`/`resume_writing`, its idle timer is
  pushed forward on every fast answer, and the fast lane stops reading while the
  transport is paused; its graceful shutdown closes the transport as usual.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

log = logging.getLogger("ocsim.edge.hitpath")

__all__ = ["FastHead", "FastLane", "HitSender", "HotTier", "abort_response", "fast_head", "install_fast_lane",
           "send_bytes", "simple_get", "simple_get_target"]

_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
_FALLBACK_CHUNK = 1024 * 1024
_WARM_CHUNK = 1024 * 1024
# One sendfile call moves at most this much: bounds the time the loop spends in one
# syscall (a few hundred microseconds on loopback) so other connections stay served.
_MAX_SENDFILE = 4 * 1024 * 1024


class HitSender:
    """Sends a byte range of an open file as the body of a prepared-by-us response.

    One instance per edge process; it keeps no per-request state. `executor` is used
    only for page-cache warming and the TLS fallback (None: the loop's default).
    """

    def __init__(self, *, executor: Executor | None = None, probe_page_cache: bool = True,
                 max_sendfile: int = _MAX_SENDFILE, use_sendfile: bool = True) -> None:
        self._executor = executor
        self._use_sendfile = use_sendfile  # False: always the executor path (comparisons, tests)
        self._probe = probe_page_cache and hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")
        self._max_sendfile = max_sendfile
        self._probe_buf = bytearray(1)
        self.stats = {"sendfile": 0, "fallback": 0, "waits": 0, "warmed": 0, "aborted": 0,
                      "flushes": 0}

    async def send(self, request: web.BaseRequest, resp: web.StreamResponse, fd: int,
                   offset: int, count: int) -> None:
        """Prepare `resp`, then send `count` bytes of `fd` from `offset` as its body, then
        finish it. `resp` must carry status, headers and `content_length == count`. A HEAD
        request (or a status that has no body) gets the headers only."""
        if request.method == "HEAD" or resp.status < 200 or resp.status in (204, 304):
            count = 0  # RFC 9110 9.3.2 / 15.3.5 / 15.4.5: no content, Content-Length kept
        if count and self._probe and not self._resident(fd, offset, count):
            # Before prepare(): a failing disk read can still become a clean 5xx.
            await asyncio.get_running_loop().run_in_executor(self._executor, _warm, fd, offset, count)
            self.stats["warmed"] += 1
        transport = request.transport
        try:
            writer = await resp.prepare(request)
        except _DISCONNECTS:  # the client left before the headers went out: its choice, not an error
            self._abort(resp, transport)
            return
        assert writer is not None
        if transport is None or transport.is_closing():
            self._abort(resp, transport)
            return
        if count:
            sock = transport.get_extra_info("socket")
            if not self._use_sendfile or sock is None or transport.get_extra_info("sslcontext") is not None:
                self.stats["fallback"] += 1
                if not await self._send_fallback(resp, fd, offset, count):
                    self._abort(resp, transport)
                return
            if transport.get_write_buffer_size():
                self.stats["flushes"] += 1
                await _flush(transport, writer)
            sent = await self._sendfile(transport, sock.fileno(), fd, offset, count)
            # Account for the body as if it had gone through the writer (see rule 4).
            writer.output_size += sent
            if writer.length is not None:
                writer.length = max(0, writer.length - sent)
            if sent != count:
                self._abort(resp, transport)
                return
            self.stats["sendfile"] += 1
        try:
            await resp.write_eof()
        except _DISCONNECTS:
            self._abort(resp, transport)

    async def _sendfile(self, transport: asyncio.BaseTransport, sock_fd: int, fd: int,
                        offset: int, count: int) -> int:
        """os.sendfile until `count` bytes are out; returns how many were sent (less on
        disconnect or short file)."""
        sent = 0
        waiter: _Writable | None = None
        try:
            while sent < count:
                # The transport may have closed while we waited; uvloop then closed its fd,
                # and the number may already belong to another connection. Once we hold a
                # dup we always use it: it pins the original socket.
                if waiter is None and transport.is_closing():
                    return sent
                try:
                    n = os.sendfile(waiter.fd if waiter else sock_fd, fd, offset + sent,
                                    min(count - sent, self._max_sendfile))
                except BlockingIOError:
                    if waiter is None:
                        waiter = _Writable(sock_fd)
                    self.stats["waits"] += 1
                    await waiter.wait()
                    continue
                except InterruptedError:
                    continue
                except _DISCONNECTS:
                    return sent
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                        return sent
                    raise
                if n == 0:
                    log.warning("cached file shorter than its Content-Length: %d of %d bytes sent",
                                sent, count)
                    return sent
                sent += n
            return sent
        finally:
            if waiter is not None:
                waiter.close()

    async def _send_fallback(self, resp: web.StreamResponse, fd: int, offset: int, count: int) -> bool:
        loop = asyncio.get_running_loop()
        end = offset + count
        pos = offset
        try:
            while pos < end:
                chunk = await loop.run_in_executor(self._executor, os.pread, fd, min(_FALLBACK_CHUNK, end - pos), pos)
                if not chunk:
                    return False
                await resp.write(chunk)
                pos += len(chunk)
            await resp.write_eof()
        except _DISCONNECTS:
            return False
        return True

    def _resident(self, fd: int, offset: int, count: int) -> bool:
        """Would reading the first and last byte of the range block on disk?"""
        try:
            for at in (offset, offset + count - 1):
                if os.preadv(fd, (self._probe_buf,), at, os.RWF_NOWAIT) == 0:
                    return True  # past EOF: nothing to warm, sendfile reports the short file
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._probe = False  # this filesystem cannot say; stop asking
                return True
            raise
        return True

    def _abort(self, resp: web.StreamResponse, transport: asyncio.BaseTransport | None) -> None:
        self.stats["aborted"] += 1
        resp.force_close()
        if transport is not None and not transport.is_closing():
            transport.abort()  # type: ignore[attr-defined]


class _Writable:
    """Wakes a coroutine when a dup of a transport's socket is writable."""

    __slots__ = ("fd", "_loop", "_fut")

    def __init__(self, sock_fd: int) -> None:
        self._loop = asyncio.get_running_loop()
        self.fd = os.dup(sock_fd)
        self._fut: asyncio.Future[None] | None = None
        try:
            self._loop.add_writer(self.fd, self._wake)
        except BaseException:
            os.close(self.fd)
            raise

    def _wake(self) -> None:
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(self) -> None:
        self._fut = self._loop.create_future()
        try:
            await self._fut
        finally:
            self._fut = None

    def close(self) -> None:
        try:
            self._loop.remove_writer(self.fd)
        finally:
            os.close(self.fd)


async def _flush(transport: asyncio.BaseTransport, writer: Any) -> None:
    """Wait until the transport's write buffer is empty (bytes of an earlier response on
    this connection may still be queued). Public API only: with both water marks at 0 the
    protocol is paused until the buffer is empty, and aiohttp's drain waits for that."""
    wt: asyncio.WriteTransport = transport  # type: ignore[assignment]
    low, high = wt.get_write_buffer_limits()
    try:
        wt.set_write_buffer_limits(high=0, low=0)
        while wt.get_write_buffer_size() and not wt.is_closing():
            await writer.drain()
            if wt.get_write_buffer_size():
                await asyncio.sleep(0.001)  # protocol was not paused by us: poll briefly
    finally:
        if not wt.is_closing():
            wt.set_write_buffer_limits(high=high, low=low)


def _warm(fd: int, offset: int, count: int) -> None:
    """Read the range once so the page cache holds it (runs in the executor)."""
    buf = bytearray(min(_WARM_CHUNK, count))
    view = memoryview(buf)
    end = offset + count
    while offset < end:
        n = os.preadv(fd, (view[:min(len(buf), end - offset)],), offset)
        if n <= 0:
            return
        offset += n


async def send_bytes(request: web.BaseRequest, resp: web.StreamResponse, data: bytes | memoryview,
                     offset: int = 0, count: int | None = None) -> None:
    """Send `data[offset:offset+count]` as the body of `resp` (status and headers set, not
    prepared). A `web.Response` gets the body attached so headers and body leave in one
    write; a plain `StreamResponse` is prepared and finished with the body."""
    view = memoryview(data)
    if count is None:
        count = len(view) - offset
    body = view[offset:offset + count] if (offset or count != len(view)) else view
    try:
        if isinstance(resp, web.Response):
            resp.body = body
            await resp.prepare(request)
            await resp.write_eof()
        else:
            await resp.prepare(request)
            await resp.write_eof(body)  # type: ignore[arg-type]
    except _DISCONNECTS:
        resp.force_close()


class HotTier:
    """A byte-budgeted LRU of small, popular objects held in RAM (no IO here).

    `put` refuses objects larger than `max_object_bytes` (default: 1/16 of the budget) so
    one large object cannot flush the tier; what to admit (e.g. "hit twice") is the
    caller's policy. Values are immutable `bytes`, safe to hand to many responses at once.
    """

    def __init__(self, max_bytes: int, *, max_object_bytes: int | None = None) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self.max_object_bytes = max_bytes // 16 if max_object_bytes is None else max_object_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._used = 0
        self.hits = 0
        self.misses = 0

    @property
    def used(self) -> int:
        return self._used

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable) -> bytes | None:
        data = self._items.get(key)
        if data is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return data

    def put(self, key: Hashable, data: bytes) -> bool:
        """Insert or replace; evicts least recently used entries to fit. False if refused."""
        size = len(data)
        if size > self.max_object_bytes or size > self.max_bytes:
            self.discard(key)
            return False
        self.discard(key)
        while self._used + size > self.max_bytes and self._items:
            _, old = self._items.popitem(last=False)
            self._used -= len(old)
        self._items[key] = bytes(data)
        self._used += size
        return True

    def discard(self, key: Hashable) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._used -= len(old)

    def clear(self) -> None:
        self._items.clear()
        self._used = 0

    @staticmethod
    def response(data: bytes, *, status: int = 200, headers: dict[str, str] | None = None,
                 offset: int = 0, count: int | None = None) -> web.Response:
        """The fastest way to serve a RAM object: a `web.Response` whose body is a view."""
        if count is not None or offset:
            # A copy, but a small one (hot objects are small); a memoryview body would take
            # aiohttp's slower payload path.
            data = data[offset:offset + (len(data) - offset if count is None else count)]
        return web.Response(status=status, body=data, headers=headers)


# ----------------------------------------------------------------------------- fast lane

# `GET <origin-form path without query or %-escapes> HTTP/1.1`, then header fields whose
# names are tokens and whose values are visible ASCII, space or tab (RFC 9110 5.1, 5.5).
_PLAIN_VALUE = re.compile(r"[\t -~]*\Z")  # header values the fast lane may write as they are


def fast_head(headers: dict[str, str], length: int) -> bytes | None:
    """A fast-lane 200's status line and headers, up to (not including) Age and Date, or
    None when a value cannot be written as it is. `FastHead.finish` completes it."""
    if not all(_PLAIN_VALUE.match(v) for v in headers.values()):
        return None
    lines = ["HTTP/1.1 200 OK", *(f"{k}: {v}" for k, v in headers.items()),
             f"Content-Length: {length}", f"Server: {SERVER_SOFTWARE}", ""]
    return "\r\n".join(lines).encode("ascii")


class FastHead:
    """Completes `fast_head`'s bytes with Age and Date; the Date text is built once a second."""

    __slots__ = ("_at", "_date")

    def __init__(self) -> None:
        self._at = -1
        self._date = b""

    def finish(self, head: bytes, age: int, now: float) -> bytes:
        sec = int(now)
        if sec != self._at:
            self._at = sec
            self._date = formatdate(sec, usegmt=True).encode("ascii")
        return b"%sAge: %d\r\nDate: %s\r\n\r\n" % (head, age, self._date)


def abort_response(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """Cut the connection so the client sees a truncated body, never a short 200."""
    resp.force_close()
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.abort()


_SIMPLE_GET_RE = re.compile(
    rb"GET (/[A-Za-z0-9._~!$&'()*+,;=:@/-]*) HTTP/1\.1"
    rb"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t -~]*)*\Z")
# Fields that change how the request is framed or answered (group 1): those go to aiohttp.
# Cache directives and credentials too (RFC 9111 5.2.1, 3.5): only a request without them is
# answered from a fresh object without judging it in full. The same scan finds the player's
# session id (X-Ocsim-Session), which only labels the request's event, so a session never
# costs a request the fast lane.
_SLOW_FIELD_RE = re.compile(
    rb"\r\n(?:(content-length|transfer-encoding|range|if-[a-z-]*|connection|expect|upgrade|te|trailer"
    rb"|cache-control|pragma|authorization)|x-ocsim-session)[\t ]*:[\t ]*",
    re.IGNORECASE)
MAX_SESSION_LEN = 128
# A line end that is not CRLF: an LF without its CR, or a CR followed by anything but LF
# (a CR as the last byte buffered may still get its LF in the next read).
_BARE_LINE_END_RE = re.compile(rb"(?<!\r)\n|\r(?=[^\n])")
_MAX_HEAD = 8190  # a header block longer than aiohttp's line limit is aiohttp's to refuse


_SEEN_HEADS: dict[bytes, tuple[str, str | None] | None] = {}  # simple_get's answers, by the exact head
_SEEN_HEADS_MAX = 4096


def simple_get(head: bytes) -> tuple[str, str | None] | None:
    """(path, session id or None) of `head` (a request's header block, without the empty
    line) when the fast lane may answer it; None for anything else. The session is the first
    X-Ocsim-Session field's value, trimmed as aiohttp trims it, cut to MAX_SESSION_LEN. A
    client asks for the same objects with the same header block again and again (a player
    re-reading a playlist, wrk), so the answer is remembered by the exact bytes: one hash
    instead of the regex passes."""
    try:
        return _SEEN_HEADS[head]
    except KeyError:
        pass
    got = _simple_get(head)
    if len(head) <= 1024:
        if len(_SEEN_HEADS) >= _SEEN_HEADS_MAX:
            _SEEN_HEADS.clear()
        _SEEN_HEADS[head] = got
    return got


def _simple_get(head: bytes) -> tuple[str, str | None] | None:
    m = _SIMPLE_GET_RE.match(head)
    if m is None:
        return None
    session: str | None = None
    pos = 0
    while True:
        field = _SLOW_FIELD_RE.search(head, pos)
        if field is None:
            return m.group(1).decode("ascii"), session
        if field.group(1) is not None:
            return None
        end = head.find(b"\r\n", field.end())
        pos = len(head) if end < 0 else end
        if session is None:
            session = head[field.end():pos].rstrip(b"\t ").decode("ascii")[:MAX_SESSION_LEN] or None


def simple_get_target(head: bytes) -> str | None:
    """The path of `head` when the fast lane may answer it; None for anything else."""
    got = simple_get(head)
    return None if got is None else got[0]


FastAnswer = tuple[bytes, bytes]  # (status line and headers with the empty line, body)
FastServe = Callable[[str, str | None], FastAnswer | None]  # (path, session) -> the answer or None


class FastLane(asyncio.Protocol):
    """A connection's protocol: plain RAM hits answered here, the rest by `inner`.

    `serve(path, session)` returns the whole response for a plain GET of `path` (`session`:
    its X-Ocsim-Session or None), or None to hand the request (and the connection) to
    `inner`. See the module docstring."""

    __slots__ = ("_inner", "_serve", "_transport", "_buf", "_slow", "_paused", "_reading_paused",
                 "_loop", "_keepalive", "_log")

    def __init__(self, inner: Any, serve: FastServe) -> None:
        self._inner = inner
        self._serve = serve
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._paused = False
        self._reading_paused = False
        self._loop = asyncio.get_running_loop()
        # aiohttp closes a connection idle for keepalive_timeout; the fast lane tells it
        # when the connection was last used. Without that hook there is no fast lane.
        self._keepalive = float(getattr(inner, "keepalive_timeout", 0.0) or 0.0)
        self._slow = not hasattr(inner, "_next_keepalive_close_time")
        logger = getattr(inner, "access_logger", None)
        self._log = logger if getattr(inner, "_logging_enabled", False) else None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._slow = True
        self._buf = b""
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        self._inner.resume_writing()
        if not self._slow and self._reading_paused:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()
            buf, self._buf = self._buf, b""
            if buf:
                self._run(buf)

    def data_received(self, data: bytes) -> None:
        if self._slow:
            self._inner.data_received(data)
            return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        self._run(data)

    def eof_received(self) -> bool | None:
        if not self._slow:
            self._to_slow(self._buf)
        return self._inner.eof_received()  # type: ignore[no-any-return]

    # -- the lane ------------------------------------------------------------------------

    def _run(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        pos = 0
        n = len(data)
        while True:
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                rest = data[pos:] if pos else data
                if len(rest) > _MAX_HEAD or _BARE_LINE_END_RE.search(rest) is not None:
                    # A bare LF or CR: this head never ends in CRLF CRLF, so waiting for one
                    # would hang the client; aiohttp's parser answers it (or refuses it, 400).
                    self._to_slow(rest)
                else:
                    self._buf = rest
                return
            got = simple_get(data[pos:end])
            answer = None if got is None or transport.is_closing() else self._answer(*got)
            if answer is None:
                self._to_slow(data[pos:] if pos else data)
                return
            transport.writelines(answer)
            if self._keepalive:
                self._inner._next_keepalive_close_time = self._loop.time() + self._keepalive
            if self._log is not None:
                self._access(got[0], answer)  # type: ignore[index]  # not None: answered
            pos = end + 4
            if pos >= n:
                return
            if self._paused:  # the client is not reading: stop reading its requests too
                self._buf = data[pos:]
                self._reading_paused = True
                transport.pause_reading()
                return

    def _answer(self, target: str, session: str | None) -> FastAnswer | None:
        try:
            return self._serve(target, session)
        except Exception:  # a bug in the callback must not cost the request: aiohttp answers it
            log.exception("fast lane failed for %s", target)
            return None

    def _to_slow(self, data: bytes) -> None:
        """aiohttp owns the connection from here on, starting with `data`."""
        self._slow = True
        self._buf = b""
        if self._reading_paused:
            self._reading_paused = False
            if self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()
        if data:
            self._inner.data_received(data)

    def _access(self, path: str, answer: FastAnswer) -> None:
        assert self._log is not None and self._transport is not None
        peer = self._transport.get_extra_info("peername")
        try:
            # bytes as aiohttp logs them: head + body
            self._log.log(_LoggedRequest(path, peer[0] if isinstance(peer, (tuple, list)) else None),
                          _LoggedResponse(len(answer[0]) + len(answer[1])), 0.0)
        except Exception:  # never let logging break a response that already left
            log.exception("access log failed")


class _LoggedRequest:
    __slots__ = ("path", "remote")
    method = "GET"

    def __init__(self, path: str, remote: str | None) -> None:
        self.path = path
        self.remote = remote


class _LoggedResponse:
    __slots__ = ("body_length",)
    status = 200
    headers = {"X-Cache": "HIT"}

    def __init__(self, body_length: int) -> None:
        self.body_length = body_length


class _FastLaneServer(web.Server):
    """aiohttp's low-level server, each connection's protocol wrapped in a `FastLane`."""

    fast_lane_serve: FastServe | None = None

    def __call__(self) -> Any:
        inner = super().__call__()
        serve = self.fast_lane_serve
        return inner if serve is None else FastLane(inner, serve)


def install_fast_lane(app: web.Application, serve: FastServe) -> None:
    """Make the server that `web.AppRunner` builds for `app` (before it is set up) put a
    `FastLane` in front of every connection. The server object stays aiohttp's own
    (`web.Server`: connections, shutdown), only its protocol factory changes."""
    make = app._make_handler

    def make_handler(**kwargs: Any) -> web.Server:
        server = make(**kwargs)
        server.__class__ = _FastLaneServer
        assert isinstance(server, _FastLaneServer)
        server.fast_lane_serve = serve
        return server

    app._make_handler = make_handler  # type: ignore[method-assign]
