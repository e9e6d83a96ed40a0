"""`ocsim demo`: the whole story in about two minutes, ending in a report.

1. `ocsim up` (a child process) with the built-in topology on ephemeral ports and a demo
   catalog of short titles (Zipf popularity), so everything fits a laptop and a few minutes.
2. Pre-position the most popular titles on each ISP's edges (`POST /v1/prepositions`
   with the operator token), with a progress bar fed by `GET /v1/prepositions/{id}`.
3. A crowd: `--viewers` players, started over the first quarter of `--duration`, each
   playing Zipf-chosen titles back to back (`player.driver.play_session`, sped up by
   `--speed`) from client addresses spread over both ISPs' prefixes.
4. Half-way, the busiest edge is killed (SIGKILL, no drain); `up` leaves it dead, the
   control plane stops steering to it after three missed heartbeats, and players fail over.
5. When the duration is over no new session starts; running ones finish (bounded), the
   origin's and edges' counters are read again, `up` is stopped, and the report
   (`ocsim.report`) is printed and, with `--report-dir`, written as report.json + report.html.

Counters are diffed between the end of pre-positioning and the end of the crowd, so the
offload and hit ratios describe the crowd only.

`--media real` runs the same story on packaged real media (H.264/AAC fMP4, `ocsim package`):
the titles of `--media-dir DIR`, or, without it, `REAL_TITLES` generated test-source titles
packaged into the state directory (through the packaging cache, so only the first run
encodes). The origin serves only those; `--verify` then checks every file against the
titles' digest lists.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from common.cli_args import HelpFormatter
from common.content import DEFAULT_LADDER, Catalog, Title
from common.eventsink import EventSink, make_sink
from common.json_client import ApiError, call_json_async, request_json_async
from common.service import run_main
from ocsim.report import PipelineRows, build_report, edge_delta, render_html, render_text, \
    with_pipeline_figures
from ocsim.topology import DEFAULT_TOPOLOGY, Topology, TopologyError, load_topology

__all__ = ["DemoOptions", "build_parser", "demo_catalog", "main", "run_demo"]

HTTP_TIMEOUT_S = 5.0


_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"demo [{time.monotonic() - _T0:5.1f}s]: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    report_dir: Path | None = None
    duration_s: float = 60.0
    viewers: int = 30
    speed: float = 20.0
    titles: int = 40
    top: int = 6
    preposition_renditions: tuple[int, ...] = (235, 750, 1750)
    kill: bool = True
    seed: int = 1
    topology: Path | None = None
    state_dir: Path | None = None
    verify: bool = False
    max_segments: int | None = None
    events: bool = False  # `ocsim up --events`: NATS + the collector; players publish player.session
    settle_s: float = 30.0
    preposition_timeout_s: float = 60.0
    preposition_bandwidth_bps: int = 400_000_000  # per plan; the origin's uplink caps the sum anyway
    media: str = "synthetic"  # "real": packaged titles (ocsim package) instead of the synthetic catalog
    media_dir: Path | None = None  # with media="real": these packaged titles (default: generated ones)


MEDIA_KINDS = ("synthetic", "real")
REAL_TITLES = 4          # generated test-source titles of `ocsim demo --media real`
REAL_TITLE_S = 24.0      # six 4 s segments each
REAL_LADDER = "235,750,1750"  # the renditions the demo pre-positions; small enough to encode in seconds


def real_media(opts: DemoOptions, state_dir: Path) -> tuple[Path, Catalog]:
    """The media directory of a `--media real` demo and its catalog (Zipf popularity by id order).
    Raises RuntimeError with the reason when nothing playable can be had."""
    from common.errors import OcsimError
    from media.encode import TestSource, find_ffmpeg
    from media.ladder import parse_ladder
    from media.package import PackageRequest, default_cache_dir, package
    from origin.media import load_media_library

    try:
        if opts.media_dir is not None:
            media_dir = opts.media_dir
        else:
            media_dir = state_dir / "media"
            exe, ladder = find_ffmpeg(), parse_ladder(REAL_LADDER)
            for i in range(1, REAL_TITLES + 1):
                title = f"real-{i:02d}"
                t0 = time.monotonic()
                result = package(PackageRequest(TestSource(title, REAL_TITLE_S), title, media_dir, ladder,
                                                default_cache_dir()), exe, lambda done, total: None, lambda msg: None)
                say(f"packaged {title} ({'encoded' if result.encoded else 'from the cache'}, "
                    f"{time.monotonic() - t0:.1f}s)")
        lib = load_media_library(media_dir)
    except OcsimError as exc:
        raise RuntimeError(f"--media real: {exc.reason}") from None
    for name, why in lib.refused.items():
        say(f"media: refusing {name}: {why}")
    if not lib.titles:
        raise RuntimeError(f"--media real: no packaged title in {media_dir} (make some with `ocsim package`)")
    ids = sorted(lib.titles)
    weights = [1.0 / rank ** 0.9 for rank in range(1, len(ids) + 1)]
    total = sum(weights)
    catalog = Catalog.of(Title(t, lib.titles[t].duration_s, lib.titles[t].renditions, round(w / total, 6),
                               media="packaged") for t, w in zip(ids, weights))
    return media_dir, catalog


def demo_catalog(n: int, seed: int, alpha: float = 0.9) -> Catalog:
    """`n` short titles (48 to 100 s) with Zipf(alpha) popularity by rank."""
    rng = random.Random(seed)
    weights = [1.0 / rank ** alpha for rank in range(1, n + 1)]
    total = sum(weights)
    return Catalog.of(Title(f"demo-{rank:02d}", float(rng.randint(12, 25) * 4), DEFAULT_LADDER,
                            round(w / total, 6)) for rank, w in enumerate(weights, start=1))


# --- up, as a child ----------------------------------------------------------------------------

class UpProcess:
    """`ocsim up` as a child process; `state` is its state file once everything is healthy."""

    def __init__(self, topology_file: Path, state_dir: Path, extra: Sequence[str] = ()) -> None:
        self.extra = list(extra)
        self.topology_file = topology_file
        self.state_dir = state_dir
        self.state_file = state_dir / "state.json"
        self.log_path = state_dir / "up.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.state: dict[str, Any] = {}

    async def start(self, timeout: float = 60.0) -> dict[str, Any]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # A file left by an earlier `up` (killed, so it never removed it) would read as
        # ready at once, with dead URLs and pids that may now be someone else's.
        self.state_file.unlink(missing_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ocsim", "up", "--topology", str(self.topology_file),
                "--state-dir", str(self.state_dir), "--state-file", str(self.state_file), *self.extra,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        pause = 0.05
        while time.monotonic() < deadline:
            if self.state_file.exists():
                with contextlib.suppress(ValueError, OSError):
                    state = json.loads(self.state_file.read_text())
                    if isinstance(state, dict) and state.get("status", "running") == "running":
                        self.state = state
                        return self.state
            if self.proc.returncode is not None:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), pause)
            pause = min(pause * 2, 0.5)
        tail = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise RuntimeError(f"`ocsim up` did not get healthy (exit {self.proc.returncode}):\n{tail}")

    async def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            say("`ocsim up` did not stop in time; killing it")
            self.proc.kill()
            await self.proc.wait()


# --- HTTP helpers ----------------------------------------------------------------------------

async def try_json(http: aiohttp.ClientSession, url: str, token: str | None = None) -> Any:
    """The JSON of a successful GET, or None (a poll: the next one may succeed)."""
    try:
        return await call_json_async(http, "GET", url, token=token, timeout=HTTP_TIMEOUT_S)
    except ApiError:
        return None


def progress_bar(fraction: float, width: int = 30) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction:6.1%}"


async def preposition(http: aiohttp.ClientSession, state: dict[str, Any], opts: DemoOptions) -> list[dict[str, Any]]:
    """One job per ISP for its top titles; returns the jobs as they ended, with their duration."""
    control, token = state["control"], state["operator_token"]
    jobs: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for isp in state["isps"]:
        body: dict[str, Any] = {"isp": isp, "top": opts.top, "bandwidth_bps": opts.preposition_bandwidth_bps}
        if opts.preposition_renditions:
            body["renditions"] = list(opts.preposition_renditions)
        reply = await request_json_async(http, "POST", f"{control}/v1/prepositions", token=token, body=body,
                                         timeout=HTTP_TIMEOUT_S)
        answer = reply.body
        if reply.status != 202 or not isinstance(answer, dict):
            say(f"pre-positioning {isp} refused ({reply.status}): {answer}")
            continue
        jobs[answer["id"]] = {**answer, "isp": isp}
    tty = sys.stderr.isatty()
    last_line = ""
    deadline = t0 + opts.preposition_timeout_s
    pause = 0.1
    while jobs and time.monotonic() < deadline:
        for job_id in jobs:
            got = await try_json(http, f"{control}/v1/prepositions/{job_id}", token)
            if isinstance(got, dict):
                if got.get("state") in ("done", "partial", "failed") and "seconds" not in jobs[job_id]:
                    got["seconds"] = round(time.monotonic() - t0, 2)
                jobs[job_id] = {**jobs[job_id], **got}
        frac = sum(float(j.get("progress", 0)) for j in jobs.values()) / len(jobs)
        line = "pre-positioning " + progress_bar(frac) + "  " + "  ".join(
            f"{j['isp']}:{j.get('state')}" for j in jobs.values())
        if tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:  # a log, not a terminal: one line per tenth, and when a job changes state
            key = f"{int(frac * 10)} " + " ".join(str(j.get("state")) for j in jobs.values())
            if key != last_line:
                print(line, file=sys.stderr, flush=True)
            last_line = key
        if all(j.get("state") in ("done", "partial", "failed") for j in jobs.values()):
            break
        await asyncio.sleep(pause)
        pause = min(pause * 1.5, 0.5)
    if tty:
        print(file=sys.stderr)
    say("pre-positioning: " + ", ".join(f"{j['isp']} {j.get('state')} in {j.get('seconds', '?')}s"
                                        for j in jobs.values()))
    for j in jobs.values():
        j.setdefault("seconds", round(time.monotonic() - t0, 2))
        j.pop("plans", None)
    return list(jobs.values())


async def edge_stats(http: aiohttp.ClientSession, state: dict[str, Any]) -> dict[str, Any]:
    token = state.get("edge_operator_token") or state["operator_token"]  # the edges' own operator token
    got = await asyncio.gather(*(try_json(http, f"{e['url']}/admin/stats", token) for e in state["edges"]))
    return {e["id"]: g for e, g in zip(state["edges"], got) if isinstance(g, dict)}


# --- the crowd -------------------------------------------------------------------------------

@dataclass(slots=True)
class Crowd:
    """What the crowd did, live (fed by the players' event hooks)."""

    player_bytes: int = 0
    edge_bytes: dict[str, int] = field(default_factory=dict)
    active: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)

    def on_event(self, ev: Any) -> None:
        if ev.kind == "segment" and ev.nbytes:
            self.player_bytes += ev.nbytes
            if ev.edge:
                self.edge_bytes[ev.edge] = self.edge_bytes.get(ev.edge, 0) + ev.nbytes


