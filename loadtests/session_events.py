"""Locust viewers' `player.session` events, out of a gevent process without asyncio.

A viewer calls `SessionEvents.emit(payload)`: one clock read and one bounded deque
append, never a wait (a full buffer drops and counts). One writer greenlet packs what is
queued (`[type, ts, values]`, msgpack) and writes it to the stdin of a `pipeline.relay`
child, which publishes to NATS with the same sink every service uses. The pipe write is
gevent-cooperative (gevent's subprocess), so a slow relay stalls only the writer greenlet,
never a viewer. The child starts on the first event (a Locust master, which has no
viewers, never starts one) and ends when its stdin closes: `close()` at Locust's quit, or
the pipe closing when this process dies.

Where the events go: `OCSIM_EVENTS` (nats://..., or `off`), else the `events` URL of the
`ocsim up` state file.
"""
from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import time
from typing import Any

import gevent
import gevent.event
import msgpack

from common.events import Payload, values_of

log = logging.getLogger("ocsim.loadtests.events")

CAPACITY = 50_000
BATCH = 2000


class SessionEvents:
    def __init__(self, events_url: str, src: str, *, capacity: int = CAPACITY) -> None:
        self.events_url = events_url
        self.src = src
        self.capacity = capacity
        self.buffer: collections.deque[tuple[str, float, tuple[Any, ...]]] = collections.deque()
        self.emitted = 0
        self.dropped = 0
        self.written = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._wake = gevent.event.Event()
        self._writer: gevent.Greenlet | None = None
        self._broken = False
        self._closing = False

    @property
    def enabled(self) -> bool:
        return True

    def emit(self, payload: Payload) -> None:
        self.emitted += 1
        if len(self.buffer) >= self.capacity or self._broken:
            self.dropped += 1
            return
        self.buffer.append((payload.TYPE, time.time(), values_of(payload)))
        if self._writer is None:
            self._writer = gevent.spawn(self._run)
        self._wake.set()

    def _start_child(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "pipeline.relay", "--events", self.events_url, "--src", self.src]
        return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=None,
                                start_new_session=True)

    def _write_some(self) -> bool:
        """Write up to BATCH queued events; False when the relay is gone."""
        n = min(len(self.buffer), BATCH)
        if not n:
            return True
        popleft = self.buffer.popleft
        data = b"".join(msgpack.packb([t, ts, list(v)], use_bin_type=True) for t, ts, v in
                        (popleft() for _ in range(n)))
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError) as exc:
            log.warning("event relay gone (%s); dropping player.session events from now on", exc)
            self.dropped += n + len(self.buffer)
            self.buffer.clear()
            self._broken = True
            return False
        self.written += n
        return True

    def _run(self) -> None:
        try:
            self.proc = self._start_child()
        except OSError as exc:
            log.warning("cannot start the event relay: %s", exc)
            self._broken = True
            self.dropped += len(self.buffer)
            self.buffer.clear()
            return
        while not self._broken:
            if not self.buffer:
                if self._closing:
                    return
                self._wake.clear()
                self._wake.wait()
            if not self._write_some():
                return

    def close(self, timeout: float = 15.0) -> None:
        """Hand over what is queued, close the relay's stdin and wait for it to flush (bounded)."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            self._writer.join(timeout=timeout)  # the one writer drains the queue, then returns
            if not self._writer.dead:
                self._writer.kill(block=False)
        if self.proc is None:
            return
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def stats(self) -> dict[str, int]:
        return {"emitted": self.emitted, "written": self.written, "dropped": self.dropped,
                "buffered": len(self.buffer)}


def events_url_from(env: dict[str, str], state: dict[str, Any]) -> str:
    """`OCSIM_EVENTS` (or `off`), else the state file's `events`; "" for none."""
    explicit = env.get("OCSIM_EVENTS", "").strip()
    if explicit:
        return "" if explicit.lower() in ("off", "0", "none", "no") else explicit
    url = state.get("events")
    return url if isinstance(url, str) and url.startswith("nats://") else ""


def make_session_events(env: dict[str, str], state: dict[str, Any]) -> SessionEvents | None:
    url = events_url_from(env, state)
    return SessionEvents(url, f"locust-{os.getpid()}") if url else None
