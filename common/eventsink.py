"""Where a service's events go: the `EventSink` interface and its three implementations.

    sink.emit(payload)      # never blocks, never raises, never awaited by the caller

- `NullSink`: no `--events` given; `emit` does nothing, the service runs as it always did.
- `MemorySink`: keeps the events (tests).
- `BufferedSink`: a bounded in-process buffer per event type, drained by one background task
  that packs each type's events into batch frames (`common.eventbatch.pack_batch`: one
  msgpack call per frame, columns, the ids a run) and hands the frames to a `FrameTransport`.
  When a buffer is full an event is dropped and counted (`ocsim_events_dropped_total`); every few seconds a source that dropped anything emits an
  `events.dropped` event. A frame the transport could not send is retried with the same
  message id, so JetStream's duplicate window makes a retry harmless; while it waits, the
  buffer fills and drops, rather than the hot path slowing down.

Rules of this module:
1. The hot path's cost is `emit`: one clock read and one deque append. `emit_fields(cls,
   values)` skips even building the payload dataclass (values in field order, trusted);
   `recorder(cls)` gives a per-type `record(ts, values)` that skips the lookups too (the
   edge's request path). Ids, encoding and framing happen in the background task, one
   msgpack call per frame.
2. The transport is a small interface (`FrameTransport.send`); tests put a plain object
   behind it. The NATS transport (`pipeline.publisher.NatsTransport`) lives at the rim.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.eventbatch import pack_batch, pack_batch_ids
from common.events import (
    MAX_FRAME_BYTES, MAX_FRAME_EVENTS, SPECS, Event, EventsDropped, IdSource, Payload, subject_of, values_of,
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


Recorder = Callable[[tuple[Any, ...]], None]


class EventSink:
    """The interface services hold. `emit` must be cheap and must never raise."""

    src: str = ""

    def emit(self, payload: Payload) -> None:
        self.emit_fields(type(payload), values_of(payload))

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        """`emit(cls(*values))` without building the dataclass (values in field order)."""
        raise NotImplementedError

    def recorder(self, cls: type[Payload], const: dict[str, Any] | None = None,
                 groups: tuple[tuple[str, ...], ...] = ()) -> Recorder:
        """A hot path's emit for one type: `record((ts, *values))`, `ts` from the caller's own
        clock read, `values` the fields not in `const`, in SPECS order (trusted), each of
        `groups` (consecutive fields) as one tuple."""
        shape = Shape.of(cls, const, groups)

        def record(row: tuple[Any, ...]) -> None:
            self.emit_at(cls, row[0], shape.flatten(row))
        return record

    def emit_at(self, cls: type[Payload], ts: float, values: tuple[Any, ...]) -> None:
        """`emit_fields` with the event's time given (the default ignores it)."""
        self.emit_fields(cls, values)

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

    def emit_at(self, cls: type[Payload], ts: float, values: tuple[Any, ...]) -> None:
        self.events.append(Event(self.ids.next(), ts, self.src, cls(*values)))

    @property
    def enabled(self) -> bool:
        return True

    def of_type(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]


_PLAIN: dict[type[Payload], Shape] = {}


def _plain_shape(cls: type[Payload]) -> Shape:
    shape = _PLAIN.get(cls)
    if shape is None:
        shape = _PLAIN[cls] = Shape.of(cls)
    return shape


Row = tuple[Any, ...]  # a buffered event: (ts, *values of its buffer's fields)


