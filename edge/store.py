"""The edge's disk store: cached objects on disk, their index in memory, the byte budget.

Layout under the cache directory (names come from sha256(key), never from the path):

    objects/ab/cd/<sha256hex>        the object's bytes
    objects/ab/cd/<sha256hex>.meta   its metadata (msgpack map, see ObjectMeta)
    tmp/                             fills in progress; emptied at start

An object's life: absent -> (a fill) -> cached -> (evict/purge/corrupt: index entry,
open fd and files go) -> absent. A fill's own life is one table, `FILL_TABLE`, over the
`FillPhase` of its `Reservation` (STYLE: state machines as tables):

    (absent)  --reserve-->  RESERVED   policy holds its bytes, pinned so it cannot be a
                                       victim (a forced fill is pinned instead of held)
    RESERVED  --begin---->  WRITING    temp file created; writes append to it
    WRITING   --commit--->  COMMITTED  data renamed into place, then the sidecar; the
                                       hold is released, the pin kept if one was asked
    RESERVED, WRITING  --abort-->  ABORTED    temp file removed, bytes released
    RESERVED, WRITING  --purge-->  CANCELLED  purged mid-fill: bytes already released
    CANCELLED --commit, abort-->   ABORTED    nothing is cached; temp file removed
    WRITING   --commit fails-->    ABORTED    short temp file, rename error
    COMMITTED, ABORTED --abort-->  unchanged  (so abort is always safe)

A `Reservation` is an async context manager whose exit is abort: `async with res:`
around the streaming leaves the bytes cached only if `commit` ran inside it.

Crash safety: a fill writes a temp file and renames it into place only when it has
exactly the announced length; the sidecar is written (temp + rename) after the data.
At start the index is rebuilt from sidecars: a data file without a valid sidecar, a
sidecar without data, a length mismatch, or data changed after its sidecar whose
checksum fails is deleted, and tmp/ is emptied. So a crash
at any moment leaves either the old state or the new one.

Capacity: every byte on disk was first reserved in the eviction policy (`reserve`, at
fill start, with the upstream Content-Length), so `policy.used <= capacity` bounds the
disk use, fills in flight included.

Blocking file work runs in the default executor, one hop per operation. Hits need no
hop at all: the index holds everything a response needs, and an LRU of open read-only
fds (refcounted, so evicting an object never closes an fd a response is sending from)
lets a hit check `fstat(fd).st_size` and send.
"""
from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import os
import secrets
import time
from collections import Counter as TallyCounter
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import msgpack

from common.errors import Unavailable
from common.ids import CacheKey
from edge.policy import EvictionPolicy

log = logging.getLogger("ocsim.edge.store")

META_SUFFIX = ".meta"
META_VERSION = 1
MAX_META_BYTES = 64 * 1024
GHOSTS = 65536  # how many evicted keys we remember, to class a later miss as "evicted"
DIGEST_FIELD = "b2"  # ObjectMeta.extra: blake2b-128 of the body, computed while filling
# A hit carries that checksum, so a peer filling from this edge checks the bytes it got
# against the one kept since the first fill (edge.fill), not only against what it received.
FILL_DIGEST_HEADER = "X-Ocsim-Fill-Digest"


class IoFaultHook(Protocol):
    """What edge/faults.py installs as `DiskStore.io_faults` (the chaos fault API): `check`
    raises the OSError a failing disk would (ENOSPC for "write", EIO for "read")."""

    def check(self, op: str) -> None: ...


