"""The collector's loop: JetStream durable consumer -> decoded batches -> DuckDB -> ack.

    fetch up to N frames -> decode every event (bad ones counted and skipped)
        -> one transaction in the store (ids already stored are skipped) -> ack the frames

A frame is acknowledged only after the batch holding it is committed, so a collector
killed at any moment loses nothing (unacked frames are redelivered after `ack_wait`) and
counts nothing twice (the id is the table's primary key). Several collectors bind the same
durable consumer and JetStream hands each frame to one of them. Decoding and the commit run
in one writer thread, so the event loop stays free for `/healthz` and the read API.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from common.eventbatch import ColumnBatch, decode_frame_batches
from common.events import REJECT_REASONS
from common.logs import event as log_event
from common.metrics import Registry
from pipeline.store import TABLES, EventStore
from pipeline.stream import DURABLE, STREAM, StreamSettings, ensure_consumer, ensure_stream, servers_of

log = logging.getLogger("ocsim.pipeline")

RETRY_S = 0.5


@dataclass(slots=True)
class BatchOutcome:
    events: int
    stored: int
    rejected: dict[str, int]
    by_type: dict[str, int]
    seconds: float


def decode_and_commit(store: EventStore, frames: list[bytes], now: float | None = None) -> BatchOutcome:
    """The writer thread's unit of work (pure apart from the store)."""
    t0 = time.perf_counter()
    batches: list[ColumnBatch] = []
    rejected: dict[str, int] = {}
    for frame in frames:
        res = decode_frame_batches(frame)
        batches.extend(res.batches)
        for reason, n in res.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    by_type: dict[str, int] = {}
    for b in batches:
        by_type[b.etype] = by_type.get(b.etype, 0) + len(b)
    events = sum(by_type.values())
    stored = store.commit_batches(batches, now).stored if events else 0
    return BatchOutcome(events, stored, rejected, by_type, time.perf_counter() - t0)


