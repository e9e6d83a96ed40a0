"""The edge's disk store in-process: crash recovery, the byte budget, pins, changed files."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from edge.fill import UpstreamOutcome, upstream_status_outcome
from edge.policy import make_policy
from common.ids import CacheKey
from edge.store import META_SUFFIX, DiskStore, ObjectMeta, key_digest

K = CacheKey.from_text

pytestmark = pytest.mark.timeout(20)


def meta(key: CacheKey, length: int, **kw: object) -> ObjectMeta:
    return ObjectMeta(key=key.text, length=length, etag=f'"{key_digest(key)[:8]}"', content_type="video/mp2t",
                      stored_at=1.0, **kw)  # type: ignore[arg-type]


async def put(store: DiskStore, key: CacheKey, data: bytes, *, force: bool = False) -> bool:
    res = store.reserve(key, len(data), 0.0, force=force)
    if res is None:
        return False
    await store.begin(res)
    await store.write(res, data)
    return await store.commit(res, meta(key, len(data))) is not None


async def new_store(root: Path, capacity: int = 10_000, policy: str = "lru") -> DiskStore:
    store = DiskStore(root, make_policy(policy, capacity))
    await store.open()
    return store


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_commit_then_restart_rebuilds_index(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    assert await put(store, K("/content/a/235/0.seg"), b"x" * 1000)
    assert await put(store, K("/content/a/235/1.seg"), b"y" * 2000)
    await store.close()
    again = await new_store(tmp_path)
    assert set(again.index) == {K("/content/a/235/0.seg"), K("/content/a/235/1.seg")}
    assert again.used == 3000 and again.titles() == ["a"]
    entry = again.index[K("/content/a/235/1.seg")]
    assert entry.path.name == key_digest(entry.key)  # names come from a hash, never the path
    of = await again.acquire(entry)
    assert of is not None and os.pread(of.fd, 10, 0) == b"y" * 10
    again.release(of)
    await again.close()


async def test_restart_deletes_junk_and_partial_state(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    assert await put(store, K("/content/a/235/0.seg"), b"x" * 100)
    assert await put(store, K("/content/a/235/1.seg"), b"y" * 100)
    assert await put(store, K("/content/a/235/2.seg"), b"z" * 100)
    await store.close()
    good, truncated, no_meta = (store.data_path(K(f"/content/a/235/{i}.seg")) for i in range(3))
    truncated.write_bytes(b"y" * 50)  # length disagrees with its sidecar
    no_meta.with_name(no_meta.name + META_SUFFIX).unlink()  # crash between rename and sidecar
    (tmp_path / "tmp" / "leftover.part").write_bytes(b"partial")
    orphan_meta = store.data_path(K("/content/b/235/0.seg"))
    orphan_meta.parent.mkdir(parents=True, exist_ok=True)
    orphan_meta.with_name(orphan_meta.name + META_SUFFIX).write_bytes(meta(K("/content/b/235/0.seg"), 5).pack())
    garbage = good.with_name(good.name + ".meta.1234.tmp")
    garbage.write_bytes(b"\x00garbage")
    again = await new_store(tmp_path)
    assert set(again.index) == {K("/content/a/235/0.seg")}
    assert again.used == 100
    digest = key_digest(K("/content/a/235/0.seg"))
    assert [Path(f).name for f in files(tmp_path)] == sorted([digest, digest + META_SUFFIX])
    await again.close()


async def test_restart_with_smaller_capacity_stays_within_budget(tmp_path: Path) -> None:
    store = await new_store(tmp_path, capacity=10_000)
    for i in range(8):
        assert await put(store, K(f"/content/a/235/{i}.seg"), bytes([i]) * 1000)
    await store.close()
    small = await new_store(tmp_path, capacity=3500)
    assert small.used <= 3500 and len(small.index) == 3
    on_disk = sum(p.stat().st_size for p in (tmp_path / "objects").rglob("*")
                  if p.is_file() and not p.name.endswith(META_SUFFIX))
    assert on_disk == small.used
    await small.close()


async def test_budget_counts_fills_in_flight_and_evicts_files(tmp_path: Path) -> None:
    store = await new_store(tmp_path, capacity=3000)
    assert await put(store, K("/content/a/235/0.seg"), b"a" * 1000)
    assert await put(store, K("/content/a/235/1.seg"), b"b" * 1000)
    res = store.reserve(K("/content/a/235/2.seg"), 1000, 0.0)
    assert res is not None
    # full: a fourth object must evict a cached one, never the fill in flight
    assert await put(store, K("/content/a/235/3.seg"), b"d" * 1000)
    assert store.used <= 3000
    assert K("/content/a/235/2.seg").text in store.policy and K("/content/a/235/0.seg") not in store.index
    await store.flush()
    assert not store.data_path(K("/content/a/235/0.seg")).exists()
    await store.begin(res)
    await store.write(res, b"c" * 1000)
    assert await store.commit(res, meta(K("/content/a/235/2.seg"), 1000)) is not None
    assert store.used <= 3000 and store.was_evicted(K("/content/a/235/0.seg"))
    await store.close()


async def test_too_big_is_not_admitted_and_short_fill_is_not_committed(tmp_path: Path) -> None:
    store = await new_store(tmp_path, capacity=1000)
    assert store.reserve(K("/content/a/235/0.seg"), 5000, 0.0) is None
    res = store.reserve(K("/content/a/235/1.seg"), 500, 0.0)
    assert res is not None
    await store.begin(res)
    await store.write(res, b"x" * 400)  # 100 bytes short
    assert await store.commit(res, meta(K("/content/a/235/1.seg"), 500)) is None
    assert store.used == 0 and not store.index
    assert files(tmp_path) == []
    await store.close()


async def test_purge_during_fill_cancels_commit(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    res = store.reserve(K("/content/a/235/0.seg"), 10, 0.0)
    assert res is not None
    await store.begin(res)
    await store.write(res, b"0123456789")
    assert await store.remove(K("/content/a/235/0.seg"))
    assert await store.commit(res, meta(K("/content/a/235/0.seg"), 10)) is None
    assert store.used == 0 and files(tmp_path) == []
    await store.close()


async def test_pin_is_persisted_and_protects_from_eviction(tmp_path: Path) -> None:
    store = await new_store(tmp_path, capacity=2000)
    assert await put(store, K("/content/a/235/0.seg"), b"a" * 1000)
    assert store.set_pinned(K("/content/a/235/0.seg"), True)
    assert not store.set_pinned(K("/content/a/235/9.seg"), True)
    await store.flush()
    for i in range(1, 5):
        assert await put(store, K(f"/content/a/235/{i}.seg"), b"b" * 1000)
    assert K("/content/a/235/0.seg") in store.index
    await store.close()
    again = await new_store(tmp_path, capacity=2000)
    assert again.policy.is_pinned(K("/content/a/235/0.seg").text)
    assert again.index[K("/content/a/235/0.seg")].meta.pinned
    assert again.set_pinned(K("/content/a/235/0.seg"), False)
    await again.flush()
    await again.close()
    third = await new_store(tmp_path, capacity=2000)
    assert not third.policy.is_pinned(K("/content/a/235/0.seg").text)
    await third.close()


async def test_changed_file_is_detected_at_serve_time(tmp_path: Path) -> None:
    store = await new_store(tmp_path)
    assert await put(store, K("/content/a/235/0.seg"), b"a" * 1000)
    entry = store.index[K("/content/a/235/0.seg")]
    of = await store.acquire(entry)  # the fd is now cached
    assert of is not None
    store.release(of)
    os.truncate(entry.path, 10)
    assert await store.acquire(entry) is None
    assert K("/content/a/235/0.seg") not in store.index and store.used == 0
    assert not entry.path.exists()
    await store.close()


async def test_force_bypasses_admission_filter(tmp_path: Path) -> None:
    store = await new_store(tmp_path, capacity=3000, policy="wtinylfu")
    for i in range(3):
        for _ in range(5):
            store.lookup(K(f"/content/a/235/{i}.seg"), 0.0)
        assert await put(store, K(f"/content/a/235/{i}.seg"), b"a" * 1000)
    assert await put(store, K("/content/b/235/0.seg"), b"b" * 1000, force=True)
    assert K("/content/b/235/0.seg") in store.index and store.used <= 3000
    await store.close()


def test_meta_rejects_garbage() -> None:
    assert ObjectMeta.unpack(b"") is None
    assert ObjectMeta.unpack(b"\x93\x01\x02\x03") is None
    m = meta(K("/content/a/235/0.seg"), 5)
    assert ObjectMeta.unpack(m.pack()) == m


@pytest.mark.parametrize(("status", "outcome"), [
    (200, UpstreamOutcome.FILL), (206, UpstreamOutcome.PASS), (204, UpstreamOutcome.PASS),
    (301, UpstreamOutcome.PASS), (304, UpstreamOutcome.FAIL), (403, UpstreamOutcome.PASS),
    (404, UpstreamOutcome.PASS), (416, UpstreamOutcome.PASS), (500, UpstreamOutcome.FAIL),
    (503, UpstreamOutcome.FAIL), (100, UpstreamOutcome.FAIL),
])
def test_upstream_status_table(status: int, outcome: UpstreamOutcome) -> None:
    assert upstream_status_outcome(status) is outcome


def test_a_304_is_a_revalidation_only_when_the_fill_asked_one() -> None:  # RFC 9111 4.3.3
    assert upstream_status_outcome(304, conditional=True) is UpstreamOutcome.NOT_MODIFIED


async def test_open_errors_keep_the_object_a_missing_file_drops_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import edge.store as store_module
    from common.errors import Unavailable

    store = await new_store(tmp_path)
    key = K("/content/a/235/0.seg")
    assert await put(store, key, b"x" * 100)
    entry = store.index[key]

    def out_of_fds(path: Path) -> tuple[int, int]:
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(store_module, "_open_ro", out_of_fds)
    with pytest.raises(Unavailable):
        await store.acquire(entry)
    assert store.index.get(key) is entry and key.text in store.policy  # our trouble: still cached
    monkeypatch.undo()
    store.data_path(key).unlink()
    assert await store.acquire(entry) is None
    assert key not in store.index and key.text not in store.policy  # gone behind our back: dropped
    await store.close()


async def _checksummed(tmp_path: Path) -> tuple[Any, CacheKey, bytes, Any]:
    """A store holding one committed object with its fill checksum: (store, key, data, entry)."""
    from edge.store import DIGEST_FIELD, _digest_of

    store = await new_store(tmp_path)
    key = K("/content/a/235/0.seg")
    data = bytes(range(256)) * 8
    res = store.reserve(key, len(data), 0.0)
    assert res is not None
    await store.begin(res)
    await store.write(res, data)
    assert await store.commit(res, meta(key, len(data), extra={DIGEST_FIELD: _digest_of(data)})) is not None
    return store, key, data, store.index[key]


async def test_a_file_changed_during_a_send_is_caught_before_its_last_byte(tmp_path: Path) -> None:
    """The window the check at `acquire` leaves: the bytes flip after it, while the hit is
    being sent. `unchanged` (asked before the last byte, edge.hitpath rule 7) says no, and
    the next acquire finds the checksum wrong and purges the object."""
    from edge.faults import _flip

    store, key, data, entry = await _checksummed(tmp_path)
    of = await store.acquire(entry)
    assert of is not None
    vouched = entry.mtime_ns
    assert store.unchanged(of, vouched) and store.changed_in_send == 0
    _flip(str(entry.path), entry.length)  # as the corrupt fault does, behind the store's back
    assert not store.unchanged(of, vouched) and store.changed_in_send == 1
    store.release(of)
    assert await store.acquire(entry) is None  # re-verified: corrupt, purged, never served
    assert key not in store.index and store.corrupt == 1
    await store.close()


async def test_a_change_in_the_tick_of_the_fill_is_still_seen(tmp_path: Path) -> None:
    """The kernel stamps a write with a coarse clock: bytes changed in the tick the sidecar
    was written in leave the data exactly as new as its sidecar. Commit stamps the data 1 ns
    older than its sidecar, so such a write is a change; before, 'newer than the sidecar'
    was the test, and this object was served corrupt (corrupted-object, 1 to 4 sessions a run)."""
    store, key, data, entry = await _checksummed(tmp_path)
    side = entry.path.with_name(entry.path.name + META_SUFFIX).stat().st_mtime_ns
    assert entry.path.stat().st_mtime_ns == side - 1
    with open(entry.path, "r+b") as f:  # flip a byte, then stamp it as the kernel could: the sidecar's tick
        f.seek(100)
        f.write(bytes([data[100] ^ 0xFF]))
    os.utime(entry.path, ns=(side, side))
    assert await store.acquire(entry) is None  # fresh open: changed, re-verified, purged
    assert store.corrupt == 1 and key not in store.index
    await store.close()
