"""Batch frames (common/eventbatch.py): what a publisher packs is what a collector decodes,
and a bad event is counted and left out while its frame-mates are kept."""
from __future__ import annotations

import asyncio
import math

import msgpack
import pytest

from common.eventbatch import FRAME_V2, decode_frame_batches, events_of, pack_batch
from common.events import (
    MAX_EVENT_BYTES, EdgeRequest, Event, IdSource, JobProgress, SteerPlay, decode_frame, encode, pack_frame,
    values_of,
)
from common.eventsink import BufferedSink, Frame, MemorySink, frames_of, ref

REF = ("path", "title", "rendition", "segment")


class Keep:
    """A transport that keeps every frame."""

    connected = True

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    async def start(self) -> None:
        return None

    async def send(self, frames: list[Frame]) -> None:
        self.frames.extend(frames)

    async def close(self) -> None:
        return None


def _req(i: int, session: str | None = None) -> EdgeRequest:
    return EdgeRequest("edge-a1", "isp-a", f"/content/t{i % 3}/750/{i}.seg", f"t{i % 3}", 750, i, 200, 1000 + i,
                       5000, "hit" if i % 2 else "peer", 0.001 * i, 0.002 * i, session)


def _frame(etype: str = "job.progress", n: int = 2, **over: object) -> dict[str, object]:
    rows = [[100.0 + i, f"j{i}", "isp-a", "running", 0.5, i, 10, 100 * i] for i in range(n)]
    obj: dict[str, object] = {
        "frame": FRAME_V2, "type": etype, "v": 1, "src": "control", "n": n, "id": {"base": "c.ab", "first": 1},
        "fields": ["job", "isp", "state", "progress", "done_objects", "total_objects", "done_bytes"], "const": {},
        "rows": rows}
    obj.update(over)
    return obj


def _decode(obj: object) -> tuple[list[Event], dict[str, int]]:
    got = decode_frame_batches(msgpack.packb(obj, use_bin_type=True))
    return [e for b in got.batches for e in events_of(b)], got.rejected


async def test_a_recorder_with_constants_and_a_group_round_trips() -> None:
    t = Keep()
    sink = BufferedSink("edge-a1", t, flush_interval=0.01, id_prefix="edge-a1.x")
    await sink.start()
    record = sink.recorder(EdgeRequest, {"edge": "edge-a1", "isp": "isp-a"}, groups=(REF,))
    want = [_req(i, "p-1" if i % 3 else None) for i in range(50)]
    for i, p in enumerate(want):
        v = values_of(p)
        record((1000.0 + i, ref(v[2:6]), *v[6:]))
    sink.emit(JobProgress("j", "isp-a", "done", 1.0, 1, 1, 9))
    await sink.close()
    evs = [e for f in t.frames for e in decode_frame(f.data).events]
    reqs = [e for e in evs if e.type == "edge.request"]
    assert [e.payload for e in reqs] == want
    assert [e.ts for e in reqs] == [1000.0 + i for i in range(50)]
    ids = IdSource("edge-a1.x")
    assert sorted(e.id for e in evs) == sorted(ids.next() for _ in range(51))  # the runs are IdSource's ids
    assert {e.src for e in evs} == {"edge-a1"}
    assert sink.stats() == {"emitted": 51, "published": 51, "dropped": 0, "buffered": 0}


def test_memory_sink_recorder_flattens_the_same_rows() -> None:
    sink = MemorySink("edge-a1", clock=lambda: 5.0)
    record = sink.recorder(EdgeRequest, {"edge": "edge-a1", "isp": "isp-a"}, groups=(REF,))
    v = values_of(_req(7, "s"))
    record((9.0, ref(v[2:6]), *v[6:]))
    (ev,) = sink.events
    assert ev.payload == _req(7, "s") and ev.ts == 9.0


