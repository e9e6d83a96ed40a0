"""The event envelope and every payload: round trips, strictness, frames."""
from __future__ import annotations

import dataclasses

import msgpack
import pytest

from common.events import (
    MAX_EVENT_BYTES, PAYLOADS, REJECT_REASONS, BadEvent, ChaosFault, EdgeEvict, EdgeFill, EdgeRequest, Event,
    EventsDropped, IdSource, JobProgress, Payload, PlayerSession, SteerPlay, decode, decode_frame, encode,
    pack_frame, unpack_frame,
)

SAMPLES: list[Payload] = [
    EdgeRequest("edge-a1", "isp-a", "/content/t1/750/3.seg", "t1", 750, 3, 200, 1000, 1000, "hit", 0.001, 0.002, "p1"),
    EdgeRequest("edge-a1", "isp-a", "/healthz-not", None, None, None, 403, 12, None, "none", 0.0, 0.0, None),
    EdgeFill("edge-a1", "isp-a", "/content/t1/750/3.seg", "t1", "origin", 1000, 0.05, "stored"),
    EdgeEvict("edge-a1", "isp-a", "/content/t1/750/3.seg", "t1", 1000, "capacity"),
    SteerPlay("p1", "t1", "isp-a", ("edge-a1", "edge-a2"), False, True, False),
    SteerPlay("p2", "t1", None, (), None, False, False),
    PlayerSession("p1", "start", "t1", "isp-a", "edge-a1", "playing", None, 0, 0.0, 0.0, 0, 0, 0, 0, 0, 0.0, 0.0, None),
    PlayerSession("p1", "end", "t1", "isp-a", "edge-a1", "done", 0.4, 1, 0.5, 1750.0, 2, 0, 0, 9000, 10, 40.0, 12.5,
                  True),
    JobProgress("j1", "isp-a", "running", 0.5, 5, 10, 5000),
    ChaosFault("exp1", "kill", "edge-a1", "start", "SIGKILL"),
    EventsDropped(10, 25, 3),
]


def test_every_payload_type_has_a_sample() -> None:
    assert {p.TYPE for p in SAMPLES} == set(PAYLOADS)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: p.TYPE)
def test_round_trip(payload: Payload) -> None:
    ev = Event("src-1", 1700000000.25, "edge-a1", payload)
    body = encode(ev)
    assert len(body) < MAX_EVENT_BYTES
    back = decode(body)
    assert back == ev
    obj = msgpack.unpackb(body)
    assert (obj["id"], obj["type"], obj["v"], obj["ts"], obj["src"]) == ("src-1", payload.TYPE, 1, 1700000000.25,
                                                                         "edge-a1")


def _raw(**over: object) -> dict[str, object]:
    obj = msgpack.unpackb(encode(Event("i1", 1.5, "s", SAMPLES[0])))
    obj.update(over)
    return dict(obj)


def _reason(obj: object) -> str:
    with pytest.raises(BadEvent) as info:
        decode(msgpack.packb(obj) if not isinstance(obj, bytes) else obj)
    assert info.value.reason in REJECT_REASONS
    return info.value.reason


@pytest.mark.parametrize("obj, reason", [
    (b"\xc1\xc1garbage", "malformed"),
    ([1, 2, 3], "malformed"),
    (_raw(type=7), "malformed"),
    (_raw(type="edge.teleport"), "unknown_type"),
    (_raw(v=2), "unknown_version"),
    (_raw(v="1"), "malformed"),
    (_raw(id=""), "malformed"),
    (_raw(ts="now"), "malformed"),
    (_raw(ts=-1.0), "malformed"),
    (_raw(ts=1e300), "malformed"),
    (_raw(src=None), "malformed"),
    (_raw(extra=1), "bad_field"),
    (_raw(status="200"), "bad_field"),
    (_raw(status=True), "bad_field"),
    (_raw(bytes=1.5), "bad_field"),
    (_raw(cache="maybe"), "bad_field"),
    (_raw(edge=None), "bad_field"),
    (_raw(session=5), "bad_field"),
])
def test_bad_events_are_rejected_with_a_reason(obj: object, reason: str) -> None:
    assert _reason(obj) == reason


def test_missing_field_and_oversized() -> None:
    obj = _raw()
    del obj["ttfb_s"]
    assert _reason(obj) == "bad_field"
    assert _reason(msgpack.packb(_raw(path="x" * (MAX_EVENT_BYTES + 1)))) == "oversized"


def test_ints_are_accepted_for_floats_but_not_bools_for_ints() -> None:
    ev = decode(msgpack.packb(_raw(ttfb_s=0, ts=2)))
    assert isinstance(ev.payload, EdgeRequest) and ev.payload.ttfb_s == 0.0 and ev.ts == 2.0
    bad = msgpack.packb({**msgpack.unpackb(encode(Event("i", 1.0, "s", SAMPLES[4]))), "candidates": ["a", 1]})
    assert _reason(bad) == "bad_field"


def test_payload_values_are_checked_on_construction() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SAMPLES[0], cache="warm")  # type: ignore[type-var]
    with pytest.raises(ValueError):
        PlayerSession("p", "middle", "t", None, None, "x", None, 0, 0.0, 0.0, 0, 0, 0, 0, 0, 0.0, 0.0, None)


def test_frames_carry_good_events_and_count_the_bad_ones() -> None:
    good = [encode(Event(f"i{i}", 1.0, "s", p)) for i, p in enumerate(SAMPLES)]
    bad = [b"\xc1", msgpack.packb(_raw(type="nope")), msgpack.packb(_raw(v=9)), b"x" * (MAX_EVENT_BYTES + 1)]
    res = decode_frame(pack_frame(good + bad))
    assert [e.id for e in res.events] == [f"i{i}" for i in range(len(SAMPLES))]
    assert res.rejected == {"malformed": 1, "unknown_type": 1, "unknown_version": 1, "oversized": 1}
    assert decode_frame(b"\x01\x02").rejected == {"malformed": 1}
    assert decode_frame(msgpack.packb(["not bin"])).rejected == {"malformed": 1}
    with pytest.raises(BadEvent):
        unpack_frame(b"\x90" + b"x" * (1024 * 1024))


def test_ids_are_unique_per_source() -> None:
    ids = IdSource("edge-a1.abc")
    got = {ids.next() for _ in range(1000)}
    assert len(got) == 1000 and all(i.startswith("edge-a1.abc-") for i in got)
