"""The asyncio player: drives one `PlaybackSession` over real HTTP, with failover.

One session is::

    POST {control}/v1/play {"title", "isp" | "client_ip"}   -> ranked candidates
    GET  {edge}/t/{token}/content/{title}/master.m3u8          (per edge, cached)
    GET  .../{rendition}/index.m3u8                            (per edge and rendition, lazily, cached)
    GET  .../{rendition}/{n}.seg                               one at a time, paced by the session

Playlist URIs are resolved against the playlist's own URL, so the token in the
path is kept. All decisions (which bitrate, when to fetch, which edge next, when
to ask steering again) are the pure core's (`player.abr`, `player.session`);
this module only moves bytes, keeps the time, and classifies what went wrong.

Rules:

1. Every request is bounded (`Timeouts`: connect, first byte / stall, total);
   nothing waits without a bound, so a session always ends.
2. A failed request becomes a `FailureReason` (`failure_reason_for_status`, `_fetch`):
   connect error -> CONNECT, timeout -> TIMEOUT, 5xx -> SERVER_ERROR, 403 ->
   FORBIDDEN, 404 and other 4xx -> NOT_FOUND, a body cut short -> TRUNCATED (the same
   edge is asked once more), a playlist that does not parse or bytes that fail
   verification -> CORRUPT. The session
   picks the next candidate; when the list runs out the driver asks steering
   again, as often as the session's `FailoverPolicy` allows.
3. `errors` in the report counts *unrecovered* errors (the session could not
   go on: unknown title, control plane unreachable, no edge left, a broken
   manifest everywhere). Failed requests the player recovered from are
   `failed_requests` (the session's own `errors` count), split into
   `failovers` (another edge) and `retries` (same edge).
4. The clock is media time: ``now = (monotonic() - t0) * speed`` and waits
   sleep ``wait_time / speed`` real seconds (see `player.session`). Start-up
   delay includes the play request and the playlists.
5. With `verify`, every segment is checked byte for byte against its id
   (`verify_segment`): the header names the segment and its length, the body
   must be exactly that long and equal to the synthetic bytes. A packaged title
   (the catalog says `"media": "packaged"`) is checked against its digest list
   instead (`MediaDigests`, from `GET {control}/v1/digests/{title}`): every
   playlist, init segment and segment the CDN hands over, by length and SHA-256.
6. An fMP4 rendition's init segment (`#EXT-X-MAP`) is fetched once per edge and
   rendition before its first segment, as a real player does (`init_bytes`).
7. An edge that answers but too slowly to play from is left for a faster candidate
   (`player.slow_edges`): a segment slower than its own duration moves the player on
   (a failover for reason `slow`; the segment itself counts), one still running at twice its duration is abandoned (SLOW) when
   a candidate not known to be slow is left, and the viewer's `SlowEdges` ranks the edge
   last in its next play answers.
8. A session ends at its last download (the QoE is known then) unless `play_out`: then
   when its buffer has played out, as a viewer who watches to the end before starting
   another title (the Locust viewers always do). Closed-loop load (viewers back to back,
   the chaos runner) needs it: otherwise sessions per second measure download time.

Everything here that is not IO lives in pure modules shared with the Locust
user (loadtests/locustfile.py), which must never import aiohttp: the errors
(`player.errors`), the playlists (`player.playlists`), the play answer
(`player.play_answer`), status and byte checks (`player.verify`) and the
report (`player.report`).
"""
from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from common.events import PlayerSession
from common.eventsink import EventSink
from player.abr import FailoverPolicy, FailureReason, make_abr
from player.errors import ControlUnavailable, PlaylistError, SteeringError, UnknownTitle
from player.playlists import MasterPlaylist, MediaPlaylist, parse_master, parse_media
from player.play_answer import Candidate, PlayAnswerCache, parse_play_answer
from player.report import PlayerEvent, PlayReport
from player.session import PlaybackSession, StartupFailover
from player.slow_edges import SlowEdgeRule, SlowEdges, faster_candidate
from player.verify import MediaDigests, failure_reason_for_status, verify_segment