def client_ip(prefix: str, rng: random.Random) -> str:
    net = ipaddress.ip_network(prefix)
    return str(net.network_address + rng.randint(1, max(1, net.num_addresses - 2)))


async def pipeline_figures(http: aiohttp.ClientSession, state: dict[str, Any], sessions: int,
                           timeout: float = 20.0) -> dict[str, Any]:
    """The pipeline's views once every session's end event is stored (bounded wait)."""
    base = state["pipeline"]
    deadline = time.monotonic() + timeout
    out: dict[str, Any] = {}
    while True:
        got = await try_json(http, f"{base}/v1/views/events")
        stored = {r[0]: r[1] for r in got.get("rows", [])} if isinstance(got, dict) else {}
        ended = await try_json(http, f"{base}/v1/views/qoe?since=24h")
        n = sum(r[1] for r in ended.get("rows", [])) if isinstance(ended, dict) else 0
        if n >= sessions or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)  # polling the collector with a deadline
    out["events"] = stored
    for view in ("qoe", "offload", "misses", "miss_causes", "steering_misses", "ingest_latency"):
        v = await try_json(http, f"{base}/v1/views/{view}?since=24h")
        if isinstance(v, dict):
            out[view] = [dict(zip(v["columns"], r)) for r in v["rows"]]
    return out


