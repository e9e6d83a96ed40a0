"""The dashboard's live charts, checked in a real headless browser (Debian's `chromium`).

`ocsim up --events` runs a topology with the event pipeline; `ocsim play` players publish
their sessions and keep playing while the page is open. Chromium is driven through the
DevTools protocol (a websocket, aiohttp's client: no new dependency), so the operator token
goes in through the protocol, never on a command line. The test types the token as an
operator would, then waits until every chart has drawn points from the pipeline, and until
the charts have moved on (a later point appeared): they update live. Skipped, with the
reason, where no Chromium can be found.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.test_up import Up, start_up  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHARTS = ("throughput", "origin", "offload", "sps", "startup", "rebuffer", "misses", "misses_isp")


def find_browser() -> str | None:
    explicit = os.environ.get("OCSIM_CHROMIUM")
    if explicit:
        return explicit if shutil.which(explicit) else None
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture
def browser() -> Iterator[str]:
    """A headless Chromium with the DevTools protocol on an ephemeral loopback port; yields
    the websocket URL of its first page."""
    exe = find_browser()
    if exe is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set OCSIM_CHROMIUM); .ci/run installs it")
    profile = tempfile.mkdtemp(prefix="ocsim-chromium-")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
           "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
           "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        active = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if proc.poll() is not None:
                pytest.skip(f"chromium did not start: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
            assert time.monotonic() < deadline, "chromium wrote no DevToolsActivePort in 30 s"
            time.sleep(0.05)  # polling for the browser's port file, with a deadline
        port = int(active.read_text().splitlines()[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


class Page:
    """One page over the DevTools protocol: send a command, await its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_json({"id": n, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 20)
            if msg.get("id") == n:
                assert "error" not in msg, msg
                return dict(msg.get("result", {}))

    async def js(self, expression: str) -> Any:
        got = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in got, got
        return got["result"].get("value")


CHART_STATE = """JSON.stringify(Array.from(document.querySelectorAll('.chart')).map((b) => {
  const s = b.querySelector('svg');
  return {id: b.id.replace('chart-', ''), series: +s.dataset.series, points: +s.dataset.points,
          last: +(s.dataset.lastT || 0), lines: s.querySelectorAll('polyline').length,
          drawn: Array.from(s.querySelectorAll('polyline')).filter((p) => p.getAttribute('points')).length,
          legend: b.querySelector('.legend').textContent};
}).concat([{id: 'note', legend: document.getElementById('pipeline-note').textContent}]))"""


async def keep_playing(state: dict[str, Any], lane: int, tmp: Path, stop: asyncio.Event) -> int:
    """One lane of viewers: `ocsim play` after `ocsim play` (the titles are 8 s long), each
    publishing its player.session events, until `stop`. Returns how many played."""
    isp, plays = ("isp-a", "isp-b")[lane % 2], 0
    with open(tmp / f"lane{lane}.log", "ab") as log:
        while not stop.is_set():
            title = ("t0", "t1", "t2")[(lane + plays) % 3]
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ocsim", "play", title, "--control", state["control"], "--isp", isp,
                "--speed", "4", "--events", state["events"], "--quiet", "--json",
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            plays += 1
    return plays


@pytest.mark.timeout(150)
async def test_dashboard_charts_draw_live_pipeline_data(start_up: Callable[..., Up], browser: str,  # noqa: F811
                                                        tmp_path: Path) -> None:
    up = start_up("--events")
    state = await asyncio.to_thread(up.wait_state, 60)
    stop = asyncio.Event()
    crowd = [asyncio.create_task(keep_playing(state, lane, tmp_path, stop)) for lane in range(4)]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{browser}/json/list") as resp:
                page_ws = next(t["webSocketDebuggerUrl"] for t in await resp.json() if t.get("type") == "page")
            async with http.ws_connect(page_ws, max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Page.navigate", url=state["control"] + "/dashboard")
                deadline = time.monotonic() + 20
                while await page.js("document.readyState") != "complete" or not await page.js(
                        "Boolean(document.getElementById('tok'))"):
                    assert time.monotonic() < deadline, "the dashboard did not load"
                    await asyncio.sleep(0.1)  # polling the page's state, with a deadline
                # the operator pastes the token and presses Show (through the protocol, not argv)
                await page.js(f"document.getElementById('tok').value = {json.dumps(state['operator_token'])}; "
                              "document.getElementById('go').click(); true")

                async def charts() -> dict[str, dict[str, Any]]:
                    return {c["id"]: c for c in json.loads(await page.js(CHART_STATE))}

                def drawn(c: dict[str, Any]) -> bool:
                    return bool(c.get("points", 0) >= 1 and c.get("drawn", 0) >= 1)

                def complete(got: dict[str, dict[str, Any]]) -> bool:
                    """Every chart drew points; per ISP where players are (both ISPs); misses by class."""
                    return (all(k in got and drawn(got[k]) for k in CHARTS)
                            and got["throughput"]["series"] == 2 and got["sps"]["series"] == 2
                            and all(i in got["throughput"]["legend"] for i in ("isp-a", "isp-b"))
                            and "cold" in got["misses"]["legend"])

                deadline = time.monotonic() + 60
                while not complete(got := await charts()):
                    assert time.monotonic() < deadline, f"charts without data after 60 s: {got}"
                    await asyncio.sleep(0.5)  # the page polls every 2 s; polling it, with a deadline
                first = got
                assert first["note"]["legend"] == "", first["note"]
                # live: while the players play, the throughput chart gains later points
                deadline = time.monotonic() + 30
                while (await charts())["throughput"]["last"] <= first["throughput"]["last"]:
                    assert time.monotonic() < deadline, "the charts did not move on in 30 s"
                    await asyncio.sleep(0.5)  # polling the page, with a deadline
                # and the page holds the token only in this tab: not in the URL, not in a cookie
                assert await page.js("document.cookie") == ""
                assert state["operator_token"] not in await page.js("location.href")
    finally:
        stop.set()
        await asyncio.gather(*crowd, return_exceptions=True)
