"""The buffered sink behind a plain transport: batching, drops counted, retries with one id."""
from __future__ import annotations

import asyncio

from common.events import EventsDropped, JobProgress, decode_frame
from common.eventsink import BufferedSink, Frame, MemorySink, NullSink, TransportDown, frames_of, make_sink
from common.events import Event, IdSource
from common.metrics import Registry, parse_text


class FakeTransport:
    """Stores frames; `down` makes it refuse; `sent` records every attempt."""

    def __init__(self) -> None:
        self.down = False
        self.stored: dict[str, Frame] = {}  # by msg id, as JetStream's duplicate window does
        self.attempts: list[str] = []
        self.sent = asyncio.Event()

    @property
    def connected(self) -> bool:
        return not self.down

    async def start(self) -> None:
        return None

    async def send(self, frames: list[Frame]) -> None:
        self.attempts.extend(f.msg_id for f in frames)
        if self.down:
            raise TransportDown("down")
        for f in frames:
            self.stored.setdefault(f.msg_id, f)
        self.sent.set()

    async def close(self) -> None:
        return None

    def events(self) -> list[Event]:
        out: list[Event] = []
        for f in self.stored.values():
            out.extend(decode_frame(f.data).events)
        return out


def _job(i: int) -> JobProgress:
    return JobProgress(f"j{i}", "isp-a", "running", 0.5, i, 10, i * 100)


def test_null_sink_does_nothing() -> None:
    sink = NullSink()
    sink.emit(_job(1))
    assert not sink.enabled and sink.stats() == {}
    assert isinstance(make_sink(None, "edge-a1"), NullSink)


def test_memory_sink_stamps_envelopes() -> None:
    sink = MemorySink("control", clock=lambda: 42.0)
    sink.emit(_job(1))
    (ev,) = sink.events
    assert ev.ts == 42.0 and ev.src == "control" and ev.type == "job.progress"


def test_frames_group_by_type_and_respect_limits() -> None:
    ids = IdSource("x")
    evs = [Event(f"e{i}", 1.0, "s", _job(i) if i % 2 else EventsDropped(i, i, 0)) for i in range(10_000)]
    frames = frames_of(evs, ids)
    assert {f.subject for f in frames} == {"ocsim.events.job.progress", "ocsim.events.events.dropped"}
    assert sum(f.count for f in frames) == 10_000
    assert all(f.count <= 4096 for f in frames)
    assert len({f.msg_id for f in frames}) == len(frames)
    got = [e.id for f in frames for e in decode_frame(f.data).events]
    assert sorted(got) == sorted(e.id for e in evs)


async def test_everything_emitted_is_published_in_batches() -> None:
    t = FakeTransport()
    sink = BufferedSink("edge-a1", t, batch_events=100, flush_interval=0.01)
    await sink.start()
    for i in range(1000):
        sink.emit(_job(i))
    await sink.close()
    evs = t.events()
    assert len(evs) == 1000 and len({e.id for e in evs}) == 1000
    assert len(t.stored) >= 10  # batched: at most 100 events per send
    assert sink.stats() == {"emitted": 1000, "published": 1000, "dropped": 0, "buffered": 0}


async def test_transport_down_drops_are_counted_reported_and_publishing_resumes() -> None:
    t = FakeTransport()
    t.down = True
    reg = Registry()
    sink = BufferedSink("edge-a1", t, capacity=50, batch_events=20, flush_interval=0.01, retry_interval=0.01,
                        drop_report_interval=3600, registry=reg)
    await sink.start()
    for i in range(200):
        sink.emit(_job(i))  # never blocks, never raises
    # 20 taken into a pending frame, 50 buffered, the rest dropped
    await asyncio.sleep(0.05)
    assert sink.dropped >= 200 - 50 - 20
    metrics = parse_text(reg.render())
    assert metrics["ocsim_events_dropped_total"] == sink.dropped
    assert metrics["ocsim_events_connected"] == 0
    retried = {m for m in t.attempts}
    assert len(t.attempts) > len(retried)  # the same frame (same msg id) was retried
    sink.report_drops_now()
    t.down = False
    await asyncio.wait_for(t.sent.wait(), 5)
    await sink.close()
    evs = t.events()
    dropped = [e for e in evs if isinstance(e.payload, EventsDropped)]
    assert len(dropped) == 1 and dropped[0].payload.total == sink.dropped  # type: ignore[attr-defined]
    assert len(evs) - 1 == 200 - sink.dropped
    assert sink.published == len(evs)


async def test_close_with_transport_down_does_not_hang() -> None:
    t = FakeTransport()
    t.down = True
    sink = BufferedSink("edge-a1", t, flush_interval=0.01, retry_interval=0.01)
    await sink.start()
    sink.emit(_job(1))
    await asyncio.wait_for(sink.close(timeout=1.0), 3)
