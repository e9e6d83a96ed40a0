"""The one JetStream stream every event goes to, and the collectors' shared consumer.

Subjects are `ocsim.events.<type>`; the stream `OCSIM_EVENTS` captures `ocsim.events.>`.
Publishers set `Nats-Msg-Id` per frame, so a frame re-sent after a timeout is stored once
(the duplicate window). Collectors share one durable pull consumer, so several of them
split the stream between them, each message going to one collector at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STREAM = "OCSIM_EVENTS"
SUBJECT_PREFIX = "ocsim.events"
SUBJECTS = (SUBJECT_PREFIX + ".>",)
DURABLE = "ocsim-collector"
DUPLICATE_WINDOW_S = 120.0
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    replicas: int = 1              # 3 on a 3-node cluster
    max_age_s: float = 24 * 3600.0
    max_bytes: int = 8 * 1024**3
    ack_wait_s: float = 30.0       # a collector that died holds its batch this long
    max_ack_pending: int = 4096    # frames in flight per consumer


def servers_of(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` (or `a:4222,b:4222`) -> a list of server URLs."""
    out = []
    for part in url.split(","):
        part = part.strip()
        if part:
            out.append(part if "://" in part else "nats://" + part)
    if not out:
        raise ValueError("no NATS server given")
    return out


async def ensure_stream(js: Any, settings: StreamSettings) -> None:
    """Create the stream if it is missing (idempotent; several collectors may race)."""
    from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.stream_info(STREAM)
        return
    except NotFoundError:
        pass
    config = StreamConfig(
        name=STREAM, subjects=list(SUBJECTS), retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        num_replicas=settings.replicas, max_age=settings.max_age_s, max_bytes=settings.max_bytes,
        discard=DiscardPolicy.OLD, duplicate_window=DUPLICATE_WINDOW_S,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:  # another collector created it first
        await js.stream_info(STREAM)


async def ensure_consumer(js: Any, settings: StreamSettings) -> None:
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.consumer_info(STREAM, DURABLE)
        return
    except NotFoundError:
        pass
    config = ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                            ack_wait=settings.ack_wait_s, max_ack_pending=settings.max_ack_pending,
                            max_waiting=512, filter_subject=SUBJECTS[0])
    try:
        await js.add_consumer(STREAM, config)
    except BadRequestError:
        await js.consumer_info(STREAM, DURABLE)
