"""Locust viewers: each user watches titles the way `ocsim play` does, with the same pure core.

A viewer loops: pick a title (Zipf over the catalog's popularity), `POST /v1/play`
on the control plane, fetch the master playlist and media playlists from the
first candidate edge, then segments, paced by a simulated playback clock
(`player.session.PlaybackSession`, gevent sleeps of ``wait_time / speed``), with
the bitrate chosen by `player.abr` and failover down the candidate list (back to
steering when it runs out) by the session's failover rules; a segment slower than its
own duration moves the viewer to a faster candidate, and the viewer ranks that edge last
for a while (`player.slow_edges`, as `ocsim play`; a running download is not abandoned). Only the bytes move
through Locust's fast HTTP client; every decision is the core's.

Everything a viewer asks an edge (playlists and segments) goes over its own
keep-alive connection to that edge (`loadtests.edge_http`: one per viewer per
edge, bodies read into a reused buffer); the control plane is asked through
Locust's client. Every segment's length and header bytes are checked; a share
of the segments (OCSIM_VERIFY_SHARE) is verified byte for byte; OCSIM_VERIFY=1
verifies every byte of every segment. Packaged real media (the catalog says
`"media": "packaged"`) has no header to check: its digest list (`GET /v1/digests/{title}`,
once per process) gives every file's length, checked always, and SHA-256, checked
on the same share; each rendition's init segment (``init``) is fetched before its
first segment, as a real player does.

Locust's request table holds only real HTTP requests, named by kind: ``play``,
``catalog``, ``manifest``, ``segment`` (the segment times are a diagnostic). What
the viewers felt goes to a QoE table of its own (`loadtests.qoe`): failed
sessions, rebuffer ratio, start-up p50/p90, average bitrate, printed at the end
and written to ``<--csv prefix>_qoe.csv``. In distributed mode each worker sends
its sessions to the master with its stats reports; the master writes the table.

Configuration (environment):

    OCSIM_CONTROL       control plane URL (else OCSIM_STATE_FILE, else --host)
    OCSIM_STATE_FILE    `ocsim up` state file: control URL and the ISPs
    OCSIM_ISP           play as this ISP (default: a random ISP of the state file per
                        user, or none: the control plane's fallback)
    OCSIM_SPEED         playback clock speed-up (default 1: real-time viewers)
    OCSIM_VERIFY        1: verify every byte of every segment (costs Locust CPU)
    OCSIM_VERIFY_SHARE  share of segments verified byte for byte (default 0.02); the
                        others get their length and header bytes checked
    OCSIM_MAX_SEGMENTS  stop each viewing after N segments (default: whole title)
    OCSIM_BUFFER_S      player buffer cap in media seconds (default 60)
    OCSIM_ZIPF_ALPHA    Zipf exponent when the catalog has no popularity (default 0.8)
    OCSIM_SHAPE         steady | evening | flash (see loadtests/shapes.py); unset: -u/-r
    OCSIM_CROWD_S       the shape's T: flash window / evening ramp / steady ramp-up, s
    OCSIM_FLASH_TITLE   the flash crowd's title (default: the least popular one)
    OCSIM_TIMEOUT       network timeout per read, seconds (default 10)
    OCSIM_EVENTS        nats://... to publish player.session events to (default: the
                        state file's `events`, set by `ocsim up --events`); `off`: none

With an event pipeline, each viewing sends its play id as `X-Ocsim-Session` (so the
edges' events join to it and to steering's decision) and emits `player.session` events:
`start` when steering answered, `progress` every few segments, `end` with its QoE, the
fields of `ocsim play --json` (`loadtests.session_events`: a relay child, no asyncio here).
"""
from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.lock import Semaphore
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from common.ids import SegmentId
from common.segbytes import HEADER_LEN, SegmentSpec
from loadtests.edge_http import EdgeAnswer, EdgeBodyCut, EdgeConnections, EdgeProtocolError
from common.events import PlayerSession
from loadtests.qoe import QoeTable, SessionRecord
from loadtests.session_events import SessionEvents, make_session_events
from player.abr import FailoverPolicy, FailureReason, make_abr
from player.slow_edges import SlowEdgeRule, SlowEdges, faster_candidate
# Pure modules only: Locust's gevent process must never import aiohttp (player.driver).
from player.errors import PlaylistError, SteeringError
from player.play_answer import Candidate, parse_play_answer
from player.playlists import MasterPlaylist, MediaPlaylist, parse_master, parse_media
from player.session import PlaybackSession, StartupFailover
from player.verify import MediaDigests, check_segment_head, failure_reason_for_status


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw else default


