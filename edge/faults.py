"""The edge's fault API: disk and clock faults a chaos experiment asks for (issue 11).

Off unless the edge starts with `--fault-api`; then `/faults` answers only a bearer of the
fault token (its own secret: `fault_token` in the 0600 `--config` file, or
OCSIM_EDGE_FAULT_TOKEN, or generated into the state directory; never the operator's token,
never on a command line), compared in constant time (common.http_input.require_bearer).

    GET  /faults                       what is in force
    PUT  /faults {"disk_full": bool, "read_errors": bool, "clock_skew_s": float}
                                       a partial update; {} changes nothing
    POST /faults/corrupt {"path": "/content/..."} | {"all": true}
                                       flip bytes of cached objects on disk, behind the
                                       store's back (same length, index untouched)
    DELETE /faults                     everything off (the runner's last call)

What each fault does, and where (the hooks are one attribute each, so the store and the
request path need no knowledge of chaos):
- disk_full: every write and temp-file creation of the store fails with ENOSPC
  (`DiskStore.io_faults`); fills keep streaming to their readers and cache nothing.
- read_errors: opening or reading a cached object fails with EIO (same hook); a hit then
  answers 503 and players fail over.
- clock_skew_s: the token check reads a clock this far off (`SkewedVerdicts` wraps the
  node's token memo), as an edge with a wrong clock would: tokens expire early or late.
- corrupt: the bytes change on disk; the store notices the change (the data file is newer
  than its sidecar, or its mtime moved under an open fd) and re-checks the checksum the fill
  recorded before serving, so the corrupt object is refused and fetched again.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from common.errors import BadRequest
from common.http_input import read_json_object, require_bearer
from common.ids import parse_content_key
from common.tokens import Keyring, TokenVerdict, TokenVerdicts, split_token_path

log = logging.getLogger("ocsim.edge.faults")

FAULT_FIELDS = frozenset({"disk_full", "read_errors", "clock_skew_s"})
CORRUPT_FIELDS = frozenset({"path", "all"})
MAX_SKEW_S = 10 * 365 * 86400.0


@dataclass
class IoFaults:
    """The store's hook: `check("write")` / `check("read")` raise what a failing disk raises."""

    disk_full: bool = False
    read_errors: bool = False
    writes_refused: int = 0
    reads_refused: int = 0

    def check(self, op: str) -> None:
        if op == "write" and self.disk_full:
            self.writes_refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if op == "read" and self.read_errors:
            self.reads_refused += 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))


class SkewedVerdicts:
    """The node's token memo, read with a clock `skew_s` off (the clock-skew fault)."""

    def __init__(self, inner: TokenVerdicts) -> None:
        self.inner = inner
        self.skew_s = 0.0

    def __len__(self) -> int:
        return len(self.inner)

    def check(self, ring: Keyring, token: str | None, content_path: str, now: float) -> TokenVerdict:
        return self.inner.check(ring, token, content_path, now + self.skew_s)