def test_listed_ids_and_many_sources() -> None:
    evs = [Event(f"id-{i}", float(i), f"src-{i % 2}", _req(i)) for i in range(10)]
    evs.append(Event("steer-1", 3.0, "control", SteerPlay("p1", "t1", None, ("e1", "e2"), None, True, False)))
    frames = frames_of(evs, IdSource("f"))
    got = [e for f in frames for e in decode_frame(f.data).events]
    assert sorted(got, key=lambda e: e.id) == sorted(evs, key=lambda e: e.id)


def test_a_bad_value_drops_its_event_only() -> None:
    obj = _frame(n=4)
    rows = obj["rows"]
    assert isinstance(rows, list)
    rows[1][5] = "not an int"      # done_objects
    rows[2][4] = True              # progress: a bool is not a number here
    evs, rejected = _decode(obj)
    assert [e.payload.job for e in evs] == ["j0", "j3"]  # type: ignore[attr-defined]
    assert [e.id for e in evs] == ["c.ab-1", "c.ab-4"]
    assert rejected == {"bad_field": 2}


@pytest.mark.parametrize("ts", [math.nan, -1.0, 1e12, "now", None])
def test_a_bad_time_is_malformed(ts: object) -> None:
    obj = _frame(n=3)
    rows = obj["rows"]
    assert isinstance(rows, list)
    rows[2][0] = ts
    evs, rejected = _decode(obj)
    assert len(evs) == 2 and rejected == {"malformed": 1}


def test_bad_ids_choices_ranges_and_sizes() -> None:
    obj = _frame(n=3, id=["a", "", "c" * 200])
    evs, rejected = _decode(obj)
    assert [e.id for e in evs] == ["a"] and rejected == {"malformed": 2}
    # an int past int64, a cache outcome that is not one, a string past the event size limit
    t = Keep()
    frames_rows = [(1.0, "/p", None, None, None, 200, 2 ** 63, None, "hit", 0.0, 0.0, None),
                   (1.0, "/p", None, None, None, 200, 1, None, "warm", 0.0, 0.0, None),
                   (1.0, "/p" + "x" * MAX_EVENT_BYTES, None, None, None, 200, 1, None, "hit", 0.0, 0.0, None),
                   (1.0, "/p", None, None, None, 200, 1, None, "hit", 0.0, 0.0, None)]
    data = pack_batch("edge.request", 1, "e", "e.x", 1, ["path", "title", "rendition", "segment", "status", "bytes",
                      "object_bytes", "cache", "ttfb_s", "duration_s", "session"], {"edge": "e", "isp": "i"},
                      frames_rows)
    got = decode_frame_batches(data)
    assert got.events == 1 and got.rejected == {"bad_field": 2, "oversized": 1}
    del t


@pytest.mark.parametrize(("over", "reason"), [
    ({"type": "edge.nope"}, "unknown_type"),
    ({"v": 9}, "unknown_version"),
    ({"fields": ["job", "isp", "state", "progress", "done_objects", "total_objects"]}, "bad_field"),
    ({"fields": ["job", "isp", "state", "progress", "done_objects", "total_objects", "done_bytes", "extra"]},
     "bad_field"),
    ({"const": {"job": "j"}}, "bad_field"),          # job twice: in fields and const
    ({"rows": [[1.0, "j"]] * 3}, "malformed"),       # rows of the wrong width
    ({"id": {"base": "x", "first": -1}}, "malformed"),
    ({"src": 7}, "malformed"),
])
def test_a_bad_frame_header_rejects_its_events(over: dict[str, object], reason: str) -> None:
    evs, rejected = _decode(_frame(n=3, **over))
    assert evs == [] and rejected == {reason: 3}


def test_garbage_and_version_1_frames() -> None:
    assert decode_frame_batches(b"\xc1").rejected == {"malformed": 1}
    assert decode_frame_batches(msgpack.packb({"frame": 3, "n": 2})).rejected == {"malformed": 2}
    assert decode_frame_batches(b"\x00" * (1024 * 1024)).rejected == {"oversized": 1}
    v1 = [Event(f"v1-{i}", 1.0, "old", _req(i)) for i in range(3)]
    got = decode_frame(pack_frame([encode(e) for e in v1] + [b"junk"]))
    assert got.events == v1 and got.rejected == {"malformed": 1}