@dataclass(frozen=True, slots=True)
class Shape:
    """What the rows of one buffer hold: a payload class, the fields each row has after its
    time (SPECS order; a tuple of names is a group, held in the row as one tuple), and the
    fields given once for all (a recorder's constants)."""

    cls: type[Payload]
    fields: tuple[str | tuple[str, ...], ...]
    const: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(cls: type[Payload], const: dict[str, Any] | None = None,
           groups: tuple[tuple[str, ...], ...] = ()) -> Shape:
        const = const or {}
        names = [sp.name for sp in SPECS[cls.TYPE]]
        grouped = [f for g in groups for f in g]
        unknown = (set(const) | set(grouped)) - set(names)
        if unknown or len(set(grouped)) != len(grouped) or set(grouped) & set(const):
            raise ValueError(f"{cls.TYPE}: bad constants or groups {sorted(unknown) or groups}")
        fields: list[str | tuple[str, ...]] = []
        for name in names:
            group = next((g for g in groups if g[0] == name), None)
            if group is not None:
                fields.append(group)
            elif name not in const and name not in grouped:
                fields.append(name)
        return Shape(cls, tuple(fields), tuple(const.items()))

    def flatten(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A row's values in SPECS order (slow: MemorySink and tests)."""
        given = dict(self.const)
        for entry, value in zip(self.fields, row[1:]):
            if isinstance(entry, tuple):
                given.update(zip(entry, value))
            else:
                given[entry] = value
        return tuple(given[sp.name] for sp in SPECS[self.cls.TYPE])


def frames_of(events: list[Event], frame_ids: IdSource, prefix: str = "ocsim.events") -> list[Frame]:
    """Events (any ids, any sources) -> batch frames with their ids listed, by type and source (pure)."""
    groups: dict[tuple[type[Payload], str], list[Event]] = {}
    for ev in events:
        groups.setdefault((type(ev.payload), ev.src), []).append(ev)
    frames: list[Frame] = []
    for (cls, src), evs in groups.items():
        for i in range(0, len(evs), MAX_FRAME_EVENTS):
            chunk = evs[i:i + MAX_FRAME_EVENTS]
            data = pack_batch_ids(cls.TYPE, cls.VERSION, src, [e.id for e in chunk],
                                  [(e.ts, *values_of(e.payload)) for e in chunk])
            frames.append(Frame(subject_of(cls.TYPE, prefix), frame_ids.next(), data, len(chunk)))
    return frames


def frames_of_rows(shape: Shape, rows: list[Row], ids: IdSource, src: str, frame_ids: IdSource,
                   prefix: str = "ocsim.events") -> list[Frame]:
    """Buffered rows of one shape -> batch frames: one `msgpack` call per frame, the ids a run
    taken from `ids` in emit order. A frame over MAX_FRAME_BYTES is split in two and packed again
    (rare: only events with long strings get there)."""
    cls = shape.cls
    frames: list[Frame] = []
    subject = subject_of(cls.TYPE, prefix)
    const = dict(shape.const)
    todo = [rows[i:i + MAX_FRAME_EVENTS] for i in range(0, len(rows), MAX_FRAME_EVENTS)]
    while todo:
        chunk = todo.pop(0)
        data = pack_batch(cls.TYPE, cls.VERSION, src, ids.prefix, ids.upcoming, shape.fields, const, chunk)
        if len(data) > MAX_FRAME_BYTES and len(chunk) > 1:
            half = len(chunk) // 2
            todo[:0] = [chunk[:half], chunk[half:]]
            continue
        ids.skip(len(chunk))
        frames.append(Frame(subject, frame_ids.next(), data, len(chunk)))
    return frames


class BufferedSink(EventSink):
    """A bounded buffer per event type, drained in batches by one background task.

    `capacity` bounds the events waiting of each type (the `events.dropped` report aside);
    `batch_events` is how many of a type one take packs (at most MAX_FRAME_EVENTS a frame)."""

    def __init__(self, src: str, transport: FrameTransport, *, capacity: int = 100_000,
                 batch_events: int = 8192, flush_interval: float = 0.05, drop_report_interval: float = 5.0,
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
        self._buffers: dict[Shape, list[Row]] = {}  # lists: a take is one slice, not a pop per event
        self.pending: list[Frame] = []   # frames taken from the buffers, not yet sent
        self.taken = 0
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
                           callback=lambda: float(self.buffered))
            registry.gauge("ocsim_events_connected", "1 when the event transport is connected",
                           callback=lambda: 1.0 if self.transport.connected else 0.0)

    @property
    def enabled(self) -> bool:
        return True

    @property
    def emitted(self) -> int:
        return self.taken + self._in_buffers() + self.dropped

    @property
    def buffered(self) -> int:
        return self._in_buffers() + sum(f.count for f in self.pending)

    def _in_buffers(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def _buffer(self, shape: Shape) -> list[Row]:
        buf = self._buffers.get(shape)
        if buf is None:
            buf = self._buffers[shape] = []
        return buf

    def emit(self, payload: Payload) -> None:
        self.emit_fields(type(payload), values_of(payload))

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        buf = self._buffer(_plain_shape(cls))
        if len(buf) >= self.capacity:
            self._drop()
            return
        buf.append((self.clock(), *values))

    def recorder(self, cls: type[Payload], const: dict[str, Any] | None = None,
                 groups: tuple[tuple[str, ...], ...] = ()) -> Recorder:
        """The hot path's emit for one type: `record((ts, *values))` is a length check and one
        list append. `const` fields (e.g. the edge's id and ISP) are given here once and left
        out of every row; the row holds the time (the caller's own clock read) and the other
        fields in SPECS order, trusted, each of `groups` as one tuple (a tuple the caller
        keeps, so building the row copies nothing)."""
        buf = self._buffer(Shape.of(cls, const, groups))
        append = buf.append
        capacity = self.capacity

        def record(row: tuple[Any, ...]) -> None:
            if len(buf) >= capacity:
                self._drop()
                return
            append(row)
        return record

    def _drop(self) -> None:
        self.dropped += 1
        self._dropped_unreported += 1

    def stats(self) -> dict[str, int]:
        return {"emitted": self.emitted, "published": self.published, "dropped": self.dropped,
                "buffered": self.buffered}

    async def start(self) -> None:
        await self.transport.start()
        self._task = asyncio.create_task(self._run(), name=f"events-{self.src}")
        self._report_task = asyncio.create_task(self._report_drops(), name=f"events-drops-{self.src}")

    def report_drops_now(self) -> None:
        """Queue an events.dropped event if anything was dropped since the last one."""
        if self._dropped_unreported:
            n, self._dropped_unreported = self._dropped_unreported, 0
            # past the capacity on purpose: the report of drops must not itself be dropped
            self._buffer(_plain_shape(EventsDropped)).append((self.clock(), n, self.dropped, self._in_buffers()))
            log_event(log, "events dropped", level=logging.WARNING, dropped=n, total=self.dropped)

    async def _report_drops(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.drop_report_interval)
            self.report_drops_now()

    def _take(self) -> None:
        frames: list[Frame] = []
        for shape, buf in list(self._buffers.items()):
            n = min(len(buf), self.batch_events)
            if n:
                rows = buf[:n]
                del buf[:n]
                self.taken += n
                frames.extend(frames_of_rows(shape, rows, self.ids, self.src, self.frame_ids, self.subject_prefix))
        self.pending = frames

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
        last_take = 0.0
        while True:
            if not self.pending:
                waiting = self._in_buffers()
                if not waiting and self._closing:
                    return
                # Batch by time: at most one take per flush interval unless a whole batch is
                # waiting, so a busy service sends a few large frames a second, not one per event.
                delay = last_take + self.flush_interval - time.monotonic()
                if waiting < self.batch_events and delay > 0 and not self._closing:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
                last_take = time.monotonic()
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
                left = self.buffered
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
