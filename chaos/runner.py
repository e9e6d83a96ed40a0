"""`ocsim chaos run FILE [--json] [--report-dir DIR]`: one experiment, one verdict.

1. The scenario is parsed and checked against the topology before anything starts.
2. Two identical copies of the built-in topology come up on ephemeral ports, one per cohort
   (chaos/stack.py: ocsim.up's supervisor in-process, a fault proxy per edge on each of the
   links player -> edge, edge -> control, edge -> origin and edge -> peer, edges with their
   fault API on), as Netflix's ChAP gives the control and the experiment group a cluster
   each. Faults are made in the experiment's copy only, so only the experiment cohort is in
   the blast radius, whatever the fault:
     - process faults (kill, pause, restart) are real signals to its services;
     - origin_down / origin_503 / origin_slow go through its origin's link emulation;
     - disk_full / read_errors / corrupt / clock_skew through its edges' fault API;
     - partition blackholes the edge -> control proxies of one ISP's edges (heartbeats
       never arrive);
     - a toxic on `link:NAME` goes on every proxy of that link in the experiment's copy, or
       with `edge = ID` only on those with that edge at one end (player-edge: the players'
       connections to it; edge-control / edge-origin: its own; edge-peer: its asks to its
       peers and theirs to it). Both copies have the same proxies, so both cohorts pay
       the same hops.
3. Viewers are split into two equal cohorts (chaos/cohorts.py). Each viewer plays sessions
   back to back until `duration_s` against its cohort's control plane, each to its last
   frame (`play_out`: a session lasts its media time at `speed`, so stream starts per
   second count starts, not how fast the bytes came when nobody noticed); each finished
   session's report (the player's own, `PlayReport.to_dict()`) feeds its cohort's values.
   By default the metrics come from the event pipeline: the runner starts its own
   (chaos/observer.py: one nats-server -js and one collector beside the copies), the
   players publish player.session to it under their cohort's `src`, and the runner reads
   each cohort's sessions from the collector every POLL_S (chaos/piped.py) for the abort
   rules, the samples and the verdict. With `pipeline=False` (`--metrics players`) they
   come from the players' own reports, read as each session ends; the report's
   `metrics_source` says which.
   `sps` (stream starts per second) is counted per 2 s window from the sessions' starts.
4. After every finished session (with the pipeline: after every read of the collectors) the
   abort rules are checked; a breach stops the run at once.
   A sampler records both cohorts' figures every second for the report's timeline.
5. Always, also on abort or interrupt: every fault is undone (toxics removed, edge faults
   cleared, the origin's link restored, paused services resumed), then both copies are
   stopped. Then a verdict per metric (chaos/verdict.py) and one for the experiment;
   `--report-dir` gets report.json and report.html (chaos/report.py).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from chaos.cohorts import Cohorts, split_cohorts
from chaos.piped import PIPED_METRICS, TapSink, query_sql, records
from chaos.observer import ObserverPipeline, cohort_src
from chaos.metrics import METRICS, RATE_METRICS, SPS_WINDOW_S, sps_windows, stream_started
from chaos.process import PROCESS_FAULTS
from chaos.proxy import FaultProxy
from chaos.scenario import LINKS, Scenario, TimedFault, parse_scenario, timeline
from chaos.service_faults import SERVICE_FAULTS, edge_fault_patch, origin_link_patch
from chaos.stack import Stack, chaos_topology
from chaos.toxics import Blackhole, Toxic
from chaos.verdict import MetricVerdict, Outcome, abort_breach, judge
from common.errors import BadRequest
from common.events import PlayerSession
from common.eventsink import EventSink, make_sink
from player.abr import FailoverPolicy
from player.driver import Timeouts
from player.play_answer import PlayAnswerCache
from player.slow_edges import SlowEdges

SUPPORTED_LINKS = {f"link:{name}" for name in LINKS}  # all four (chaos/stack.py)
# The players run 20x faster than real time, but their timeouts are real seconds: the default
# 5 s without a byte would be 100 s of content. 1.5 s (30 s of content) is what a real
# player with a deep buffer allows an edge that has gone quiet before it fails over.
PLAYER_TIMEOUTS = Timeouts(connect_s=1.0, read_s=1.5, segment_s=10.0, playlist_s=5.0, steering_s=3.0)
COHORTS = ("control", "experiment")
POLL_S = 0.5  # how often the runner reads the collector (metrics from the pipeline)


class PortMapConnector(aiohttp.TCPConnector):
    """Connects to a mapped (host, port) instead of the URL's: a cohort's proxied path.

    aiohttp resolves IP literals without asking a resolver, so the map is applied where it
    resolves hosts (`_resolve_host`, stable in the aiohttp range pyproject pins)."""

    def __init__(self, port_map: dict[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.port_map = dict(port_map)

    async def _resolve_host(self, host: str, port: int, traces: Any = None) -> Any:
        results = await super()._resolve_host(host, port, traces)
        mapped = self.port_map.get(port)
        if mapped is None or host != "127.0.0.1":
            return results
        return [{**r, "port": mapped} for r in results]


def check_runnable(scenario: Scenario, edge_ids: set[str], isps: set[str] | None = None) -> None:
    """Refuse, naming the field, what this runner cannot make, before anything starts."""
    for f in scenario.faults:
        where = f"fault[{f.index}]"
        if f.toxic is not None:
            if f.target not in SUPPORTED_LINKS:
                raise BadRequest(f"{where}.target: {f.target} is not made by the cohort runner yet "
                                 f"(supported: {', '.join(sorted(SUPPORTED_LINKS))})")
            if f.edge is not None and f.edge not in edge_ids:
                raise BadRequest(f"{where}.edge: no edge {f.edge!r} (known: {', '.join(sorted(edge_ids))})")
            continue
        if f.target.startswith("edge:") and f.target[5:] not in edge_ids:
            raise BadRequest(f"{where}.target: no edge {f.target[5:]!r} (known: {', '.join(sorted(edge_ids))})")
        if f.target.startswith("isp:") and isps is not None and f.target[4:] not in isps:
            raise BadRequest(f"{where}.target: no ISP {f.target[4:]!r} (known: {', '.join(sorted(isps))})")


def _port(url: str) -> int:
    return int(str(url).rsplit(":", 1)[1].split("/", 1)[0])


class Experiment:
    """The live part of a run: two stacks, proxies, cohorts, sessions, the fault timeline, abort."""

    def __init__(self, scenario: Scenario, stacks: dict[str, Stack], catalog_ids: list[str], *,
                 speed: float, max_segments: int | None, observer: ObserverPipeline | None = None) -> None:
        self.scenario = scenario
        # with the runner's pipeline, the cohorts' metrics come from its collector
        self.observer = observer
        self.piped = observer is not None
        self.sinks: dict[str, EventSink] = {}
        self.piped_rows: dict[str, list[list[Any]]] = {c: [] for c in COHORTS}
        self.polls: dict[str, int] = {c: 0 for c in COHORTS}
        self.poll_errors: list[str] = []
        self.unpublished = 0  # sessions without a play id, whose end the runner published
        self._epoch0 = 0.0
        self.stacks = stacks
        self.catalog_ids = catalog_ids
        self.speed = speed
        self.max_segments = max_segments
        viewers = [f"viewer-{i:03d}" for i in range(scenario.viewers)]
        self.cohorts: Cohorts = split_cohorts(viewers, scenario.seed)
        self.sessions: dict[str, list[dict[str, Any]]] = {c: [] for c in COHORTS}
        self.events: list[dict[str, Any]] = []
        self.samples: list[dict[str, Any]] = []
        self.aborted: str | None = None
        self.undo_errors: list[str] = []
        self.fault_effects: dict[str, dict[str, Any]] = {}  # each faulted edge's /faults at the end
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._origin_saved: dict[str, Any] | None = None
        self._edge_faulted: set[str] = set()
        self._corrupters: dict[int, asyncio.Task[None]] = {}
        self._http: aiohttp.ClientSession | None = None

    def now(self) -> float:
        return round(asyncio.get_running_loop().time() - self._t0, 3)

    # -- faults ----------------------------------------------------------------------------

    @property
    def exp(self) -> Stack:
        return self.stacks["experiment"]

    def link_proxies(self, target: str, edge: str | None = None) -> list[FaultProxy]:
        """The experiment copy's proxies a toxic on `target` (link:NAME) goes on."""
        return self.exp.links.select(target.removeprefix("link:"), None if edge is None else {edge})

    async def _corrupt_loop(self, edge_id: str, every_s: float) -> None:
        assert self._http is not None
        while True:
            with contextlib.suppress(Exception):  # the edge may be busy or restarting: try again
                got = await self.exp.edge_faults(self._http, edge_id, "POST", "/faults/corrupt", {"all": True})
                self.events.append({"t": self.now(), "move": "corrupted", "target": f"edge:{edge_id}",
                                    "count": got.get("count", 0)})
            await asyncio.sleep(every_s)

    async def make(self, tf: TimedFault, begin: bool) -> str:
        """Start (begin) or end one fault in the experiment's copy; what was done, in words."""
        f = tf.fault
        http = self._http
        assert http is not None
        if f.toxic is not None:
            proxies = self.link_proxies(f.target, f.edge)
            for proxy in proxies:
                if begin:
                    proxy.add_toxic(f.toxic)
                else:
                    proxy.remove_toxic(f.toxic.name)
            at = f" at {f.edge}" if f.edge is not None else ""
            return f"{f.toxic.kind} on {f.target}{at} ({len(proxies)} prox{'y' if len(proxies) == 1 else 'ies'})"
        if f.kind in PROCESS_FAULTS:
            name = {"origin": "origin", "control": "control"}.get(f.target, f.target[5:])
            driver = self.exp.driver
            assert driver is not None
            await asyncio.to_thread(driver.begin if begin else driver.end, f.kind, name)
            return f"{f.kind} {name}" if begin else f"undo {f.kind} {name}"
        if f.kind == "partition":
            name = f"fault-{f.index}-partition"
            for proxy in self.exp.links.select("edge-control", set(self.exp.edges_of(f.target[4:]))):
                if begin:
                    proxy.add_toxic(Blackhole(name, direction="upstream"))
                else:
                    proxy.remove_toxic(name)
            return f"blackhole {f.target[4:]} -> control"
        if f.kind.startswith("origin_"):
            if begin:
                if self._origin_saved is None:
                    self._origin_saved = await self.exp.origin_link(http)
                await self.exp.origin_link(http, origin_link_patch(f.kind, f.params))
            elif self._origin_saved is not None:
                await self.exp.origin_link(http, self._origin_saved)
            return "origin /admin/link"
        edge_id = f.target[5:]
        self._edge_faulted.add(edge_id)
        if f.kind == "corrupt":
            if begin:
                self._corrupters[f.index] = asyncio.create_task(self._corrupt_loop(edge_id, f.params["every_s"]))
            else:
                task = self._corrupters.pop(f.index, None)
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            return f"{edge_id} /faults/corrupt"
        await self.exp.edge_faults(http, edge_id, "PUT", body=edge_fault_patch(f.kind, f.params, begin))
        return f"{edge_id} /faults"

    async def undo_all(self) -> None:
        """Whatever is still in force, undone (also after an abort or an interrupt)."""
        for task in self._corrupters.values():
            task.cancel()
        await asyncio.gather(*self._corrupters.values(), return_exceptions=True)
        self._corrupters.clear()
        for proxy in self.exp.links.all():
            proxy.clear()
        http = self._http
        if http is None:
            return
        if self._origin_saved is not None:
            try:
                await self.exp.origin_link(http, self._origin_saved)
            except Exception as exc:  # noqa: BLE001 - report it; stopping goes on
                self.undo_errors.append(f"origin link: {exc}")
        for edge_id in sorted(self._edge_faulted):
            try:
                self.fault_effects[edge_id] = await self.exp.edge_faults(http, edge_id, "GET")
                await self.exp.edge_faults(http, edge_id, "DELETE")
            except Exception as exc:  # noqa: BLE001
                self.undo_errors.append(f"{edge_id} faults: {exc}")
        driver = self.exp.driver
        if driver is not None:
            try:
                await asyncio.to_thread(driver.release_all)
            except Exception as exc:  # noqa: BLE001
                self.undo_errors.append(f"processes: {exc}")

    async def fault_timeline(self) -> None:
        plan = timeline(self.scenario)
        moves: list[tuple[float, int, str, TimedFault]] = []
        for tf in plan:
            moves.append((tf.start_s, 1, "begin", tf))
            if tf.fault.duration_s > 0:
                moves.append((tf.end_s, 0, "end", tf))  # ends before begins at one instant
        moves.sort(key=lambda m: (m[0], m[1], m[3].fault.index))
        loop = asyncio.get_running_loop()
        for at, _, move, tf in moves:
            delay = self._t0 + at - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    return  # stopped (abort or end) before this move
                except asyncio.TimeoutError:
                    pass
            event = {"t": self.now(), "fault": tf.fault.index, "kind": tf.fault.kind,
                     "target": tf.fault.target, "move": move, "made_as": "(in progress)"}
            self.events.append(event)  # first: a run that ends meanwhile still shows the move
            event["made_as"] = await self.make(tf, move == "begin")
            event["done_t"] = self.now()

    # -- metrics ---------------------------------------------------------------------------

    def starts(self, cohort: str) -> list[float]:
        rs = records(self.piped_rows[cohort], self._epoch0) if self.piped else self.sessions[cohort]
        return [r["started_at_s"] for r in rs if stream_started(r)]

    def session_records(self, cohort: str) -> list[dict[str, Any]]:
        """The sessions per-session metrics are read from: the pipeline's ended ones, or the reports."""
        if self.piped:
            return records(self.piped_rows[cohort], self._epoch0, ended_only=True)
        return self.sessions[cohort]

    def fault_window(self) -> tuple[float, float]:
        """From the first fault's start to the last one's end (the whole run without faults):
        where SPS is compared, as ChAP compares the groups while the fault is in force."""
        plan = timeline(self.scenario)
        if not plan:
            return 0.0, self.scenario.duration_s
        lo = min(tf.start_s for tf in plan)
        hi = max(max(tf.end_s for tf in plan), lo + 4 * SPS_WINDOW_S)
        return lo, min(hi, self.scenario.duration_s)

    def values(self, cohort: str, upto: float | None = None) -> dict[str, list[float]]:
        piped = self.session_records(cohort)
        out = {name: [m.of_session(r) for r in (piped if name in PIPED_METRICS else self.sessions[cohort])]
               for name, m in METRICS.items()}
        lo, hi = self.fault_window()
        end = hi if upto is None else min(upto, hi)
        out["sps"] = sps_windows(self.starts(cohort), lo, end, SPS_WINDOW_S)
        return out

    def session_ended(self, cohort: str, report: dict[str, Any]) -> None:
        report["cohort"] = cohort
        report["ended_at_s"] = self.now()
        self.sessions[cohort].append(report)
        if not self.piped:
            self.check_abort()

    def check_abort(self) -> None:
        if self.aborted is None:
            now = self.now()
            reason = abort_breach(self.scenario.abort, self.values("control", now), self.values("experiment", now))
            if reason is not None:
                self.aborted = reason
                self.events.append({"t": now, "move": "abort", "reason": reason})
                self._stop.set()

    async def sampler(self) -> None:
        """Both cohorts' figures once a second, for the report's timeline."""
        while not self._stop.is_set():
            t = self.now()
            for cohort in COHORTS:
                ss = self.session_records(cohort)
                recent = [s for s in self.starts(cohort) if s >= t - SPS_WINDOW_S * 2]
                self.samples.append({
                    "t": t, "cohort": cohort, "sessions": len(ss),
                    "failed": sum(1 for r in ss if METRICS["failed"].of_session(r)),
                    "sps": round(len(recent) / (SPS_WINDOW_S * 2), 3)})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def poll(self, cohort: str) -> int:
        """One read of the cohort's collector: its player.session rows since the run began."""
        assert self._http is not None and self.observer is not None
        url = self.observer.pipeline_url + "/v1/query"
        async with self._http.post(url, json={"sql": query_sql(self._epoch0 - 1.0, cohort_src(cohort))},
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"{cohort} collector: {resp.status} {data}")
        self.piped_rows[cohort] = list(data["rows"])
        self.polls[cohort] += 1
        return len(records(self.piped_rows[cohort], self._epoch0, ended_only=True))

    async def watcher(self) -> None:
        """Every POLL_S: both collectors read, then the abort rules checked."""
        while not self._stop.is_set():
            for cohort in COHORTS:
                try:
                    await self.poll(cohort)
                except Exception as exc:  # noqa: BLE001 - a slow read: the next one comes
                    self.poll_errors.append(f"t={self.now()} {cohort}: {exc!r}"[:200])
            self.check_abort()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), POLL_S)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """At the end: the sinks flushed, then the collectors read until every session's end is in."""
        await asyncio.gather(*(sink.close() for sink in self.sinks.values()), return_exceptions=True)
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        pending = set(COHORTS)
        while pending and loop.time() < until:
            for cohort in sorted(pending):
                with contextlib.suppress(Exception):
                    if await self.poll(cohort) >= len(self.sessions[cohort]):
                        pending.discard(cohort)
            if pending:
                await asyncio.sleep(0.2)
        for cohort in sorted(pending):
            self.poll_errors.append(f"{cohort}: the collector had not every session's end after {timeout_s:g} s")

    def publish_unseen(self, cohort: str, sink: TapSink, report: dict[str, Any], n: int) -> None:
        """A session that got no play answer publishes nothing itself: its end goes in for it."""
        if sink.play_id is not None:
            report["play_id"] = sink.play_id
            return
        sid = f"chaos{cohort[:3]}{n}"
        report["play_id"] = sid
        self.unpublished += 1
        for phase in ("start", "end"):
            sink.inner.emit(PlayerSession(sid, phase, str(report.get("title", "")), report.get("isp"), None,
                                          "failed", None, 0, 0.0, 0.0, 0, 0, 1, 0, 0, 0.0, 0.0, None))

    async def viewer(self, viewer: str, cohort: str, http: aiohttp.ClientSession, index: int) -> None:
        from ocsim.demo import client_ip
        from player.driver import play_session

        rng = random.Random(f"{self.scenario.seed}:{viewer}")
        state = self.stacks[cohort].state
        isps = state["isps"]
        isp = self.scenario.isp or sorted(isps)[index % len(isps)]
        policy = FailoverPolicy(enabled=cohort == "control" or self.scenario.experiment_failover)
        answers = PlayAnswerCache()
        slow = SlowEdges()  # the viewer's memory of edges too slow to play from, across sessions
        edge_isp = {e["id"]: e["isp"] for e in state["edges"]}
        loop = asyncio.get_running_loop()
        end_at = self._t0 + self.scenario.duration_s
        crowd_at = self.scenario.flash_crowd_at_s
        # with a flash crowd, the least popular title is the new one: nobody plays it before
        everyday = self.catalog_ids[:-1] if crowd_at is not None else self.catalog_ids
        n = 0
        while loop.time() < end_at and not self._stop.is_set():
            n += 1
            started = self.now()
            tap = TapSink(self.sinks[cohort]) if self.piped else None
            crowd = crowd_at is not None and started >= crowd_at
            title = self.catalog_ids[-1] if crowd else rng.choice(everyday)
            cached_before, fallback_before = answers.used, answers.used_fallback
            try:
                rep = await play_session(state["control"], title, client_ip=client_ip(isps[isp][0], rng),
                                         speed=self.speed, session=http, max_segments=self.max_segments,
                                         buffer_cap_s=self.scenario.buffer_s,
                                         failover_policy=policy, verify=True, timeouts=PLAYER_TIMEOUTS,
                                         answers=answers, events=tap, slow_edges=slow, play_out=True)
                report = rep.to_dict()
                served = [e for e in report.get("edges") or [] if e in edge_isp]
                report["off_isp"] = (sum(1 for e in served if edge_isp[e] != isp) / len(served)) if served else 0.0
            except Exception as exc:  # noqa: BLE001 - a crashed player is a failed session
                report = {"title": title, "state": "failed", "errors": 1, "startup_s": None,
                          "error": f"player crashed: {exc!r}"}
            report["viewer"] = viewer
            report["started_at_s"] = started
            report["flash_crowd"] = crowd
            report["answer_from_cache"] = answers.used > cached_before
            report["answer_from_fallback"] = answers.used_fallback > fallback_before  # a title never steered to
            if tap is not None:
                self.publish_unseen(cohort, tap, report, index * 100_000 + n)
            self.session_ended(cohort, report)

    async def run(self) -> None:
        self._t0 = asyncio.get_running_loop().time()
        self._epoch0 = time.time()
        if self.observer is not None:
            for cohort in COHORTS:
                self.sinks[cohort] = make_sink(self.observer.events_url, cohort_src(cohort))
                await self.sinks[cohort].start()
        maps = {cohort: {_port(e["url"]): self.stacks[cohort].links.of("player-edge", e["id"]).port
                         for e in self.stacks[cohort].state["edges"]} for cohort in COHORTS}
        async with aiohttp.ClientSession() as self._http, \
                aiohttp.ClientSession(connector=PortMapConnector(maps["control"], limit=0)) as direct, \
                aiohttp.ClientSession(connector=PortMapConnector(maps["experiment"], limit=0)) as faulted:
            faults = asyncio.create_task(self.fault_timeline())
            sampler = asyncio.create_task(self.sampler())
            watcher = asyncio.create_task(self.watcher() if self.piped else self._stop.wait())
            players = [asyncio.create_task(self.viewer(v, "control", direct, i))
                       for i, v in enumerate(self.cohorts.control)]
            players += [asyncio.create_task(self.viewer(v, "experiment", faulted, i))
                        for i, v in enumerate(self.cohorts.experiment)]
            stop = asyncio.create_task(self._stop.wait())
            everyone: asyncio.Future[list[None]] = asyncio.gather(*players)
            try:
                # Sessions running at the end finish (bounded by the player's own timeouts);
                # an abort cancels them at once. A fault driver that fails ends the run too.
                waiters: list[asyncio.Future[Any]] = [stop, everyone, faults]
                while True:
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    if stop in done or everyone in done or faults.exception() is not None:
                        break
                    waiters = [stop, everyone]  # the timeline is over; the players go on
            finally:
                self._stop.set()
                everyone.cancel()
                for task in (*players, stop, sampler, watcher):
                    task.cancel()
                await asyncio.gather(everyone, *players, stop, sampler, watcher, return_exceptions=True)
                if self.piped:
                    await self.drain()
                if not faults.done():
                    faults.cancel()
                fault_error = (await asyncio.gather(faults, return_exceptions=True))[0]
                try:
                    await self.undo_all()
                finally:
                    self._http = None
            if isinstance(fault_error, Exception):
                raise RuntimeError(f"a fault could not be made: {fault_error}") from fault_error

    def verdicts(self) -> list[MetricVerdict]:
        upto = self.now() if self.aborted else None
        ctl, exp = self.values("control", upto), self.values("experiment", upto)
        return [judge(h, ctl[h.metric], exp[h.metric]) for h in self.scenario.steady_state]