def new_digest() -> Any:
    """The running checksum a fill feeds every chunk to (no second read of the body)."""
    return hashlib.blake2b(digest_size=16)


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What the edge knows about a cached object; persisted as the sidecar.

    `headers` are the upstream response's stored fields (`edge.httpcache.stored_headers`:
    names as sent), what RFC 9111 freshness and a hit's headers are made of; a sidecar
    written before they were kept has none, and the fields above stand in. `stored_at` is
    the response time and `request_time` the time the request went out (RFC 9111 4.2.3).
    `key` is the cache key's `text` (the sidecar is a wire format); the index holds the
    typed key."""

    key: str
    length: int
    etag: str
    content_type: str
    cache_control: str = ""
    last_modified: str = ""
    pinned: bool = False
    stored_at: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    request_time: float = 0.0

    @property
    def digest(self) -> str | None:
        """The body's checksum (hex) when the fill recorded one; None for older sidecars."""
        return self.extra.get(DIGEST_FIELD)

    def pack(self) -> bytes:
        d = asdict(self)
        d["v"] = META_VERSION
        return msgpack.packb(d, use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, raw: bytes) -> ObjectMeta | None:
        """The metadata in `raw`, or None when it is not a valid sidecar."""
        try:
            d = msgpack.unpackb(raw, raw=False)
            if not isinstance(d, dict) or d.pop("v", None) != META_VERSION:
                return None
            meta = cls(**d)
        except Exception:  # msgpack and the constructor raise a zoo of types on garbage
            return None
        ok = (isinstance(meta.key, str) and isinstance(meta.length, int) and meta.length >= 0
              and isinstance(meta.etag, str) and isinstance(meta.content_type, str)
              and isinstance(meta.cache_control, str) and isinstance(meta.last_modified, str)
              and isinstance(meta.pinned, bool) and isinstance(meta.stored_at, (int, float))
              and isinstance(meta.extra, dict) and isinstance(meta.headers, dict)
              and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.headers.items())
              and isinstance(meta.request_time, (int, float)))
        return meta if ok else None


@dataclass(slots=True, eq=False)
class Entry:
    """A cached object in the index. Identity matters: a refetch makes a new Entry (a 304
    that freshens it keeps the Entry and replaces its `meta`, `DiskStore.freshen`)."""

    key: CacheKey
    meta: ObjectMeta
    path: Path
    view: Any = None  # the server's hit view of `meta` (edge.server.HitView), built on first use
    mtime_ns: int = 0  # the data file's mtime when last checked: a change means a re-verify

    @property
    def length(self) -> int:
        return self.meta.length


@dataclass(slots=True, eq=False)
class OpenFile:
    """A read-only fd of one Entry, shared by concurrent hits."""

    entry: Entry
    fd: int
    refs: int = 0
    doomed: bool = False  # close when the last user releases it


class FillPhase(enum.Enum):
    RESERVED = "reserved"
    WRITING = "writing"
    COMMITTED = "committed"
    CANCELLED = "cancelled"
    ABORTED = "aborted"


class FillStep(enum.Enum):
    BEGIN = "begin"
    COMMIT = "commit"   # a commit that succeeded
    ABORT = "abort"     # abort, a failed commit, the commit of a cancelled fill
    PURGE = "purge"


_P, _S = FillPhase, FillStep
FILL_TABLE: dict[tuple[FillPhase, FillStep], FillPhase] = {
    (_P.RESERVED, _S.BEGIN): _P.WRITING,
    (_P.RESERVED, _S.ABORT): _P.ABORTED,
    (_P.RESERVED, _S.PURGE): _P.CANCELLED,
    (_P.WRITING, _S.COMMIT): _P.COMMITTED,
    (_P.WRITING, _S.ABORT): _P.ABORTED,
    (_P.WRITING, _S.PURGE): _P.CANCELLED,
    (_P.CANCELLED, _S.BEGIN): _P.CANCELLED,  # a create already under way finishes; commit aborts
    (_P.CANCELLED, _S.ABORT): _P.ABORTED,
    (_P.CANCELLED, _S.PURGE): _P.CANCELLED,
    (_P.COMMITTED, _S.ABORT): _P.COMMITTED,
    (_P.ABORTED, _S.ABORT): _P.ABORTED,
}
LIVE = frozenset({FillPhase.RESERVED, FillPhase.WRITING})  # the phases that hold bytes