def test_constants_are_checked_like_columns() -> None:
    evs, rejected = _decode(_frame(n=2, fields=["job", "state", "progress", "done_objects", "total_objects",
                                                "done_bytes"], const={"isp": 5},
                                   rows=[[1.0, "j", "running", 0.5, 1, 2, 3]] * 2))
    assert evs == [] and rejected == {"bad_field": 2}


def test_an_oversized_take_is_split_into_frames_under_the_limit() -> None:
    async def run() -> list[Frame]:
        t = Keep()
        sink = BufferedSink("edge-a1", t, flush_interval=0.01)
        await sink.start()
        for i in range(3000):
            sink.emit(JobProgress("j" * 1000 + str(i), "isp-a", "running", 0.5, i, 10, i))
        await sink.close()
        return t.frames
    frames = asyncio.run(run())
    assert len(frames) > 1 and all(len(f.data) <= 900 * 1024 for f in frames)
    evs = [e for f in frames for e in decode_frame(f.data).events]
    assert len(evs) == 3000 and len({e.id for e in evs}) == 3000


# -- version 3, the column frame --------------------------------------------------------------

def _v3(n: int = 3, **over: object) -> dict[str, object]:
    """A hand-made column frame of n edge.request events, one encoding of each kind."""
    import struct
    obj: dict[str, object] = {
        "frame": 3, "type": "edge.request", "v": 1, "src": "edge-a1", "n": n, "id": {"base": "e.ab", "first": 1},
        "ts": {"f64": struct.pack(f"<{n}d", *(100.0 + i for i in range(n)))},
        "cols": {"edge": {"same": "edge-a1"}, "isp": {"same": "isp-a"}, "status": [200] * n,
                 "bytes": [10 * i for i in range(n)], "object_bytes": {"like": "bytes"}, "cache": {"same": "hit"},
                 "ttfb_s": {"f64": struct.pack(f"<{n}d", *(0.5 * i for i in range(n)))},
                 "duration_s": {"like": "ttfb_s"}, "session": [None, "s1", None][:n] + [None] * max(0, n - 3)},
        "groups": [[list(REF), [[7, "/content/t1/750/0.seg", "t1", 750, 0], [9, "/p", None, None, None]],
                    [7, 9, 7][:n] + [7] * max(0, n - 3)]]}
    obj.update(over)
    return obj


def test_a_hand_made_column_frame_decodes_to_its_events() -> None:
    evs, rejected = _decode(_v3())
    assert rejected == {}
    assert [e.id for e in evs] == ["e.ab-1", "e.ab-2", "e.ab-3"] and [e.ts for e in evs] == [100.0, 101.0, 102.0]
    assert evs[1].payload == EdgeRequest("edge-a1", "isp-a", "/p", None, None, None, 200, 10, 10, "hit", 0.5, 0.5,
                                         "s1")
    assert evs[2].payload == EdgeRequest("edge-a1", "isp-a", "/content/t1/750/0.seg", "t1", 750, 0, 200, 20, 20,
                                         "hit", 1.0, 1.0, None)


def test_a_reference_to_no_table_entry_drops_its_event_only() -> None:
    obj = _v3(groups=[[list(REF), [[7, "/a", None, None, None]], [7, 8, "x"]]])
    evs, rejected = _decode(obj)
    assert [e.id for e in evs] == ["e.ab-1"] and rejected == {"malformed": 2}


def test_a_bad_value_in_a_column_frame_drops_its_event_only() -> None:
    obj = _v3(cols={**_v3()["cols"], "bytes": [1, "two", 3]})  # type: ignore[dict-item]
    evs, rejected = _decode(obj)
    assert [e.id for e in evs] == ["e.ab-1", "e.ab-3"] and rejected == {"bad_field": 1}