def _state() -> dict[str, Any]:
    path = os.environ.get("OCSIM_STATE_FILE")
    if not path:
        return {}
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"OCSIM_STATE_FILE={path}: {exc}") from None
    return obj if isinstance(obj, dict) else {}


STATE = _state()
CONTROL = os.environ.get("OCSIM_CONTROL") or STATE.get("control")
ISPS: list[str] = sorted(STATE.get("isps", {}) or {})
SPEED = _env_float("OCSIM_SPEED", 1.0)
VERIFY = os.environ.get("OCSIM_VERIFY", "") not in ("", "0", "false", "no")
VERIFY_SHARE = 1.0 if VERIFY else min(1.0, max(0.0, _env_float("OCSIM_VERIFY_SHARE", 0.02)))
MAX_SEGMENTS = int(os.environ["OCSIM_MAX_SEGMENTS"]) if os.environ.get("OCSIM_MAX_SEGMENTS") else None
BUFFER_S = _env_float("OCSIM_BUFFER_S", 60.0)
ZIPF_ALPHA = _env_float("OCSIM_ZIPF_ALPHA", 0.8)
TIMEOUT_S = _env_float("OCSIM_TIMEOUT", 10.0)
SLOW_RULE = SlowEdgeRule()  # when a segment is too slow: the same rule as player.driver (no abandonment here)
SHAPE_NAME = os.environ.get("OCSIM_SHAPE", "").strip()
EVENTS: SessionEvents | None = make_session_events(dict(os.environ), STATE)
PROGRESS_EVERY = 5  # a player.session progress event every this many segments (as player.driver)

if SHAPE_NAME:
    from loadtests import shapes as _shapes

    # Exactly one shape class may be visible in this module: Locust picks it up.
    Shape = _shapes.shape_class(SHAPE_NAME)


class _Catalog:
    """The control plane's catalog, fetched once per process; Zipf title choice."""

    def __init__(self) -> None:
        self.lock = Semaphore()
        self.ids: list[str] = []
        self.weights: list[float] = []
        self.packaged: set[str] = set()  # real media (ocsim package): checked against their digest lists
        self.digests: dict[str, MediaDigests | None] = {}

    def load(self, user: FastHttpUser) -> None:
        with self.lock:
            if self.ids:
                return
            with user.client.get("/v1/catalog", name="catalog", catch_response=True) as resp:
                try:
                    titles = json.loads(resp.content or b"null")["titles"]
                    ids = [str(t["id"]) for t in titles]
                    pops = [float(t.get("popularity") or 0.0) for t in titles]
                    self.packaged = {str(t["id"]) for t in titles if t.get("media") == "packaged"}
                except (ValueError, KeyError, TypeError) as exc:
                    resp.failure(f"bad catalog: {exc}")
                    return
                if not ids:
                    resp.failure("empty catalog")
                    return
                resp.success()
            if sum(pops) > 0:
                weights = pops
            else:  # Zipf by catalog order
                weights = [1.0 / (rank ** ZIPF_ALPHA) for rank in range(1, len(ids) + 1)]
            self.ids, self.weights = ids, weights

    def digest_list(self, user: FastHttpUser, title: str) -> MediaDigests | None:
        """A packaged title's digest list, fetched once per process (None: it could not be had,
        already reported as a failed `digests` request; the viewing then checks statuses only)."""
        with self.lock:
            if title not in self.digests:
                got: MediaDigests | None = None
                with user.client.get(f"/v1/digests/{title}", name="digests", catch_response=True) as resp:
                    try:
                        if resp.status_code != 200:
                            raise ValueError(f"HTTP {resp.status_code}")
                        got = MediaDigests.from_json(json.loads(resp.content or b"null"))
                        resp.success()
                    except ValueError as exc:
                        resp.failure(f"digest list of {title}: {exc}")
                self.digests[title] = got
            return self.digests[title]

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.ids, weights=self.weights, k=1)[0]

    def flash_title(self) -> str:
        explicit = os.environ.get("OCSIM_FLASH_TITLE")
        if explicit:
            return explicit
        return min(zip(self.weights, self.ids))[1]


CATALOG = _Catalog()


