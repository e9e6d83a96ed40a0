"""Headless Chromium driven over the DevTools protocol (CDP) with aiohttp's websocket client.

Only what the watch-page test needs: start Chromium on 127.0.0.1 with a page, evaluate
JavaScript in it, stop it. The DevTools port is chosen by Chromium (`--remote-debugging-port=0`)
and read from the `DevToolsActivePort` file it writes into its profile directory; every wait
polls against a deadline.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    """A Chromium binary: $OCSIM_CHROMIUM, else the first of CANDIDATES on PATH."""
    env = os.environ.get("OCSIM_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One headless Chromium with one page open at `url`."""

    def __init__(self, exe: str, profile: Path, url: str, log: Path) -> None:
        self.profile = profile
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-component-update",
             "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "--window-size=1280,800", url],
            stdout=subprocess.DEVNULL, stderr=self._log, stdin=subprocess.DEVNULL, start_new_session=True)
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)

    async def connect(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        port_file = self.profile / "DevToolsActivePort"
        self._http = aiohttp.ClientSession()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited {self.proc.returncode}")
            page = await self._page(port_file)
            if page is not None:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("chromium's DevTools page did not come up")
            await asyncio.sleep(0.1)
        self._ws = await self._http.ws_connect(page, max_msg_size=64 * 1024 * 1024)

    async def _page(self, port_file: Path) -> str | None:
        try:
            port = int(port_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        assert self._http is not None
        try:
            async with self._http.get(f"http://127.0.0.1:{port}/json/list") as r:
                targets = await r.json()
        except aiohttp.ClientError:
            return None
        pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
        return str(pages[0]["webSocketDebuggerUrl"]) if pages else None

    async def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        assert self._ws is not None
        mid = next(self._ids)
        await self._ws.send_str(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = await self._ws.receive(timeout=max(0.01, deadline - time.monotonic()))
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection: {msg.type}")
            data = json.loads(msg.data)
            if data.get("id") == mid:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})  # type: ignore[no-any-return]

    async def evaluate(self, expression: str) -> Any:
        got = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in got:
            raise RuntimeError(f"page: {got['exceptionDetails'].get('text')}: {expression[:80]}")
        return got.get("result", {}).get("value")

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the renderer and GPU children too
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self._log.close()