PIPELINE_SQL = {
    "edges": """SELECT edge, isp, count(*) FILTER (WHERE cache = 'hit'), count(*) FILTER (WHERE cache = 'cold'),
                count(*) FILTER (WHERE cache = 'evicted'), count(*) FILTER (WHERE cache = 'coalesced'),
                count(*) FILTER (WHERE cache = 'peer'), count(*) FILTER (WHERE cache = 'stale'),
                count(*) FILTER (WHERE cache <> 'none'), coalesce(sum(bytes), 0)
                FROM edge_request WHERE ts >= {since} GROUP BY 1, 2 ORDER BY 1""",
    "fills": "SELECT edge, source, count(*), coalesce(sum(bytes), 0) FROM edge_fill WHERE ts >= {since} "
             "GROUP BY 1, 2 ORDER BY 1, 2",
    "sessions": """SELECT state, errors, startup_s, rebuffer_count, rebuffer_s, avg_bitrate_kbps, switches, qoe_lin,
                   bytes, isp FROM player_session WHERE ts >= {since} AND phase = 'end' AND src = '{src}'
                   ORDER BY ts""",
    "plays": "SELECT count(*) FROM steer_play WHERE ts >= {since}",
}
PLAYERS_SRC = "demo-players"


async def pipeline_rows(http: aiohttp.ClientSession, state: dict[str, Any], since: float, sessions: int,
                        edges: dict[str, Any], timeout: float = 20.0) -> PipelineRows | None:
    """The crowd phase as the pipeline stored it, once it has caught up: every session's end
    event, and for each edge that was not killed as many requests as its counters say
    (events reach the store within a second or two; bounded wait). None: no answer."""
    base = state["pipeline"]
    deadline = time.monotonic() + timeout
    while True:
        got: dict[str, list[list[Any]]] = {}
        for name, sql in PIPELINE_SQL.items():
            ans = await call_json_async(http, "POST", f"{base}/v1/query", timeout=HTTP_TIMEOUT_S, body={
                "sql": sql.format(since=repr(float(since)), src=PLAYERS_SRC)})
            got[name] = list(ans.get("rows", []))
        stored = {str(r[0]): int(r[2]) + int(r[3]) + int(r[4]) + int(r[5]) for r in got["edges"]}
        caught_up = len(got["sessions"]) >= sessions and all(
            stored.get(e, 0) >= edge_delta(d.get("before"), d.get("after"))["requests"]
            for e, d in edges.items() if not d.get("killed"))
        if caught_up or time.monotonic() > deadline:
            return PipelineRows(got["edges"], got["fills"], got["sessions"], int(got["plays"][0][0]))
        await asyncio.sleep(0.25)  # polling the collector with a deadline