# ---------------------------------------------------------------- QoE plumbing
# This process's sessions: finished ones not yet sent to the master, and the live
# viewings (a snapshot of each goes with every report). The master (or a local,
# non-distributed run) merges them into QOE and writes the table at the end.
QOE = QoeTable()
_UNSENT: list[SessionRecord] = []
LIVE: dict[int, "_Viewing"] = {}
_QOE_KEY = "ocsim_qoe"


def _live_records() -> list[SessionRecord]:
    return [v.record(failed=False) for v in list(LIVE.values())]


def _finish(viewing: "_Viewing", *, failed: bool) -> None:
    _UNSENT.append(viewing.record(failed=failed))
    viewing.publish("end", failed=failed)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    sent = list(_UNSENT)
    del _UNSENT[:len(sent)]
    data[_QOE_KEY] = {"finished": [r.to_wire() for r in sent], "live": [r.to_wire() for r in _live_records()]}


def _on_worker_report(client_id: str, data: dict[str, Any], **_kw: Any) -> None:
    if _QOE_KEY in data:
        QOE.merge_wire(client_id, data[_QOE_KEY])


def _on_quitting(environment: Environment, **_kw: Any) -> None:
    if isinstance(environment.runner, WorkerRunner):
        if EVENTS is not None:
            EVENTS.close()
        return
    if not isinstance(environment.runner, MasterRunner):  # local run: this process's own sessions
        for rec in _UNSENT:
            QOE.add_finished(rec)
        _UNSENT.clear()
        QOE.set_live("local", _live_records())
    print("\n" + QOE.format_table(), flush=True)
    if EVENTS is not None:
        EVENTS.close()
        print(f"player.session events: {EVENTS.stats()}", flush=True)
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix:
        Path(f"{prefix}_qoe.csv").write_text(QOE.to_csv())


events.report_to_master.add_listener(_on_report_to_master)  # type: ignore[no-untyped-call]
events.worker_report.add_listener(_on_worker_report)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_on_quitting)  # type: ignore[no-untyped-call]


class _Failed(Exception):
    """The viewing cannot go on."""