__all__ = ["EventHook", "Timeouts", "play_session"]

MAX_PLAYLIST_BYTES = 1024 * 1024
SESSION_HEADER = "X-Ocsim-Session"  # the play id, so edge requests join to this session
PROGRESS_EVERY = 5  # a player.session progress event every this many segments
MAX_SEGMENT_BYTES = 64 * 1024 * 1024
MAX_PLAY_ANSWER_BYTES = 256 * 1024
MAX_DIGESTS_BYTES = 8 * 1024 * 1024


# --------------------------------------------------------------------------- control flow


class _EdgeFailure(Exception):
    """One request to one edge failed; drives failover, never leaves the driver."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class _Fatal(Exception):
    """The session cannot go on."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# --------------------------------------------------------------------------- bounds


@dataclass(frozen=True)
class Timeouts:
    """Real-time bounds, in seconds, on every request the player makes."""

    connect_s: float = 2.0       # TCP connect
    read_s: float = 5.0          # time to first byte, and any stall between reads
    segment_s: float = 30.0      # one whole segment download
    playlist_s: float = 10.0     # one whole playlist download
    steering_s: float = 5.0      # one whole play request

    def client(self, total: float) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=self.connect_s, sock_read=self.read_s)


# --------------------------------------------------------------------------- the driver


EventHook = Callable[[PlayerEvent], "Awaitable[None] | None"]


@dataclass
class _EdgeView:
    """What the player learned from one edge in this steering answer."""

    candidate: Candidate
    master: MasterPlaylist | None = None
    media: dict[int, MediaPlaylist] = field(default_factory=dict)
    inits: set[int] = field(default_factory=set)  # renditions whose init segment came from this edge


