"""The asyncio player driver (player/driver.py) and `ocsim play`.

Two levels:

* in-process: a fake control plane and fake edges (aiohttp apps on loopback,
  real sockets) that serve the real playlists and synthetic bytes and can be
  told to misbehave (refuse, 5xx, 403, stall, serve wrong or truncated bytes);
  these pin down failover, error reporting and verification in well under a
  second each;
* real processes: origin + control + two edges of one ISP (`topology` fixture,
  or `ocsim up` when it exists), `ocsim play --verify --json` verifies every
  byte, and a kill -9 of the serving edge mid-session is survived with a
  failover and no unrecovered error.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.topologies import ONE_ISP_TWO_EDGES, SHORT_CATALOG
from aiohttp import web

from common.content import Catalog, Title
from common.errors import OcsimError, UpstreamError
from common.hls import master_playlist, media_playlist
from common.ids import ContentKind, parse_content_path
from common.tokens import split_token_path
from player.abr import FailoverPolicy, FailureReason
from player.driver import Timeouts, play_session
from player.errors import ControlUnavailable, PlayerError, PlaylistError, SteeringError, UnknownTitle
from player.play_answer import parse_play_answer
from player.playlists import parse_master, parse_media
from player.report import PlayerEvent
from player.verify import failure_reason_for_status, verify_segment

TITLE = Title("short-a", 30.0)  # 8 segments, the last one 2 s
CATALOG = Catalog.of([TITLE, Title("short-b", 24.0), Title("short-c", 40.0)])
FAST = Timeouts(connect_s=1.0, read_s=1.0, segment_s=3.0, playlist_s=3.0, steering_s=3.0)
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- pure parts


def test_parse_master_resolves_relative_uris_and_keeps_the_token() -> None:
    url = "http://e1:8080/t/k1.99.isp-a.SIG/content/short-a/master.m3u8"
    m = parse_master(master_playlist(TITLE), url)
    assert m.ladder_kbps == TITLE.renditions
    assert m.renditions[750] == "http://e1:8080/t/k1.99.isp-a.SIG/content/short-a/750/index.m3u8"


def test_parse_media_durations_and_urls() -> None:
    url = "http://e1/t/TOK/content/short-a/750/index.m3u8"
    m = parse_media(media_playlist(TITLE, 750), url)
    assert len(m.segment_urls) == TITLE.segment_count == 8
    assert m.durations[0] == 4.0 and m.durations[-1] == pytest.approx(2.0)
    assert m.segment_urls[3] == "http://e1/t/TOK/content/short-a/750/3.seg"


def test_our_parser_agrees_with_the_m3u8_library() -> None:
    m3u8 = pytest.importorskip("m3u8")
    url = "http://e1/t/TOK/content/short-a/master.m3u8"
    ours = parse_master(master_playlist(TITLE), url)
    theirs = m3u8.loads(master_playlist(TITLE), uri=url)
    assert sorted(ours.renditions.values()) == sorted(p.absolute_uri for p in theirs.playlists)
    media = m3u8.loads(media_playlist(TITLE, 235), uri=ours.renditions[235])
    mine = parse_media(media_playlist(TITLE, 235), ours.renditions[235])
    assert list(mine.segment_urls) == [s.absolute_uri for s in media.segments]
    assert list(mine.durations) == [s.duration for s in media.segments]


@pytest.mark.parametrize("text", [
    "", "hello", "#EXTM3U\n", "#EXTM3U\n750/index.m3u8\n",
    '#EXTM3U\n#EXT-X-STREAM-INF:CODECS="a,b"\nx.m3u8\n',
    "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\na\n#EXT-X-STREAM-INF:BANDWIDTH=1000000\nb\n",
])
def test_broken_master_playlists_are_refused(text: str) -> None:
    with pytest.raises(PlaylistError):
        parse_master(text, "http://e/t/x/content/t/master.m3u8")


@pytest.mark.parametrize("text", [
    "#EXTM3U\n#EXT-X-ENDLIST\n",
    "#EXTM3U\n0.seg\n#EXT-X-ENDLIST\n",
    "#EXTM3U\n#EXTINF:4.0,\n0.seg\n",                 # live, not VOD
    "#EXTM3U\n#EXTINF:abc,\n0.seg\n#EXT-X-ENDLIST\n",
    "#EXTM3U\n#EXTINF:-1,\n0.seg\n#EXT-X-ENDLIST\n",
    "#EXTM3U\n#EXTINF:nan,\n0.seg\n#EXT-X-ENDLIST\n",
])
def test_broken_media_playlists_are_refused(text: str) -> None:
    with pytest.raises(PlaylistError):
        parse_media(text, "http://e/t/x/content/t/235/index.m3u8")


def test_verify_segment_accepts_the_real_bytes_only() -> None:
    spec = TITLE.segment(750, 2)
    body = spec.read(0, spec.length)
    assert verify_segment("short-a", 750, 2, body) is None
    assert "misrouted" in str(verify_segment("short-a", 750, 3, body))
    assert "truncated" in str(verify_segment("short-a", 750, 2, body[:-1]))
    flipped = bytearray(body)
    flipped[-5] ^= 0xFF
    assert verify_segment("short-a", 750, 2, bytes(flipped)) == "body bytes differ"
    assert verify_segment("short-a", 750, 2, b"x" * 500) == "no segment header"


def test_player_errors_hang_under_the_one_tree() -> None:
    """common/errors.py is the one exception tree: the player's errors are its upstream's fault."""
    for cls in (PlayerError, SteeringError, UnknownTitle, ControlUnavailable, PlaylistError):
        assert issubclass(cls, UpstreamError) and issubclass(cls, OcsimError)
    exc = UnknownTitle("unknown title 'x'")
    assert (exc.kind, exc.reason, str(exc), exc.status) == ("unknown_title", "unknown title 'x'", "unknown title 'x'", 502)
    assert issubclass(UnknownTitle, SteeringError) and not issubclass(PlaylistError, SteeringError)


@pytest.mark.parametrize(("status", "reason"), [
    (200, None), (403, FailureReason.FORBIDDEN), (404, FailureReason.NOT_FOUND),
    (416, FailureReason.NOT_FOUND), (502, FailureReason.SERVER_ERROR), (504, FailureReason.SERVER_ERROR),
    (206, FailureReason.CORRUPT),
])
def test_failure_reason_for_status(status: int, reason: FailureReason | None) -> None:
    assert failure_reason_for_status(status) is reason


@pytest.mark.parametrize("obj", [
    None, [], {}, {"candidates": []}, {"candidates": [{"edge": "e1"}]},
    {"candidates": [{"edge": "e1", "url": "/relative"}]},
])
def test_malformed_play_answers(obj: Any) -> None:
    with pytest.raises(SteeringError):
        parse_play_answer(obj)


# --------------------------------------------------------------------------- fake services


@dataclass
class FakeEdge:
    """An edge that serves the real playlists and bytes, and misbehaves on demand.

    `mode`: "ok", "refuse" (the port closes), "503", "403", "404", "stall",
    "corrupt" (flipped bytes), "wrong" (another segment's bytes), "truncate"
    (Content-Length promises more than is sent), "badmaster". `after` lets the
    first N segment requests through before the mode applies.
    """

    name: str
    mode: str = "ok"
    after: int = 0
    requests: list[str] = field(default_factory=list)
    segments_served: int = 0
    url: str = ""
    runner: web.AppRunner | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token, path = split_token_path(request.path)
        self.requests.append(path)
        if not token:
            return web.json_response({"error": "missing token"}, status=403)
        ref = parse_content_path(path)
        title = CATALOG.get(ref.title)
        is_segment = ref.kind is ContentKind.SEGMENT
        active = self.mode != "ok" and (not is_segment or self.segments_served >= self.after)
        if active and self.after and not is_segment:
            active = False  # with `after`, playlists stay fine
        if active and self.mode in ("503", "403", "404"):
            return web.json_response({"error": "injected"}, status=int(self.mode))
        if active and self.mode == "stall":
            try:
                await asyncio.wait_for(self.release.wait(), 30)  # set by stop(): no slow teardown
            except TimeoutError:
                pass
        if ref.kind is ContentKind.MASTER:
            text = "#EXTM3U\nnonsense\n" if active and self.mode == "badmaster" else master_playlist(title)
            return web.Response(text=text, content_type="application/vnd.apple.mpegurl")
        if ref.kind is ContentKind.MEDIA:
            assert ref.rendition is not None
            return web.Response(text=media_playlist(title, ref.rendition),
                                content_type="application/vnd.apple.mpegurl")
        assert ref.rendition is not None and ref.index is not None
        spec = title.segment(ref.rendition, ref.index)
        body = spec.read(0, spec.length)
        self.segments_served += 1
        if active and self.mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        if active and self.mode == "wrong":
            other = title.segment(ref.rendition, (ref.index + 1) % title.segment_count)
            body = other.read(0, other.length)
        if active and self.mode == "truncate":
            resp = web.StreamResponse(headers={"Content-Length": str(len(body))})
            await resp.prepare(request)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=body, content_type="application/octet-stream")

    async def start(self) -> FakeEdge:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        if self.mode == "refuse":
            await self.stop()
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@dataclass
class FakeControl:
    edges: list[FakeEdge]
    plays: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    url: str = ""
    runner: web.AppRunner | None = None

    async def play(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.plays.append(body)
        if self.status != 200:
            return web.json_response({"error": "injected"}, status=self.status)
        if body.get("title") not in CATALOG:
            return web.json_response({"error": "unknown title"}, status=404)
        cands = [{"edge": e.name, "url": f"{e.url}/t/k1.9999999999.isp-a.{'A' * 43}/content/{body['title']}/master.m3u8"}
                 for e in self.edges]
        return web.json_response({"title": body["title"], "isp": body.get("isp", "isp-a"), "candidates": cands})

    async def start(self) -> FakeControl:
        app = web.Application()
        app.router.add_post("/v1/play", self.play)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def fake_cdn(*modes: str, after: int = 0) -> tuple[FakeControl, list[FakeEdge]]:
    edges = [await FakeEdge(f"e{i + 1}", mode, after if mode != "ok" else 0).start() for i, mode in enumerate(modes)]
    return await FakeControl(edges).start(), edges


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    things: list[Any] = []
    yield things
    for t in reversed(things):
        await t.stop()


async def run(modes: tuple[str, ...], cleanup: list[Any], *, after: int = 0, **kw: Any) -> tuple[dict[str, Any], FakeControl, list[FakeEdge]]:
    control, edges = await fake_cdn(*modes, after=after)
    cleanup.extend([control, *edges])
    kw.setdefault("speed", 200.0)
    kw.setdefault("timeouts", FAST)
    # at 200x a 4 s segment is due in 20 ms: a busy machine must not make these tests about
    # slow edges (those have their own, below, at 20x)
    kw.setdefault("slow_rule", None)
    report = await play_session(control.url, TITLE.id, isp="isp-a", **kw)
    return report.to_dict(), control, edges


# --------------------------------------------------------------------------- driver, in-process


async def test_a_clean_session_verifies_every_byte(cleanup: list[Any]) -> None:
    d, control, edges = await run(("ok", "ok"), cleanup, verify=True)
    assert d["state"] == "ended" and d["errors"] == 0 and d["failovers"] == 0
    assert d["verified"] is True and d["verified_segments"] == d["segments"] == 8
    assert d["bytes_per_edge"] == {"e1": d["bytes"]} and d["edges"] == ["e1"]
    assert d["startup_s"] is not None and d["startup_s"] > 0
    assert control.plays == [{"title": TITLE.id, "isp": "isp-a"}]
    assert edges[1].requests == []
    for key in ("startup_s", "rebuffer_count", "rebuffer_s", "avg_bitrate_kbps", "switches",
                "failovers", "errors", "bytes", "verified", "qoe_lin"):
        assert key in d


async def test_client_ip_is_sent_to_steering(cleanup: list[Any]) -> None:
    control, edges = await fake_cdn("ok")
    cleanup.extend([control, *edges])
    report = await play_session(control.url, TITLE.id, client_ip="10.1.2.3", speed=500, timeouts=FAST,
                                max_segments=2)
    assert report.ok and control.plays == [{"title": TITLE.id, "client_ip": "10.1.2.3"}]
    assert report.qoe is not None and report.qoe.segments == 2


@pytest.mark.parametrize("mode", ["refuse", "503", "403", "404", "stall", "badmaster"])
async def test_a_bad_first_edge_fails_over_to_the_second(mode: str, cleanup: list[Any]) -> None:
    d, _, _ = await run((mode, "ok"), cleanup, verify=True)
    assert d["state"] == "ended" and d["errors"] == 0 and d["verified"] is True
    assert d["failovers"] >= 1 and d["failed_requests"] >= 1
    assert set(d["bytes_per_edge"]) == {"e2"}


@pytest.mark.parametrize("mode", ["corrupt", "wrong", "truncate", "503", "stall"])
async def test_an_edge_that_goes_bad_mid_session_is_left(mode: str, cleanup: list[Any]) -> None:
    d, _, edges = await run((mode, "ok"), cleanup, verify=True, after=3)
    assert d["state"] == "ended" and d["errors"] == 0 and d["verified"] is True, d
    assert d["failovers"] >= 1
    assert d["bytes_per_edge"]["e1"] > 0 and d["bytes_per_edge"]["e2"] > 0
    assert d["edges"] == ["e1", "e2"]


async def test_without_verify_corrupt_bytes_go_unnoticed(cleanup: list[Any]) -> None:
    d, _, _ = await run(("corrupt", "ok"), cleanup, verify=False, after=1)
    assert d["state"] == "ended" and d["failovers"] == 0 and d["verified"] is False


async def test_when_every_edge_fails_it_re_steers_then_gives_up(cleanup: list[Any]) -> None:
    d, control, _ = await run(("503", "503"), cleanup, failover_policy=FailoverPolicy(2, 2))
    assert d["state"] == "failed" and d["errors"] == 1 and d["error_kind"] == "no_edge"
    assert d["resteers"] == 2 and len(control.plays) == 3
    assert d["failure_reasons"] == {"server_error": d["failed_requests"]}


async def test_an_unknown_title_is_a_clear_error(cleanup: list[Any]) -> None:
    control, edges = await fake_cdn("ok")
    cleanup.extend([control, *edges])
    report = await play_session(control.url, "no-such-title", isp="isp-a", timeouts=FAST)
    d = report.to_dict()
    assert d["errors"] == 1 and d["error_kind"] == "unknown_title" and "no-such-title" in d["error"]
    assert d["state"] == "failed" and d["bytes"] == 0 and not report.ok


async def test_an_unreachable_control_plane_is_a_clear_error() -> None:
    t0 = time.monotonic()
    report = await play_session("http://127.0.0.1:9", TITLE.id, isp="isp-a", timeouts=FAST)
    assert report.errors == 1 and report.error_kind == "control_unavailable"
    assert "unreachable" in str(report.error)
    assert time.monotonic() - t0 < 5


async def test_a_failing_control_plane_is_a_clear_error(cleanup: list[Any]) -> None:
    control, edges = await fake_cdn("ok")
    cleanup.extend([control, *edges])
    control.status = 503
    report = await play_session(control.url, TITLE.id, isp="isp-a", timeouts=FAST)
    assert report.errors == 1 and report.error_kind == "control_unavailable" and "503" in str(report.error)


async def test_a_broken_manifest_everywhere_is_a_clear_error(cleanup: list[Any]) -> None:
    d, _, _ = await run(("badmaster", "badmaster"), cleanup, failover_policy=FailoverPolicy(2, 1))
    assert d["errors"] == 1 and d["error_kind"] == "no_edge" and "master playlist" in d["error"]
    assert d["failure_reasons"] == {"corrupt": 2}  # corrupt survives the re-steer: no third try


async def test_pacing_follows_the_speed(cleanup: list[Any]) -> None:
    # A 30 s title with a 8 s buffer at 20x must take about (30 - 8) / 20 s of wall time.
    d, _, _ = await run(("ok",), cleanup, speed=20.0, buffer_cap_s=8.0)
    assert d["state"] == "ended" and d["rebuffer_count"] == 0
    assert 0.8 < d["wall_s"] < 3.0


async def test_events_reach_the_hook_and_the_session_can_share_a_client(cleanup: list[Any]) -> None:
    control, edges = await fake_cdn("ok", "ok")
    cleanup.extend([control, *edges])
    seen: list[PlayerEvent] = []

    async def hook(ev: PlayerEvent) -> None:
        seen.append(ev)
        if ev.kind == "segment" and ev.index == 1:
            await edges[0].stop()   # the edge vanishes between segments

    async with aiohttp.ClientSession() as http:
        report = await play_session(control.url, TITLE.id, isp="isp-a", speed=200, timeouts=FAST,
                                    session=http, on_event=hook, verify=True)
        assert not http.closed
    assert report.ok and report.verified and report.qoe is not None and report.qoe.failovers >= 1
    kinds = [e.kind for e in seen]
    assert kinds[0] == "steer" and kinds[-1] == "end" and "failure" in kinds
    assert [e.index for e in seen if e.kind == "segment"] == list(range(8))


# --------------------------------------------------------------------------- slow edges


async def slow_first_edge(cleanup: list[Any], *, rate: int = 100_000, both: bool = False) -> tuple[FakeControl, list[FakeEdge]]:
    """Two fake edges; e1 (and with `both` e2) behind a fault proxy capped at `rate` B/s: it
    answers every request, but a 235 kbit/s segment (117 KB) takes over a second."""
    from chaos.proxy import FaultProxy
    from chaos.toxics import Bandwidth

    control, edges = await fake_cdn("ok", "ok")
    cleanup.extend([control, *edges])
    for edge in edges if both else edges[:1]:
        port = int(edge.url.rsplit(":", 1)[1])
        proxy = await FaultProxy("127.0.0.1", port, toxics=[Bandwidth("cap", rate_bytes_s=rate)]).start()
        cleanup.append(_Closing(proxy))
        edge.url = proxy.url  # the play answer now points at the proxy
    return control, edges


@dataclass
class _Closing:
    proxy: Any

    async def stop(self) -> None:
        await self.proxy.close()


SLOW_TIMEOUTS = Timeouts(connect_s=1.0, read_s=2.0, segment_s=10.0, playlist_s=3.0, steering_s=3.0)


@pytest.mark.timeout(30)
async def test_a_slow_edge_is_left_for_the_next_candidate(cleanup: list[Any]) -> None:
    control, edges = await slow_first_edge(cleanup)
    report = await play_session(control.url, TITLE.id, isp="isp-a", speed=20.0, timeouts=SLOW_TIMEOUTS,
                                verify=True, max_segments=4)
    d = report.to_dict()
    assert d["state"] == "ended" and d["errors"] == 0 and d["verified"] is True, d
    # the first segment on e1 was given up at 2.5x its duration (0.5 s real), e2 served it;
    # a move for slowness is not a failure
    assert d["slow_moves"] == 1 and d["failovers"] == 0 and d["failure_reasons"] == {}, d
    assert set(d["bytes_per_edge"]) == {"e2"} and d["edges"] == ["e2"]
    assert d["startup_s"] < 16.0  # 10 s of media time lost to e1 at most, plus the fast fetch


@pytest.mark.timeout(30)
async def test_without_the_rule_the_slow_edge_is_played_from(cleanup: list[Any]) -> None:
    control, edges = await slow_first_edge(cleanup, rate=300_000)
    report = await play_session(control.url, TITLE.id, isp="isp-a", speed=20.0, timeouts=SLOW_TIMEOUTS,
                                verify=True, max_segments=2, slow_rule=None)
    d = report.to_dict()
    assert d["state"] == "ended" and d["failovers"] == 0 and d["edges"] == ["e1"], d
    assert d["rebuffer_s"] > 0 or d["startup_s"] > 4.0  # the cost the rule avoids
    off = await play_session(control.url, TITLE.id, isp="isp-a", speed=20.0, timeouts=SLOW_TIMEOUTS,
                             verify=True, max_segments=2, failover_policy=FailoverPolicy(enabled=False))
    assert off.to_dict()["edges"] == ["e1"]  # failover switched off: the edge is never left


@pytest.mark.timeout(30)
async def test_the_viewer_remembers_a_slow_edge_for_its_next_session(cleanup: list[Any]) -> None:
    from player.slow_edges import SlowEdges

    control, edges = await slow_first_edge(cleanup)
    memory = SlowEdges()
    first = (await play_session(control.url, TITLE.id, isp="isp-a", speed=20.0, timeouts=SLOW_TIMEOUTS,
                                max_segments=2, slow_edges=memory)).to_dict()
    assert first["slow_moves"] == 1
    seen_by_e1 = len(edges[0].requests)
    second = (await play_session(control.url, TITLE.id, isp="isp-a", speed=20.0, timeouts=SLOW_TIMEOUTS,
                                 max_segments=2, slow_edges=memory)).to_dict()
    assert second["state"] == "ended" and second["slow_moves"] == 0 and second["edges"] == ["e2"], second
    assert len(edges[0].requests) == seen_by_e1  # e1 was not even asked for a playlist
    assert second["startup_s"] < first["startup_s"]


@pytest.mark.timeout(40)
async def test_when_every_edge_is_slow_the_session_still_ends(cleanup: list[Any]) -> None:
    control, edges = await slow_first_edge(cleanup, rate=300_000, both=True)
    report = await play_session(control.url, TITLE.id, isp="isp-a", speed=20.0, timeouts=SLOW_TIMEOUTS,
                                verify=True, max_segments=3)
    d = report.to_dict()
    assert d["state"] == "ended" and d["errors"] == 0 and d["verified"] is True, d
    assert d["resteers"] == 0  # slow edges are moved away from, never "every edge failed"
    assert d["failure_reasons"] == {} and d["slow_moves"] <= 1  # e1 -> e2 once, then it stays


async def test_play_out_returns_after_the_last_frame(cleanup: list[Any]) -> None:
    # 3 segments (12 s of media) at 20x: every download is fast, so without play_out the
    # session returns at its last download; with it, once 12 s / 20 = 0.6 s have played
    quick, _, _ = await run(("ok",), cleanup, speed=20.0, max_segments=3)
    out, _, _ = await run(("ok",), cleanup, speed=20.0, max_segments=3, play_out=True)
    for d in (quick, out):
        assert d["state"] == "ended" and d["played_s"] == pytest.approx(12.0) and d["rebuffer_s"] == 0
    assert out["wall_s"] >= 0.6 > quick["wall_s"]


async def test_an_answer_without_a_play_id_still_reports_its_session(cleanup: list[Any]) -> None:
    """A play answer built from a cached fallback (control down) carries no play id; the
    session's player.session events go out under an id of its own."""
    from common.eventsink import MemorySink
    from common.events import PlayerSession

    sink = MemorySink("t")
    d, _, _ = await run(("ok",), cleanup, max_segments=2, events=sink)  # the fake control sends no play_id
    sessions = [e.payload for e in sink.events if isinstance(e.payload, PlayerSession)]
    assert [p.phase for p in sessions] == ["start", "end"] and d["state"] == "ended"
    sid = sessions[0].session
    assert sid.startswith("l") and len(sid) == 17 and all(p.session == sid for p in sessions)
    assert sessions[-1].state == "ended"


async def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        await play_session("http://x", "t", isp="a", client_ip="10.0.0.1")
    with pytest.raises(ValueError):
        await play_session("http://x", "t", speed=0)
    with pytest.raises(ValueError):
        await play_session("http://x", "t", abr="nope")


# --------------------------------------------------------------------------- `ocsim play` CLI


def ocsim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ocsim", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


async def test_cli_json_and_exit_codes(cleanup: list[Any]) -> None:
    control, edges = await fake_cdn("ok")
    cleanup.extend([control, *edges])
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocsim", "play", TITLE.id, "--control", control.url, "--isp", "isp-a",
        "--speed", "500", "--verify", "--json", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    d = json.loads(out)
    assert d["verified"] is True and d["errors"] == 0 and d["segments"] == 8

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocsim", "play", "nope", "--control", control.url, "--isp", "isp-a",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    # a session that played nothing: one line on stderr, not a table of zeros (issue 15)
    assert out == b"" and "unknown_title" in err.decode() and "nope" in err.decode()


def test_cli_unreachable_control_exits_1() -> None:
    r = ocsim("play", TITLE.id, "--control", "http://127.0.0.1:9", "--json", "--connect-timeout", "1")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error_kind"] == "control_unavailable"


def test_cli_argument_errors_exit_2() -> None:
    assert ocsim("play", TITLE.id).returncode == 2  # no control URL
    assert ocsim("play", TITLE.id, "--control", "http://x", "--isp", "a", "--client-ip", "1.2.3.4").returncode == 2
    assert ocsim("play", TITLE.id, "--control", "http://x", "--speed", "0").returncode == 2


# --------------------------------------------------------------------------- real processes

TOPOLOGY = ONE_ISP_TWO_EDGES



@dataclass
class UpTopology:
    """`ocsim up` on ephemeral ports with a catalog of short titles; its state file."""

    proc: subprocess.Popen[bytes]
    state_file: Path
    state: dict[str, Any]

    @property
    def control(self) -> str:
        return str(self.state["control"])

    def edge(self, edge_id: str) -> dict[str, Any]:
        return next(e for e in self.state["edges"] if e["id"] == edge_id)


def start_up(tmp: Path, timeout: float = 60.0) -> UpTopology:
    (tmp / "catalog.json").write_text(json.dumps(SHORT_CATALOG))
    (tmp / "topology.toml").write_text(TOPOLOGY)
    state_file = tmp / "state.json"
    log = open(tmp / "up.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocsim", "up", "--topology", str(tmp / "topology.toml"),
         "--state-dir", str(tmp / "up"), "--state-file", str(state_file), "--ephemeral-ports"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ocsim up exited {proc.returncode}: {(tmp / 'up.log').read_text()[-2000:]}")
        try:
            state = json.loads(state_file.read_text())
            if state.get("status") == "running":
                return UpTopology(proc, state_file, state)
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    stop_up(proc)
    raise AssertionError(f"ocsim up wrote no state file in {timeout}s: {(tmp / 'up.log').read_text()[-2000:]}")


def stop_up(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def up(tmp_path: Path) -> Iterator[UpTopology]:
    if shutil.which("ocsim") is None and not (ROOT / "ocsim" / "up.py").exists():
        pytest.skip("ocsim up is not available")
    topo = start_up(tmp_path)
    try:
        yield topo
    finally:
        stop_up(topo.proc)


def wait_refused(url: str, timeout: float = 5.0) -> None:
    """Until a TCP connect to `url` is refused: the process behind it is really gone."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((parts.hostname, parts.port), timeout=0.5).close()
        except OSError:
            return
        time.sleep(0.02)
    raise AssertionError(f"{url} still accepts connections")


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_up_healthy_then_play_verifies_every_byte(up: UpTopology) -> None:
    async with aiohttp.ClientSession() as http:
        for url in [up.control] + [e["url"] for e in up.state["edges"]]:
            async with http.get(f"{url}/healthz") as resp:
                assert resp.status == 200, url
    for who in (["--isp", "isp-a"], ["--client-ip", "10.1.7.7"]):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ocsim", "play", "short-a", "--state-file", str(up.state_file), *who,
            "--speed", "50", "--verify", "--json", cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (out, err)
        d = json.loads(out)
        assert d["state"] == "ended" and d["errors"] == 0 and d["isp"] == "isp-a"
        assert d["verified"] is True and d["verified_segments"] == d["segments"] == d["n_segments"] == 8
        assert d["bytes"] == sum(d["bytes_per_edge"].values()) > 0
        assert set(d["bytes_per_edge"]) <= {"isp-a-1", "isp-a-2"}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_kill_9_of_the_serving_edge_is_survived(up: UpTopology) -> None:
    serving: asyncio.Queue[str] = asyncio.Queue()

    def hook(ev: PlayerEvent) -> None:
        if ev.kind == "segment" and ev.index == 2:
            assert ev.edge is not None
            serving.put_nowait(ev.edge)

    # 40 s of media, an 8 s buffer, 20x: the session paces itself over ~1.5 s of wall
    # time, so the kill lands while it still has about 7 segments to fetch.
    task = asyncio.create_task(play_session(
        up.control, "short-b", isp="isp-a", speed=20.0, buffer_cap_s=8.0, verify=True,
        on_event=hook, timeouts=FAST))
    victim = await asyncio.wait_for(serving.get(), 30)
    edge = up.edge(victim)
    os.kill(int(edge["pid"]), signal.SIGKILL)
    await asyncio.to_thread(wait_refused, edge["url"])
    assert not task.done(), "the session ended before the kill; slow it down"
    report = await asyncio.wait_for(task, 60)

    d = report.to_dict()
    assert d["state"] == "ended" and d["errors"] == 0, d
    assert d["failovers"] >= 1 and d["failure_reasons"].get("connect", 0) >= 1, d
    assert d["verified"] is True and d["segments"] == 10
    survivor = ({"isp-a-1", "isp-a-2"} - {victim}).pop()
    assert d["bytes_per_edge"][victim] > 0 and d["bytes_per_edge"][survivor] > 0
    assert d["edges"] == [victim, survivor]