@dataclass(slots=True, eq=False)
class Reservation:
    """One fill's hold on the store: its bytes in the policy, its temp file, its phase."""

    store: DiskStore
    key: CacheKey
    length: int
    phase: FillPhase = FillPhase.RESERVED
    want_pin: bool = False
    tmp_path: Path | None = None
    fd: int = -1
    creating: asyncio.Future[None] | None = None  # the temp file's creation, once begun

    def step(self, step: FillStep) -> FillPhase:
        """Move along `FILL_TABLE`; a step the table lacks is a bug in the caller."""
        nxt = FILL_TABLE.get((self.phase, step))
        if nxt is None:
            raise AssertionError(f"fill of {self.key}: {step.value} in phase {self.phase.value}")
        self.phase = nxt
        return nxt

    @property
    def cancelled(self) -> bool:
        return self.phase is FillPhase.CANCELLED

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.phase is not FillPhase.COMMITTED:
            await asyncio.shield(self.store.abort(self))


def key_digest(key: CacheKey) -> str:
    return hashlib.sha256(key.text.encode()).hexdigest()


class DiskStore:
    """Cached objects under `root`, budgeted by `policy`. Create, then `await open()`."""

    def __init__(self, root: str | Path, policy: EvictionPolicy, *, max_open_files: int = 512,
                 on_evict: Callable[[CacheKey, Entry, str], None] | None = None) -> None:
        self.root = Path(root)
        self.objects_dir = self.root / "objects"
        self.tmp_dir = self.root / "tmp"
        self.policy = policy
        self.index: dict[CacheKey, Entry] = {}
        self.by_text: dict[str, Entry] = {}  # the same entries by `key.text` (the fast lane's lookup)
        self.max_open_files = max_open_files
        self._open: OrderedDict[CacheKey, OpenFile] = OrderedDict()
        self._reservations: dict[CacheKey, Reservation] = {}
        self._deleting: dict[CacheKey, asyncio.Future[None]] = {}
        self._background: set[asyncio.Future[None]] = set()
        self._ghosts: OrderedDict[CacheKey, None] = OrderedDict()
        self._variants: dict[str, set[CacheKey]] = {}  # path -> its Vary variants in the index
        self._titles: TallyCounter[str] = TallyCounter()
        self.on_evict = on_evict
        self.evictions = 0
        self.corrupt = 0  # objects whose checksum failed: purged, never served again
        self.changed_in_send = 0  # hits cut short: the file changed while it was being sent
        self.scrubbed = 0
        self._scrub_order: list[CacheKey] = []
        self.io_faults: IoFaultHook | None = None  # edge/faults.py, only with --fault-api

    # -- paths -----------------------------------------------------------------------

    def data_path(self, key: CacheKey) -> Path:
        h = key_digest(key)
        return self.objects_dir / h[:2] / h[2:4] / h

    # -- start-up ----------------------------------------------------------------------

    async def open(self) -> None:
        """Clear temp leftovers and rebuild the index from the sidecars on disk."""
        metas = await asyncio.get_running_loop().run_in_executor(None, self._scan)
        doomed: list[CacheKey] = []
        for key, meta in sorted(metas, key=lambda km: km[1].stored_at):
            adm = self.policy.admit(key.text, meta.length, 0.0, pinned=meta.pinned)
            for victim in map(CacheKey.from_text, adm.evicted):
                self._drop_index(victim)
                doomed.append(victim)
            if adm.admitted:
                self._add_index(Entry(key, meta, self.data_path(key)))
            else:
                doomed.append(key)
        if doomed:
            await asyncio.get_running_loop().run_in_executor(None, self._delete_many, doomed)
        log.info("index rebuilt", extra={"fields": {"objects": len(self.index), "used": self.policy.used,
                                                    "dropped": len(doomed)}})

    def _scan(self) -> list[tuple[CacheKey, ObjectMeta]]:
        self.objects_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():
            _unlink(leftover)
        found: list[tuple[CacheKey, ObjectMeta]] = []
        for dirpath, _dirs, files in os.walk(self.objects_dir):
            names = set(files)
            for name in files:
                path = Path(dirpath) / name
                if name.endswith(META_SUFFIX):
                    data = path.with_name(name[: -len(META_SUFFIX)])
                    meta = _read_meta(path)
                    key = CacheKey.from_text(meta.key) if meta is not None else None
                    if (meta is None or key is None or self.data_path(key) != data
                            or not _has_size(data, meta.length) or not _trusted(data, path, meta)):
                        _unlink(path)
                        _unlink(data)
                    else:
                        found.append((key, meta))
                elif len(name) == 64 and name + META_SUFFIX in names:
                    continue  # judged with its sidecar
                else:
                    _unlink(path)  # data without sidecar, or a sidecar's temp
        return found

    # -- the index -------------------------------------------------------------------

    def _add_index(self, entry: Entry) -> None:
        old = self.index.get(entry.key)
        if old is None:
            self._titles[entry.key.title or ""] += 1
            if entry.key.variant:
                self._variants.setdefault(entry.key.path, set()).add(entry.key)
        self.index[entry.key] = entry
        self.by_text[entry.key.text] = entry
        self._ghosts.pop(entry.key, None)
        self._close_fd(entry.key)

    def _drop_index(self, key: CacheKey, reason: str = "capacity") -> Entry | None:
        """Forget `key`; `on_evict(key, entry, reason)` hears of it (capacity, replaced, purge)."""
        entry = self.index.pop(key, None)
        if entry is not None:
            self.by_text.pop(key.text, None)
            t = entry.key.title or ""
            self._titles[t] -= 1
            if self._titles[t] <= 0:
                del self._titles[t]
            if key.variant:
                variants = self._variants.get(key.path)
                if variants is not None:
                    variants.discard(key)
                    if not variants:
                        del self._variants[key.path]
            self._close_fd(key)
            if self.on_evict:
                self.on_evict(key, entry, reason)
        return entry

    def lookup(self, key: CacheKey, now: float) -> Entry | None:
        """Record the access with the policy; the cached entry or None."""
        self.policy.lookup(key.text, now)
        return self.index.get(key)

    def keys_of_path(self, path: str) -> list[CacheKey]:
        """Every stored key of `path`: the plain one and its Vary variants (4.4 invalidation)."""
        keys = list(self._variants.get(path, ()))
        plain = CacheKey(path)
        if plain in self.index:
            keys.append(self.index[plain].key)
        return keys

    def freshen(self, entry: Entry, meta: ObjectMeta) -> bool:
        """A 304 updated `entry`'s headers (RFC 9111 4.3.4): same bytes, new metadata; the
        sidecar is rewritten in the background. False if `entry` left the index meanwhile."""
        if self.index.get(entry.key) is not entry:
            return False
        entry.meta = replace(meta, key=entry.meta.key, length=entry.meta.length, pinned=entry.meta.pinned,
                             extra=entry.meta.extra)
        self._track(asyncio.ensure_future(self._persist_meta(entry)))
        return True

    def was_evicted(self, key: CacheKey) -> bool:
        return key in self._ghosts

    def titles(self) -> list[str]:
        return sorted(self._titles)

    def keys_of_title(self, title: str) -> list[CacheKey]:
        return [k for k in self.index if k.title == title]

    @property
    def used(self) -> int:
        return self.policy.used

    @property
    def capacity(self) -> int:
        return self.policy.capacity

    def pinned_count(self) -> int:
        return sum(1 for e in self.index.values() if self.policy.is_pinned(e.key.text))

    def pinned_bytes(self) -> int:
        """Bytes of stored pinned objects: room no fill can evict (heartbeats report it)."""
        return sum(e.length for e in self.index.values() if self.policy.is_pinned(e.key.text))

    # -- hits: open fds ----------------------------------------------------------------

    async def acquire(self, entry: Entry) -> OpenFile | None:
        """An open fd for `entry`, checked against the indexed length.

        None when the file is missing or its size changed behind our back; the object is
        then dropped (files deleted) so the caller refetches it. A file written after its
        fill (data newer than its sidecar, or its mtime moved under an open fd) is re-checked
        against the fill's checksum first: a corrupt object is purged, never served."""
        if self.io_faults is not None:
            try:
                self.io_faults.check("read")
            except OSError as exc:
                raise Unavailable(f"cannot open cached object: {exc.strerror}") from None
        of = self._open.get(entry.key)
        if of is not None and of.entry is entry:
            self._open.move_to_end(entry.key)
            try:
                st = os.fstat(of.fd)  # an open fd: no disk IO, safe on the loop
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime = -1, entry.mtime_ns
            if size == entry.length and mtime != entry.mtime_ns:
                if not await self.verify(entry):
                    return None
                entry.mtime_ns = mtime
        else:
            try:
                fd, size, mtime, changed = await asyncio.get_running_loop().run_in_executor(
                    None, _open_ro, entry.path)
            except FileNotFoundError:
                fd, size, mtime, changed = -1, -1, 0, False  # deleted behind our back: the caller refetches
            except OSError as exc:
                # out of fds, EIO, EACCES: our trouble, not a changed object; keep it cached
                raise Unavailable(f"cannot open cached object: {exc.strerror or type(exc).__name__}") from None
            if fd >= 0:
                if self.index.get(entry.key) is not entry:
                    os.close(fd)
                    return None
                if changed and size == entry.length and not await self.verify(entry):
                    os.close(fd)
                    return None
                entry.mtime_ns = mtime
                self._close_fd(entry.key)
                of = OpenFile(entry, fd)
                self._open[entry.key] = of
                self._trim_fds()
        if size != entry.length or of is None:
            log.warning("object changed on disk; dropping it", extra={"fields": {
                "key": str(entry.key), "expected": entry.length, "found": size}})
            if self.index.get(entry.key) is entry:
                await self.remove(entry.key)
            return None
        of.refs += 1
        return of

    def unchanged(self, of: OpenFile, mtime_ns: int) -> bool:
        """Is `of`'s file still what `acquire` checked: its size, and `mtime_ns`, the mtime
        this hit's `acquire` vouched for (`of.entry.mtime_ns` right after it; another hit's
        acquire may move the entry's on)? An fstat of the open fd: no disk IO. Asked before
        a hit's last byte leaves (edge.hitpath rule 7); False also counts the object as
        changed during a send, and the next `acquire` re-verifies it against the fill's
        checksum."""
        try:
            st = os.fstat(of.fd)
        except OSError:
            ok = False
        else:
            ok = st.st_size == of.entry.length and st.st_mtime_ns == mtime_ns
        if not ok:
            self.changed_in_send += 1
        return ok

    def release(self, of: OpenFile) -> None:
        of.refs -= 1
        if of.doomed and of.refs <= 0:
            _close(of.fd)

    def _close_fd(self, key: CacheKey) -> None:
        of = self._open.pop(key, None)
        if of is not None:
            if of.refs > 0:
                of.doomed = True
            else:
                _close(of.fd)

    def _trim_fds(self) -> None:
        while len(self._open) > self.max_open_files:
            key = next(iter(self._open))
            self._close_fd(key)

    async def read_all(self, entry: Entry) -> bytes | None:
        """A small object's bytes in one hop (for the RAM tier), verified against the
        checksum its fill recorded; None if it changed (a corrupt object is purged)."""
        if self.io_faults is not None:
            try:
                self.io_faults.check("read")
            except OSError:
                return None
        data = await asyncio.get_running_loop().run_in_executor(None, _read_file, entry.path)
        if data is None or len(data) != entry.length:
            return None
        want = entry.meta.digest
        if want is not None and _digest_of(data) != want:
            await self._corrupt(entry)
            return None
        return data

    async def verify(self, entry: Entry) -> bool:
        """Re-read `entry` and check its checksum (in the executor); a corrupt object is
        purged and counted. True when it is intact (or has no checksum to check)."""
        want = entry.meta.digest
        if want is None:
            return True
        got = await asyncio.get_running_loop().run_in_executor(None, _digest_file, entry.path)
        if got == want:
            return True
        if self.index.get(entry.key) is entry:
            await self._corrupt(entry)
        return False

    @property
    def scrub_in_pass(self) -> bool:
        """True while a scrub pass has objects left to verify."""
        return bool(self._scrub_order)

    async def scrub(self, max_bytes: int) -> int:
        """Verify the next objects in index order, about `max_bytes` of them (at least one),
        resuming where the last call stopped, at most one pass over the index per call: the
        background scrubber's step. Bytes read."""
        done = 0
        if not self._scrub_order:
            self._scrub_order = list(self.index)  # a new pass; at most one pass per call
        while done < max_bytes and self._scrub_order:
            key = self._scrub_order.pop()
            entry = self.index.get(key)
            if entry is None or entry.meta.digest is None:
                continue
            await self.verify(entry)
            done += entry.length
            self.scrubbed += 1
        return done

    async def _corrupt(self, entry: Entry) -> None:
        if self.index.get(entry.key) is not entry:
            return
        self.corrupt += 1
        log.warning("corrupt object purged", extra={"fields": {"key": str(entry.key), "length": entry.length}})
        await self.remove(entry.key)

    # -- fills -------------------------------------------------------------------------

    def reserve(self, key: CacheKey, length: int, now: float, *, force: bool = False) -> Reservation | None:
        """Hold `length` bytes for a fill of `key`, or None when the policy declines.

        The held object is pinned in the policy while it fills, so no later admission can
        pick it as a victim. `force` skips the admission filter (pre-positioning)."""
        if key in self._reservations:
            return None
        if force:
            adm = self.policy.admit(key.text, length, now, pinned=True)
        else:
            adm = self.policy.admit(key.text, length, now)
        self._evicted(adm.evicted)
        if not adm.admitted or key.text not in self.policy:
            return None
        if not self.policy.hold(key.text):  # already pinned (forced, pre-positioning): stays so
            self.policy.pin(key.text)
        # a stale entry for the key (refetch) no longer matches what the policy holds
        if key in self.index:
            self._drop_index(key, "replaced")
            self._schedule_delete(key)
        res = Reservation(self, key, length)
        self._reservations[key] = res
        return res

    def begin(self, res: Reservation) -> asyncio.Future[None]:
        """Start creating the temp file of a reserved fill (in the executor); the future
        is kept by `res`, so an abort waits for it. Raises OSError when awaited if the
        file cannot be made."""
        res.step(FillStep.BEGIN)
        path = self.tmp_dir / f"{key_digest(res.key)}.{secrets.token_hex(4)}.part"

        async def create() -> None:
            if self.io_faults is not None:
                self.io_faults.check("write")
            res.fd = await asyncio.get_running_loop().run_in_executor(None, _create, path)
            res.tmp_path = path

        res.creating = asyncio.ensure_future(create())
        return res.creating

    async def write(self, res: Reservation, data: bytes) -> None:
        """Append `data` to the temp file (one hop per call; callers batch)."""
        if self.io_faults is not None:
            self.io_faults.check("write")
        await asyncio.get_running_loop().run_in_executor(None, _write_all, res.fd, data)

    async def commit(self, res: Reservation, meta: ObjectMeta) -> Entry | None:
        """Rename a complete temp file into place and index it; None if it was cancelled."""
        loop = asyncio.get_running_loop()
        pending = self._deleting.get(res.key)
        if pending is not None:
            await asyncio.shield(pending)
        if res.cancelled or self._reservations.get(res.key) is not res:
            await self.abort(res)
            return None
        dest = self.data_path(res.key)
        meta = replace(meta, pinned=res.want_pin)
        try:
            if res.creating is not None:
                await res.creating
            assert res.tmp_path is not None, "commit before begin"
            await loop.run_in_executor(None, _install, res.fd, res.tmp_path, dest, meta)
        except OSError as exc:
            res.fd = -1
            log.error("commit failed", extra={"fields": {"key": str(res.key), "error": str(exc)}})
            await self.abort(res)
            return None
        res.fd = -1
        if res.cancelled or self._reservations.get(res.key) is not res:
            # purged while the rename ran (remove() already released the bytes): delete again
            res.step(FillStep.ABORT)
            await loop.run_in_executor(None, self._delete_many, [res.key])
            return None
        del self._reservations[res.key]
        res.step(FillStep.COMMIT)
        if not res.want_pin and not self.policy.release(res.key.text):
            self.policy.unpin(res.key.text)  # a forced fill was pinned, not held
        entry = Entry(res.key, meta, dest)
        self._add_index(entry)
        return entry

    async def abort(self, res: Reservation) -> None:
        """Forget a fill: release its bytes, remove its temp file (safe in any phase)."""
        if res.phase is FillPhase.COMMITTED:
            return
        if self._reservations.get(res.key) is res:
            del self._reservations[res.key]
            self.policy.remove(res.key.text)
        res.step(FillStep.ABORT)
        await _settled(res.creating)  # an abort under a create still running would leak its fd
        fd, path = res.fd, res.tmp_path
        res.fd, res.tmp_path = -1, None
        if fd >= 0 or path is not None:
            await asyncio.get_running_loop().run_in_executor(None, _discard, fd, path)

    # -- removal -------------------------------------------------------------------------

    def _evicted(self, texts: tuple[str, ...]) -> None:
        """The policy's victims (strings: the policy boundary) leave the index and the disk."""
        for key in map(CacheKey.from_text, texts):
            self.evictions += 1
            self._drop_index(key)
            self._ghosts[key] = None
            self._ghosts.move_to_end(key)
            if len(self._ghosts) > GHOSTS:
                self._ghosts.popitem(last=False)
            self._schedule_delete(key)

    def _schedule_delete(self, key: CacheKey) -> None:
        loop = asyncio.get_running_loop()
        prev = self._deleting.get(key)

        async def run() -> None:
            if prev is not None:
                await prev
            await loop.run_in_executor(None, self._delete_many, [key])

        fut = asyncio.ensure_future(run())
        self._deleting[key] = fut
        self._background.add(fut)

        def done(f: asyncio.Future[None]) -> None:
            self._background.discard(f)
            if self._deleting.get(key) is f:
                del self._deleting[key]
            if not f.cancelled() and f.exception() is not None:
                log.error("delete failed", extra={"fields": {"key": str(key), "error": str(f.exception())}})

        fut.add_done_callback(done)

    async def remove(self, key: CacheKey) -> bool:
        """Purge `key`: from the index, the policy and the disk (awaited). Cancels a fill."""
        found = False
        res = self._reservations.pop(key, None)
        if res is not None:
            res.step(FillStep.PURGE)
            found = True
        if self._drop_index(key, "purge") is not None:
            found = True
        if self.policy.remove(key.text):
            found = True
        self._schedule_delete(key)
        await asyncio.shield(self._deleting[key])
        return found

    def _delete_many(self, keys: list[CacheKey]) -> None:
        for key in keys:
            data = self.data_path(key)
            _unlink(data.with_name(data.name + META_SUFFIX))  # sidecar first: data alone is junk
            _unlink(data)

    # -- pins ---------------------------------------------------------------------------

    def set_pinned(self, key: CacheKey, pinned: bool) -> bool:
        """Pin or unpin a cached (or filling) object; False if absent.

        The policy changes at once; the sidecar is rewritten in the background (`flush`
        awaits it), so this can be called from sync code such as the agent's `pin`."""
        res = self._reservations.get(key)
        if res is not None:
            res.want_pin = pinned
            return True
        entry = self.index.get(key)
        if entry is None:
            return False
        if pinned:
            self.policy.pin(key.text)
        else:
            self.policy.unpin(key.text)
        if entry.meta.pinned != pinned:
            entry.meta = replace(entry.meta, pinned=pinned)
            self._track(asyncio.ensure_future(self._persist_meta(entry)))
        return True

    async def _persist_meta(self, entry: Entry) -> None:
        if self.index.get(entry.key) is not entry:
            return
        await asyncio.get_running_loop().run_in_executor(None, _write_meta, entry.path, entry.meta)

    def _track(self, fut: asyncio.Future[None]) -> None:
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    async def flush(self) -> None:
        """Wait for background deletes and sidecar writes."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- shutdown -------------------------------------------------------------------------

    async def close(self) -> None:
        for res in list(self._reservations.values()):
            await self.abort(res)
        await self.flush()
        for key in list(self._open):
            self._close_fd(key)

    def snapshot(self) -> dict[str, Any]:
        return {"objects": len(self.index), "used_bytes": self.policy.used, "capacity_bytes": self.capacity,
                "pinned": self.pinned_count(), "filling": len(self._reservations), "evictions": self.evictions,
                "corrupt": self.corrupt, "changed_in_send": self.changed_in_send, "scrubbed": self.scrubbed,
                "open_fds": len(self._open)}


async def _settled(creating: asyncio.Future[None] | None) -> None:
    """Wait out a temp-file creation; its error (if any) is the abort's to clean up."""
    if creating is None:
        return
    if not creating.done():
        await asyncio.wait([creating])
    if not creating.cancelled():
        creating.exception()  # mark retrieved