def _flip(path: str, length: int) -> None:
    """Invert a few bytes in the middle of a file, in place (blocking: run in the executor).

    The kernel stamps a write with its coarse clock (one tick, ~4 ms), so a write within a
    tick of the fill could keep the old mtime; the fault makes sure it moves past the old
    one and the sidecar's, as any write a tick later does. A change that keeps the mtime
    (bit rot) is the background scrubber's to find."""
    st = os.stat(path)
    try:
        side = os.stat(path + ".meta").st_mtime_ns
    except OSError:
        side = 0
    with open(path, "r+b") as f:
        at = max(0, length // 2 - 8)
        f.seek(at)
        chunk = f.read(16)
        f.seek(at)
        f.write(bytes(b ^ 0xFF for b in chunk))
        f.flush()
        os.fsync(f.fileno())
    after = max(os.stat(path).st_mtime_ns, st.st_mtime_ns + 1_000_000, side + 1_000_000)
    os.utime(path, ns=(after, after))


class EdgeFaults:
    """Installs the hooks on one EdgeNode and serves `/faults`."""

    def __init__(self, node: Any, token: str) -> None:
        if not token:
            raise ValueError("the fault API needs a token")
        self.node = node
        self.token = token
        self.io = IoFaults()
        self.verdicts = SkewedVerdicts(node._verdicts)
        self.corrupted = 0
        node.store.io_faults = self.io
        node._verdicts = self.verdicts

    def install(self, app: web.Application) -> None:
        app.router.add_get("/faults", self.get)
        app.router.add_put("/faults", self.put)
        app.router.add_delete("/faults", self.clear)
        app.router.add_post("/faults/corrupt", self.corrupt)

    def state(self) -> dict[str, Any]:
        return {"disk_full": self.io.disk_full, "read_errors": self.io.read_errors,
                "clock_skew_s": self.verdicts.skew_s, "writes_refused": self.io.writes_refused,
                "reads_refused": self.io.reads_refused, "corrupted": self.corrupted,
                "corrupt_detected": self.node.store.corrupt, "cut_short": self.node.store.changed_in_send}

    def _authorize(self, request: web.Request) -> None:
        require_bearer(request, self.token, "ocsim-edge-faults")

    async def get(self, request: web.Request) -> web.Response:
        self._authorize(request)
        return web.json_response(self.state())

    async def put(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await read_json_object(request, FAULT_FIELDS, 4096)
        changes: dict[str, Any] = {}
        for key in ("disk_full", "read_errors"):
            if key in body:
                if not isinstance(body[key], bool):
                    raise BadRequest(f"{key}: must be true or false")
                changes[key] = body[key]
        if "clock_skew_s" in body:
            skew = body["clock_skew_s"]
            if isinstance(skew, bool) or not isinstance(skew, (int, float)) or not math.isfinite(skew) \
                    or abs(skew) > MAX_SKEW_S:
                raise BadRequest(f"clock_skew_s: must be a number of seconds within +-{MAX_SKEW_S:g}")
            changes["clock_skew_s"] = float(skew)
        for key, value in changes.items():  # all checked first: a bad body changes nothing
            if key == "clock_skew_s":
                self.verdicts.skew_s = value
            else:
                setattr(self.io, key, value)
        log.warning("faults set", extra={"fields": changes})
        return web.json_response(self.state())

    async def clear(self, request: web.Request) -> web.Response:
        self._authorize(request)
        self.io.disk_full = self.io.read_errors = False
        self.verdicts.skew_s = 0.0
        log.warning("faults cleared")
        return web.json_response(self.state())

    async def corrupt(self, request: web.Request) -> web.Response:
        self._authorize(request)
        body = await read_json_object(request, CORRUPT_FIELDS, 4096)
        store = self.node.store
        if body.get("all") is True and "path" not in body:
            entries = list(store.index.values())
        elif isinstance(body.get("path"), str) and "all" not in body:
            key = parse_content_key(split_token_path(body["path"])[1])
            entry = store.index.get(key)
            if entry is None:
                raise BadRequest("path: not cached here")
            entries = [entry]
        else:
            raise BadRequest('give {"path": "/content/..."} or {"all": true}')
        loop = asyncio.get_running_loop()
        done = []
        for entry in entries:
            if store.index.get(entry.key) is not entry:
                # purged (and maybe being filled again at the same path) since the list was
                # taken: not a cached object any more. Flipping it would be a write racing
                # the store's own commit, not corruption of what the store holds.
                continue
            try:
                await loop.run_in_executor(None, _flip, str(entry.path), entry.length)
            except OSError as exc:
                log.warning("cannot corrupt", extra={"fields": {"key": str(entry.key), "error": str(exc)}})
                continue
            done.append(str(entry.key))
        self.corrupted += len(done)
        log.warning("objects corrupted on disk", extra={"fields": {"count": len(done), "at": time.time()}})
        return web.json_response({"corrupted": done[:100], "count": len(done)})