async def run_crowd(http: aiohttp.ClientSession, state: dict[str, Any], catalog: Catalog, opts: DemoOptions,
                    snapshots: dict[str, Any], events: EventSink | None = None,
                    ) -> tuple[Crowd, list[dict[str, Any]], dict[str, Any] | None]:
    from player.driver import play_session  # the player is only needed here

    rng = random.Random(opts.seed)
    titles = catalog.by_popularity()
    weights = [t.popularity for t in titles]
    isps = list(state["isps"].items())
    crowd = Crowd()
    timeline: list[dict[str, Any]] = []
    failure: dict[str, Any] | None = None
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    end_at = t0 + opts.duration_s
    ramp = opts.duration_s / 4
    origin_url, origin_token = state["origin"], state["origin_admin_token"]

    async def viewer(i: int) -> None:
        vr = random.Random(opts.seed * 1000 + i)
        await asyncio.sleep(ramp * i / max(1, opts.viewers))  # staggered arrivals, by schedule
        isp, prefixes = isps[i % len(isps)]
        while loop.time() < end_at:
            title = vr.choices(titles, weights)[0]
            crowd.active += 1
            try:
                rep = await play_session(state["control"], title.id, client_ip=client_ip(prefixes[0], vr),
                                         speed=opts.speed, verify=opts.verify, session=http,
                                         max_segments=opts.max_segments, on_event=crowd.on_event,
                                         events=events)
                d = rep.to_dict()
            except Exception as exc:  # noqa: BLE001 - a crashed player is a failed session, not a crashed demo
                d = {"title": title.id, "state": "failed", "errors": 1, "error": f"player crashed: {exc!r}",
                     "startup_s": None}
            finally:
                crowd.active -= 1
            d["isp"] = isp
            crowd.reports.append(d)

    async def sampler() -> None:
        while True:
            origin = await try_json(http, f"{origin_url}/admin/stats", origin_token)
            timeline.append({"t": round(loop.time() - t0, 2), "player_bytes": crowd.player_bytes,
                             "origin_bytes": int((origin or {}).get("bytes", 0))
                             - int((snapshots["origin_before"] or {}).get("bytes", 0)),
                             "edge_bytes": dict(crowd.edge_bytes), "active": crowd.active,
                             "sessions": len(crowd.reports)})
            await asyncio.sleep(1.0)

    async def killer() -> None:
        nonlocal failure
        await asyncio.sleep(opts.duration_s / 2)
        alive = [e for e in state["edges"] if e["id"] not in snapshots["killed"]]
        if len(alive) < 2:
            return
        victim = max(alive, key=lambda e: crowd.edge_bytes.get(e["id"], 0))
        last = await try_json(http, f"{victim['url']}/admin/stats",
                              state.get("edge_operator_token") or state["operator_token"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(victim["pid"]), signal.SIGKILL)
        snapshots["killed"][victim["id"]] = last
        failure = {"edge": victim["id"], "isp": victim["isp"], "at_s": round(loop.time() - t0, 2),
                   "signal": "SIGKILL"}
        say(f"t={failure['at_s']:.0f}s: killed {victim['id']} (SIGKILL, pid {victim['pid']})")

    say(f"crowd: {opts.viewers} viewers for {opts.duration_s:g}s at speed {opts.speed:g}x")
    sample_task = asyncio.create_task(sampler())
    kill_task = asyncio.create_task(killer()) if opts.kill else None
    viewers = [asyncio.create_task(viewer(i)) for i in range(opts.viewers)]
    try:
        done, pending = await asyncio.wait(viewers, timeout=opts.duration_s + opts.settle_s)
        if pending:
            say(f"{len(pending)} viewers still playing {opts.settle_s:g}s after the end; stopping them")
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        sample_task.cancel()
        if kill_task is not None:
            kill_task.cancel()
        await asyncio.gather(sample_task, *([kill_task] if kill_task else []), return_exceptions=True)
    return crowd, timeline, failure


def discard_dir(path: Path) -> None:
    """Remove a directory without waiting for it: the demo leaves gigabytes of cache behind, and
    deleting them can take a slow disk most of a minute. A detached `rm -rf` (its own session,
    so it outlives us and never gets our signals) does it after we are gone."""
    trash = path.with_name(path.name + ".deleting")
    try:
        path.rename(trash)
    except OSError:
        trash = path
    try:
        quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]  # keep no pipe of ours open
        os.posix_spawnp("rm", ["rm", "-rf", "--", str(trash)], dict(os.environ), file_actions=quiet, setsid=True)
    except OSError:
        shutil.rmtree(trash, ignore_errors=True)