class Collector:
    def __init__(self, events_url: str, store: EventStore, *, settings: StreamSettings | None = None,
                 batch_frames: int = 64, fetch_timeout: float = 0.25, roll_interval: float = 30.0,
                 registry: Registry | None = None, clock: Callable[[], float] = time.time,
                 name: str = "ocsim-pipeline") -> None:
        self.servers = servers_of(events_url)
        self.store = store
        self.settings = settings or StreamSettings()
        self.batch_frames = batch_frames
        self.fetch_timeout = fetch_timeout
        self.roll_interval = roll_interval
        self.clock = clock
        self.name = name
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pipeline-writer")
        self.nc: Any = None
        self.sub: Any = None
        self.ready = asyncio.Event()  # connected and bound to the consumer
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.events_seen = 0
        self.events_stored = 0
        self.rejected: dict[str, int] = {r: 0 for r in REJECT_REASONS}
        self.stored_by_type: dict[str, int] = {t: 0 for t in TABLES}
        reg = registry or Registry()
        reg.gauge("ocsim_pipeline_events_total", "Events decoded from the stream (redeliveries included)",
                  callback=lambda: float(self.events_seen))
        reg.gauge("ocsim_pipeline_events_by_type_total", "Events decoded from the stream, by type (redeliveries included)", ("type",),
                  callback=lambda: {(t,): float(n) for t, n in self.stored_by_type.items()})
        reg.gauge("ocsim_pipeline_events_stored_total", "Events newly stored (ids not seen before)",
                  callback=lambda: float(self.events_stored))
        reg.gauge("ocsim_pipeline_duplicates_total", "Events skipped because their id was already stored",
                  callback=lambda: float(self.events_seen - self.events_stored))
        reg.gauge("ocsim_pipeline_rejected_total", "Events skipped as bad, by reason", ("reason",),
                  callback=lambda: {(r,): float(n) for r, n in self.rejected.items()})
        reg.gauge("ocsim_pipeline_batches_total", "Batches committed", callback=lambda: float(self.batches))
        reg.gauge("ocsim_pipeline_connected", "1 when bound to the stream",
                  callback=lambda: 1.0 if self.ready.is_set() and self.nc is not None and self.nc.is_connected else 0.0)
        self.commit_seconds = reg.histogram("ocsim_pipeline_commit_seconds", "Decode + commit time per batch")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._main(), name="collector")

    async def _connect(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        while not self._stop.is_set():
            try:
                self.nc = await nats.connect(servers=self.servers, name=self.name, connect_timeout=1,
                                             reconnect_time_wait=RETRY_S, max_reconnect_attempts=-1,
                                             error_cb=on_error, ping_interval=5, max_outstanding_pings=2)
                js = self.nc.jetstream(timeout=10)
                await ensure_stream(js, self.settings)
                await ensure_consumer(js, self.settings)
                self.sub = await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)
                self.ready.set()
                log_event(log, "collector bound", stream=STREAM, durable=DURABLE, servers=self.servers)
                return
            except Exception as exc:
                log_event(log, "collector cannot bind yet", level=logging.WARNING, error=str(exc) or type(exc).__name__)
                if self.nc is not None:
                    try:
                        await self.nc.close()
                    except Exception:
                        pass
                    self.nc = None
                try:
                    await asyncio.wait_for(self._stop.wait(), RETRY_S)
                except asyncio.TimeoutError:
                    pass

    async def _main(self) -> None:
        await self._connect()
        loop = asyncio.get_running_loop()
        last_roll = time.monotonic()
        while not self._stop.is_set():
            if time.monotonic() - last_roll >= self.roll_interval:
                last_roll = time.monotonic()
                await loop.run_in_executor(self.writer, self.store.roll_parquet, self.clock())
            try:
                msgs = await self.sub.fetch(batch=self.batch_frames, timeout=self.fetch_timeout)
            except asyncio.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # disconnected, or the cluster is electing: keep trying
                log.debug("fetch failed: %s", exc)
                await asyncio.sleep(RETRY_S)
                continue
            if not msgs:
                continue
            try:
                outcome = await loop.run_in_executor(self.writer, decode_and_commit, self.store,
                                                     [m.data for m in msgs], None)
            except Exception:
                log.exception("commit failed; the batch will be redelivered")
                for m in msgs:
                    try:
                        await m.nak(delay=1.0)
                    except Exception:
                        pass
                await asyncio.sleep(RETRY_S)
                continue
            for m in msgs:  # only now: the batch is committed
                try:
                    await m.ack()
                except Exception as exc:  # redelivery later is harmless (ids)
                    log.debug("ack failed: %s", exc)
            self._account(outcome)

    def _account(self, outcome: BatchOutcome) -> None:
        self.batches += 1
        self.events_seen += outcome.events
        self.events_stored += outcome.stored
        for t, n in outcome.by_type.items():
            self.stored_by_type[t] = self.stored_by_type.get(t, 0) + n
        for r, n in outcome.rejected.items():
            self.rejected[r] = self.rejected.get(r, 0) + n
            log_event(log, "events rejected", reason=r, count=n)
        self.commit_seconds.observe(outcome.seconds)

    def health(self) -> dict[str, Any]:
        return {"bound": self.ready.is_set(), "events_stored": self.events_stored, "batches": self.batches,
                "rejected": sum(self.rejected.values())}

    async def stop(self) -> None:
        """Finish the batch in hand (commit, ack), roll Parquet, close the store."""
        self._stop.set()
        if self._task is not None and not self.ready.is_set():
            # never bound: no batch can be in hand, and nats.connect may be retrying an
            # address that never answers; nothing to wait for
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        elif self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:
                log.exception("collector loop failed")
        if self.nc is not None:
            try:
                # every batch in hand is committed and acked; nothing left to drain
                await asyncio.wait_for(self.nc.close(), 5.0)
            except Exception:
                pass
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.writer, lambda: self.store.roll_parquet(self.clock(), final=True))
        await loop.run_in_executor(self.writer, self.store.close)
        self.writer.shutdown(wait=True)