# -- blocking helpers (run in the executor) -------------------------------------------------

def _unlink(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            for child in path.iterdir():
                _unlink(child)
            path.rmdir()
        else:
            path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot delete", extra={"fields": {"path": str(path), "error": str(exc)}})


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _has_size(path: Path, length: int) -> bool:
    try:
        return path.stat().st_size == length
    except OSError:
        return False


def _read_meta(path: Path) -> ObjectMeta | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_META_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_META_BYTES:
        return None
    return ObjectMeta.unpack(raw)


def _open_ro(path: Path) -> tuple[int, int, int, bool]:
    """fd, size, mtime, and whether the data was written after its sidecar (the sidecar is
    written last and the data stamped 1 ns older, `_stamp_older`: data as new as its
    sidecar or newer is a change behind our back)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    try:
        changed = st.st_mtime_ns >= path.with_name(path.name + META_SUFFIX).stat().st_mtime_ns
    except OSError:
        changed = True
    return fd, st.st_size, st.st_mtime_ns, changed


def _trusted(data: Path, sidecar: Path, meta: ObjectMeta) -> bool:
    """At start: data written after its sidecar (the sidecar is written last, so that is
    a change behind our back) is re-verified against its checksum before it is indexed."""
    try:
        if data.stat().st_mtime_ns < sidecar.stat().st_mtime_ns or meta.digest is None:
            return True
    except OSError:
        return False
    if _digest_file(data) == meta.digest:
        return True
    log.warning("corrupt object dropped at start", extra={"fields": {"key": meta.key, "length": meta.length}})
    return False


def _digest_of(data: bytes) -> str:
    d = new_digest()
    d.update(data)
    return d.hexdigest()  # type: ignore[no-any-return]


def _digest_file(path: Path) -> str | None:
    d = new_digest()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                d.update(chunk)
    except OSError:
        return None
    return d.hexdigest()  # type: ignore[no-any-return]


def _read_file(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _create(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _discard(fd: int, path: Path | None) -> None:
    if fd >= 0:
        _close(fd)
    if path is not None:
        _unlink(path)


def _write_meta(data_path: Path, meta: ObjectMeta) -> None:
    final = data_path.with_name(data_path.name + META_SUFFIX)
    tmp = data_path.with_name(data_path.name + META_SUFFIX + f".{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(meta.pack())
    os.replace(tmp, final)


def _install(fd: int, tmp: Path, dest: Path, meta: ObjectMeta) -> None:
    """Check the temp file's length, rename it into place, then write the sidecar."""
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size != meta.length:
        _unlink(tmp)
        raise OSError(f"temp file has {size} bytes, expected {meta.length}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    old_meta = dest.with_name(dest.name + META_SUFFIX)
    _unlink(old_meta)  # an old sidecar must never describe the new data
    os.replace(tmp, dest)
    _write_meta(dest, meta)
    _stamp_older(dest)


def _stamp_older(data: Path) -> None:
    """Set the data's mtime 1 ns before its sidecar's. The kernel stamps writes with a coarse
    clock (one tick, ~4 ms), so a write behind our back in the tick the sidecar was written
    in would otherwise leave the data exactly as new as its sidecar, and look untouched; any
    write now stamps it at or after the sidecar's tick, which `_open_ro` sees."""
    side = data.with_name(data.name + META_SUFFIX).stat().st_mtime_ns
    os.utime(data, ns=(side - 1, side - 1))


def now() -> float:
    return time.time()
