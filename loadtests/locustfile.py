"""Locust viewers: each user watches titles the way `ocsim play` does, with the same pure core.

A viewer loops: pick a title (Zipf over the catalog's popularity), `POST /v1/play`
on the control plane, fetch the master playlist and media playlists from the
first candidate edge, then segments, paced by a simulated playback clock
(`player.session.PlaybackSession`, gevent sleeps of ``wait_time / speed``), with
the bitrate chosen by `player.abr` and failover down the candidate list (back to
steering when it runs out) by the session's failover rules. Only the bytes move
through Locust's fast HTTP client; every decision is the core's.

Request stats are named by kind: ``play``, ``catalog``, ``manifest``, ``segment``.
QoE shows up as request type ``QOE`` (in the CSV next to the HTTP rows):
``startup`` (response time = start-up delay, media ms), ``rebuffer`` (one per
stall, response time = its length, media ms), ``failover`` (one per move to
another edge or back to steering), ``session`` (one per finished viewing,
response time = wall ms), ``session_failed`` (a failure: the viewing could not
go on) and ``flash`` (a viewer of the flash crowd started the flash title).

Configuration (environment):

    OCSIM_CONTROL       control plane URL (else OCSIM_STATE_FILE, else --host)
    OCSIM_STATE_FILE    `ocsim up` state file: control URL and the ISPs
    OCSIM_ISP           play as this ISP (default: a random ISP of the state file per
                        user, or none: the control plane's fallback)
    OCSIM_SPEED         playback clock speed-up (default 1: real-time viewers)
    OCSIM_VERIFY        1: verify every segment's bytes (costs Locust CPU)
    OCSIM_MAX_SEGMENTS  stop each viewing after N segments (default: whole title)
    OCSIM_BUFFER_S      player buffer cap in media seconds (default 60)
    OCSIM_ZIPF_ALPHA    Zipf exponent when the catalog has no popularity (default 0.8)
    OCSIM_SHAPE         steady | ramp | flash (see loadtests/shapes.py); unset: -u/-r
    OCSIM_FLASH_TITLE   the flash crowd's title (default: the least popular one)
    OCSIM_TIMEOUT       network timeout per read, seconds (default 10)
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
from locust import FastHttpUser, between, task
from locust.exception import StopUser

from player.abr import FailoverPolicy, FailureReason, make_abr
# Pure modules only: Locust's gevent process must never import aiohttp (player.driver).
from player.errors import PlaylistError, SteeringError
from player.play_answer import Candidate, parse_play_answer
from player.playlists import MasterPlaylist, MediaPlaylist, parse_master, parse_media
from player.session import PlaybackSession, PlaybackState, StartupFailover
from player.verify import failure_reason_for_status, verify_segment


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
MAX_SEGMENTS = int(os.environ["OCSIM_MAX_SEGMENTS"]) if os.environ.get("OCSIM_MAX_SEGMENTS") else None
BUFFER_S = _env_float("OCSIM_BUFFER_S", 60.0)
ZIPF_ALPHA = _env_float("OCSIM_ZIPF_ALPHA", 0.8)
TIMEOUT_S = _env_float("OCSIM_TIMEOUT", 10.0)
SHAPE_NAME = os.environ.get("OCSIM_SHAPE", "").strip()

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

    def load(self, user: FastHttpUser) -> None:
        with self.lock:
            if self.ids:
                return
            with user.client.get("/v1/catalog", name="catalog", catch_response=True) as resp:
                try:
                    titles = json.loads(resp.content or b"null")["titles"]
                    ids = [str(t["id"]) for t in titles]
                    pops = [float(t.get("popularity") or 0.0) for t in titles]
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

    def pick(self, rng: random.Random) -> str:
        return rng.choices(self.ids, weights=self.weights, k=1)[0]

    def flash_title(self) -> str:
        explicit = os.environ.get("OCSIM_FLASH_TITLE")
        if explicit:
            return explicit
        return min(zip(self.weights, self.ids))[1]


CATALOG = _Catalog()


class _Failed(Exception):
    """The viewing cannot go on."""


class Viewer(FastHttpUser):
    """One viewer: watches one title after another, start to end."""

    host = CONTROL
    wait_time = between(0.0, 1.0)
    network_timeout = TIMEOUT_S
    connection_timeout = min(2.0, TIMEOUT_S)
    max_retries = 0

    def on_start(self) -> None:
        self.rng = random.Random()
        self.isp = os.environ.get("OCSIM_ISP") or (self.rng.choice(ISPS) if ISPS else None)
        self.sessions = 0
        CATALOG.load(self)
        if not CATALOG.ids:
            raise StopUser()

    # ------------------------------------------------------------ reporting

    def _qoe(self, name: str, ms: float = 0.0, error: str | None = None) -> None:
        self.environment.events.request.fire(
            request_type="QOE", name=name, response_time=ms, response_length=0,
            exception=None if error is None else RuntimeError(error), context={})

    # ------------------------------------------------------------ HTTP

    def _get(self, url: str, name: str, check: Any = None) -> bytes | FailureReason:
        """GET url; the body, or why it failed (already reported to Locust as a failure)."""
        with self.client.get(url, name=name, catch_response=True) as resp:
            if resp.status_code == 0:  # no HTTP answer: geventhttpclient's ErrorResponse
                err = getattr(resp, "error", None)
                reason = (FailureReason.TIMEOUT if isinstance(err, (socket.timeout, gevent.Timeout, TimeoutError))
                          else FailureReason.CONNECT)
                resp.failure(f"{reason.value}: {err!r}"[:200])
                return reason
            why = failure_reason_for_status(resp.status_code)
            if why is not None:
                resp.failure(f"HTTP {resp.status_code}")
                return why
            body = resp.content or b""
            if check is not None:
                problem = check(body)
                if problem is not None:
                    resp.failure(f"corrupt: {problem}"[:200])
                    return FailureReason.CORRUPT
            resp.success()
            return body

    def _steer(self, title: str) -> tuple[Candidate, ...]:
        body: dict[str, str] = {"title": title}
        if self.isp:
            body["isp"] = self.isp
        with self.client.post("/v1/play", json=body, name="play", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"play: HTTP {resp.status_code}")
                raise _Failed(f"play answered {resp.status_code}")
            try:
                _, candidates = parse_play_answer(json.loads(resp.content or b"null"))
            except (ValueError, SteeringError) as exc:
                resp.failure(f"play: {exc}")
                raise _Failed(str(exc)) from None
            resp.success()
            return candidates

    # ------------------------------------------------------------ one viewing

    @task
    def watch(self) -> None:
        flash = bool(SHAPE_NAME) and getattr(Shape, "flash", False) and self.sessions == 0
        title = CATALOG.flash_title() if flash else CATALOG.pick(self.rng)
        self.sessions += 1
        if flash:
            self._qoe("flash")
        t_wall = time.monotonic()
        try:
            _Viewing(self, title).run()
        except _Failed as exc:
            self._qoe("session_failed", (time.monotonic() - t_wall) * 1000, str(exc))
            return
        self._qoe("session", (time.monotonic() - t_wall) * 1000)


class _Viewing:
    """One title, start to end: the gevent twin of player.driver._Player."""

    def __init__(self, user: Viewer, title: str) -> None:
        self.user = user
        self.title = title
        self.policy = FailoverPolicy()
        self.book: PlaybackSession | StartupFailover = StartupFailover(self.policy)
        self.session: PlaybackSession | None = None
        self.candidates: dict[str, Candidate] = {}
        self.ranked: list[str] = []
        self.masters: dict[str, MasterPlaylist] = {}
        self.media: dict[tuple[str, int], MediaPlaylist] = {}
        self.current = ""
        self.t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.t0) * SPEED

    def steer(self) -> None:
        cands = self.user._steer(self.title)
        self.candidates = {c.edge: c for c in cands}
        self.ranked = [c.edge for c in cands]
        self.masters.clear()
        self.media.clear()

    def fail_over(self, edge: str, reason: FailureReason) -> None:
        nxt = self.book.fail_over(self.ranked, edge, reason)
        self.user._qoe("failover")
        while nxt is None:
            if not self.book.can_resteer():
                raise _Failed(f"every edge failed (last {edge}: {reason.value})")
            self.steer()
            nxt = self.book.resteered(self.ranked)
        self.current = nxt

    def master(self, edge: str) -> MasterPlaylist | FailureReason:
        m = self.masters.get(edge)
        if m is None:
            url = self.candidates[edge].url
            got = self.user._get(url, "manifest", check=lambda b: _parses(parse_master, b, url))
            if isinstance(got, FailureReason):
                return got
            m = self.masters[edge] = parse_master(got.decode(), url)
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
            got = self.user._get(url, "manifest", check=lambda b: _parses(parse_media, b, url))
            if isinstance(got, FailureReason):
                return got
            mp = self.media[(edge, rendition)] = parse_media(got.decode(), url)
            if self.session is not None and len(mp.segment_urls) < self.session.n_segments:
                return FailureReason.CORRUPT
        return mp

    def run(self) -> None:
        self.steer()
        self.current = self.ranked[0]
        while True:  # bootstrap: master + lowest rendition, to size the session
            edge = self.current
            m = self.master(edge)
            first = m if isinstance(m, FailureReason) else self.media_playlist(edge, m.ladder_kbps[0])
            if not isinstance(first, FailureReason):
                break
            self.fail_over(edge, first)
        assert isinstance(m, MasterPlaylist)
        n = len(first.durations) if MAX_SEGMENTS is None else max(1, min(MAX_SEGMENTS, len(first.durations)))
        seg_s = max(first.durations[:n])
        s = PlaybackSession(m.ladder_kbps, segment_s=seg_s, n_segments=n,
                            abr=make_abr("bba", m.ladder_kbps), buffer_cap_s=max(BUFFER_S, seg_s),
                            last_segment_s=first.durations[n - 1] if n > 1 else seg_s,
                            failover_policy=self.policy)
        assert isinstance(self.book, StartupFailover)
        self.book.replay(s)
        self.book = self.session = s
        s.start(0.0)
        rebuffered_s = 0.0
        while not (s.finished or s.all_downloaded):
            now = self.now()
            req = s.next_request(now)
            if req is None:
                gevent.sleep(s.wait_time(now) / SPEED)
                continue
            edge = self.current
            mp = self.media_playlist(edge, req.bitrate_kbps)
            if isinstance(mp, FailureReason):
                self.fail_over(edge, mp)
                continue
            started = self.now()  # after the playlist: a switch is not a slow network
            r, i = req.bitrate_kbps, req.index
            check = (lambda b: verify_segment(self.title, r, i, b)) if VERIFY else None
            got = self.user._get(mp.segment_urls[i], "segment", check=check)
            if isinstance(got, FailureReason):
                self.fail_over(edge, got)
                continue
            finished = self.now()
            s.advance(finished)
            stalled = s.state is PlaybackState.REBUFFERING
            s.on_segment_downloaded(i, r, len(got), started, finished, edge=edge)
            if i == 0:
                startup = s.report().startup_s
                self.user._qoe("startup", (startup or 0.0) * 1000)
            elif stalled:
                total = s.report().rebuffer_s
                self.user._qoe("rebuffer", (total - rebuffered_s) * 1000)
                rebuffered_s = total


def _parses(parser: Any, body: bytes, url: str) -> str | None:
    try:
        parser(body.decode("utf-8"), url)
    except (PlaylistError, UnicodeDecodeError) as exc:
        return str(exc)
    return None
