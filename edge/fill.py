"""Filling misses: one upstream fetch per object, streamed to every waiting client.

`FillCoalescer.join(key)` returns the one `Fill` in flight for a key, starting it if
there is none (cachetools' "concurrent misses wait on the one computation in flight").
A fill tries each peer edge with `Cache-Control: only-if-cached` (a peer that lacks the
object answers 504 at once), then the upstream. As bytes arrive they are kept in memory
for the fill's readers and appended to the store's temp file in batches (the file is
created in the executor while the first bytes already stream out); waiters wake on
an event each time more bytes arrive, so the first byte of a miss reaches every client
about as soon as it reaches the edge. A fill is a task owned by the coalescer: a client
that goes away never cancels it.

A fill ends in one of these states (a table, not an if-chain, in `_UPSTREAM_OUTCOME`):

    PENDING   -> STREAMING  upstream said 200 with a Content-Length (or a body of at most
                            `BUFFER_MAX` without one, read whole first)
    PENDING   -> PASSED     upstream said another 2xx, a 3xx or a 4xx: passed through with
                            its headers, not cached
    PENDING   -> REVALIDATED  a revalidation (`validate`) got 304: the stored object's
                            headers are freshened (RFC 9111 4.3.4), its bytes stay
    PENDING   -> FAILED     refused, timed out, 5xx, a body too big without Content-Length
    STREAMING -> DONE       every byte arrived; committed to the store if it was admitted
                            and RFC 9111 lets a shared cache store it (`rfc9111.storable`)
    STREAMING -> FAILED     short body, reset, timeout: nothing is cached; readers that
                            already sent headers abort their connections

Timeouts: connecting, the response headers, and every read of the body each get
`fill_timeout` seconds (an idle timeout, so a slow but moving origin can finish a big
object). Failures are `UpstreamError` (502) or `UpstreamTimeout` (504).

Rules of this module: sources are reached only through `edge.upstream.Upstream` (so
tests drive the coalescer with a fake, no sockets); the store's side of a fill is the
`Reservation` it hands out, used as `async with` so every way out of the streaming that
did not commit aborts (`edge.store.FILL_TABLE`).
"""
from __future__ import annotations

import asyncio
import bisect
import enum
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from common.errors import NotFound, OcsimError, Unavailable, UpstreamError, UpstreamTimeout
from common.ids import CacheKey, parse_content_key
from common.metrics import Counter
from common.tokens import NO_ISP, Keyring
from edge import rfc9111
from edge.httpcache import VaryMemory, lower_headers, relayed_headers, stored_headers
from edge.store import DIGEST_FIELD, FILL_DIGEST_HEADER, DiskStore, Entry, ObjectMeta, Reservation, new_digest
from edge.upstream import Upstream, UpstreamResponse

log = logging.getLogger("ocsim.edge.fill")

WRITE_BATCH = 256 * 1024  # bytes gathered before one executor write
PASSTHROUGH_BODY_MAX = 64 * 1024
BUFFER_MAX = 1024 * 1024  # a body without Content-Length is read whole (then cached) up to this
PEER_CONNECT_TIMEOUT = 1.0
PEER_ANSWER_TIMEOUT = 1.0  # connect to response headers of an only-if-cached ask
PEER_SKIP_S = 5.0  # a peer that did not answer is not asked again for this long
PEER_TOKEN_TTL = 300


class FillState(enum.Enum):
    PENDING = "pending"
    STREAMING = "streaming"
    DONE = "done"
    PASSED = "passed"
    REVALIDATED = "revalidated"
    FAILED = "failed"


class UpstreamOutcome(enum.Enum):
    FILL = "fill"
    PASS = "pass"
    NOT_MODIFIED = "not-modified"
    FAIL = "fail"