class Viewer(FastHttpUser):
    """One viewer: watches one title after another, start to end."""

    host = CONTROL
    wait_time = between(0.0, 1.0)
    network_timeout = TIMEOUT_S
    connection_timeout = min(2.0, TIMEOUT_S)
    max_retries = 0

    def on_stop(self) -> None:
        self.edges.close()

    def on_start(self) -> None:
        self.rng = random.Random()
        self.isp = os.environ.get("OCSIM_ISP") or (self.rng.choice(ISPS) if ISPS else None)
        self.sessions = 0
        self.edges = EdgeConnections(TIMEOUT_S, min(2.0, TIMEOUT_S))
        self.slow_edges = SlowEdges()  # edges too slow to play from, ranked last (player.slow_edges)
        CATALOG.load(self)
        if not CATALOG.ids:
            raise StopUser()

    # ------------------------------------------------------------ HTTP

    def _report(self, name: str, url: str, t0: float, length: int, error: str | None) -> None:
        self.environment.events.request.fire(
            request_type="GET", name=name, response_time=(time.perf_counter() - t0) * 1000,
            response_length=length, exception=None if error is None else RuntimeError(error[:200]),
            context={}, url=url)

    def _fetch(self, url: str, name: str, t0: float, **get: Any) -> EdgeAnswer | FailureReason:
        """One GET on this viewer's connection to the edge of `url`: its answer when the
        status is a success, else why it failed (already reported to Locust)."""
        try:
            conn, target = self.edges.for_url(url)
            ans = conn.get(target, **get)
        except (socket.timeout, gevent.Timeout, TimeoutError) as exc:
            self._report(name, url, t0, 0, f"{FailureReason.TIMEOUT.value}: {exc!r}")
            return FailureReason.TIMEOUT
        except EdgeBodyCut as exc:  # a lost connection, or an edge refusing to finish a changed file
            self._report(name, url, t0, 0, f"{FailureReason.TRUNCATED.value}: {exc}")
            return FailureReason.TRUNCATED
        except EdgeProtocolError as exc:
            self._report(name, url, t0, 0, f"{FailureReason.CORRUPT.value}: {exc}")
            return FailureReason.CORRUPT
        except OSError as exc:
            self._report(name, url, t0, 0, f"{FailureReason.CONNECT.value}: {exc!r}")
            return FailureReason.CONNECT
        why = failure_reason_for_status(ans.status)
        if why is not None:
            self._report(name, url, t0, ans.length, f"HTTP {ans.status}")
            return why
        return ans

    def _edge_get(self, url: str, name: str, *, body: bool = False, segment: SegmentId | None = None,
                  full: bool = False, digests: MediaDigests | None = None,
                  session: str | None = None) -> bytes | int | FailureReason:
        """GET url from an edge over this viewer's connection to it. Playlists (`body`):
        the body. Segments: the length, after the header check (and, when `full`, a byte
        for byte check). Packaged media (`digests`): the length, checked against the
        digest list (and, when `full`, the SHA-256 of the body). Else why it failed
        (already reported to Locust as a failure)."""
        if digests is not None:
            return self._packaged_get(url, name, digests, full, session)
        t0 = time.perf_counter()
        verified: list[bool] = [True]
        spec: list[SegmentSpec | None] = [None]

        def on_chunk(offset: int, length: int, chunk: memoryview) -> None:
            assert segment is not None
            if spec[0] is None:
                if length < HEADER_LEN:
                    verified[0] = False
                    return
                spec[0] = SegmentSpec(segment, length)
            checker = spec[0]
            if verified[0] and checker is not None and not checker.verify(offset, chunk):
                verified[0] = False

        ans = self._fetch(url, name, t0, keep_head=HEADER_LEN if segment else 0, keep_body=body,
                          on_chunk=on_chunk if full and segment is not None else None, session=session)
        if isinstance(ans, FailureReason):
            return ans
        if segment is not None:
            problem = check_segment_head(segment.title, segment.rendition, segment.index, ans.head, ans.length)
            if problem is None and full and not verified[0]:
                problem = "body bytes differ"
            if problem is not None:
                self._report(name, url, t0, ans.length, f"corrupt: {problem}")
                return FailureReason.CORRUPT
            self._report(name, url, t0, ans.length, None)
            return ans.length
        assert ans.body is not None
        self._report(name, url, t0, ans.length, None)
        return ans.body

    def _packaged_get(self, url: str, name: str, digests: MediaDigests, full: bool,
                      session: str | None = None) -> int | FailureReason:
        t0 = time.perf_counter()
        ans = self._fetch(url, name, t0, keep_head=0, keep_body=full, session=session)
        if isinstance(ans, FailureReason):
            return ans
        if full:
            assert ans.body is not None
            problem = digests.check(url, bytes(ans.body))
        else:  # the cheap check: the length the digest list records
            want = digests.files.get(digests.name_of(url) or "")
            problem = None if want is not None and want[0] == ans.length else \
                f"{ans.length} bytes, the digest list says {want[0] if want else 'nothing'}"
        if problem is not None:
            self._report(name, url, t0, ans.length, f"corrupt: {problem}")
            return FailureReason.CORRUPT
        self._report(name, url, t0, ans.length, None)
        return ans.length

    def _steer(self, title: str) -> tuple[str | None, str | None, tuple[Candidate, ...]]:
        """(the ISP steering answered for, the play id, the ranked candidates)."""
        body: dict[str, str] = {"title": title}
        if self.isp:
            body["isp"] = self.isp
        with self.client.post("/v1/play", json=body, name="play", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"play: HTTP {resp.status_code}")
                raise _Failed(f"play answered {resp.status_code}")
            try:
                obj = json.loads(resp.content or b"null")
                isp, candidates = parse_play_answer(obj)
            except (ValueError, SteeringError) as exc:
                resp.failure(f"play: {exc}")
                raise _Failed(str(exc)) from None
            resp.success()
            pid = obj.get("play_id")
            ok = isinstance(pid, str) and 0 < len(pid) <= 64 and pid.isascii() and pid.isalnum()
            return isp, (pid if ok else None), candidates

    # ------------------------------------------------------------ one viewing

    @task
    def watch(self) -> None:
        flash = bool(SHAPE_NAME) and getattr(Shape, "flash", False) and self.sessions == 0
        title = CATALOG.flash_title() if flash else CATALOG.pick(self.rng)
        self.sessions += 1
        viewing = _Viewing(self, title, flash)
        LIVE[id(viewing)] = viewing
        # A viewing Locust stops (GreenletExit) stays in LIVE: counted as still playing.
        try:
            viewing.run()
        except _Failed:
            del LIVE[id(viewing)]
            _finish(viewing, failed=True)
            return
        del LIVE[id(viewing)]
        _finish(viewing, failed=False)


