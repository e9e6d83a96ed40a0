"""The NATS JetStream side of a publishing service: frames in, stored frames out.

`NatsTransport` is the `common.eventsink.FrameTransport` a `BufferedSink` drains into. It
connects in the background and keeps trying while NATS is away (a service starts and
serves whether or not NATS is up), publishes each batch of frames with JetStream's async
publish (one round trip for the batch, not one per frame) and raises `TransportDown`
rather than wait when it is not connected, so the sink counts drops instead of stalling.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from common.eventsink import Frame, TransportDown
from common.logs import event as log_event
from pipeline.stream import MSG_ID_HEADER, servers_of

log = logging.getLogger("ocsim.events")

CONNECT_RETRY_S = 0.5
PUBLISH_TIMEOUT_S = 5.0


class NatsTransport:
    def __init__(self, url: str, *, name: str = "ocsim", publish_timeout: float = PUBLISH_TIMEOUT_S) -> None:
        self.servers = servers_of(url)
        self.name = name
        self.publish_timeout = publish_timeout
        self.nc: Any = None
        self.js: Any = None
        self._connect_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        return self.nc is not None and bool(self.nc.is_connected)

    async def start(self) -> None:
        self._connect_task = asyncio.create_task(self._connect_forever(), name="nats-connect")

    async def _connect_forever(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.debug("nats: %s", exc)

        async def on_disconnect() -> None:
            if not self._closed:  # our own close() disconnects too: not worth a warning
                log_event(log, "events transport disconnected", level=logging.WARNING)

        async def on_reconnect() -> None:
            log_event(log, "events transport reconnected")

        while not self._closed:
            try:
                self.nc = await nats.connect(
                    servers=self.servers, name=self.name, connect_timeout=1, reconnect_time_wait=CONNECT_RETRY_S,
                    max_reconnect_attempts=-1, allow_reconnect=True, error_cb=on_error,
                    disconnected_cb=on_disconnect, reconnected_cb=on_reconnect, ping_interval=5,
                    max_outstanding_pings=2,
                )
            except Exception as exc:  # no server yet: keep serving, try again
                log.debug("nats connect failed: %s", exc)
                await asyncio.sleep(CONNECT_RETRY_S)
                continue
            self.js = self.nc.jetstream(publish_async_max_pending=8192)
            log_event(log, "events transport connected", servers=self.servers)
            return

    async def send(self, frames: list[Frame]) -> None:
        if not self.connected or self.js is None:
            raise TransportDown("not connected")
        futures = []
        try:
            for frame in frames:
                futures.append(await self.js.publish_async(frame.subject, frame.data,
                                                           headers={MSG_ID_HEADER: frame.msg_id}))
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.publish_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            for fut in futures:
                fut.cancel()
            raise TransportDown(str(exc) or type(exc).__name__) from None
        for ack in acks:
            if getattr(ack, "stream", None) is None:
                raise TransportDown("no stream took the frame")

    async def close(self) -> None:
        self._closed = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            try:
                await self._connect_task
            except (asyncio.CancelledError, Exception):
                pass
        if self.nc is not None:
            try:
                await asyncio.wait_for(self.nc.close(), 2.0)
            except Exception:
                pass
