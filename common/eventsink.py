"""Where a service's events go: the `EventSink` interface and its three implementations.

    sink.emit(payload)      # never blocks, never raises, never awaited by the caller

- `NullSink`: no `--events` given; `emit` does nothing, the service runs as it always did.
- `MemorySink`: keeps the events (tests).
- `BufferedSink`: a bounded in-process buffer drained by one background task that encodes
  events, groups them by type into frames (`common.events.pack_frame`) and hands the
  frames to a `FrameTransport`. When the buffer is full an event is dropped and counted
  (`ocsim_events_dropped_total`); every few seconds a source that dropped anything emits an
  `events.dropped` event. A frame the transport could not send is retried with the same
  message id, so JetStream's duplicate window makes a retry harmless; while it waits, the
  buffer fills and drops, rather than the hot path slowing down.

Rules of this module:
1. The hot path's cost is `emit`: one clock read and one deque append. `emit_fields(cls,
   values)` skips even building the payload dataclass (values in field order, trusted);
   ids, encoding and framing happen in the background task.
2. The transport is a small interface (`FrameTransport.send`); tests put a plain object
   behind it. The NATS transport (`pipeline.publisher.NatsTransport`) lives at the rim.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.events import (
    MAX_FRAME_BYTES, MAX_FRAME_EVENTS, Event, EventsDropped, IdSource, Payload, encode, encode_values, pack_frame,
    subject_of, values_of,
)
from common.logs import event as log_event
from common.metrics import Registry

log = logging.getLogger("ocsim.events")


class TransportDown(Exception):
    """The transport cannot take frames now (not connected, timed out, refused)."""


@dataclass(frozen=True, slots=True)
class Frame:
    subject: str
    msg_id: str      # stable across retries: the JetStream duplicate-window key
    data: bytes
    count: int       # events inside


class FrameTransport(Protocol):
    async def start(self) -> None: ...
    async def send(self, frames: list[Frame]) -> None:
        """All frames stored, or TransportDown (then none, some or all may be: retry is safe)."""
    async def close(self) -> None: ...
    @property
    def connected(self) -> bool: ...


class EventSink:
    """The interface services hold. `emit` must be cheap and must never raise."""

    src: str = ""

    def emit(self, payload: Payload) -> None:
        self.emit_fields(type(payload), values_of(payload))

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        """`emit(cls(*values))` without building the dataclass (values in field order)."""
        raise NotImplementedError

    async def start(self) -> None:
        return None

    async def close(self, timeout: float = 5.0) -> None:
        return None

    @property
    def enabled(self) -> bool:
        return False

    def stats(self) -> dict[str, int]:
        return {}


class NullSink(EventSink):
    def emit(self, payload: Payload) -> None:
        return None

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        return None


class MemorySink(EventSink):
    def __init__(self, src: str = "test", clock: Callable[[], float] = time.time) -> None:
        self.src = src
        self.clock = clock
        self.ids = IdSource(src)
        self.events: list[Event] = []

    def emit(self, payload: Payload) -> None:
        self.events.append(Event(self.ids.next(), self.clock(), self.src, payload))

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        self.emit(cls(*values))

    @property
    def enabled(self) -> bool:
        return True

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]


Row = tuple[float, type[Payload], tuple[Any, ...]]  # (ts, payload class, field values): a buffered event


def frames_of(events: list[Event], frame_ids: IdSource, prefix: str = "ocsim.events") -> list[Frame]:
    """Group events by type into frames under the size and count limits (pure)."""
    by_type: dict[str, list[bytes]] = {}
    for ev in events:
        by_type.setdefault(ev.type, []).append(encode(ev))
    return _framed(by_type, frame_ids, prefix)


def frames_of_rows(rows: list[Row], ids: IdSource, src: str, frame_ids: IdSource,
                   prefix: str = "ocsim.events") -> list[Frame]:
    """Buffered rows -> frames; each row gets the next event id here, in emit order."""
    by_type: dict[str, list[bytes]] = {}
    for ts, cls, values in rows:
        etype = cls.TYPE
        body = encode_values(etype, cls.VERSION, ids.next(), ts, src, values)
        got = by_type.get(etype)
        if got is None:
            by_type[etype] = [body]
        else:
            got.append(body)
    return _framed(by_type, frame_ids, prefix)


def _framed(by_type: dict[str, list[bytes]], frame_ids: IdSource, prefix: str) -> list[Frame]:
    frames: list[Frame] = []
    for etype, bodies in by_type.items():
        chunk: list[bytes] = []
        size = 8
        for body in bodies:
            if chunk and (size + len(body) + 8 > MAX_FRAME_BYTES or len(chunk) >= MAX_FRAME_EVENTS):
                frames.append(Frame(subject_of(etype, prefix), frame_ids.next(), pack_frame(chunk), len(chunk)))
                chunk, size = [], 8
            chunk.append(body)
            size += len(body) + 5
        if chunk:
            frames.append(Frame(subject_of(etype, prefix), frame_ids.next(), pack_frame(chunk), len(chunk)))
    return frames


class BufferedSink(EventSink):
    def __init__(self, src: str, transport: FrameTransport, *, capacity: int = 100_000,
                 batch_events: int = 4000, flush_interval: float = 0.05, drop_report_interval: float = 5.0,
                 retry_interval: float = 0.25, clock: Callable[[], float] = time.time,
                 registry: Registry | None = None, id_prefix: str | None = None,
                 subject_prefix: str = "ocsim.events") -> None:
        self.src = src
        self.transport = transport
        self.capacity = capacity
        self.batch_events = batch_events
        self.flush_interval = flush_interval
        self.drop_report_interval = drop_report_interval
        self.retry_interval = retry_interval
        self.clock = clock
        self.subject_prefix = subject_prefix
        prefix = id_prefix or f"{src}.{os.urandom(6).hex()}"
        self.ids = IdSource(prefix)
        self.frame_ids = IdSource(prefix + ".f")
        self.buffer: collections.deque[Row] = collections.deque()
        self.pending: list[Frame] = []   # frames taken from the buffer, not yet sent
        self.emitted = 0
        self.published = 0
        self.dropped = 0
        self._dropped_unreported = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._report_task: asyncio.Task[None] | None = None
        if registry is not None:
            registry.gauge("ocsim_events_emitted_total", "Events offered to the sink",
                           callback=lambda: float(self.emitted))
            registry.gauge("ocsim_events_published_total", "Events the transport stored",
                           callback=lambda: float(self.published))
            registry.gauge("ocsim_events_dropped_total", "Events dropped because the buffer was full",
                           callback=lambda: float(self.dropped))
            registry.gauge("ocsim_events_buffered", "Events waiting to be published",
                           callback=lambda: float(len(self.buffer) + sum(f.count for f in self.pending)))
            registry.gauge("ocsim_events_connected", "1 when the event transport is connected",
                           callback=lambda: 1.0 if self.transport.connected else 0.0)

    @property
    def enabled(self) -> bool:
        return True

    def emit(self, payload: Payload) -> None:
        self.emit_fields(type(payload), values_of(payload))

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        self.emitted += 1
        buffer = self.buffer
        if len(buffer) >= self.capacity:
            self.dropped += 1
            self._dropped_unreported += 1
            return
        buffer.append((self.clock(), cls, values))
        if len(buffer) == self.batch_events:
            self._wake.set()

    def stats(self) -> dict[str, int]:
        return {"emitted": self.emitted, "published": self.published, "dropped": self.dropped,
                "buffered": len(self.buffer) + sum(f.count for f in self.pending)}

    async def start(self) -> None:
        await self.transport.start()
        self._task = asyncio.create_task(self._run(), name=f"events-{self.src}")
        self._report_task = asyncio.create_task(self._report_drops(), name=f"events-drops-{self.src}")

    def report_drops_now(self) -> None:
        """Queue an events.dropped event if anything was dropped since the last one."""
        if self._dropped_unreported:
            n, self._dropped_unreported = self._dropped_unreported, 0
            # past the capacity on purpose: the report of drops must not itself be dropped
            self.buffer.append((self.clock(), EventsDropped, (n, self.dropped, len(self.buffer))))
            log_event(log, "events dropped", level=logging.WARNING, dropped=n, total=self.dropped)

    async def _report_drops(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.drop_report_interval)
            self.report_drops_now()

    def _take(self) -> None:
        n = min(len(self.buffer), self.batch_events)
        if n:
            popleft = self.buffer.popleft
            rows = [popleft() for _ in range(n)]
            self.pending = frames_of_rows(rows, self.ids, self.src, self.frame_ids, self.subject_prefix)

    async def _send_pending(self) -> bool:
        try:
            await self.transport.send(self.pending)
        except TransportDown:
            return False
        except Exception:  # a transport bug must not kill the publisher
            log.exception("event transport failed")
            return False
        self.published += sum(f.count for f in self.pending)
        self.pending = []
        return True

    async def _run(self) -> None:
        while True:
            if not self.pending:
                if not self.buffer:
                    if self._closing:
                        return
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                    except asyncio.TimeoutError:
                        pass
                self._take()
                if not self.pending:
                    continue
            if not await self._send_pending():
                if self._closing and not self.transport.connected:
                    return
                await asyncio.sleep(self.retry_interval)

    async def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered (bounded by `timeout`), then close the transport."""
        self._closing = True
        self.report_drops_now()
        self._wake.set()
        if self._report_task is not None:
            self._report_task.cancel()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except asyncio.TimeoutError:
                self._task.cancel()
                left = len(self.buffer) + sum(f.count for f in self.pending)
                log_event(log, "events unsent at shutdown", level=logging.WARNING, unsent=left)
            except asyncio.CancelledError:
                pass
        await self.transport.close()


def make_sink(events_url: str | None, src: str, registry: Registry | None = None,
              **options: float | int) -> EventSink:
    """`--events nats://...` -> a NATS-backed BufferedSink; nothing -> NullSink."""
    if not events_url:
        return NullSink()
    from pipeline.publisher import NatsTransport  # only services that publish import nats
    return BufferedSink(src, NatsTransport(events_url, name=src), registry=registry, **options)  # type: ignore[arg-type]