def upstream_status_outcome(status: int, *, conditional: bool = False) -> UpstreamOutcome:
    """What a fill does with the status its source answered (200 only is a body we cache)."""
    if status == 200:
        return UpstreamOutcome.FILL
    if status == 304:
        return UpstreamOutcome.NOT_MODIFIED if conditional else UpstreamOutcome.FAIL
    return _UPSTREAM_OUTCOME.get(status // 100, UpstreamOutcome.FAIL)


_UPSTREAM_OUTCOME = {
    2: UpstreamOutcome.PASS,  # 203, 204, ...: an origin's answer, passed on as it is
    3: UpstreamOutcome.PASS,  # redirects go to the client (Location kept); the edge follows none
    4: UpstreamOutcome.PASS,  # the client's problem, said by the origin: pass it on
    5: UpstreamOutcome.FAIL,  # the origin's problem: 502 (or a stale answer, RFC 5861 4)
}


@dataclass(frozen=True, slots=True)
class Passthrough:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()  # the upstream's end-to-end fields (httpcache.relayed_headers)


class Fill:
    """One object being fetched; readers follow it while it streams."""

    def __init__(self, key: CacheKey, *, force: bool = False, sources: tuple[str, ...] = (),
                 request_headers: Mapping[str, str] | None = None, validate: Entry | None = None) -> None:
        self.key = key
        self.force = force
        self.sources = sources  # peers to ask first (a fill plan's tier-fill sources)
        self.request_headers = dict(request_headers or {})  # forwarded upstream (httpcache.NOT_FORWARDED out)
        self.validate = validate  # the stored object this fill revalidates (RFC 9111 4.3.1)
        self.store_key = key  # the key the response is stored under (its Vary variant, 4.1)
        self.vary: tuple[str, ...] = ()
        self.not_stored: rfc9111.NotStored | None = None  # why RFC 9111 forbids storing it
        self.state = FillState.PENDING
        self.meta: ObjectMeta | None = None
        self.stored = False  # the store holds bytes for it: it will be cached if it completes
        self.bad_body = False  # the bytes failed the checksum their sender kept: never finish them
        self.source = ""
        self.error: OcsimError | None = None
        self.passthrough: Passthrough | None = None
        self.chunks: list[bytes] = []
        self.offsets: list[int] = []
        self.received = 0
        self.started = time.monotonic()
        self.started_wall = time.time()  # RFC 9111 4.2.3's request_time
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def length(self) -> int:
        assert self.meta is not None
        return self.meta.length

    def _notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    async def headers(self) -> None:
        """Wait until the upstream answered; raises the fill's error if it failed first."""
        while self.state is FillState.PENDING:
            await self._changed.wait()
        if self.state is FillState.FAILED:
            assert self.error is not None
            raise self.error

    async def read(self, pos: int) -> memoryview | None:
        """Bytes from `pos` as soon as there are some; None at the end; raises on failure."""
        while True:
            if pos < self.received:
                i = bisect.bisect_right(self.offsets, pos) - 1
                return memoryview(self.chunks[i])[pos - self.offsets[i]:]
            if self.state is FillState.FAILED:
                assert self.error is not None
                raise self.error
            if self.state is not FillState.STREAMING and self.state is not FillState.PENDING:
                return None
            await self._changed.wait()

    async def finished(self) -> None:
        """Wait for the end of the fill; raises its error if it failed."""
        while self.state in (FillState.PENDING, FillState.STREAMING):
            await self._changed.wait()
        if self.state is FillState.FAILED:
            assert self.error is not None
            raise self.error

    def body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass(slots=True)
class FillMetrics:
    """Counters the coalescer updates (created by the server in its registry)."""

    fills: Counter  # labels: source (peer|origin), result (stored|uncached|passed|failed)
    errors: Counter  # labels: reason
    filled_bytes: Counter


class FillCoalescer:
    """Exactly one fetch per key in flight; peers first, then the upstream."""

    def __init__(self, store: DiskStore, upstream: Upstream, origin: str, *,
                 peers: list[str] | None = None, keyring: Callable[[], Keyring | None] = lambda: None,
                 isp: str = NO_ISP, fill_timeout: float = 10.0, metrics: FillMetrics | None = None,
                 on_stored: Callable[[CacheKey, Fill], None] | None = None,
                 on_done: Callable[[Fill, str], None] | None = None,
                 vary: VaryMemory | None = None) -> None:
        self.store = store
        self.upstream = upstream
        self.origin = origin.rstrip("/")
        self.peers = [p.rstrip("/") for p in (peers or [])]
        self.keyring = keyring
        self.isp = isp
        self.fill_timeout = fill_timeout
        self.metrics = metrics
        self.on_stored = on_stored
        self.on_done = on_done  # (fill, result) once per fill: the event pipeline's edge.fill
        self.inflight: dict[CacheKey, Fill] = {}
        self.vary = vary if vary is not None else VaryMemory()  # learnt from responses' Vary
        self._closing = False
        # peer -> monotonic time until which it is not asked: a peer that did not answer
        # (down, or paused and accepting) would cost every miss its timeout otherwise
        self.peer_skip_until: dict[str, float] = {}

    def join(self, key: CacheKey, *, force: bool = False, sources: tuple[str, ...] = (),
             headers: Mapping[str, str] | None = None, validate: Entry | None = None) -> tuple[Fill, bool]:
        """The fill in flight for `key` (joined=True) or a new one: `headers` are what it
        forwards upstream, `validate` the stored object it revalidates (a conditional GET)."""
        fill = self.inflight.get(key)
        if fill is not None:
            return fill, True
        if self._closing:
            fill = Fill(key)
            fill.error = Unavailable("edge is shutting down")
            fill.state = FillState.FAILED
            return fill, False
        fill = Fill(key, force=force, sources=sources, request_headers=headers, validate=validate)
        self.inflight[key] = fill
        fill.task = asyncio.create_task(self._run(fill), name=f"fill {key}")
        return fill, False

    async def fill_object(self, path: str, sources: Sequence[str] = ()) -> int:
        """Make sure `path` is cached (bypassing the admission filter); its size.

        For pre-positioning: raises when the object cannot be fetched or does not fit.
        `sources`: peer edges to ask before this edge's own peers and the origin."""
        key = parse_content_key(path)
        first = tuple(p.rstrip("/") for p in sources)
        for _ in range(2):
            entry = self.store.index.get(key)
            if entry is not None:
                return entry.length
            fill, _joined = self.join(key, force=True, sources=first)
            await asyncio.shield(self._wait(fill))
            if fill.passthrough is not None:
                if fill.passthrough.status == 404:
                    raise NotFound(f"upstream has no {key}")
                raise UpstreamError(f"upstream answered {fill.passthrough.status} for {key}")
        entry = self.store.index.get(key)
        if entry is not None:
            return entry.length
        raise UpstreamError(f"{key} was fetched but could not be stored (no room)")

    @staticmethod
    async def _wait(fill: Fill) -> None:
        await fill.finished()

    async def close(self) -> None:
        self._closing = True
        tasks = [f.task for f in self.inflight.values() if f.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the fill task -----------------------------------------------------------------

    async def _run(self, fill: Fill) -> None:
        try:
            try:
                resp = await self._open_source(fill)
                try:
                    await self._stream(fill, resp)
                finally:
                    resp.release()
            except OcsimError as exc:
                self._fail(fill, exc)
            except TimeoutError:
                self._fail(fill, UpstreamTimeout(f"upstream timed out after {self.fill_timeout:g}s"))
            except OSError as exc:  # an Upstream that let a connection error through
                self._fail(fill, UpstreamError(f"upstream error: {type(exc).__name__}"))
            except asyncio.CancelledError:
                self._fail(fill, Unavailable("edge is shutting down"))
                raise
            except Exception as exc:  # a bug: still never leave waiters hanging
                log.exception("fill of %s crashed", fill.key)
                self._fail(fill, UpstreamError(f"fill failed: {type(exc).__name__}"))
            if fill.state is FillState.STREAMING:
                fill.state = FillState.DONE
                self._count_fill(fill, "stored" if fill.stored else "uncached")
        finally:
            if self.inflight.get(fill.key) is fill:
                del self.inflight[fill.key]
            fill._notify()

    def _fail(self, fill: Fill, exc: OcsimError) -> None:
        fill.error = exc
        fill.state = FillState.FAILED
        fill.stored = False
        if self.metrics:
            self.metrics.errors.inc((type(exc).__name__,))
        self._count_fill(fill, "failed")
        log.warning("fill failed", extra={"fields": {"key": str(fill.key), "source": fill.source, "status": exc.status,
                                                     "error": exc.reason, "received": fill.received}})
        fill._notify()

    def _count_fill(self, fill: Fill, result: str) -> None:
        if self.metrics:
            self.metrics.fills.inc((fill.source or "origin", result))
        if self.on_done is not None:
            self.on_done(fill, result)

    async def _open_source(self, fill: Fill) -> UpstreamResponse:
        """A 200 from a peer that holds the object, else the upstream's answer."""
        ring = self.keyring()
        headers = fill.request_headers
        if fill.validate is not None:  # 4.3.1: the origin decides; a peer's copy may be as stale
            fill.source = "origin"
            cond = {**headers, **rfc9111.conditional_headers(lower_headers(fill.validate.meta.headers))}
            return await self.upstream.get(self.origin + fill.key.path, only_if_cached=False,
                                           connect_timeout=self.fill_timeout, headers=cond)
        now = time.monotonic()
        for peer in list(fill.sources) + [p for p in self.peers if p not in fill.sources]:
            if self.peer_skip_until.get(peer, 0.0) > now and peer not in fill.sources:
                continue
            url = peer + self._peer_path(fill.key, ring)
            try:
                # A peer answers only-if-cached from its index (a 200 or a 504) at once; a
                # peer that accepts but never answers (a paused process, issue 11's gray
                # failure) must not hold the fill for the whole read timeout.
                resp = await asyncio.wait_for(
                    self.upstream.get(url, only_if_cached=True,
                                      connect_timeout=min(PEER_CONNECT_TIMEOUT, self.fill_timeout),
                                      headers=headers),
                    min(PEER_ANSWER_TIMEOUT, self.fill_timeout))
            except (UpstreamError, OSError, TimeoutError) as exc:
                self.peer_skip_until[peer] = time.monotonic() + PEER_SKIP_S
                log.info("peer unavailable", extra={"fields": {"key": str(fill.key), "peer": peer,
                                                               "error": _why(exc), "skipped_for_s": PEER_SKIP_S}})
                continue
            self.peer_skip_until.pop(peer, None)
            if resp.status == 200 and resp.content_length is not None:
                fill.source = "peer"
                return resp
            if resp.status != 504:
                log.info("peer refused", extra={"fields": {"key": str(fill.key), "peer": peer, "status": resp.status}})
            resp.release()
        fill.source = "origin"
        return await self.upstream.get(self.origin + fill.key.path, only_if_cached=False,
                                       connect_timeout=self.fill_timeout, headers=headers)

    def _peer_path(self, key: CacheKey, ring: Keyring | None) -> str:
        if ring is None or key.title is None:  # no token rule for a path outside /content/
            return key.path
        isp = self.isp
        title = key.title
        try:
            token = ring.sign(title, int(time.time()) + PEER_TOKEN_TTL, isp)
        except ValueError:
            token = ring.sign(title, int(time.time()) + PEER_TOKEN_TTL, NO_ISP)
        return f"/t/{token}{key.path}"

    async def _stream(self, fill: Fill, resp: UpstreamResponse) -> None:
        request_time = fill.started_wall
        outcome = upstream_status_outcome(resp.status, conditional=fill.validate is not None)
        if outcome is UpstreamOutcome.PASS:
            body = await resp.read(PASSTHROUGH_BODY_MAX)
            fill.passthrough = Passthrough(resp.status, body, resp.headers.get("Content-Type", "text/plain"),
                                           tuple(relayed_headers(_fields(resp.headers))))
            fill.state = FillState.PASSED
            self._count_fill(fill, "passed")
            return
        if outcome is UpstreamOutcome.NOT_MODIFIED:
            self._revalidated(fill, resp, request_time)
            return
        if outcome is UpstreamOutcome.FAIL:
            raise UpstreamError(f"upstream answered {resp.status}")
        length = resp.content_length
        if length is None:  # chunked: small bodies are read whole and then cached like any other
            resp = await _buffered(resp, BUFFER_MAX)
            length = resp.content_length
            assert length is not None
        fields = stored_headers(_fields(resp.headers))
        low = lower_headers(fields)
        fill.not_stored = rfc9111.storable("GET", resp.status, lower_headers(fill.request_headers), low)
        names = rfc9111.vary_names(low.get("vary"))
        if names is not None:  # (Vary: * is never stored: fill.not_stored says so)
            # 4.1: the variant this response is, by the request that asked for it
            self.vary.learn(fill.key.path, names)
            fill.vary = names
            fill.store_key = fill.key.with_variant(rfc9111.variant_of(names, lower_headers(fill.request_headers)))
        etag = resp.headers.get("ETag") or _synthetic_etag(fill.store_key, length)
        fill.meta = ObjectMeta(
            key=fill.store_key.text, length=length, etag=etag,
            content_type=resp.headers.get("Content-Type", "application/octet-stream"),
            cache_control=resp.headers.get("Cache-Control", ""),
            last_modified=resp.headers.get("Last-Modified", ""),
            stored_at=time.time(), headers=fields, request_time=request_time)
        res = None
        if fill.not_stored is None:
            res = self.store.reserve(fill.store_key, length, time.time(), force=fill.force)
        if res is None:
            await self._receive(fill, resp, length, None)
            return
        async with res:  # any way out that did not commit aborts (edge.store.FILL_TABLE)
            # The temp file is created in the executor while the first bytes already go
            # out: readers wake on STREAMING right after the upstream's headers, not one
            # thread hop later. The fd is only needed for the first batched write.
            self.store.begin(res)
            kept = await self._receive(fill, resp, length, res)
            if kept is not None:
                entry = await self.store.commit(kept, fill.meta)
                fill.stored = entry is not None
                if entry is not None and self.on_stored:
                    self.on_stored(fill.store_key, fill)

    def _revalidated(self, fill: Fill, resp: UpstreamResponse, request_time: float) -> None:
        """4.3.4: a 304 for the stored object: its headers updated, its bytes kept."""
        entry = fill.validate
        assert entry is not None
        got = stored_headers(_fields(resp.headers))
        stored = entry.meta.headers
        if not rfc9111.validator_matches(lower_headers(stored), lower_headers(got)):
            raise UpstreamError("upstream's 304 does not match the stored object")
        update = {k.lower(): (k, v) for k, v in got.items() if k.lower() not in rfc9111.NOT_UPDATED}
        if "date" not in update:  # the stored Date would age the freshened response at once
            update["date"] = ("Date", "")
        merged = {k: v for k, v in stored.items() if k.lower() not in update}
        merged.update((k, v) for k, v in update.values() if v)
        low = lower_headers(merged)
        meta = replace(entry.meta, headers=merged, stored_at=time.time(), request_time=request_time,
                       cache_control=low.get("cache-control", ""), last_modified=low.get("last-modified", ""))
        self.store.freshen(entry, meta)
        fill.meta = entry.meta
        fill.state = FillState.REVALIDATED
        self._count_fill(fill, "revalidated")

    async def _receive(self, fill: Fill, resp: UpstreamResponse, length: int,
                       res: Reservation | None) -> Reservation | None:
        """Stream the body to the readers and (while `res` lasts) to the temp file; the
        reservation to commit, or None when nothing is to be cached."""
        fill.stored = res is not None
        fill.state = FillState.STREAMING
        fill._notify()
        created = False
        digest = new_digest()  # the checksum, fed as the bytes pass (no second read)
        # a peer edge sends the checksum it kept since its own fill: what it read from its
        # disk must be what was filled, else this copy is refused (never stored, never
        # finished for the readers), so a corrupt copy does not spread from edge to edge
        sent = resp.headers.get(FILL_DIGEST_HEADER)
        pending: list[bytes] = []
        pending_bytes = 0
        try:
            async for data in resp.chunks():
                if fill.received + len(data) > length:
                    raise UpstreamError("upstream sent more than its Content-Length")
                self._arrived(fill, data)
                if res is not None or sent is not None:
                    digest.update(data)
                if res is not None:
                    pending.append(data)
                    pending_bytes += len(data)
                    if pending_bytes >= WRITE_BATCH:
                        if not created:
                            res, created = await self._created(fill, res), True
                            if res is None:
                                pending.clear()
                                continue
                        await self.store.write(res, b"".join(pending))
                        pending.clear()
                        pending_bytes = 0
            if fill.received != length:
                raise UpstreamError(f"upstream body was cut short ({fill.received} of {length} bytes)")
            if sent is not None and digest.hexdigest() != sent:
                fill.bad_body = True
                raise UpstreamError("upstream body fails the checksum its sender kept since its fill")
            if res is not None and not created:
                res = await self._created(fill, res)
            if res is not None and pending:
                await self.store.write(res, b"".join(pending))
            if res is not None and fill.meta is not None:
                fill.meta = replace(fill.meta, extra={**fill.meta.extra, DIGEST_FIELD: digest.hexdigest()})
        except OSError as exc:
            if isinstance(exc, ConnectionError):
                raise
            # our disk failed: keep serving the waiters, just do not cache
            log.error("fill write failed", extra={"fields": {"key": str(fill.key), "error": str(exc)}})
            if res is not None:
                await self.store.abort(res)
                res = None
                fill.stored = False
            await self._drain_rest(fill, resp, length)
        return res

    def _arrived(self, fill: Fill, data: bytes, *, counted: bool = True) -> None:
        fill.offsets.append(fill.received)
        fill.chunks.append(data)
        fill.received += len(data)
        fill._notify()
        if counted and self.metrics:
            self.metrics.filled_bytes.inc((fill.source,), len(data))

    async def _created(self, fill: Fill, res: Reservation) -> Reservation | None:
        """Wait for the temp file of `res`; None (bytes released, not cached) if it failed."""
        try:
            if res.creating is not None:
                await res.creating
        except OSError as exc:
            log.error("cannot create temp file", extra={"fields": {"key": str(fill.key), "error": str(exc)}})
            await self.store.abort(res)
            fill.stored = False
            return None
        return res

    async def _drain_rest(self, fill: Fill, resp: UpstreamResponse, length: int) -> None:
        async for data in resp.chunks():
            self._arrived(fill, data, counted=False)
        if fill.received != length:
            raise UpstreamError(f"upstream body was cut short ({fill.received} of {length} bytes)")


def _fields(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every field of a (multi-valued) header mapping, repeats included."""
    items = getattr(headers, "items", None)
    return list(items()) if items is not None else []


class _Buffered:
    """An upstream response whose whole body is already here (no Content-Length was sent)."""

    def __init__(self, resp: UpstreamResponse, body: bytes) -> None:
        self._resp = resp
        self._body = body

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def content_length(self) -> int | None:
        return len(self._body)

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._body:
            yield self._body

    async def read(self, limit: int) -> bytes:
        return self._body[:limit]

    def release(self) -> None:
        self._resp.release()


async def _buffered(resp: UpstreamResponse, limit: int) -> UpstreamResponse:
    parts: list[bytes] = []
    n = 0
    async for data in resp.chunks():
        n += len(data)
        if n > limit:
            raise UpstreamError(f"upstream sent no Content-Length and more than {limit} bytes")
        parts.append(data)
    return _Buffered(resp, b"".join(parts))


def _why(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, OcsimError) else type(exc).__name__


def _synthetic_etag(key: CacheKey, length: int) -> str:
    return '"' + hashlib.sha256(f"{key.text}:{length}".encode()).hexdigest()[:32] + '"'