class _Player:
    def __init__(self, http: aiohttp.ClientSession, control_url: str, title: str, *,
                 isp: str | None, client_ip: str | None, speed: float, verify: bool, abr: str,
                 timeouts: Timeouts, policy: FailoverPolicy, buffer_cap_s: float,
                 max_segments: int | None, on_event: EventHook | None,
                 events: EventSink | None = None, answers: PlayAnswerCache | None = None,
                 slow_rule: SlowEdgeRule | None = None, slow_edges: SlowEdges | None = None,
                 play_out: bool = False) -> None:
        self.http = http
        self.play_out = play_out
        self.slow_rule = slow_rule if policy.enabled else None  # failover off: never leaves an edge
        self.slow_edges = slow_edges if slow_edges is not None else SlowEdges()
        self.answers = answers
        self.answer_cached = False  # this session's play answer came from `answers`, not control
        self.events = events if events is not None and events.enabled else None
        self.play_id: str | None = None  # from the play answer; sent as X-Ocsim-Session
        self.segments_done = 0
        self._headers: dict[str, str] = {}
        self.control_url = control_url.rstrip("/")
        self.title = title
        self.isp = isp
        self.client_ip = client_ip
        self.speed = speed
        self.verify = verify
        self.abr_name = abr
        self.timeouts = timeouts
        self.policy = policy
        self.buffer_cap_s = buffer_cap_s
        self.max_segments = max_segments
        self.on_event = on_event

        self.answered_isp: str | None = None
        self.edges: dict[str, _EdgeView] = {}
        self.ranked: list[str] = []
        self.current: str = ""
        self.session: PlaybackSession | None = None
        self.pre = StartupFailover(policy)
        self.verified_segments = 0
        self.verified_files = 0   # packaged media: playlists and init segments checked too
        self.playlist_bytes = 0
        self.init_bytes = 0
        self.digests: MediaDigests | None = None  # set for a packaged title when verifying
        self.served_by: list[str] = []
        self._t0 = time.monotonic()

    # ----------------------------------------------------------------- clock

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    async def _emit(self, event: PlayerEvent) -> None:
        if self.on_event is not None:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result

    # ----------------------------------------------------------------- steering

    async def _steer(self) -> None:
        try:
            obj = await self._ask_control()
            cached = False
        except ControlUnavailable:
            # players keep playing while control is down: a title steered to before
            old = self.answers.get(self.title, time.monotonic()) if self.answers is not None else None
            if old is None:
                raise
            obj, cached = old, True
        self.answer_cached = cached
        isp, candidates = parse_play_answer(obj)
        if self.answers is not None and not cached and isinstance(obj, dict):
            self.answers.put(self.title, obj, time.monotonic())
        pid = obj.get("play_id") if isinstance(obj, dict) else None
        if isinstance(pid, str) and 0 < len(pid) <= 64 and pid.isascii() and pid.isalnum():
            self.play_id = pid
            self._headers = {SESSION_HEADER: pid}
        elif self.play_id is None and self.events is not None:
            # An answer without a play id (built from a cached fallback while control is
            # down): the session still reports itself, under an id of its own ("l...", never
            # one the control plane hands out, which are hex).
            self.play_id = "l" + os.urandom(8).hex()
            self._headers = {SESSION_HEADER: self.play_id}
        self.answered_isp = isp
        self.edges = {c.edge: _EdgeView(c) for c in candidates}
        self.ranked = [c.edge for c in candidates]
        if self.slow_rule is not None:
            self.ranked = self.slow_edges.rank(self.ranked, time.monotonic())
        await self._emit(PlayerEvent("steer", reason=("cached:" if cached else "") + ",".join(self.ranked), isp=isp))

    async def _ask_control(self) -> object:
        """The JSON of the control plane's play answer; SteeringError subclasses if none."""
        body: dict[str, str] = {"title": self.title}
        if self.isp is not None:
            body["isp"] = self.isp
        if self.client_ip is not None:
            body["client_ip"] = self.client_ip
        url = f"{self.control_url}/v1/play"
        try:
            async with self.http.post(url, json=body, timeout=self.timeouts.client(self.timeouts.steering_s)) as resp:
                raw = await _read_limited(resp, MAX_PLAY_ANSWER_BYTES)
                status = resp.status
        except TimeoutError:
            raise ControlUnavailable(f"control plane at {self.control_url} timed out") from None
        except aiohttp.ClientError as exc:
            raise ControlUnavailable(f"control plane at {self.control_url} unreachable: {_short(exc)}") from None
        if status == 404:
            raise UnknownTitle(f"unknown title {self.title!r} (control plane: 404 {_error_text(raw)})")
        if status >= 500:
            raise ControlUnavailable(f"control plane answered {status}: {_error_text(raw)}")
        if status != 200:
            raise SteeringError(f"play request refused ({status}): {_error_text(raw)}")
        try:
            return json.loads(raw)
        except ValueError:
            raise SteeringError("play answer is not JSON") from None

    async def _load_digests(self) -> None:
        """For a packaged title, the digest list to verify against (synthetic: nothing to load)."""
        base = f"{self.control_url}/v1/titles/{self.title}"
        timeout = self.timeouts.client(self.timeouts.steering_s)
        try:
            try:
                async with self.http.get(base, timeout=timeout) as resp:
                    meta = json.loads(await _read_limited(resp, MAX_PLAY_ANSWER_BYTES)) if resp.status == 200 else None
            except (aiohttp.ClientConnectionError, TimeoutError):
                if not self.answer_cached:
                    raise
                # Control is down and the answer came from the cache: the bytes are checked
                # as synthetic, which fails closed (CORRUPT) for packaged media.
                return
            if not isinstance(meta, dict) or meta.get("media") != "packaged":
                return
            async with self.http.get(f"{self.control_url}/v1/digests/{self.title}", timeout=timeout) as resp:
                raw = await _read_limited(resp, MAX_DIGESTS_BYTES)
                if resp.status != 200:
                    raise _Fatal("verify", f"no digest list for packaged title {self.title}: "
                                           f"{resp.status} {_error_text(raw)}")
            self.digests = MediaDigests.from_json(json.loads(raw))
        except (aiohttp.ClientError, TimeoutError, _TooLarge) as exc:
            raise _Fatal("verify", f"digest list of {self.title}: {_short(exc)}") from None
        except ValueError as exc:
            raise _Fatal("verify", f"digest list of {self.title}: {_short(exc)}") from None

    def _check_file(self, url: str, body: bytes, what: str) -> None:
        """Packaged media being verified: `body` must be the file the digest list names."""
        if self.digests is None:
            return
        problem = self.digests.check(url, body)
        if problem is not None:
            raise _EdgeFailure(FailureReason.CORRUPT, f"{what}: {problem}")
        self.verified_files += 1

    # ----------------------------------------------------------------- fetching

    async def _fetch(self, url: str, total_s: float, limit: int) -> bytes:
        try:
            async with self.http.get(url, timeout=self.timeouts.client(total_s), headers=self._headers) as resp:
                reason = failure_reason_for_status(resp.status)
                if reason is not None:
                    raise _EdgeFailure(reason, f"HTTP {resp.status}")
                return await _read_limited(resp, limit)
        except _EdgeFailure:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise _EdgeFailure(FailureReason.CONNECT, f"connect timeout: {_short(exc)}") from None
        except aiohttp.ClientConnectorError as exc:
            raise _EdgeFailure(FailureReason.CONNECT, _short(exc)) from None
        except TimeoutError:
            raise _EdgeFailure(FailureReason.TIMEOUT, "timed out") from None
        except aiohttp.ClientPayloadError as exc:
            raise _EdgeFailure(FailureReason.TRUNCATED, f"truncated body: {_short(exc)}") from None
        except aiohttp.ClientConnectionError as exc:
            raise _EdgeFailure(FailureReason.CONNECT, _short(exc)) from None
        except (aiohttp.ClientError, _TooLarge) as exc:
            raise _EdgeFailure(FailureReason.CORRUPT, _short(exc)) from None

    async def _master(self, view: _EdgeView) -> MasterPlaylist:
        if view.master is None:
            raw = await self._fetch(view.candidate.url, self.timeouts.playlist_s, MAX_PLAYLIST_BYTES)
            self.playlist_bytes += len(raw)
            self._check_file(view.candidate.url, raw, "master playlist")
            try:
                view.master = parse_master(raw.decode("utf-8"), view.candidate.url)
            except (PlaylistError, UnicodeDecodeError) as exc:
                raise _EdgeFailure(FailureReason.CORRUPT, f"master playlist: {exc}") from None
        return view.master

    async def _media(self, view: _EdgeView, rendition: int) -> MediaPlaylist:
        media = view.media.get(rendition)
        if media is None:
            master = await self._master(view)
            url = master.renditions.get(rendition)
            if url is None:
                raise _EdgeFailure(FailureReason.CORRUPT, f"master playlist lacks {rendition} kbit/s")
            raw = await self._fetch(url, self.timeouts.playlist_s, MAX_PLAYLIST_BYTES)
            self.playlist_bytes += len(raw)
            self._check_file(url, raw, "media playlist")
            try:
                media = parse_media(raw.decode("utf-8"), url)
            except (PlaylistError, UnicodeDecodeError) as exc:
                raise _EdgeFailure(FailureReason.CORRUPT, f"media playlist: {exc}") from None
            if self.session is not None and len(media.segment_urls) < self.session.n_segments:
                raise _EdgeFailure(FailureReason.CORRUPT,
                                   f"{rendition} kbit/s has {len(media.segment_urls)} segments, "
                                   f"expected {self.session.n_segments}")
            view.media[rendition] = media
        return media

    # ----------------------------------------------------------------- failover

    async def _fail_over(self, edge: str, failure: _EdgeFailure) -> None:
        """Record the failure and move `self.current` on; _Fatal if nowhere is left."""
        await self._emit(PlayerEvent("failure", edge=edge, reason=str(failure)))
        book: PlaybackSession | StartupFailover = self.session if self.session is not None else self.pre
        nxt = book.fail_over(self.ranked, edge, failure.reason)
        while nxt is None:
            if not book.can_resteer():
                raise _Fatal("no_edge", f"every edge failed (last: {edge}: {failure})")
            try:
                await self._steer()
            except SteeringError as exc:
                raise _Fatal(exc.kind, f"re-steering failed after {edge}: {failure}: {exc}") from None
            nxt = book.resteered(self.ranked)
            await self._emit(PlayerEvent("resteer"))
        self.current = nxt

    # ----------------------------------------------------------------- the session

    async def _bootstrap(self) -> PlaybackSession:
        """Master + the lowest rendition's media playlist: enough to size the session. When
        that playlist announces each segment's bit rate (packaged media, #EXT-X-BITRATE), every
        rendition's playlist is read too, so the ABR weighs the real sizes of what it chooses."""
        while True:
            edge = self.current
            view = self.edges[edge]
            try:
                master = await self._master(view)
                first = await self._media(view, master.ladder_kbps[0])
                sizes: dict[int, tuple[int, ...]] | None = None
                if first.bitrates_kbps is not None:
                    sizes = {}
                    for rung in master.ladder_kbps:
                        known = (await self._media(view, rung)).bitrates_kbps
                        if known is None:
                            sizes = None
                            break
                        sizes[rung] = known
                break
            except _EdgeFailure as failure:
                await self._fail_over(edge, failure)
        n = len(first.durations)
        if self.max_segments is not None:
            n = max(1, min(n, self.max_segments))
        durations = first.durations[:n]
        segment_s = max(durations)
        session = PlaybackSession(
            master.ladder_kbps, segment_s=segment_s, n_segments=n,
            abr=make_abr(self.abr_name, master.ladder_kbps),
            buffer_cap_s=max(self.buffer_cap_s, segment_s),
            last_segment_s=durations[-1] if n > 1 else segment_s,
            failover_policy=self.policy,
            segment_kbps=sizes,
        )
        self.pre.replay(session)
        return session

    async def _segment(self, edge: str, rendition: int, index: int) -> tuple[bytes, float]:
        """The verified body of one segment and when its request started (session clock).

        The clock starts after the media playlist, so a rendition switch does not
        look like a slow network to the ABR."""
        view = self.edges[edge]
        media = await self._media(view, rendition)
        if media.init_url is not None and rendition not in view.inits:
            init = await self._fetch(media.init_url, self.timeouts.segment_s, MAX_SEGMENT_BYTES)
            self.init_bytes += len(init)
            self._check_file(media.init_url, init, "init segment")
            view.inits.add(rendition)
        started = self.now()
        url = media.segment_urls[index]
        limit_s = self._abandon_after(edge, media.durations[index])
        if limit_s is None:
            body = await self._fetch(url, self.timeouts.segment_s, MAX_SEGMENT_BYTES)
        else:
            try:
                body = await asyncio.wait_for(self._fetch(url, self.timeouts.segment_s, MAX_SEGMENT_BYTES), limit_s)
            except TimeoutError:
                self.slow_edges.mark(edge, time.monotonic())
                raise _EdgeFailure(FailureReason.SLOW, f"segment {rendition}/{index} not in after "
                                                       f"{limit_s * self.speed:.1f} s of media time") from None
        if self.verify:
            if self.digests is not None:
                self._check_file(url, body, f"segment {rendition}/{index}")
            else:
                problem = verify_segment(self.title, rendition, index, body)
                if problem is not None:
                    raise _EdgeFailure(FailureReason.CORRUPT, f"segment {rendition}/{index}: {problem}")
            self.verified_segments += 1
        return body, started

    def _failures(self) -> dict[str, tuple[FailureReason, ...]]:
        book = self.session if self.session is not None else self.pre
        return dict(book.failures)

    def _abandon_after(self, edge: str, media_s: float) -> float | None:
        """Real seconds after which a segment download at `edge` is given up as too slow;
        None: it runs to its own timeout (no rule, or no faster candidate to go to)."""
        if self.slow_rule is None:
            return None
        slow = self.slow_edges.slow(time.monotonic())
        if faster_candidate(self.ranked, edge, slow, self._failures()) is None:
            return None
        return self.slow_rule.abandon_after(media_s) / self.speed

    async def _after_segment(self, s: PlaybackSession, edge: str, index: int, download_s: float) -> None:
        """A segment arrived from `edge` in `download_s` (media clock): leave the edge if too slow."""
        if self.slow_rule is None:
            return
        if not self.slow_rule.too_slow(download_s, s.segment_duration(index)):
            self.slow_edges.clear(edge)
            return
        now = time.monotonic()
        self.slow_edges.mark(edge, now)
        nxt = faster_candidate(self.ranked, edge, self.slow_edges.slow(now), s.failures)
        if nxt is None:
            return  # nothing faster is known: stay (rule 3)
        s.on_failover(edge, nxt, FailureReason.SLOW)
        await self._emit(PlayerEvent("failure", edge=edge, reason=f"{FailureReason.SLOW.value}: segment {index} "
                                                                  f"took {download_s:.1f} s of media time"))
        self.current = nxt

    async def _play(self, s: PlaybackSession) -> None:
        while not (s.finished or s.all_downloaded):
            now = self.now()
            req = s.next_request(now)
            if req is None:
                await asyncio.sleep(s.wait_time(now) / self.speed)
                continue
            edge = self.current
            try:
                body, started = await self._segment(edge, req.bitrate_kbps, req.index)
            except _EdgeFailure as failure:
                await self._fail_over(edge, failure)
                continue
            finished = self.now()
            s.on_segment_downloaded(req.index, req.bitrate_kbps, len(body), started, finished, edge=edge)
            await self._after_segment(s, edge, req.index, finished - started)
            if edge not in self.served_by:
                self.served_by.append(edge)
            self.segments_done += 1
            if self.events is not None and self.segments_done % PROGRESS_EVERY == 0:
                self._session_event("progress")
            await self._emit(PlayerEvent("segment", edge=edge, index=req.index,
                                         bitrate_kbps=req.bitrate_kbps, nbytes=len(body)))
        if s.all_downloaded and not s.finished and self.play_out:
            # A viewer watches to the last frame before the next title: the session lasts its
            # media time (at `speed`), not its download time (rule 8).
            while not s.finished:
                await asyncio.sleep(s.wait_time(self.now()) / self.speed + 1e-4)
                s.advance(self.now())
        if s.all_downloaded and not s.finished:
            # Nothing after the last download can change the QoE: play the buffer out at once.
            clock = s.clock if s.clock is not None else self.now()
            s.advance(clock + s.buffer_s + 1e-6)

    async def run(self) -> PlayReport:
        t_real = time.monotonic()
        error: _Fatal | None = None
        try:
            try:
                await self._steer()
            except SteeringError as exc:
                raise _Fatal(exc.kind, str(exc)) from None
            self.current = self.ranked[0]
            if self.verify:
                await self._load_digests()
            if self.events is not None:
                self._session_event("start")
            self.session = await self._bootstrap()
            self.session.start(0.0)  # start-up counts from the play request
            await self._play(self.session)
        except _Fatal as exc:
            error = exc
            if self.session is not None and not self.session.finished:
                self.session.on_error(exc.kind, fatal=True, now=self.now())
        await self._emit(PlayerEvent("end", reason=None if error is None else error.message))
        report = PlayReport(
            title=self.title,
            isp=self.answered_isp if self.answered_isp is not None else self.isp,
            qoe=None if self.session is None else self.session.report(),
            startup_failures=self.pre.counts() if self.session is None else None,
            errors=0 if error is None else 1,
            error=None if error is None else error.message,
            error_kind=None if error is None else error.kind,
            verify=self.verify,
            verified_segments=self.verified_segments,
            edges=tuple(self.served_by),
            playlist_bytes=self.playlist_bytes,
            media="packaged" if self.digests is not None else ("synthetic" if self.verify else None),
            verified_files=self.verified_files,
            init_bytes=self.init_bytes,
            speed=self.speed,
            wall_s=time.monotonic() - t_real,
        )
        if self.events is not None and self.play_id is not None:
            self._session_event("end", report)
        return report

    def _session_event(self, phase: str, report: PlayReport | None = None) -> None:
        """player.session: the QoE so far (the fields of `ocsim play --json`)."""
        if self.events is None or self.play_id is None:
            return
        q = self.session.report() if self.session is not None else None
        verified = report.verified if report is not None and self.verify else None
        isp = self.answered_isp if self.answered_isp is not None else self.isp
        errors = (q.errors if q is not None else 0) + (report.errors if report is not None else 0)
        if q is None:
            state = "failed" if report is not None else "starting"
            self.events.emit(PlayerSession(self.play_id, phase, self.title, isp, self.current or None, state, None,
                                           0, 0.0, 0.0, 0, 0, errors, 0, 0, 0.0, 0.0, verified))
            return
        self.events.emit(PlayerSession(
            self.play_id, phase, self.title, isp, self.current or None, q.state, q.startup_s, q.rebuffer_count,
            q.rebuffer_s, q.avg_bitrate_kbps, q.switches, q.failovers, errors, q.bytes, q.segments, q.played_s,
            q.qoe_lin, verified))


