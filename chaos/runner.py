"""`ocsim chaos run FILE [--json] [--report-dir DIR]`: one experiment, one verdict.

1. The scenario is parsed and checked against the topology before anything starts.
2. `ocsim up` (a child) brings up the built-in topology on ephemeral ports.
3. Two fault proxies (chaos/proxy.py) stand in front of every edge, one per cohort.
   Viewers are split into two equal cohorts (chaos/cohorts.py); each cohort's players reach
   the edges only through their cohort's proxies (their HTTP connector maps each edge's
   port to its proxy's), so both cohorts pay the same extra hop. Faults are made on the
   experiment cohort's proxies only, so only it is in the blast radius:
     - toxics on `link:player-edge` go on every edge's proxy;
     - `kill` of an edge becomes, for the experiment cohort, a `reset` of every connection
       to it, and `pause` a `blackhole` (accepted, never answered): the players see what a
       dead or a stopped edge shows them, while the control cohort keeps the real edge.
   Faults that would hit both cohorts (origin, control, the edge's own upstream links,
   restart) are refused before anything starts: the cohort runner does not make them yet.
4. Each viewer plays sessions back to back until `duration_s`; each finished session's
   report (the player's own, `PlayReport.to_dict()`) feeds its cohort's per-metric values.
   The event pipeline is not read yet: the cohorts' metrics come from the players' reports.
5. After every finished session the abort rules are checked; a breach stops the run at once.
6. Always, also on abort or interrupt: every toxic is removed, the proxies are closed and
   `up` is stopped. Then a verdict per metric (chaos/verdict.py) and one for the experiment.
"""
from __future__ import annotations

import argparse
import asyncio
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
from chaos.metrics import METRICS
from chaos.proxy import FaultProxy
from chaos.scenario import Scenario, TimedFault, parse_scenario, timeline
from chaos.toxics import Blackhole, Reset, Toxic
from chaos.verdict import MetricVerdict, Outcome, abort_breach, judge
from common.errors import BadRequest

SUPPORTED_LINKS = {"link:player-edge"}


