"""The coalescer and the fill lifecycle in process: a fake `Upstream`, a real DiskStore in
tmp_path. No sockets, no sleeps: the fake's bodies advance on events the test sets."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.errors import OcsimError, UpstreamError, UpstreamTimeout
from common.ids import parse_content_key
from edge.fill import Fill, FillCoalescer, FillState
from edge.policy import make_policy
from edge.store import FILL_TABLE, DiskStore, FillPhase, FillStep, ObjectMeta, Reservation
from edge.upstream import UpstreamResponse

pytestmark = pytest.mark.timeout(20)

KEY_PATH = "/content/t1/235/0.seg"
KEY = parse_content_key(KEY_PATH)
ORIGIN = "http://origin.test"
BODY = bytes(range(256)) * 40  # 10240 bytes


@dataclass
class FakeResponse:
    status: int = 200
    body: list[bytes] = field(default_factory=lambda: [BODY[:4096], BODY[4096:]])
    content_length: int | None = len(BODY)
    headers: Mapping[str, str] = field(default_factory=lambda: {"ETag": '"e1"', "Content-Type": "video/mp2t"})
    gates: dict[int, asyncio.Event] = field(default_factory=dict)  # wait before chunk i
    fail_after: BaseException | None = None  # raised once the chunks are out
    released: bool = False
    _pos: int = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        while self._pos < len(self.body):
            gate = self.gates.get(self._pos)
            if gate is not None:
                await gate.wait()
            self._pos += 1
            yield self.body[self._pos - 1]
        if self.fail_after is not None:
            raise self.fail_after

    async def read(self, limit: int) -> bytes:
        return b"".join(self.body)[:limit]

    def release(self) -> None:
        self.released = True


class FakeUpstream:
    """Answers by URL from a script; each answer is a response or an exception to raise."""

    def __init__(self, script: dict[str, FakeResponse | BaseException]) -> None:
        self.script = script
        self.calls: list[tuple[str, bool]] = []
        self.sent: list[dict[str, str]] = []  # the request fields of each call

    async def get(self, url: str, *, only_if_cached: bool, connect_timeout: float,
                  headers: Mapping[str, str] | None = None) -> UpstreamResponse:
        self.calls.append((url, only_if_cached))
        self.sent.append(dict(headers or {}))
        answer = self.script[url]
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[DiskStore]:
    s = DiskStore(tmp_path / "cache", make_policy("lru", 100_000))
    await s.open()
    yield s
    await s.close()


def coalescer(store: DiskStore, upstream: FakeUpstream, peers: tuple[str, ...] = ()) -> FillCoalescer:
    return FillCoalescer(store, upstream, ORIGIN, peers=list(peers), fill_timeout=2.0)


async def read_all(fill: Fill) -> bytes:
    await fill.headers()
    out, pos = bytearray(), 0
    while (view := await fill.read(pos)) is not None:
        out += view
        pos += len(view)
    return bytes(out)


def tmp_files(store: DiskStore) -> list[Path]:
    return list(store.tmp_dir.iterdir())


# -- the coalescer ---------------------------------------------------------------------------

async def test_concurrent_misses_share_one_fetch_and_the_object_is_stored(store: DiskStore) -> None:
    gate = asyncio.Event()
    up = FakeUpstream({ORIGIN + KEY_PATH: FakeResponse(gates={1: gate})})
    c = coalescer(store, up)
    first, joined1 = c.join(KEY)
    reader1 = asyncio.create_task(read_all(first))
    await first.read(0)  # the first chunk is out; the fill is mid-body
    second, joined2 = c.join(KEY)
    assert second is first and (joined1, joined2) == (False, True)
    reader2 = asyncio.create_task(read_all(second))
    gate.set()
    assert await reader1 == BODY and await reader2 == BODY
    await first.finished()
    assert first.state is FillState.DONE and first.stored and first.source == "origin"
    assert up.calls == [(ORIGIN + KEY_PATH, False)]
    assert store.index[KEY].length == len(BODY) and store.index[KEY].meta.etag == '"e1"'
    assert KEY not in c.inflight and tmp_files(store) == []
    up.script[ORIGIN + KEY_PATH] = FakeResponse()
    third, joined3 = c.join(KEY)  # a later miss (e.g. after a purge) starts a new fill
    assert third is not first and not joined3
    await third.finished()


async def test_peers_are_asked_in_order_then_the_origin(store: DiskStore) -> None:
    up = FakeUpstream({"http://p1" + KEY_PATH: UpstreamError("upstream error: ClientConnectorError"),
                       "http://p2" + KEY_PATH: FakeResponse(status=504, body=[b"{}"], content_length=2),
                       ORIGIN + KEY_PATH: FakeResponse()})
    c = coalescer(store, up, peers=("http://p1", "http://p2/"))
    fill, _ = c.join(KEY)
    assert await read_all(fill) == BODY
    assert up.calls == [("http://p1" + KEY_PATH, True), ("http://p2" + KEY_PATH, True), (ORIGIN + KEY_PATH, False)]
    assert fill.source == "origin"
    peer504 = up.script["http://p2" + KEY_PATH]
    assert isinstance(peer504, FakeResponse) and peer504.released


async def test_a_peer_hit_ends_the_search(store: DiskStore) -> None:
    up = FakeUpstream({"http://p1" + KEY_PATH: FakeResponse(status=504, content_length=0, body=[]),
                       "http://p2" + KEY_PATH: FakeResponse(), ORIGIN + KEY_PATH: AssertionError("not asked")})
    c = coalescer(store, up, peers=("http://p1", "http://p2"))
    fill, _ = c.join(KEY)
    assert await read_all(fill) == BODY
    await fill.finished()
    assert fill.source == "peer" and [u for u, _ in up.calls] == ["http://p1" + KEY_PATH, "http://p2" + KEY_PATH]
    assert KEY in store.index


@pytest.mark.parametrize(("answer", "error", "status"), [
    (TimeoutError(), UpstreamTimeout, 504),
    (ConnectionRefusedError(), UpstreamError, 502),
    (UpstreamError("upstream error: ClientConnectorError"), UpstreamError, 502),
    (FakeResponse(status=503), UpstreamError, 502),
    (FakeResponse(status=304), UpstreamError, 502),  # a 304 to an unconditional GET
    (FakeResponse(content_length=None, body=[BODY] * 110), UpstreamError, 502),  # > BUFFER_MAX, no length
])
async def test_failures_before_the_body(store: DiskStore, answer: FakeResponse | BaseException,
                                        error: type[OcsimError], status: int) -> None:
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: answer}))
    fill, _ = c.join(KEY)
    with pytest.raises(error) as info:
        await fill.headers()
    assert info.value.status == status and fill.state is FillState.FAILED
    assert KEY not in store.index and store.used == 0 and KEY not in c.inflight


@pytest.mark.parametrize("status", [204, 302, 206])
async def test_other_answers_are_passed_through_with_their_headers_and_not_stored(store: DiskStore, status: int) -> None:
    resp = FakeResponse(status=status, headers={"Location": "/elsewhere", "Content-Type": "text/plain"})
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: resp}))
    fill, _ = c.join(KEY)
    await fill.finished()
    assert fill.state is FillState.PASSED and fill.passthrough is not None
    assert fill.passthrough.status == status and ("Location", "/elsewhere") in fill.passthrough.headers
    assert KEY not in store.index and store.used == 0


async def test_a_body_without_content_length_is_read_whole_and_stored(store: DiskStore) -> None:
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: FakeResponse(content_length=None)}))
    fill, _ = c.join(KEY)
    await fill.finished()
    assert fill.state is FillState.DONE and fill.stored and fill.body() == BODY
    assert store.index[KEY].length == len(BODY)


@pytest.mark.parametrize(("response", "reason"), [
    (FakeResponse(body=[BODY[:100]]), "cut short"),
    (FakeResponse(body=[BODY[:100]], fail_after=UpstreamError("upstream body was cut short")), "cut short"),
    (FakeResponse(body=[BODY, b"x"]), "more than its Content-Length"),
    (FakeResponse(body=[BODY[:100]], fail_after=TimeoutError()), "timed out"),
])
async def test_failures_mid_body_cache_nothing(store: DiskStore, response: FakeResponse, reason: str) -> None:
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: response}))
    fill, _ = c.join(KEY)
    await fill.headers()  # the headers were fine: readers already streaming
    with pytest.raises(OcsimError) as info:
        await read_all(fill)
    assert reason in info.value.reason and fill.state is FillState.FAILED and not fill.stored
    assert KEY not in store.index and store.used == 0 and tmp_files(store) == []
    assert response.released


async def test_a_4xx_is_passed_through_and_not_cached(store: DiskStore) -> None:
    page = FakeResponse(status=404, body=[b'{"error": "no"}'], content_length=15,
                        headers={"Content-Type": "application/json"})
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: page}))
    fill, _ = c.join(KEY)
    await fill.finished()
    assert fill.state is FillState.PASSED and fill.passthrough is not None
    assert (fill.passthrough.status, fill.passthrough.body) == (404, b'{"error": "no"}')
    assert KEY not in store.index and store.used == 0


async def test_an_object_the_policy_declines_is_served_uncached(tmp_path: Path) -> None:
    small = DiskStore(tmp_path / "small", make_policy("lru", 100))  # BODY does not fit
    await small.open()
    try:
        c = coalescer(small, FakeUpstream({ORIGIN + KEY_PATH: FakeResponse()}))
        fill, _ = c.join(KEY)
        assert await read_all(fill) == BODY
        await fill.finished()
        assert fill.state is FillState.DONE and not fill.stored and KEY not in small.index
    finally:
        await small.close()


async def test_close_fails_fills_in_flight_and_leaves_nothing(store: DiskStore) -> None:
    gate = asyncio.Event()  # never set: the body stalls after its first chunk
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: FakeResponse(gates={1: gate})}))
    fill, _ = c.join(KEY)
    await fill.read(0)
    await c.close()
    with pytest.raises(OcsimError) as info:
        await fill.finished()
    assert info.value.status == 503 and store.used == 0 and tmp_files(store) == []
    late, _ = c.join(KEY)
    assert late.state is FillState.FAILED


# -- the fill lifecycle table (edge.store.FILL_TABLE) ----------------------------------------

def meta(length: int) -> ObjectMeta:
    return ObjectMeta(key=KEY.text, length=length, etag='"e"', content_type="video/mp2t", stored_at=1.0)


async def reserved(store: DiskStore, length: int = 100) -> Reservation:
    res = store.reserve(KEY, length, 0.0)
    assert res is not None and res.phase is FillPhase.RESERVED and store.used == length
    return res


async def writing(store: DiskStore, data: bytes = b"x" * 100) -> Reservation:
    res = await reserved(store, len(data))
    await store.begin(res)
    assert res.phase is FillPhase.WRITING and len(tmp_files(store)) == 1
    await store.write(res, data)
    return res


def assert_gone(store: DiskStore, res: Reservation) -> None:
    assert res.phase is FillPhase.ABORTED
    assert KEY not in store.index and store.used == 0 and tmp_files(store) == [] and res.fd == -1


async def test_reserved_begin_writing_commit_committed(store: DiskStore) -> None:
    res = await writing(store)
    entry = await store.commit(res, meta(100))
    assert entry is not None and res.phase is FillPhase.COMMITTED
    assert store.index[KEY] is entry and store.used == 100 and tmp_files(store) == []
    assert not store.policy.is_pinned(KEY.text)  # the hold is released
    await store.abort(res)  # COMMITTED --abort--> COMMITTED: nothing changes
    assert res.phase is FillPhase.COMMITTED and store.index[KEY] is entry


async def test_a_pin_asked_while_filling_is_kept_at_commit(store: DiskStore) -> None:
    res = await writing(store)
    assert store.set_pinned(KEY, True)
    entry = await store.commit(res, meta(100))
    assert entry is not None and entry.meta.pinned and store.policy.is_pinned(KEY.text)


async def test_reserved_abort_aborted(store: DiskStore) -> None:
    res = await reserved(store)
    await store.abort(res)
    assert_gone(store, res)
    await store.abort(res)  # ABORTED --abort--> ABORTED
    assert_gone(store, res)


async def test_writing_abort_aborted(store: DiskStore) -> None:
    res = await writing(store)
    await store.abort(res)
    assert_gone(store, res)


async def test_abort_during_the_temp_file_creation_waits_for_it(store: DiskStore) -> None:
    res = await reserved(store)
    store.begin(res)  # not awaited: the create is still in the executor
    await store.abort(res)
    assert_gone(store, res)


@pytest.mark.parametrize("begun", [False, True])
async def test_purge_cancels_and_commit_then_aborts(store: DiskStore, begun: bool) -> None:
    res = await writing(store) if begun else await reserved(store)
    assert await store.remove(KEY)
    assert res.phase is FillPhase.CANCELLED and store.used == 0
    if not begun:
        await store.begin(res)  # CANCELLED --begin--> CANCELLED (a create already under way)
        assert res.phase is FillPhase.CANCELLED
    assert await store.commit(res, meta(100)) is None  # CANCELLED --commit--> ABORTED
    assert_gone(store, res)


async def test_purge_then_abort(store: DiskStore) -> None:
    res = await writing(store)
    await store.remove(KEY)
    await store.remove(KEY)  # CANCELLED --purge--> CANCELLED is not reached twice by remove
    assert res.phase is FillPhase.CANCELLED
    await store.abort(res)
    assert_gone(store, res)


async def test_a_failed_commit_aborts(store: DiskStore) -> None:
    res = await writing(store, b"x" * 60)  # reserved 60, but the meta says 100: short file
    assert await store.commit(res, meta(100)) is None
    assert_gone(store, res)


async def test_commit_before_begin_is_a_bug(store: DiskStore) -> None:
    res = await reserved(store)
    with pytest.raises(AssertionError):
        await store.commit(res, meta(100))
    await store.abort(res)


async def test_the_context_exit_aborts_unless_committed(store: DiskStore) -> None:
    res = await reserved(store)
    with pytest.raises(RuntimeError):
        async with res:
            await store.begin(res)
            raise RuntimeError("the fill went wrong")
    assert_gone(store, res)
    res2 = await writing(store)
    async with res2:
        assert await store.commit(res2, meta(100)) is not None
    assert res2.phase is FillPhase.COMMITTED and KEY in store.index


@pytest.mark.parametrize(("phase", "step"), [(p, s) for p in FillPhase for s in FillStep])
def test_the_table_is_total_for_what_it_lists_and_refuses_the_rest(phase: FillPhase, step: FillStep) -> None:
    res = Reservation(store=None, key=KEY, length=1, phase=phase)  # type: ignore[arg-type]
    expected = FILL_TABLE.get((phase, step))
    if expected is None:
        with pytest.raises(AssertionError):
            res.step(step)
        assert res.phase is phase
    else:
        assert res.step(step) is expected and res.phase is expected


def test_every_table_row_is_exercised_above() -> None:
    """The rows the tests above drive through the store (kept in step with FILL_TABLE)."""
    driven = {
        (FillPhase.RESERVED, FillStep.BEGIN), (FillPhase.RESERVED, FillStep.ABORT),
        (FillPhase.RESERVED, FillStep.PURGE), (FillPhase.WRITING, FillStep.COMMIT),
        (FillPhase.WRITING, FillStep.ABORT), (FillPhase.WRITING, FillStep.PURGE),
        (FillPhase.CANCELLED, FillStep.BEGIN), (FillPhase.CANCELLED, FillStep.ABORT),
        (FillPhase.CANCELLED, FillStep.PURGE), (FillPhase.COMMITTED, FillStep.ABORT),
        (FillPhase.ABORTED, FillStep.ABORT),
    }
    assert driven == set(FILL_TABLE)


# -- integrity: the checksum a fill records, checked on the RAM-tier load and by the scrubber ----

def _flip_a_byte(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))  # same length: the size check alone cannot see it


async def test_a_fill_records_the_checksum_of_what_it_stored(store: DiskStore) -> None:
    import hashlib

    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: FakeResponse()}))
    fill, _ = c.join(KEY)
    await fill.finished()
    entry = store.index[KEY]
    assert entry.meta.digest == hashlib.blake2b(BODY, digest_size=16).hexdigest()
    reopened = DiskStore(store.root, make_policy("lru", 100_000))
    await reopened.open()  # the checksum is in the sidecar
    assert reopened.index[KEY].meta.digest == entry.meta.digest
    await reopened.close()


async def test_a_byte_flipped_on_disk_is_never_loaded_purged_counted_and_refetched(store: DiskStore) -> None:
    up = FakeUpstream({ORIGIN + KEY_PATH: FakeResponse()})
    c = coalescer(store, up)
    fill, _ = c.join(KEY)
    await fill.finished()
    entry = store.index[KEY]
    assert await store.read_all(entry) == BODY  # intact: loads
    _flip_a_byte(entry.path, 1234)
    assert await store.read_all(entry) is None  # the RAM tier's load checks it
    assert KEY not in store.index and store.corrupt == 1 and not entry.path.exists() and store.used == 0
    up.script[ORIGIN + KEY_PATH] = FakeResponse()
    again, joined = c.join(KEY)  # the next miss fetches it again
    assert not joined and await read_all(again) == BODY
    await again.finished()
    assert await store.read_all(store.index[KEY]) == BODY and len(up.calls) == 2


async def test_the_scrubber_finds_a_cold_corrupt_object_and_keeps_the_good_ones(store: DiskStore) -> None:
    other_path = "/content/t1/235/1.seg"
    other = parse_content_key(other_path)
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: FakeResponse(), ORIGIN + other_path: FakeResponse()}))
    for k in (KEY, other):
        fill, _ = c.join(k)
        await fill.finished()
    _flip_a_byte(store.index[other].path, 0)
    assert await store.scrub(1) > 0  # bounded: one object per call at this budget
    assert store.scrubbed == 1
    await store.scrub(1 << 30)
    assert other not in store.index and KEY in store.index and store.corrupt == 1
    assert await store.verify(store.index[KEY])


async def test_a_restart_reverifies_data_changed_after_its_sidecar(store: DiskStore) -> None:
    import os

    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: FakeResponse()}))
    fill, _ = c.join(KEY)
    await fill.finished()
    data = store.index[KEY].path
    _flip_a_byte(data, 7)
    sidecar = data.with_name(data.name + ".meta")
    st = sidecar.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # written after its sidecar
    reopened = DiskStore(store.root, make_policy("lru", 100_000))
    await reopened.open()
    assert KEY not in reopened.index and not data.exists()
    await reopened.close()


async def test_a_peer_copy_that_fails_its_senders_checksum_is_refused(store: DiskStore) -> None:
    """A peer sends the checksum it kept since its own fill (X-Ocsim-Fill-Digest): bytes its
    disk changed under it do not match, and the copy is neither stored nor finished, so a
    corrupt object does not spread from edge to edge."""
    from edge.store import FILL_DIGEST_HEADER, _digest_of

    good = FakeResponse(headers={"ETag": '"e1"', "Content-Type": "video/mp2t", FILL_DIGEST_HEADER: _digest_of(BODY)})
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: good}))
    fill, _ = c.join(KEY)
    assert await read_all(fill) == BODY and not fill.bad_body
    await fill.finished()
    assert KEY in store.index
    await store.remove(KEY)

    flipped = BODY[:100] + bytes([BODY[100] ^ 0xFF]) + BODY[101:]
    bad = FakeResponse(body=[flipped[:4096], flipped[4096:]],
                       headers={"ETag": '"e1"', "Content-Type": "video/mp2t", FILL_DIGEST_HEADER: _digest_of(BODY)})
    c = coalescer(store, FakeUpstream({ORIGIN + KEY_PATH: bad}))
    fill, _ = c.join(KEY)
    with pytest.raises(OcsimError) as info:
        await fill.finished()
    assert "checksum" in info.value.reason and fill.bad_body and fill.state is FillState.FAILED
    assert KEY not in store.index and tmp_files(store) == []


def test_the_scrub_pacer_reads_one_pass_per_interval() -> None:
    """A pass runs to its end at the rate; the next starts only `interval` after the last began."""
    from edge.server import ScrubPacer
    p = ScrubPacer(600.0)
    assert p.may_read(False, 1000.0)  # the first pass starts at once
    assert p.may_read(True, 1001.0)  # and runs to its end
    assert not p.may_read(False, 1030.0)  # done after 30 s: nothing read until 600 s after its start
    assert not p.may_read(False, 1599.0)
    assert p.may_read(False, 1600.0)  # the next pass
    assert not p.may_read(False, 1601.0)  # it was over at once (a small cache): wait again
    back_to_back = ScrubPacer(0.0)
    assert back_to_back.may_read(False, 5.0) and back_to_back.may_read(False, 5.0)
