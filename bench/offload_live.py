"""The live half of the offload bench: `ocsim up` on 127.0.0.1, a day of the `sessions`
workload compressed into `day_s` seconds, a nightly refresh, and the share of bytes served
from inside the ISP read from the edges' own counters.

The workload is the simulator's (`sim.workload.session_trace`), scaled down so a laptop
with 2 cores replays it: a catalog of short titles whose ladder is the default one times
`bitrate_scale`. Requests are regrouped into viewing sessions (consecutive segments of
one file, 4 s apart); each session asks the control plane to play (`POST /v1/play` with
the ISP), takes the first candidate (the player fails over down the list on an error),
and fetches its segments at their times, compressed. At each compressed midnight the
replay stops taking new sessions, lets those in flight finish, waits for the collector to
hold what the edges published, and (with pre-positioning) runs a refresh job
(`{"refresh": true, "now": true}`): the first night valued by the catalog, later nights
by the pipeline's `file_bytes` view over the last day (the control plane's
`control.popularity`). The day starts once the job is done.

Offload of a day = 1 - bytes the edges fetched from the origin during the day
(`ocsim_edge_filled_bytes_total{source="origin"}`) / bytes the players received (counted
by the replay, and checked against the edges' `ocsim_edge_served_bytes_total`). Fills of
the refresh happen at night, between the two readings, as Open Connect fills off-peak.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from common.content import DEFAULT_LADDER, SEGMENT_SECONDS, Title
from common.json_client import ApiError, request_json
from common.metrics import parse_text
from sim.trace import Trace

ISP = "isp-a"
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class LiveWorkload:
    titles: list[Title]
    trace: Trace                 # keys in the live ladder, sizes of the live content model
    sessions: list[list[int]]    # request indices of each session, in order

    @property
    def catalog_bytes(self) -> int:
        return sum(t.total_bytes() for t in self.titles)

    def file_objects(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for t in self.titles:
            for r in t.renditions:
                out[f"{t.id}/{r}"] = {f"/content/{t.id}/{r}/{s.id.index}.seg": s.length for s in t.segments(r)}
        return out


def live_ladder(scale: float) -> tuple[int, ...]:
    return tuple(max(1, int(k * scale)) for k in DEFAULT_LADDER)


def scale_workload(trace: Trace, segments: Sequence[int], alpha: float, bitrate_scale: float) -> LiveWorkload:
    """The simulator's trace over a catalog the live origin serves: title i has
    `segments[i]` segments of 4 s and the default ladder times `bitrate_scale`; popularity
    1 / rank**alpha (what the catalog says; releases are news to it)."""
    ladder = live_ladder(bitrate_scale)
    rung = {k: i for i, k in enumerate(DEFAULT_LADDER)}
    titles = [Title(f"t{i:04d}", count * SEGMENT_SECONDS, ladder, round(1.0 / (i + 1) ** alpha, 6))
              for i, count in enumerate(segments)]
    by_id = {t.id: t for t in titles}
    keys: list[str] = []
    sizes: list[int] = []
    sessions: list[list[int]] = []
    open_sessions: dict[tuple[str, int, float], int] = {}  # (file, next segment, its time) -> session
    for i, (key, t) in enumerate(zip(trace.keys, trace.times)):
        _, _, tid, kbps, seg = key.split("/")
        n = int(seg.split(".")[0])
        r = ladder[rung[int(kbps)]]
        keys.append(f"/content/{tid}/{r}/{n}.seg")
        sizes.append(by_id[tid].segment(r, n).length)
        f = f"{tid}/{r}"
        s = open_sessions.pop((f, n, round(t, 3)), None)
        if s is None:
            s = len(sessions)
            sessions.append([])
        sessions[s].append(i)
        open_sessions[(f, n + 1, round(t + SEGMENT_SECONDS, 3))] = s
    return LiveWorkload(titles, Trace(list(trace.times), keys, sizes), sessions)


def topology(capacity: int, day_s: float, policy: str, headroom: float, edges: int,
             origin_latency_ms: float = 5.0) -> str:
    return f"""
