"""`python -m pipeline.relay`: events from a process that cannot run asyncio, to NATS.

Locust runs its viewers on gevent, which patches sockets, `select` and threads; an asyncio
loop (the NATS client, `common.eventsink.BufferedSink`) inside that process would fight
the gevent hub. So a Locust process hands its events to this small child instead: one
msgpack array per event on the child's stdin,

    [type, ts, [field values in the payload's field order]]

and the child publishes them through the same `BufferedSink` and `NatsTransport` every
service uses (bounded buffer, batched frames, drops counted and reported). Each record is
checked by building its payload dataclass; a record that does not build is counted and
skipped. End of stdin (the parent finished, or died) flushes what is buffered, bounded in
time, and exits, so the child never outlives its parent.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import msgpack

from common.events import PAYLOADS
from common.eventsink import BufferedSink
from common.logs import event as log_event
from common.logs import setup_logging
from pipeline.publisher import NatsTransport

log = logging.getLogger("ocsim.relay")

MAX_RECORD_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024


class Relay:
    """Records in (bytes from stdin), events out (the sink). The clock is each record's own."""

    def __init__(self, sink: BufferedSink) -> None:
        self.sink = sink
        self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=4 * MAX_RECORD_BYTES)
        self.relayed = 0
        self.bad = 0
        self._ts = 0.0
        sink.clock = lambda: self._ts  # the event time is when it happened in the parent

    def feed(self, data: bytes) -> None:
        try:
            self.unpacker.feed(data)
        except msgpack.BufferFull:  # a record larger than any payload: the stream is garbage
            self.bad += 1
            self.unpacker = msgpack.Unpacker(raw=False, max_buffer_size=4 * MAX_RECORD_BYTES)
            return
        while True:
            try:
                record = next(self.unpacker)
            except StopIteration:
                return
            except (ValueError, msgpack.UnpackException):
                self.bad += 1
                return
            self.take(record)

    def take(self, record: Any) -> None:
        try:
            etype, ts, values = record
            cls = PAYLOADS[etype]
            payload = cls(*values)
            ts = float(ts)
        except (TypeError, ValueError, KeyError):
            self.bad += 1
            return
        self._ts = ts
        self.sink.emit(payload)
        self.relayed += 1


async def relay(events_url: str, src: str, fd: int, flush_timeout: float) -> Relay:
    sink = BufferedSink(src, NatsTransport(events_url, name=src))
    r = Relay(sink)
    await sink.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_CHUNK)
    pipe = os.fdopen(fd, "rb", buffering=0, closefd=False)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    while True:
        chunk = await reader.read(READ_CHUNK)
        if not chunk:
            break
        r.feed(chunk)
    await sink.close(timeout=flush_timeout)
    log_event(log, "relay done", relayed=r.relayed, bad=r.bad, **sink.stats())
    return r


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.relay",
                                description="Relay msgpack event records on stdin to NATS JetStream.")
    p.add_argument("--events", required=True, metavar="nats://HOST:PORT")
    p.add_argument("--src", required=True, help="the source service id the events carry")
    p.add_argument("--flush-timeout", type=float, default=10.0, help="seconds to flush at end of input")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args(argv)
    setup_logging("relay", args.log_level)
    asyncio.run(relay(args.events, args.src, sys.stdin.fileno(), args.flush_timeout))
    return 0


if __name__ == "__main__":
    sys.exit(main())