# --- the whole demo --------------------------------------------------------------------------

async def run_demo(opts: DemoOptions) -> dict[str, Any]:
    wall0 = time.monotonic()
    base = load_topology(opts.topology) if opts.topology else DEFAULT_TOPOLOGY
    own_state = opts.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="ocsim-demo-")) if own_state else Path(opts.state_dir or "")
    state_dir.mkdir(parents=True, exist_ok=True)
    topo: Topology = base.with_ephemeral_ports()
    if opts.media == "real":
        try:
            media_dir, catalog = real_media(opts, state_dir)
        except RuntimeError:
            if own_state:
                discard_dir(state_dir)
            raise
        topo = topo.with_catalog(None).with_media(media_dir, only=True)
    else:
        catalog = demo_catalog(opts.titles, opts.seed)
        catalog_file = state_dir / "catalog.json"
        catalog_file.write_text(json.dumps(catalog.to_json()))
        if opts.topology is None or base.origin.catalog is None:
            topo = topo.with_catalog(catalog_file)
    # Access logs of thousands of requests a second cost the 2 cores the demo has; the
    # report reads counters, not logs.
    topo = topo.with_extra_args("--no-access-log")
    topology_file = state_dir / "demo-topology.toml"
    topology_file.write_text(topo.to_toml())
    up = UpProcess(topology_file, state_dir, ["--events"] if opts.events else [])
    pipeline: dict[str, Any] | None = None
    rows: PipelineRows | None = None
    try:
        say(f"starting the topology ({topo.describe()})")
        state = await up.start()
        say(f"up: origin {state['origin']}, control {state['control']}, {len(state['edges'])} edges "
            f"({time.monotonic() - wall0:.1f}s)")
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            jobs = await preposition(http, state, replace(opts, top=min(opts.top, len(catalog))))
            snapshots: dict[str, Any] = {"killed": {}}
            snapshots["origin_before"] = await try_json(http, f"{state['origin']}/admin/stats",
                                                        state["origin_admin_token"])
            crowd_since = time.time()  # the pipeline's view of the crowd phase starts here
            before = await edge_stats(http, state)
            sink = make_sink(state.get("events"), PLAYERS_SRC)
            await sink.start()
            try:
                crowd, timeline, failure = await run_crowd(http, state, catalog, opts, snapshots, sink)
            finally:
                await sink.close(timeout=10)
            say(f"crowd done: {len(crowd.reports)} sessions")
            after = await edge_stats(http, state)
            after.update({k: v for k, v in snapshots["killed"].items() if v is not None})
            origin_after = await try_json(http, f"{state['origin']}/admin/stats", state["origin_admin_token"])
            edges = {e["id"]: {"isp": e["isp"], "before": before.get(e["id"]), "after": after.get(e["id"]),
                               "killed": e["id"] in snapshots["killed"]} for e in state["edges"]}
            if state.get("pipeline"):
                try:
                    rows = await pipeline_rows(http, state, crowd_since, len(crowd.reports), edges)
                except ApiError as exc:
                    say(f"the pipeline did not answer ({exc}); the report's figures are the counters'")
                pipeline = await pipeline_figures(http, state, len(crowd.reports))
    finally:
        await up.stop()
        say("topology stopped")
        if own_state:
            discard_dir(state_dir)
    settings = {"duration_s": opts.duration_s, "viewers": opts.viewers, "speed": opts.speed,
                "titles": len(catalog), "top": min(opts.top, len(catalog)), "seed": opts.seed, "media": opts.media,
                "preposition_renditions": list(opts.preposition_renditions),
                "topology": topo.describe(),
                "origin": {"latency_ms": topo.origin.latency_ms, "total_bandwidth_bps": topo.origin.total_bandwidth_bps}}
    report = build_report(sessions=crowd.reports, edges=edges, origin_before=snapshots["origin_before"],
                        origin_after=origin_after, settings=settings, preposition=jobs, failure=failure,
                        timeline=timeline, wall_s=time.monotonic() - wall0)
    if rows is not None:  # the figures from the events, checked against the counters
        report = with_pipeline_figures(report, rows, crowd.reports)
    if pipeline is not None:
        report["pipeline"] = pipeline  # the pipeline's own views of the same crowd
    return report


