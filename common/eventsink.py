"""Where a service's events go: the `EventSink` interface and its three implementations.

    sink.emit(payload)      # never blocks, never raises, never awaited by the caller

- `NullSink`: no `--events` given; `emit` does nothing, the service runs as it always did.
- `MemorySink`: keeps the events (tests).
- `BufferedSink`: a bounded in-process buffer per event type, drained by one background task
  that packs each type's events into column frames (`common.eventbatch.pack_columns`: one
  msgpack call per frame, the ids a run) and hands the frames to a `FrameTransport`.
  When a buffer is full an event is dropped and counted (`ocsim_events_dropped_total`); every few seconds a source that dropped anything emits an
  `events.dropped` event. A frame the transport could not send is retried with the same
  message id, so JetStream's duplicate window makes a retry harmless; while it waits, the
  buffer fills and drops, rather than the hot path slowing down.

Rules of this module:
1. The hot path's cost is `emit`: one clock read and one list extend. `emit_fields(cls,
   values)` skips even building the payload dataclass (values in field order, trusted);
   `recorder(cls)` gives a per-type `record((ts, *values))` that skips the lookups too (the
   edge's request path), and `lane(cls)` the buffer itself, to extend inline (the edge's
   RAM hits). Buffers are flat lists; ids, encoding and framing happen in the background
   task: columns sliced out of the list, one msgpack call per frame.
2. The transport is a small interface (`FrameTransport.send`); tests put a plain object
   behind it. The NATS transport (`pipeline.publisher.NatsTransport`) lives at the rim.
3. One thread: a sink is used from its event loop's thread only (an event in a flat buffer
   is several items, and the take slices the buffer).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from common.eventbatch import f64_column, pack_columns, plain_column, ref_group
from common.events import (
    MAX_FRAME_BYTES, MAX_FRAME_EVENTS, SPECS, Event, EventsDropped, IdSource, Kind, Payload, subject_of, values_of,
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

    def lane(self, cls: type[Payload], const: dict[str, Any] | None = None,
             groups: tuple[tuple[str, ...], ...] = (), same_as: dict[str, str] | None = None) -> Lane:
        """The hottest path's emit for one type (see `Lane`): rows as `recorder` takes them,
        appended inline. Here each row is handed on at once; BufferedSink gives its buffer."""
        shape = Shape.of(cls, const, groups, same_as)
        return Lane(shape, _Forward(self, shape), 1, lambda: None)

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


_REF_KEYS = itertools.count()


def ref(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """A group's values as a row holds them: `(key, *values)`, the key new for each call, so
    a caller that keeps the tuple (the edge: one per path) gets its values sent once a frame."""
    return (next(_REF_KEYS), *values)


_PLAIN: dict[type[Payload], Shape] = {}


def _plain_shape(cls: type[Payload]) -> Shape:
    shape = _PLAIN.get(cls)
    if shape is None:
        shape = _PLAIN[cls] = Shape.of(cls)
    return shape


Row = tuple[Any, ...]  # an event as a recorder takes it: (ts, *values of its shape's fields)


@dataclass(frozen=True, slots=True)
class Shape:
    """What the rows of one buffer hold: a payload class, the fields each row has after its
    time (SPECS order; a tuple of names is a group, held in the row as one keyed tuple,
    `ref(values)`), the
    fields given once for all (a recorder's constants), and fields that repeat another
    field's value (`same_as`: e.g. a RAM hit's duration is its time to first byte)."""

    cls: type[Payload]
    fields: tuple[str | tuple[str, ...], ...]
    const: tuple[tuple[str, Any], ...] = ()
    same_as: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def of(cls: type[Payload], const: dict[str, Any] | None = None,
           groups: tuple[tuple[str, ...], ...] = (), same_as: dict[str, str] | None = None) -> Shape:
        const = const or {}
        same_as = same_as or {}
        names = [sp.name for sp in SPECS[cls.TYPE]]
        grouped = [f for g in groups for f in g]
        taken = [*const, *grouped, *same_as]
        unknown = (set(taken) | set(same_as.values())) - set(names)
        sources = set(same_as.values())
        if (unknown or len(set(taken)) != len(taken) or sources & set(taken)):
            raise ValueError(f"{cls.TYPE}: bad constants, groups or same_as {sorted(unknown) or groups}")
        fields: list[str | tuple[str, ...]] = []
        for name in names:
            group = next((g for g in groups if g[0] == name), None)
            if group is not None:
                fields.append(group)
            elif name not in taken:
                fields.append(name)
        return Shape(cls, tuple(fields), tuple(const.items()), tuple(same_as.items()))

    @property
    def width(self) -> int:
        """Items per event in a flat buffer: the time, then one per entry of `fields`."""
        return 1 + len(self.fields)

    def flatten(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A row's values in SPECS order (slow: MemorySink and tests)."""
        given = dict(self.const)
        for entry, value in zip(self.fields, row[1:]):
            if isinstance(entry, tuple):
                given.update(zip(entry, value[1:]))  # (key, *values): `ref`
            else:
                given[entry] = value
        for name, source in self.same_as:
            given[name] = given[source]
        return tuple(given[sp.name] for sp in SPECS[self.cls.TYPE])