def overall(verdicts: Sequence[MetricVerdict], aborted: str | None) -> Outcome:
    if aborted is not None or any(v.outcome is Outcome.FAIL for v in verdicts):
        return Outcome.FAIL
    if any(v.outcome is Outcome.INCONCLUSIVE for v in verdicts):
        return Outcome.INCONCLUSIVE
    return Outcome.PASS


def _finite(x: float | None) -> float | str | None:
    return x if x is None or x == x and abs(x) != float("inf") else str(x)


async def run_experiment(scenario: Scenario, *, speed: float = 20.0, max_segments: int | None = 8,
                         titles: int = 8, pipeline: bool = True) -> dict[str, Any]:
    from ocsim.demo import demo_catalog, discard_dir
    from ocsim.topology import DEFAULT_TOPOLOGY

    topo = DEFAULT_TOPOLOGY
    edge_ids = {e.id for e in topo.edges}
    check_runnable(scenario, edge_ids, set(topo.isps))
    if scenario.isp is not None and scenario.isp not in topo.isps:
        raise BadRequest(f"cohorts.isp: no ISP {scenario.isp!r} in the topology")
    wall0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="ocsim-chaos-"))
    catalog = demo_catalog(titles, scenario.seed)
    catalog_file = root / "catalog.json"
    catalog_file.write_text(json.dumps(catalog.to_json()))
    topo = chaos_topology(topo.with_ephemeral_ports().with_catalog(catalog_file).with_extra_args("--no-access-log"))
    stacks = {c: Stack(c, topo, root / c, scenario.seed) for c in COHORTS}
    observer = ObserverPipeline(root / "observer") if pipeline else None
    exp: Experiment | None = None
    try:
        started = await asyncio.gather(*(s.start() for s in stacks.values()),
                                       *([asyncio.to_thread(observer.start)] if observer else []),
                                       return_exceptions=True)
        failed = [r for r in started if isinstance(r, BaseException)]
        if failed:
            raise RuntimeError(f"a copy of the topology did not come up: {failed[0]}")
        setup_s = round(time.monotonic() - wall0, 2)
        exp = Experiment(scenario, stacks, [t.id for t in catalog.by_popularity()],
                         speed=speed, max_segments=max_segments, observer=observer)
        await exp.run()
    finally:
        await asyncio.gather(*(s.stop() for s in stacks.values()),
                             *([asyncio.to_thread(observer.stop)] if observer else []), return_exceptions=True)
        discard_dir(root)
    verdicts = exp.verdicts()
    return {
        "scenario": scenario.name, "description": scenario.description, "seed": scenario.seed,
        "duration_s": scenario.duration_s,
        "outcome": overall(verdicts, exp.aborted).value, "aborted": exp.aborted,
        "experiment_failover": scenario.experiment_failover,
        "cohorts": {"control": list(exp.cohorts.control), "experiment": list(exp.cohorts.experiment),
                    "left_out": list(exp.cohorts.left_out)},
        "metrics_source": "pipeline" if exp.piped else "players",
        "metrics_source_detail": (
            "the runner's event pipeline (one nats-server -js and collector beside the copies): each "
            "cohort's player.session events read from the collector (POST /v1/query, by src) every 0.5 s "
            "for the abort rules and the samples, and once more after the players stopped for the "
            "verdict; off_isp still from the players' reports"
            if exp.piped else
            "the players' own session reports, read as each session ends (--metrics players: no event pipeline)"),
        "pipeline": ({"polls": exp.polls, "poll_errors": exp.poll_errors[:20],
                      "sessions_published_by_runner": exp.unpublished,
                      "ended_sessions": {c: len(exp.session_records(c)) for c in COHORTS},
                      "failed_sessions": {c: sum(1 for r in exp.session_records(c) if METRICS["failed"].of_session(r))
                                          for c in COHORTS},
                      "reports": {c: len(exp.sessions[c]) for c in COHORTS}} if exp.piped else None),
        "metrics": {**{m.name: {"worse": m.worse, "meaning": m.meaning} for m in METRICS.values()},
                    **{m.name: {"worse": m.worse, "meaning": m.meaning, "window_s": SPS_WINDOW_S}
                       for m in RATE_METRICS.values()}},
        "verdicts": [{"metric": v.metric, "outcome": v.outcome.value, "p": v.p, "test": v.test,
                      "control_median": _finite(v.control_median),
                      "experiment_median": _finite(v.experiment_median),
                      "n_control": v.n_control, "n_experiment": v.n_experiment} for v in verdicts],
        "timeline": exp.events,
        "samples": exp.samples,
        "undo_errors": exp.undo_errors,
        "fault_effects": exp.fault_effects,
        "sessions": exp.sessions["control"] + exp.sessions["experiment"],
        "setup_s": setup_s,
        "wall_s": round(time.monotonic() - wall0, 2),
    }