def build_parser() -> argparse.ArgumentParser:
    d = DemoOptions()
    p = argparse.ArgumentParser(prog="ocsim demo", description="up + pre-position + a crowd of players + a failure "
                                "+ a report", formatter_class=HelpFormatter)
    p.add_argument("--report-dir", help="write report.json and report.html here")
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds of crowd (default %(default)s)")
    p.add_argument("--viewers", type=int, default=d.viewers, help="concurrent viewers (default %(default)s)")
    p.add_argument("--speed", type=float, default=d.speed, help="playback speed-up (default %(default)s)")
    p.add_argument("--titles", type=int, default=d.titles, help="titles in the demo catalog (default %(default)s)")
    p.add_argument("--top", type=int, default=d.top, help="titles pre-positioned per ISP (default %(default)s)")
    p.add_argument("--no-kill", dest="kill", action="store_false", help="do not kill an edge half-way")
    p.add_argument("--verify", action="store_true", help="players verify every byte (costs CPU)")
    p.add_argument("--events", action="store_true",
                   help="run the event pipeline too (nats-server + collector); the report gains its views")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the crowd and the catalog")
    p.add_argument("--topology", help="topology TOML (default: built-in; ports are made ephemeral)")
    p.add_argument("--state-dir", help="keep secrets, caches and logs here (default: a temporary directory)")
    p.add_argument("--media", choices=MEDIA_KINDS, default="synthetic",
                   help="synthetic titles, or real: packaged H.264/AAC media (see --media-dir)")
    p.add_argument("--media-dir", help="with --media real: the packaged titles of this directory (`ocsim package "
                                       "--out DIR`); default: generate and package a few test-source titles")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.duration <= 0 or args.viewers < 1 or args.speed <= 0 or args.titles < 1 or args.top < 1:
        parser.error("--duration, --viewers, --speed, --titles and --top must be positive")
    opts = DemoOptions(report_dir=Path(args.report_dir) if args.report_dir else None, duration_s=args.duration,
                       viewers=args.viewers, speed=args.speed, titles=args.titles, top=min(args.top, args.titles),
                       kill=args.kill, seed=args.seed, topology=Path(args.topology) if args.topology else None,
                       state_dir=Path(args.state_dir) if args.state_dir else None, verify=args.verify,
                       events=args.events, media=args.media,
                       media_dir=Path(args.media_dir) if args.media_dir else None)
    if opts.media_dir is not None and opts.media != "real":
        parser.error("--media-dir needs --media real")
    if opts.topology:
        try:
            load_topology(opts.topology)
        except TopologyError as exc:
            print(f"ocsim demo: {exc}", file=sys.stderr)
            return 2
    holder: dict[str, Any] = {}

    async def go() -> None:
        holder["report"] = await run_demo(opts)

    try:
        run_main(go)
    except RuntimeError as exc:
        print(f"ocsim demo: {exc}", file=sys.stderr)
        return 1
    report = holder["report"]
    print(render_text(report))
    if opts.report_dir:
        opts.report_dir.mkdir(parents=True, exist_ok=True)
        (opts.report_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (opts.report_dir / "report.html").write_text(render_html(report))
        print(f"\nreport: {opts.report_dir / 'report.json'}, {opts.report_dir / 'report.html'}")
    return 0 if report["sessions_failed"] == 0 else 1