@dataclass(slots=True)
class Lane:
    """A hot path's own buffer, to append to inline (no call):

        if len(lane.buf) < lane.limit: lane.buf.extend((ts, *values))  else: lane.drop()

    `buf` is flat (`Shape.width` items an event), so an event adds no object that lives on
    and the take slices columns out of it at C speed."""

    shape: Shape
    buf: Any       # list, or a forwarder with extend() and len() 0 (sinks that keep no buffer)
    limit: int
    drop: Callable[[], None]


class _Forward:
    """A Lane's buffer for sinks without one: every extend is one event, handed on at once."""

    __slots__ = ("sink", "shape")

    def __init__(self, sink: EventSink, shape: Shape) -> None:
        self.sink, self.shape = sink, shape

    def __len__(self) -> int:
        return 0

    def extend(self, row: tuple[Any, ...]) -> None:
        self.sink.emit_at(self.shape.cls, row[0], self.shape.flatten(row))


def _frames(shape: Shape, flat: list[Any], ids: IdSource | list[str], src: str, frame_ids: IdSource,
            prefix: str) -> list[Frame]:
    """Flat rows of one shape -> column frames (`common.eventbatch.pack_columns`), at most
    MAX_FRAME_EVENTS each; ids a run taken from an IdSource in order, or listed. A frame
    over MAX_FRAME_BYTES is split in two and packed again (rare: long strings)."""
    cls = shape.cls
    w = shape.width
    kinds = {sp.name: sp.kind for sp in SPECS[cls.TYPE]}
    subject = subject_of(cls.TYPE, prefix)
    frames: list[Frame] = []
    total = len(flat) // w
    todo = [(i, min(i + MAX_FRAME_EVENTS, total)) for i in range(0, total, MAX_FRAME_EVENTS)]
    while todo:
        lo, hi = todo.pop(0)
        n = hi - lo
        chunk = flat[lo * w:hi * w]
        cols: dict[str, Any] = {name: {"same": value} for name, value in shape.const}
        groups: list[list[Any]] = []
        for k, entry in enumerate(shape.fields, 1):
            values = chunk[k::w]
            if isinstance(entry, tuple):
                table, refs = ref_group(values)
                groups.append([list(entry), table, refs])
            elif kinds[entry] is Kind.FLOAT:
                cols[entry] = f64_column(values)
            else:
                cols[entry] = plain_column(values)
        for name, source in shape.same_as:
            cols[name] = {"like": source}
        if isinstance(ids, IdSource):
            id_spec: Any = {"base": ids.prefix, "first": ids.upcoming}
        else:
            id_spec = ids[lo:hi]
        data = pack_columns(cls.TYPE, cls.VERSION, src, n, id_spec, f64_column(chunk[0::w]), cols, groups)
        if len(data) > MAX_FRAME_BYTES and n > 1:
            todo[:0] = [(lo, lo + n // 2), (lo + n // 2, hi)]
            continue
        if isinstance(ids, IdSource):
            ids.skip(n)
        frames.append(Frame(subject, frame_ids.next(), data, n))
    return frames


def frames_of(events: list[Event], frame_ids: IdSource, prefix: str = "ocsim.events") -> list[Frame]:
    """Events (any ids, any sources) -> column frames with their ids listed, by type and source (pure)."""
    groups: dict[tuple[type[Payload], str], list[Event]] = {}
    for ev in events:
        groups.setdefault((type(ev.payload), ev.src), []).append(ev)
    frames: list[Frame] = []
    for (cls, src), evs in groups.items():
        flat: list[Any] = []
        for e in evs:
            flat.append(e.ts)
            flat.extend(values_of(e.payload))
        frames.extend(_frames(_plain_shape(cls), flat, [e.id for e in evs], src, frame_ids, prefix))
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
        # one flat list per shape (Shape.width items an event): appending adds no object that
        # lives on, and a take slices whole columns out of it
        self._buffers: dict[Shape, list[Any]] = {}
        self._limits: dict[Shape, int] = {}
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
        return sum(len(b) // shape.width for shape, b in self._buffers.items())

    def _buffer(self, shape: Shape) -> list[Any]:
        buf = self._buffers.get(shape)
        if buf is None:
            buf = self._buffers[shape] = []
            self._limits[shape] = self.capacity * shape.width
        return buf

    def emit(self, payload: Payload) -> None:
        self.emit_fields(type(payload), values_of(payload))

    def emit_fields(self, cls: type[Payload], values: tuple[Any, ...]) -> None:
        shape = _plain_shape(cls)
        buf = self._buffer(shape)
        if len(buf) >= self._limits[shape]:
            self._drop()
            return
        buf.append(self.clock())
        buf.extend(values)

    def recorder(self, cls: type[Payload], const: dict[str, Any] | None = None,
                 groups: tuple[tuple[str, ...], ...] = ()) -> Recorder:
        """The hot path's emit for one type: `record((ts, *values))` is a length check and one
        list extend. `const` fields (e.g. the edge's id and ISP) are given here once and left
        out of every row; the row holds the time (the caller's own clock read) and the other
        fields in SPECS order, trusted, each of `groups` as one `ref(values)` tuple (one the
        caller keeps, so building the row copies nothing, and a frame sends it once)."""
        lane = self.lane(cls, const, groups)
        buf, limit, extend = lane.buf, lane.limit, lane.buf.extend

        def record(row: tuple[Any, ...]) -> None:
            if len(buf) >= limit:
                self._drop()
                return
            extend(row)
        return record

    def lane(self, cls: type[Payload], const: dict[str, Any] | None = None,
             groups: tuple[tuple[str, ...], ...] = (), same_as: dict[str, str] | None = None) -> Lane:
        shape = Shape.of(cls, const, groups, same_as)
        return Lane(shape, self._buffer(shape), self._limits[shape], self._drop)

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
            self._buffer(_plain_shape(EventsDropped)).extend((self.clock(), n, self.dropped, self._in_buffers()))
            log_event(log, "events dropped", level=logging.WARNING, dropped=n, total=self.dropped)

    async def _report_drops(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.drop_report_interval)
            self.report_drops_now()

    def _take(self) -> None:
        frames: list[Frame] = []
        for shape, buf in list(self._buffers.items()):
            n = min(len(buf) // shape.width, self.batch_events)
            if n:
                end = n * shape.width
                flat = buf[:end]
                del buf[:end]
                self.taken += n
                frames.extend(_frames(shape, flat, self.ids, self.src, self.frame_ids, self.subject_prefix))
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