[origin]
port = 0
catalog = "catalog.json"
latency_ms = {origin_latency_ms}
total_bandwidth = "0"
args = ["--no-access-log"]

[control]
port = 0
args = ["--no-access-log", "--pin-headroom", "{headroom}", "--popularity-window", "{day_s}"]

[edge]
capacity = "{capacity}"
policy = "{policy}"
args = ["--no-access-log"]

[isps.{ISP}]
prefixes = ["10.1.0.0/16"]
edges = {edges}
"""


def http_json(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """(status, JSON body) with the project's client; (0, None) when nothing answered, and
    no body for an error status."""
    try:
        reply = request_json(method, url, token=token, body=body)
    except ApiError:
        return 0, None
    return reply.status, reply.body if reply.status < 400 else None


def wait_for(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    pause = 0.05
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(pause)  # polling a condition with a deadline
        pause = min(pause * 2, 0.5)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


class LiveTopology:
    """One `ocsim up --events` as a child process, stopped (and its children killed) on close."""

    def __init__(self, where: Path, topology_text: str, titles: Sequence[Title]) -> None:
        where.mkdir(parents=True, exist_ok=True)
        (where / "catalog.json").write_text(json.dumps({"titles": [t.to_json() for t in titles]}))
        (where / "topology.toml").write_text(topology_text)
        self.state_file = where / "state.json"
        self.stderr = open(where / "up.stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ocsim", "up", "--topology", str(where / "topology.toml"), "--state-dir",
             str(where / "state"), "--state-file", str(self.state_file), "--events"],
            stdout=subprocess.DEVNULL, stderr=self.stderr, stdin=subprocess.DEVNULL, start_new_session=True)
        self.where = where
        self.state: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ocsim up exited {self.proc.returncode}; see {self.where / 'up.stderr'}")
            return json.loads(self.state_file.read_text()) if self.state_file.exists() else None
        self.state = wait_for(ready, timeout, "ocsim up's state file")
        return self.state

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in (self.state.get("pids") or {}).values():
            if pid:
                try:
                    os.killpg(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self.stderr.close()


@dataclass
class Counters:
    origin: float = 0.0   # bytes the edges filled from the origin
    served: float = 0.0   # bytes the edges sent (players and peers)
    from_cache: float = 0.0


def read_counters(edges: Sequence[Mapping[str, Any]]) -> Counters:
    c = Counters()
    for e in edges:
        with urllib.request.urlopen(f"{e['url']}/metrics", timeout=10) as resp:
            m = parse_text(resp.read().decode())
        for k, v in m.items():
            if k.startswith("ocsim_edge_filled_bytes_total") and 'source="origin"' in k:
                c.origin += v
            elif k.startswith("ocsim_edge_served_bytes_total"):
                c.served += v
                if 'source="cache"' in k:
                    c.from_cache += v
    return c


@dataclass
class Day:
    to_players: int = 0
    requests: int = 0     # answered 200
    failed: int = 0
    sessions: int = 0
    origin: float = 0.0
    served: float = 0.0
    from_cache: float = 0.0
    job: dict[str, Any] = field(default_factory=dict)

    @property
    def offload(self) -> float:
        return 1.0 - self.origin / self.to_players if self.to_players else 0.0


class Replay:
    """Sessions of one day, dispatched at their compressed times, bounded in concurrency."""

    def __init__(self, w: LiveWorkload, control: str, day_s: float, concurrency: int = 48) -> None:
        self.w, self.control, self.day_s = w, control, day_s
        self.sem = asyncio.Semaphore(concurrency)

    async def session(self, http: aiohttp.ClientSession, indices: list[int], t0: float, base: float,
                      day: Day) -> None:
        trace = self.w.trace
        title = trace.keys[indices[0]].split("/")[2]
        async with self.sem:
            async with http.post(f"{self.control}/v1/play", json={"title": title, "isp": ISP}) as resp:
                if resp.status != 200:
                    day.failed += len(indices)
                    return
                candidates = [c["url"] for c in (await resp.json())["candidates"]]
            day.sessions += 1
            for i in indices:
                at = t0 + (trace.times[i] - base) / DAY * self.day_s
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the session's next segment is due then (compressed time)
                path = trace.keys[i][len("/content/" + title + "/"):]
                for url in candidates:  # fail over down the list, as the player does
                    try:
                        async with http.get(url.replace("master.m3u8", path)) as resp:
                            body = await resp.read()
                            if resp.status == 200:
                                day.to_players += len(body)
                                day.requests += 1
                                break
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        continue
                else:
                    day.failed += 1

    async def day(self, number: int, day: Day) -> None:
        """Every session that starts in day `number` (0-based), from now on."""
        lo, hi = number * DAY, (number + 1) * DAY
        starts = [s for s in self.w.sessions if lo <= self.w.trace.times[s[0]] < hi]
        t0 = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as http:
            tasks = []
            for s in starts:
                at = t0 + (self.w.trace.times[s[0]] - lo) / DAY * self.day_s
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # the next session starts then (compressed time)
                tasks.append(asyncio.create_task(self.session(http, s, t0, lo, day)))
            await asyncio.gather(*tasks)


def pipeline_holds(pipeline: str, at_least: int) -> bool:
    status, body = http_json(f"{pipeline}/v1/query?sql=SELECT%20count(*)%20FROM%20edge_request")
    return status == 200 and bool(body) and int(body["rows"][0][0]) >= at_least


def refresh(state: Mapping[str, Any], timeout: float) -> dict[str, Any]:
    control, token = state["control"], state["operator_token"]
    status, created = http_json(f"{control}/v1/prepositions", token, "POST",
                                {"isp": ISP, "refresh": True, "now": True, "bandwidth_bps": 0})
    if status != 202:
        raise RuntimeError(f"the refresh job was refused: {status} {created}")

    def ended() -> dict[str, Any] | None:
        _, job = http_json(f"{control}/v1/prepositions/{created['id']}", token)
        return job if job and job.get("state") in ("done", "partial", "failed") else None
    job: dict[str, Any] = wait_for(ended, timeout, "the refresh job to end")
    return job


def run_live(w: LiveWorkload, where: Path, *, days: int, day_s: float, capacity: int, policy: str,
             headroom: float, edges: int, preposition: bool, job_timeout: float = 180.0,
             origin_latency_ms: float = 5.0) -> list[Day]:
    """One live run; the days' figures."""
    up = LiveTopology(where, topology(capacity, day_s, policy, headroom, edges, origin_latency_ms), w.titles)
    out: list[Day] = []
    try:
        state = up.wait_ready()
        control, token = state["control"], state["operator_token"]
        wait_for(lambda: [e.get("state") for e in (http_json(f"{control}/v1/fleet", token)[1] or {}).get("edges", [])]
                 == ["up"] * edges, 30, "every edge up")
        replay = Replay(w, control, day_s)
        served_so_far = 0
        for d in range(days):
            day = Day()
            if preposition:
                if d > 0:  # the collector must hold yesterday before the job reads it
                    try:
                        wait_for(lambda: pipeline_holds(state["pipeline"], served_so_far), 60,
                                 "the pipeline to catch up")
                    except TimeoutError as exc:  # events dropped by a full buffer: the job reads what is there
                        print(f"LIVE note: {exc}", file=sys.stderr)
                day.job = refresh(state, job_timeout)
            before = read_counters(state["edges"])
            asyncio.run(replay.day(d, day))
            after = read_counters(state["edges"])
            day.origin, day.served = after.origin - before.origin, after.served - before.served
            day.from_cache = after.from_cache - before.from_cache
            served_so_far += day.requests  # each is an edge.request event at the collector
            out.append(day)
    finally:
        up.close()
    return out