class PortMapConnector(aiohttp.TCPConnector):
    """Connects to a mapped (host, port) instead of the URL's: the experiment cohort's path.

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


def check_runnable(scenario: Scenario, edge_ids: set[str]) -> None:
    """Refuse, naming the field, the faults this runner cannot confine to one cohort."""
    for f in scenario.faults:
        where = f"fault[{f.index}]"
        if f.toxic is not None:
            if f.target not in SUPPORTED_LINKS:
                raise BadRequest(f"{where}.target: {f.target} is not made by the cohort runner yet "
                                 f"(supported: {', '.join(sorted(SUPPORTED_LINKS))})")
            continue
        if not f.target.startswith("edge:"):
            raise BadRequest(f"{where}.target: a fault on {f.target} would hit both cohorts; "
                             "the cohort runner makes edge faults only")
        if f.kind not in ("kill", "pause"):
            raise BadRequest(f"{where}.kind: {f.kind} is not made by the cohort runner yet (kill, pause)")
        if f.target[5:] not in edge_ids:
            raise BadRequest(f"{where}.target: no edge {f.target[5:]!r} (known: {', '.join(sorted(edge_ids))})")


def cohort_toxic(tf: TimedFault) -> Toxic:
    f = tf.fault
    if f.toxic is not None:
        return f.toxic
    name = f"fault-{f.index}-{f.kind}"
    return Reset(name, direction="upstream") if f.kind == "kill" else Blackhole(name, direction="upstream")


class Experiment:
    """The live part of a run: proxies, cohorts, sessions, the fault timeline, abort."""

    def __init__(self, scenario: Scenario, state: dict[str, Any], catalog_ids: list[str], *,
                 speed: float, max_segments: int | None) -> None:
        self.scenario = scenario
        self.state = state
        self.catalog_ids = catalog_ids
        self.speed = speed
        self.max_segments = max_segments
        viewers = [f"viewer-{i:03d}" for i in range(scenario.viewers)]
        self.cohorts: Cohorts = split_cohorts(viewers, scenario.seed)
        self.proxies: dict[str, dict[str, FaultProxy]] = {"control": {}, "experiment": {}}
        self.sessions: dict[str, list[dict[str, Any]]] = {"control": [], "experiment": []}
        self.events: list[dict[str, Any]] = []
        self.aborted: str | None = None
        self._stop = asyncio.Event()
        self._t0 = 0.0

    def now(self) -> float:
        return round(asyncio.get_running_loop().time() - self._t0, 3)

    def edge_port(self, edge: dict[str, Any]) -> int:
        return int(str(edge["url"]).rsplit(":", 1)[1].split("/", 1)[0])

    async def start_proxies(self) -> None:
        for cohort, proxies in self.proxies.items():
            for i, edge in enumerate(self.state["edges"]):
                proxy = FaultProxy("127.0.0.1", self.edge_port(edge), seed=self.scenario.seed * 1000 + i)
                proxies[edge["id"]] = await proxy.start()

    async def close(self) -> None:
        for proxies in self.proxies.values():
            for proxy in proxies.values():
                proxy.clear()
                await proxy.close()

    def targets(self, tf: TimedFault) -> list[FaultProxy]:
        faulted = self.proxies["experiment"]
        if tf.fault.target.startswith("edge:"):
            return [faulted[tf.fault.target[5:]]]
        return list(faulted.values())

    async def fault_timeline(self) -> None:
        plan = timeline(self.scenario)
        moves: list[tuple[float, int, str, TimedFault]] = []
        for tf in plan:
            moves.append((tf.start_s, 1, "begin", tf))
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
            toxic = cohort_toxic(tf)
            for proxy in self.targets(tf):
                if move == "begin":
                    proxy.add_toxic(toxic)
                else:
                    proxy.remove_toxic(toxic.name)
            self.events.append({"t": self.now(), "fault": tf.fault.index, "kind": tf.fault.kind,
                                "target": tf.fault.target, "move": move, "made_as": toxic.kind})

    def values(self, cohort: str) -> dict[str, list[float]]:
        return {name: [m.of_session(r) for r in self.sessions[cohort]] for name, m in METRICS.items()}

    def session_ended(self, cohort: str, report: dict[str, Any]) -> None:
        report["cohort"] = cohort
        report["ended_at_s"] = self.now()
        self.sessions[cohort].append(report)
        if self.aborted is None:
            reason = abort_breach(self.scenario.abort, self.values("control"), self.values("experiment"))
            if reason is not None:
                self.aborted = reason
                self.events.append({"t": self.now(), "move": "abort", "reason": reason})
                self._stop.set()

    async def viewer(self, viewer: str, cohort: str, http: aiohttp.ClientSession, index: int) -> None:
        from ocsim.demo import client_ip
        from player.driver import play_session

        rng = random.Random(f"{self.scenario.seed}:{viewer}")
        isps = self.state["isps"]
        isp = self.scenario.isp or sorted(isps)[index % len(isps)]
        loop = asyncio.get_running_loop()
        end_at = self._t0 + self.scenario.duration_s
        while loop.time() < end_at and not self._stop.is_set():
            title = rng.choice(self.catalog_ids)
            try:
                rep = await play_session(self.state["control"], title, client_ip=client_ip(isps[isp][0], rng),
                                         speed=self.speed, session=http, max_segments=self.max_segments)
                report = rep.to_dict()
            except Exception as exc:  # noqa: BLE001 - a crashed player is a failed session
                report = {"title": title, "state": "failed", "errors": 1, "startup_s": None,
                          "error": f"player crashed: {exc!r}"}
            report["viewer"] = viewer
            self.session_ended(cohort, report)

    async def run(self) -> None:
        self._t0 = asyncio.get_running_loop().time()
        maps = {cohort: {self.edge_port(e): proxies[e["id"]].port for e in self.state["edges"]}
                for cohort, proxies in self.proxies.items()}
        async with aiohttp.ClientSession(connector=PortMapConnector(maps["control"], limit=0)) as direct, \
                aiohttp.ClientSession(connector=PortMapConnector(maps["experiment"], limit=0)) as faulted:
            faults = asyncio.create_task(self.fault_timeline())
            players = [asyncio.create_task(self.viewer(v, "control", direct, i))
                       for i, v in enumerate(self.cohorts.control)]
            players += [asyncio.create_task(self.viewer(v, "experiment", faulted, i))
                        for i, v in enumerate(self.cohorts.experiment)]
            stop = asyncio.create_task(self._stop.wait())
            everyone: asyncio.Future[list[None]] = asyncio.gather(*players)
            try:
                # Sessions running at the end finish (bounded by the player's own timeouts);
                # an abort cancels them at once.
                waiters: list[asyncio.Future[Any]] = [stop, everyone]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                self._stop.set()
                everyone.cancel()
                for task in (*players, faults, stop):
                    task.cancel()
                await asyncio.gather(everyone, *players, faults, stop, return_exceptions=True)

    def verdicts(self) -> list[MetricVerdict]:
        ctl, exp = self.values("control"), self.values("experiment")
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
                         titles: int = 8) -> dict[str, Any]:
    from ocsim.demo import UpProcess, demo_catalog, discard_dir
    from ocsim.topology import DEFAULT_TOPOLOGY

    topo = DEFAULT_TOPOLOGY
    edge_ids = {e.id for e in topo.edges}
    check_runnable(scenario, edge_ids)
    if scenario.isp is not None and scenario.isp not in topo.isps:
        raise BadRequest(f"cohorts.isp: no ISP {scenario.isp!r} in the topology")
    wall0 = time.monotonic()
    state_dir = Path(tempfile.mkdtemp(prefix="ocsim-chaos-"))
    catalog = demo_catalog(titles, scenario.seed)
    catalog_file = state_dir / "catalog.json"
    catalog_file.write_text(json.dumps(catalog.to_json()))
    topo = topo.with_ephemeral_ports().with_catalog(catalog_file).with_extra_args("--no-access-log")
    topology_file = state_dir / "chaos-topology.toml"
    topology_file.write_text(topo.to_toml())
    up = UpProcess(topology_file, state_dir)
    exp: Experiment | None = None
    try:
        state = await up.start()
        exp = Experiment(scenario, state, [t.id for t in catalog.by_popularity()],
                         speed=speed, max_segments=max_segments)
        await exp.start_proxies()
        await exp.run()
    finally:
        if exp is not None:
            await exp.close()
        await up.stop()
        discard_dir(state_dir)
    verdicts = exp.verdicts()
    return {
        "scenario": scenario.name, "seed": scenario.seed, "duration_s": scenario.duration_s,
        "outcome": overall(verdicts, exp.aborted).value, "aborted": exp.aborted,
        "cohorts": {"control": list(exp.cohorts.control), "experiment": list(exp.cohorts.experiment),
                    "left_out": list(exp.cohorts.left_out)},
        "metrics_source": "player session reports (the event pipeline is not read yet)",
        "verdicts": [{"metric": v.metric, "outcome": v.outcome.value, "p": v.p, "test": v.test,
                      "control_median": _finite(v.control_median),
                      "experiment_median": _finite(v.experiment_median),
                      "n_control": v.n_control, "n_experiment": v.n_experiment} for v in verdicts],
        "timeline": exp.events,
        "sessions": exp.sessions["control"] + exp.sessions["experiment"],
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
    run.add_argument("--report-dir", type=Path, help="write report.json there")
    run.add_argument("--speed", type=float, default=20.0, help="players' clock speed-up")
    run.add_argument("--max-segments", type=int, default=8, help="segments per session")
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
        report = asyncio.run(run_experiment(scenario, speed=args.speed, max_segments=args.max_segments))
    except BadRequest as exc:
        print(f"ocsim chaos: {exc.reason}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ocsim chaos: {exc}", file=sys.stderr)
        return 2
    if args.report_dir is not None:
        args.report_dir.mkdir(parents=True, exist_ok=True)
        (args.report_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, default=str) if args.json else render_line(report))
    return {"pass": 0, "fail": 1}.get(report["outcome"], 3)