def render_line(report: dict[str, Any]) -> str:
    parts = [f"{v['metric']} {v['outcome']}" + (f" (p={v['p']:.3g})" if v["p"] is not None else "")
             for v in report["verdicts"]]
    n = {c: sum(1 for s in report["sessions"] if s.get("cohort") == c) for c in ("control", "experiment")}
    line = (f"{report['scenario']}: {report['outcome'].upper()}  "
            f"[{n['control']} control / {n['experiment']} experiment sessions, {report['wall_s']:.0f}s]  "
            + "; ".join(parts))
    return line + (f"  -- {report['aborted']}" if report["aborted"] else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim chaos", description="chaos experiments with a verdict")
    sub = p.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run one scenario file")
    run.add_argument("file", type=Path)
    run.add_argument("--json", action="store_true", help="print the whole report as JSON")
    run.add_argument("--report-dir", type=Path, help="write report.json and report.html there")
    run.add_argument("--speed", type=float, default=20.0, help="players' clock speed-up")
    run.add_argument("--max-segments", type=int, default=8, help="segments per session")
    run.add_argument("--metrics", choices=("pipeline", "players"), default="pipeline",
                     help="where the cohorts' metrics come from: the event pipeline the runner starts (the "
                          "players publish player.session to it; default), or the players' own reports")
    check = sub.add_parser("check", help="parse and check scenario files, start nothing")
    check.add_argument("files", type=Path, nargs="+")
    return p


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        if args.action == "check":
            for path in args.files:
                s = parse_scenario(path.read_text())
                print(f"{path}: ok ({len(s.faults)} faults, {len(s.steady_state)} metrics)")
            return 0
        scenario = parse_scenario(args.file.read_text())
        report = asyncio.run(run_experiment(scenario, speed=args.speed, max_segments=args.max_segments,
                                                pipeline=args.metrics == "pipeline"))
    except BadRequest as exc:
        print(f"ocsim chaos: {exc.reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ocsim chaos: {exc}", file=sys.stderr)
        return 2
    if args.report_dir is not None:
        from chaos.report import render_html
        args.report_dir.mkdir(parents=True, exist_ok=True)
        (args.report_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        (args.report_dir / "report.html").write_text(render_html(report))
    print(json.dumps(report, default=str) if args.json else render_line(report))
    return {"pass": 0, "fail": 1}.get(report["outcome"], 3)