@pytest.mark.parametrize(("over", "reason"), [
    ({"ts": {"f64": b"\x00" * 7}}, "malformed"),                         # not n doubles
    ({"ts": [1.0, 2.0]}, "malformed"),                                   # n = 3 times wanted
    ({"cols": {**_v3()["cols"], "duration_s": {"like": "nope"}}}, "malformed"),  # type: ignore[dict-item]
    ({"cols": {**_v3()["cols"], "duration_s": {"like": "object_bytes"}}}, "malformed"),  # a like of a like
    ({"cols": {**_v3()["cols"], "status": {"zip": b""}}}, "malformed"),  # type: ignore[dict-item]
    ({"groups": [[list(REF), [[7, "/a", None]], [7, 7, 7]]]}, "malformed"),  # a table entry of the wrong width
    ({"groups": [[list(REF), [[7, "/a", None, None, None]] * 2, [7, 7, 7]]]}, "malformed"),  # a key twice
    ({"groups": []}, "bad_field"),                                       # path, title, ... missing
    ({"cols": {**_v3()["cols"], "path": [None] * 3}}, "bad_field"),  # path twice: a column and the group
    ({"type": "edge.nope"}, "unknown_type"),
    ({"v": 9}, "unknown_version"),
    ({"rows": []}, "malformed"),                                         # a key v3 does not have
])
def test_a_bad_column_frame_rejects_its_events(over: dict[str, object], reason: str) -> None:
    evs, rejected = _decode(_v3(**over))
    assert evs == [] and rejected == {reason: 3}


async def test_a_lane_with_constants_and_same_as_round_trips() -> None:
    t = Keep()
    sink = BufferedSink("edge-a1", t, flush_interval=0.01, id_prefix="edge-a1.y")
    await sink.start()
    lane = sink.lane(EdgeRequest, {"edge": "edge-a1", "isp": "isp-a", "status": 200, "cache": "hit"},
                     groups=(REF,), same_as={"object_bytes": "bytes", "duration_s": "ttfb_s"})
    paths = [ref((f"/content/t{i}/750/{i}.seg", f"t{i}", 750, i)) for i in range(3)]
    for i in range(5000):  # two frames: 4096 + 904
        lane.buf.extend((1000.0 + i, paths[i % 3], 100 + i, 0.001 * i, "s" if i % 2 else None))
    await sink.close()
    assert len(t.frames) == 2 and sum(f.count for f in t.frames) == 5000
    evs = [e for f in t.frames for e in decode_frame(f.data).events]
    assert [e.ts for e in evs] == [1000.0 + i for i in range(5000)]
    assert [e.payload for e in evs[:2]] == [
        EdgeRequest("edge-a1", "isp-a", "/content/t0/750/0.seg", "t0", 750, 0, 200, 100, 100, "hit", 0.0, 0.0, None),
        EdgeRequest("edge-a1", "isp-a", "/content/t1/750/1.seg", "t1", 750, 1, 200, 101, 101, "hit", 0.001, 0.001,
                    "s")]
    assert len({e.id for e in evs}) == 5000
    assert max(len(f.data) for f in t.frames) < 4096 * 24  # a path once a frame, times as 8 bytes


def test_a_lane_on_a_memory_sink_hands_each_row_on() -> None:
    sink = MemorySink("edge-a1")
    lane = sink.lane(EdgeRequest, {"edge": "edge-a1", "isp": "isp-a", "status": 200, "cache": "hit"},
                     groups=(REF,), same_as={"object_bytes": "bytes", "duration_s": "ttfb_s"})
    assert len(lane.buf) < lane.limit
    lane.buf.extend((5.0, ref(("/p", None, None, None)), 7, 0.25, None))
    (ev,) = sink.events
    assert ev.ts == 5.0 and ev.payload == EdgeRequest("edge-a1", "isp-a", "/p", None, None, None, 200, 7, 7, "hit",
                                                      0.25, 0.25, None)