class _Viewing:
    """One title, start to end: the gevent twin of player.driver._Player."""

    def __init__(self, user: Viewer, title: str, flash: bool) -> None:
        self.user = user
        self.title = title
        self.flash = flash
        self.policy = FailoverPolicy()
        self.book: PlaybackSession | StartupFailover = StartupFailover(self.policy)
        self.session: PlaybackSession | None = None
        self.candidates: dict[str, Candidate] = {}
        self.ranked: list[str] = []
        self.masters: dict[str, MasterPlaylist] = {}
        self.media: dict[tuple[str, int], MediaPlaylist] = {}
        self.inits: set[tuple[str, int]] = set()  # (edge, rendition) whose init segment came
        self.current = ""
        self.t0 = time.monotonic()
        self.play_id: str | None = None   # the latest play answer's; sent as X-Ocsim-Session
        self.answered_isp: str | None = None
        self.started = False
        self.segments_done = 0
        self.digests = CATALOG.digest_list(user, title) if title in CATALOG.packaged else None

    def report(self) -> Any:
        return None if self.session is None else self.session.report()

    def record(self, *, failed: bool) -> SessionRecord:
        return SessionRecord.of(self.report(), failed=failed, flash=self.flash)

    def now(self) -> float:
        return (time.monotonic() - self.t0) * SPEED

    def publish(self, phase: str, *, failed: bool = False) -> None:
        """One player.session event: the QoE so far (as player.driver's, from the same core)."""
        if EVENTS is None or self.play_id is None:
            return
        q = self.report()
        isp = self.answered_isp if self.answered_isp is not None else self.user.isp
        verified = (not failed) if VERIFY and phase == "end" else None
        if q is None:
            state = "failed" if failed else "starting"
            EVENTS.emit(PlayerSession(self.play_id, phase, self.title, isp, self.current or None, state, None,
                                      0, 0.0, 0.0, 0, 0, int(failed), 0, 0, 0.0, 0.0, verified))
            return
        EVENTS.emit(PlayerSession(
            self.play_id, phase, self.title, isp, self.current or None, "failed" if failed else q.state,
            q.startup_s, q.rebuffer_count, q.rebuffer_s, q.avg_bitrate_kbps, q.switches, q.failovers,
            q.errors + int(failed), q.bytes, q.segments, q.played_s, q.qoe_lin, verified))

    def steer(self) -> None:
        self.answered_isp, pid, cands = self.user._steer(self.title)
        if pid is not None:
            self.play_id = pid
        if not self.started:
            self.started = True
            self.publish("start")
        self.candidates = {c.edge: c for c in cands}
        self.ranked = self.user.slow_edges.rank([c.edge for c in cands], time.monotonic())
        self.masters.clear()
        self.media.clear()
        self.inits.clear()

    def fail_over(self, edge: str, reason: FailureReason) -> None:
        nxt = self.book.fail_over(self.ranked, edge, reason)
        while nxt is None:
            if not self.book.can_resteer():
                raise _Failed(f"every edge failed (last {edge}: {reason.value})")
            self.steer()
            nxt = self.book.resteered(self.ranked)
        self.current = nxt

    def after_segment(self, s: PlaybackSession, edge: str, index: int, download_s: float) -> None:
        """player.driver's rule: a segment slower than its duration moves the viewer on."""
        memory = self.user.slow_edges
        if not SLOW_RULE.too_slow(download_s, s.segment_duration(index)):
            memory.clear(edge)
            return
        now = time.monotonic()
        memory.mark(edge, now)
        nxt = faster_candidate(self.ranked, edge, memory.slow(now), s.failures)
        if nxt is not None:
            s.on_failover(edge, nxt, FailureReason.SLOW)
            self.current = nxt

    def master(self, edge: str) -> MasterPlaylist | FailureReason:
        m = self.masters.get(edge)
        if m is None:
            url = self.candidates[edge].url
            got = self.user._edge_get(url, "manifest", body=True, session=self.play_id)
            if isinstance(got, FailureReason):
                return got
            assert isinstance(got, bytes)
            try:
                m = self.masters[edge] = parse_master(got.decode("utf-8"), url)
            except (PlaylistError, UnicodeDecodeError):
                return FailureReason.CORRUPT
        return m

    def media_playlist(self, edge: str, rendition: int) -> MediaPlaylist | FailureReason:
        mp = self.media.get((edge, rendition))
        if mp is None:
            m = self.master(edge)
            if isinstance(m, FailureReason):
                return m
            url = m.renditions.get(rendition)
            if url is None:
                return FailureReason.CORRUPT
            got = self.user._edge_get(url, "manifest", body=True, session=self.play_id)
            if isinstance(got, FailureReason):
                return got
            assert isinstance(got, bytes)
            try:
                mp = self.media[(edge, rendition)] = parse_media(got.decode("utf-8"), url)
            except (PlaylistError, UnicodeDecodeError):
                return FailureReason.CORRUPT
            if self.session is not None and len(mp.segment_urls) < self.session.n_segments:
                return FailureReason.CORRUPT
        return mp

    def _segment_kbps(self, edge: str, m: MasterPlaylist) -> dict[int, tuple[int, ...]] | None:
        """Every rung's per-segment bit rates, when all its playlists on `edge` announce them."""
        out: dict[int, tuple[int, ...]] = {}
        for rung in m.ladder_kbps:
            mp = self.media.get((edge, rung))
            if mp is None or mp.bitrates_kbps is None:
                return None
            out[rung] = mp.bitrates_kbps
        return out

    def run(self) -> None:
        if self.title in CATALOG.packaged and self.digests is None:
            raise _Failed(f"no digest list for packaged title {self.title}: its bytes cannot be checked")
        self.steer()
        self.current = self.ranked[0]
        while True:  # bootstrap: master + lowest rendition, to size the session
            edge = self.current
            m = self.master(edge)
            first = m if isinstance(m, FailureReason) else self.media_playlist(edge, m.ladder_kbps[0])
            if not isinstance(first, FailureReason) and first.bitrates_kbps is not None:
                # packaged media announce each segment's bit rate: read every rung's, for the ABR
                assert isinstance(m, MasterPlaylist)
                for rung in m.ladder_kbps:
                    rung_mp = self.media_playlist(edge, rung)
                    if isinstance(rung_mp, FailureReason):
                        first = rung_mp
                        break
            if not isinstance(first, FailureReason):
                break
            self.fail_over(edge, first)
        assert isinstance(m, MasterPlaylist)
        n = len(first.durations) if MAX_SEGMENTS is None else max(1, min(MAX_SEGMENTS, len(first.durations)))
        seg_s = max(first.durations[:n])
        s = PlaybackSession(m.ladder_kbps, segment_s=seg_s, n_segments=n,
                            abr=make_abr("bba", m.ladder_kbps), buffer_cap_s=max(BUFFER_S, seg_s),
                            last_segment_s=first.durations[n - 1] if n > 1 else seg_s,
                            failover_policy=self.policy, segment_kbps=self._segment_kbps(edge, m))
        assert isinstance(self.book, StartupFailover)
        self.book.replay(s)
        self.book = self.session = s
        s.start(0.0)
        rng = self.user.rng
        # Until the last frame is shown, as a real player: once every segment is in, the
        # viewer plays its buffer out before it starts another title (real-time pacing).
        while not s.finished:
            now = self.now()
            req = s.next_request(now)
            if req is None:
                gevent.sleep(max(s.wait_time(now), 0.001) / SPEED)
                continue
            edge = self.current
            mp = self.media_playlist(edge, req.bitrate_kbps)
            if isinstance(mp, FailureReason):
                self.fail_over(edge, mp)
                continue
            started = self.now()  # after the playlist: a switch is not a slow network
            r, i = req.bitrate_kbps, req.index
            full = VERIFY_SHARE >= 1.0 or (VERIFY_SHARE > 0.0 and rng.random() < VERIFY_SHARE)
            if mp.init_url is not None and (edge, r) not in self.inits:  # fMP4: the init segment first
                init = self.user._edge_get(mp.init_url, "init", digests=self.digests, full=full,
                                           session=self.play_id)
                if isinstance(init, FailureReason):
                    self.fail_over(edge, init)
                    continue
                self.inits.add((edge, r))
                started = self.now()
            got = self.user._edge_get(mp.segment_urls[i], "segment", segment=SegmentId(self.title, r, i), full=full,
                                      digests=self.digests, session=self.play_id)
            if isinstance(got, FailureReason):
                self.fail_over(edge, got)
                continue
            assert isinstance(got, int)
            finished = self.now()
            s.advance(finished)
            s.on_segment_downloaded(i, r, got, started, finished, edge=edge)
            self.after_segment(s, edge, i, finished - started)
            self.segments_done += 1
            if self.segments_done % PROGRESS_EVERY == 0:
                self.publish("progress")

