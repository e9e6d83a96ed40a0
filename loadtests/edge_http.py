"""A crowd viewer's HTTP/1.1 connection to one edge: bodies land in a reused buffer.

Rules of this module:

1. Stdlib `socket` only. Under Locust, gevent has patched it, so every call
   here yields to other viewers instead of blocking; nothing imports gevent.
2. One keep-alive connection per viewer per edge (`EdgeConnections`); a
   connection the edge closed while idle is reopened once, transparently.
3. Nothing per body byte in Python: the body is read with `recv_into` into one
   process-wide scratch buffer (contents thrown away), except the first
   `keep_head` bytes, which are copied out for the header check, and, when the
   caller asks, the whole body (playlists) or a callback per chunk (a segment
   verified in full). The callback runs before the next `recv_into`, and no other
   viewer runs in between (gevent switches only inside socket calls), so sharing
   the scratch buffer is safe.
4. Only `Content-Length` bodies (what the edge sends); anything else, a short
   body or a malformed answer raises `EdgeProtocolError` and closes the connection.
"""
from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["EdgeAnswer", "EdgeBodyCut", "EdgeConnection", "EdgeConnections", "EdgeProtocolError"]

SCRATCH = bytearray(1 << 20)      # rule 3: shared, never read back
_SCRATCH_VIEW = memoryview(SCRATCH)
MAX_HEAD_BYTES = 16 * 1024


class EdgeProtocolError(Exception):
    """The edge's answer is not an HTTP/1.1 response this viewer can read."""


class EdgeBodyCut(EdgeProtocolError):
    """The connection closed before the body's Content-Length (player.abr: TRUNCATED)."""


@dataclass(frozen=True, slots=True)
class EdgeAnswer:
    status: int
    length: int                # Content-Length, all of which was read
    head: bytes                # the first keep_head body bytes
    body: bytes | None         # the whole body, when asked for


Chunk = Callable[[int, int, memoryview], None]  # (offset in body, body length, bytes)


class EdgeConnection:
    """One keep-alive connection to host:port."""

    def __init__(self, host: str, port: int, timeout_s: float, connect_timeout_s: float) -> None:
        self.host, self.port = host, port
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.sock: socket.socket | None = None
        self.hdr = bytearray(MAX_HEAD_BYTES)
        self.requests = 0
        self.connects = 0

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def _open(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout_s)
        self.sock = sock
        self.connects += 1
        return sock

    def get(self, path: str, *, keep_head: int = 0, keep_body: bool = False,
            on_chunk: Chunk | None = None, session: str | None = None) -> EdgeAnswer:
        # `session`: the play id, sent as X-Ocsim-Session so the edge's events join to the
        # session (the caller checked it is short and alphanumeric: no header injection)
        extra = f"X-Ocsim-Session: {session}\r\n" if session else ""
        request = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"User-Agent: ocsim-locust-viewer\r\n{extra}\r\n").encode("latin-1")
        reused = self.sock is not None
        try:
            return self._exchange(request, keep_head, keep_body, on_chunk)
        except _IdleClosed:
            self.close()
            if not reused:
                raise EdgeProtocolError("connection closed before any answer") from None
        except BaseException:
            self.close()
            raise
        try:  # rule 2: the edge closed our idle connection; once more on a new one
            return self._exchange(request, keep_head, keep_body, on_chunk)
        except _IdleClosed:
            self.close()
            raise EdgeProtocolError("connection closed before any answer") from None
        except BaseException:
            self.close()
            raise

    def _exchange(self, request: bytes, keep_head: int, keep_body: bool, on_chunk: Chunk | None) -> EdgeAnswer:
        sock = self.sock or self._open()
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            raise _IdleClosed() from None
        self.requests += 1
        hdr, view = self.hdr, memoryview(self.hdr)
        got = 0
        end = -1
        while end < 0:
            if got == len(hdr):
                raise EdgeProtocolError(f"response head over {len(hdr)} bytes")
            try:
                n = sock.recv_into(view[got:])
            except ConnectionResetError:
                n = 0
            if n == 0:
                if got == 0:
                    raise _IdleClosed()
                raise EdgeProtocolError("connection closed inside the response head")
            got += n
            end = hdr.find(b"\r\n\r\n", 0, got)
        status, length, close = _parse_head(bytes(hdr[:end]))
        extra = view[end + 4:got]
        if len(extra) > length:
            raise EdgeProtocolError("more bytes than Content-Length")
        head = bytearray()
        body = bytearray() if keep_body else None
        pos = 0

        def take(chunk: memoryview) -> None:
            nonlocal pos
            if len(head) < keep_head:
                head.extend(chunk[:keep_head - len(head)])
            if body is not None:
                body.extend(chunk)
            if on_chunk is not None:
                on_chunk(pos, length, chunk)
            pos += len(chunk)

        if extra:
            take(extra)
        while pos < length:
            want = min(length - pos, len(SCRATCH))
            n = sock.recv_into(_SCRATCH_VIEW[:want], want)
            if n == 0:
                raise EdgeBodyCut(f"body cut at {pos} of {length} bytes")
            take(_SCRATCH_VIEW[:n])
        if close:
            self.close()
        return EdgeAnswer(status, length, bytes(head), None if body is None else bytes(body))


class _IdleClosed(Exception):
    """The peer closed the connection before answering (an idle keep-alive timeout)."""


def _parse_head(raw: bytes) -> tuple[int, int, bool]:
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise EdgeProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    length: int | None = None
    close = parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise EdgeProtocolError(f"bad header line {line[:80]!r}")
        key = name.strip().lower()
        if key == b"content-length":
            v = value.strip()
            if not v.isdigit():
                raise EdgeProtocolError(f"bad Content-Length {v[:40]!r}")
            length = int(v)
        elif key == b"transfer-encoding":
            raise EdgeProtocolError("chunked bodies are not read by crowd viewers")
        elif key == b"connection":
            close = value.strip().lower() == b"close"
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            length = 0
        else:
            raise EdgeProtocolError("answer without Content-Length")
    return status, length, close


class EdgeConnections:
    """A viewer's connections, one per edge (host:port), kept across its viewings."""

    def __init__(self, timeout_s: float, connect_timeout_s: float) -> None:
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.by_netloc: dict[str, EdgeConnection] = {}

    def for_url(self, url: str) -> tuple[EdgeConnection, str]:
        """The connection for url's edge and the request target (path?query)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise EdgeProtocolError(f"crowd viewers speak plain http to edges, not {url[:80]!r}")
        conn = self.by_netloc.get(parts.netloc)
        if conn is None:
            conn = self.by_netloc[parts.netloc] = EdgeConnection(
                parts.hostname, parts.port or 80, self.timeout_s, self.connect_timeout_s)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return conn, target

    def close(self) -> None:
        for conn in self.by_netloc.values():
            conn.close()
        self.by_netloc.clear()