class _TooLarge(Exception):
    pass


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise _TooLarge(f"body of {resp.content_length} bytes exceeds {limit}")
    if resp.content_length is not None:
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(256 * 1024):
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _error_text(raw: bytes) -> str:
    try:
        obj = json.loads(raw)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return str(obj["error"])[:200]
    except ValueError:
        pass
    return raw[:200].decode("utf-8", errors="replace") or "no body"


async def play_session(
    control_url: str,
    title: str,
    *,
    isp: str | None = None,
    client_ip: str | None = None,
    speed: float = 1.0,
    verify: bool = False,
    abr: str = "bba",
    session: aiohttp.ClientSession | None = None,
    timeouts: Timeouts = Timeouts(),
    failover_policy: FailoverPolicy | None = None,
    buffer_cap_s: float = 60.0,
    max_segments: int | None = None,
    on_event: EventHook | None = None,
    events: EventSink | None = None,
    answers: PlayAnswerCache | None = None,
    slow_rule: SlowEdgeRule | None = SlowEdgeRule(),
    slow_edges: SlowEdges | None = None,
    play_out: bool = False,
) -> PlayReport:
    """Play `title` once, start to end, and report; never raises for network or peer trouble.

    Steering gets `isp` or `client_ip` (or neither: the control plane decides).
    `session` is an aiohttp session to share (e.g. a crowd of players); without
    one a private session is opened and closed. Failures end up in the report:
    `errors` (0 or 1) with `error` / `error_kind` when the session could not go
    on. Bad arguments raise ValueError. `answers`: one viewer's cache of play answers,
    used when the control plane cannot be reached (player.play_answer.PlayAnswerCache).
    `slow_rule`: when an edge is too slow to play from (player.slow_edges; None: never
    leave an edge that answers); `slow_edges`: one viewer's memory of slow edges across
    its sessions (None: this session's own). `play_out`: return only once the last frame
    was shown (the buffer played out at `speed`), as a viewer who starts the next title
    after this one; else as soon as nothing can change the QoE (the last download).
    """
    if isp is not None and client_ip is not None:
        raise ValueError("give isp or client_ip, not both")
    if not (speed > 0 and math.isfinite(speed)):
        raise ValueError("speed must be a positive number")
    if max_segments is not None and max_segments < 1:
        raise ValueError("max_segments must be >= 1")
    make_abr(abr)  # ValueError for an unknown name, before any request
    policy = failover_policy if failover_policy is not None else FailoverPolicy()
    own = session is None
    http = session if session is not None else aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=16, ttl_dns_cache=300))
    try:
        player = _Player(http, control_url, title, isp=isp, client_ip=client_ip, speed=speed,
                         verify=verify, abr=abr, timeouts=timeouts, policy=policy,
                         buffer_cap_s=buffer_cap_s, max_segments=max_segments, on_event=on_event,
                         events=events, answers=answers, slow_rule=slow_rule, slow_edges=slow_edges,
                         play_out=play_out)
        return await player.run()
    finally:
        if own:
            await http.close()
