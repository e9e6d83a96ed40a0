"""The watch page (`GET /watch/{title}`): its route, its vendored hls.js, and real playback in
headless Chromium through `ocsim up` with packaged media, surviving the death of its edge.

The browser test needs Chromium (Debian `chromium`, which `.ci/run` installs when missing, or
$OCSIM_CHROMIUM) and ffmpeg; where either cannot be had it is skipped and says which. It is
driven over the DevTools protocol (tests/browser.py); every wait polls the page's own figures
(`window.ocsimWatch.snapshot()`) against a deadline.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from common.errors import BadRequest
from control import watch
from control.openapi import spec
from control.routes import ROUTES
from media.encode import TestSource as GeneratedSource
from media.encode import find_ffmpeg
from media.ladder import parse_ladder
from media.package import PackageRequest, package
from tests.browser import Browser, find_chromium
from tests.test_media import media_topology
from tests.test_up import Up

LADDER = parse_ladder("235:160x90,750:320x180")
CLIP_S = 24.0   # six 4 s segments: enough to play 5 s, lose the edge, and play on


def test_vendored_hls_js_is_the_pinned_copy_with_its_licence() -> None:
    watch.check_vendored()
    assert "Apache License" in watch.HLS_JS_LICENSE.read_text()
    assert watch.HLS_JS_VERSION in (watch.STATIC / "VENDORED.md").read_text()
    assert watch.HLS_JS_SHA256 in (watch.STATIC / "VENDORED.md").read_text()


def test_watch_routes_are_in_the_route_table_and_the_openapi_document() -> None:
    paths = {(r.method, r.path): r for r in ROUTES}
    for path in ("/watch/{title}", "/static/hls.min.js", "/static/hls.js.LICENSE"):
        assert paths[("GET", path)].caller.value == "public"
    doc = spec(ROUTES)
    item = doc["paths"]["/watch/{title}"]
    assert {p["name"] for p in item["get"]["parameters"]} == {"isp", "buffer"}
    assert item["parameters"][0]["name"] == "title"
    assert item["parameters"][0]["schema"]["pattern"].startswith("^[a-z0-9]")


def test_the_page_takes_only_checked_input() -> None:
    page = watch.render("clip", "isp-a", 8)
    assert '"title": "clip"' in page and '"isp": "isp-a"' in page and '"buffer_s": 8' in page
    assert "/static/hls.min.js" in page and "__CONFIG__" not in page
    with pytest.raises(BadRequest, match="invalid title id"):
        watch.render("</script><script>", None, 8)
    assert watch.parse_query({}) == (None, watch.DEFAULT_BUFFER_S)
    for bad, field in (({"isp": "x y"}, "isp"), ({"buffer": "2"}, "buffer"), ({"buffer": "1e3"}, "buffer")):
        with pytest.raises(BadRequest, match=field):
            watch.parse_query(bad)


@pytest.fixture
def media_up(tmp_path: Path) -> Iterator[Callable[[], Up]]:
    runs: list[Up] = []

    def start() -> Up:
        try:
            exe = find_ffmpeg()
        except BadRequest as exc:
            pytest.skip(f"no ffmpeg to package the clip with: {exc.reason}")
        media = tmp_path / "media"
        package(PackageRequest(GeneratedSource("clip", CLIP_S), "clip", media, LADDER, tmp_path / "cache"),
                exe, lambda done, total: None, lambda msg: None)
        where = tmp_path / "up"
        where.mkdir()
        run = Up(where, "--ephemeral-ports", topology=media_topology(media))
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


async def _until(browser: Browser, ok: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    snap: dict[str, Any] = {}
    while time.monotonic() < deadline:
        raw = await browser.evaluate("window.ocsimWatch ? JSON.stringify(window.ocsimWatch.snapshot()) : null")
        if raw:
            snap = json.loads(raw)
            if ok(snap):
                return snap
        await asyncio.sleep(0.2)
    brief = {k: snap.get(k) for k in ("state", "currentTime", "edge", "frames", "fatal", "errors", "failovers")}
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; page: {brief}")


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_a_browser_plays_through_an_edge_and_survives_losing_it(media_up: Callable[[], Up],
                                                                      tmp_path: Path) -> None:
    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium here (Debian: apt-get install -y chromium, which .ci/run does; "
                    "or set OCSIM_CHROMIUM): the watch page cannot be played in a browser")
    up = media_up()
    state = await asyncio.to_thread(up.wait_state, 60.0)
    edges = {urlsplit(e["url"]).netloc: e for e in state["edges"]}
    profile = tmp_path / "chromium"
    profile.mkdir()
    url = f"{state['control']}/watch/clip?isp=isp-a&buffer=8"  # a short buffer: the later segments come later
    browser = Browser(exe, profile, url, tmp_path / "chromium.log")
    try:
        await browser.connect()
        codecs = 'video/mp4; codecs="avc1.64000d,mp4a.40.2"'
        if not await browser.evaluate(f"window.MediaSource !== undefined && MediaSource.isTypeSupported('{codecs}')"):
            pytest.skip(f"this Chromium ({exe}) cannot play H.264/AAC through Media Source Extensions "
                        "(a build without those codecs): the watch page cannot be played here")
        first = await _until(browser, lambda s: s["currentTime"] >= 5.0 and (s["frames"]["decoded"] or 0) > 0,
                             60.0, "5 s of playback")
        assert first["fatal"] == [], first["fatal"]
        assert first["startupS"] is not None and first["frames"]["decoded"] >= 5 * 25 * 0.8
        assert first["fragments"], "no segment was loaded"
        for frag in first["fragments"]:  # every segment came from an edge, and it said what its cache did
            assert frag["host"] in edges, frag
            assert frag["cache"] in ("HIT", "MISS"), frag
        victim = first["edge"]
        assert edges[urlsplit(first["candidates"][0]["url"]).netloc]["id"] == victim
        assert edges[first["fragments"][-1]["host"]]["id"] == victim and victim.startswith("isp-a-")

        pid = next(e["pid"] for e in state["edges"] if e["id"] == victim)
        os.kill(pid, signal.SIGKILL)
        killed_at = first["currentTime"]
        seen = len(first["fragments"])

        def played_on(s: dict[str, Any]) -> bool:
            later = s["fragments"][seen:]
            return (s["edge"] != victim and s["currentTime"] >= killed_at + 5.0
                    and any(edges[f["host"]]["id"] != victim for f in later))
        after = await _until(browser, played_on, 60.0, f"playback to go on from another edge after {victim} died")
        assert after["failovers"] >= 1
        assert all(f["edge"] == victim and f["what"].startswith("networkError") for f in after["fatal"]), after["fatal"]
        later = after["fragments"][seen:]
        assert {edges[f["host"]]["id"] for f in later if f["edge"] != victim} == {after["edge"]}
        assert after["frames"]["decoded"] > first["frames"]["decoded"]
        print(f"\nwatch: start-up {after['startupS']:.2f} s, rebuffers {after['rebuffers']} "
              f"({after['rebufferS']:.2f} s), level switches {after['switches']}, failovers {after['failovers']}, "
              f"frames decoded {after['frames']['decoded']} dropped {after['frames']['dropped']}, "
              f"{victim} -> {after['edge']}")
    finally:
        await browser.close()


def test_up_says_where_each_packaged_title_can_be_watched(tmp_path: Path) -> None:
    from ocsim.up import packaged_titles, ready_text
    for name in ("b-title", "a-title"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "digests.json").write_text("{}")
    (tmp_path / "notes").mkdir()  # no digest list: not a title
    titles = packaged_titles(str(tmp_path))
    assert titles == ["a-title", "b-title"]
    text = ready_text(6, 1.0, Path("s.json"), "http://127.0.0.1:8100", Path("tok"), titles)
    assert "watch: http://127.0.0.1:8100/watch/a-title\n" in text and text.endswith("Ctrl-C stops all")
