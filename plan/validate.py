"""`ocsim plan --validate`: the chosen topology, scaled down to this machine, run live.

The check is of the simulator, so both sides get the very same input:

* One scaled day (`plan.workload.make_day` with `--validate-titles`, `--validate-requests`
  and `--validate-time-factor`): the catalog, the disks (real disk / (catalog factor x time
  factor)) and the pre-position budget are divided by one factor, so their ratios hold.
* The prediction: `plan.model.simulate_isp` on that day, with the chosen policy, edge
  counts and `top`, the steering load window in the compressed time of the live run.
* The live run: `ocsim up --events` (a child, `ocsim.demo.UpProcess`) of the chosen
  topology with those capacities on 127.0.0.1; one pre-position job per ISP with the same
  `top` (the control plane's planner decides, as the simulator's copy of it did); then the
  day's sessions, their starts compressed into `--validate-seconds`, each played by a
  session player: it asks steering (`POST /v1/play` with its ISP), keeps the first
  candidate (fails over down the list on an error), and fetches its rung's consecutive
  segments through the signed URL, as the simulator's session does. The rung is the
  session's drawn rung (the plan's ladder shares are the ABR outcome), not re-decided.
* Measured: offload = 1 - the origin's bytes served during the crowd (its own counter,
  `GET /admin/stats`) / bytes the players got; hit ratio = responses with `X-Cache: HIT` /
  responses; and the event pipeline's `offload` view over the crowd's time, per ISP.

Bounded: the crowd has a deadline (`seconds` + a settle time); `up` is always stopped.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from plan.inputs import PlanInputs, window_seconds
from plan.model import IspRun, simulate_isp, top_files
from plan.output import topology_for
from plan.search import Evaluated
from plan.workload import Day, Scale, Session, make_day

__all__ = ["ValidateOptions", "validate"]

HTTP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ValidateOptions:
    titles: int = 24
    requests: int = 4000
    time_factor: float = 30.0
    seconds: float = 90.0  # live seconds the day's session starts are spread over
    concurrency: int = 32  # sessions playing at once, at most
    settle_s: float = 60.0  # after `seconds`, running sessions get this long to finish
    preposition_timeout_s: float = 180.0


@dataclass(slots=True)
class Measured:
    requests: int = 0
    hits: int = 0
    bytes: int = 0
    errors: int = 0
    sessions: int = 0
    by_isp: dict[str, list[int]] = field(default_factory=dict)  # isp -> [requests, hits, bytes]


def scaled_capacity(p: PlanInputs, ev: Evaluated, day: Day, time_factor: float) -> tuple[int, int]:
    """(capacity per edge, pre-position budget per edge) at the validation's scale."""
    f = day.catalog_factor * time_factor
    disk = ev.choice.option.disk_bytes
    fill_cap = p.edge.nic_bps * p.edge.fill_share * window_seconds(ev.choice.window) / 8
    return int(disk / f), int(min(p.edge.preposition_share * disk, fill_cap) / f)


def predict(p: PlanInputs, ev: Evaluated, day: Day, opts: ValidateOptions) -> tuple[dict[str, IspRun], dict[str, int]]:
    cap, pin = scaled_capacity(p, ev, day, opts.time_factor)
    runs, tops = {}, {}
    for isp, n in ev.choice.edges:
        tops[isp] = top_files(day, pin * n)
        runs[isp] = simulate_isp(day, isp, n, cap, ev.choice.policy, tops[isp], p.network, 86_400.0 / opts.seconds)
    return runs, tops


async def _post_jobs(http: Any, state: dict[str, Any], tops: dict[str, int], timeout: float,
                     say: Callable[[str], None]) -> list[dict[str, Any]]:
    from common.json_client import request_json_async
    from ocsim.demo import try_json
    control, token = state["control"], state["operator_token"]
    jobs: dict[str, dict[str, Any]] = {}
    for isp, top in tops.items():
        if top <= 0:
            continue
        reply = await request_json_async(http, "POST", f"{control}/v1/prepositions", token=token, timeout=HTTP_TIMEOUT_S,
                                         body={"isp": isp, "top": top, "now": True, "bandwidth_bps": 10_000_000_000})
        if reply.status != 202 or not isinstance(reply.body, dict):
            raise RuntimeError(f"pre-positioning {isp} refused ({reply.status}): {reply.body}")
        jobs[reply.body["id"]] = {"isp": isp, "top": top}
    deadline = time.monotonic() + timeout
    last = ""
    while jobs and time.monotonic() < deadline:
        for jid in jobs:
            got = await try_json(http, f"{control}/v1/prepositions/{jid}", token)
            if isinstance(got, dict):
                jobs[jid].update({k: got.get(k) for k in ("state", "progress", "left_out")})
        line = "  ".join(f"{j['isp']} {j.get('state')} {float(j.get('progress') or 0):.0%}" for j in jobs.values())
        if line != last:
            say(f"  pre-positioning: {line}")
            last = line
        if all(j.get("state") in ("done", "partial", "failed") for j in jobs.values()):
            break
        await asyncio.sleep(0.5)  # polling the job API against a deadline
    if not all(j.get("state") == "done" for j in jobs.values()):
        raise RuntimeError(f"pre-positioning did not finish: {list(jobs.values())}")
    return list(jobs.values())


async def _crowd(http: Any, state: dict[str, Any], sessions: tuple[Session, ...], opts: ValidateOptions) -> Measured:
    import aiohttp

    from common.json_client import request_json_async
    m = Measured()
    gate = asyncio.Semaphore(opts.concurrency)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    stretch = opts.seconds / 86_400.0

    async def play(i: int, s: Session) -> None:
        delay = t0 + s.start_s * stretch - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # the session's (compressed) start time
        async with gate:
            reply = await request_json_async(http, "POST", f"{state['control']}/v1/play", timeout=HTTP_TIMEOUT_S,
                                             body={"title": s.title, "isp": s.isp})
            if reply.status != 200 or not isinstance(reply.body, dict) or not reply.body.get("candidates"):
                m.errors += 1
                return
            m.sessions += 1
            bases = [str(c["url"]).rsplit("/", 1)[0] for c in reply.body["candidates"]]
            row = m.by_isp.setdefault(s.isp, [0, 0, 0])
            for n in range(s.first, s.first + s.count):
                for base in bases:
                    try:
                        async with http.get(f"{base}/{s.kbps}/{n}.seg", headers={"X-Ocsim-Session": f"plan-{i}"},
                                            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)) as resp:
                            if resp.status != 200:
                                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
                            got = 0
                            async for chunk in resp.content.iter_chunked(1 << 16):
                                got += len(chunk)
                            hit = resp.headers.get("X-Cache", "").upper().startswith("HIT")
                    except (aiohttp.ClientError, asyncio.TimeoutError):
                        m.errors += 1
                        bases = bases[1:] + bases[:1] if len(bases) > 1 else bases  # fail over
                        continue
                    m.requests += 1
                    m.bytes += got
                    m.hits += hit
                    row[0] += 1
                    row[1] += hit
                    row[2] += got
                    break

    tasks = [asyncio.create_task(play(i, s)) for i, s in enumerate(sessions)]
    done, pending = await asyncio.wait(tasks, timeout=opts.seconds + opts.settle_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if pending:
        raise RuntimeError(f"{len(pending)} sessions still playing {opts.settle_s:g}s after the end: the machine is "
                           f"too slow for --validate-requests {opts.requests}; lower it")
    for t in done:
        if t.exception() is not None:
            raise RuntimeError(f"a session player failed: {t.exception()!r}")
    return m


async def _run_live(p: PlanInputs, ev: Evaluated, day: Day, tops: dict[str, int], cap: int, opts: ValidateOptions,
                    work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import aiohttp

    from ocsim.demo import UpProcess, try_json
    catalog_file = work / "catalog.json"
    catalog_file.write_text(json.dumps(day.catalog.to_json()))
    topo = topology_for(p, ev, catalog_file)
    isps = {name: replace(isp, edges=tuple(replace(e, capacity=cap) for e in isp.edges), fill_window=None)
            for name, isp in topo.isps.items()}
    # the origin's link does not throttle (the comparison is of bytes, not of time)
    topo = replace(topo, isps=isps, origin=replace(topo.origin, total_bandwidth_bps=0, latency_ms=5.0))
    topo = topo.with_ephemeral_ports().with_extra_args("--no-access-log")
    topo_file = work / "validate-topology.toml"
    topo_file.write_text(topo.to_toml())
    up = UpProcess(topo_file, work / "state", ["--events"])
    say(f"  starting {len(topo.edges)} edges ({cap / 1e6:,.0f} MB each), origin, control, NATS and the collector")
    try:
        state = await up.start(timeout=120.0)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            t_pre = time.monotonic()
            await _post_jobs(http, state, tops, opts.preposition_timeout_s, say)
            say(f"  pre-positioned in {time.monotonic() - t_pre:.1f} s: " + ", ".join(f"{k} top {v}" for k, v in tops.items()))
            before = await try_json(http, f"{state['origin']}/admin/stats", state["origin_admin_token"])
            since = time.time()
            t_crowd = time.monotonic()
            say(f"  crowd: {len(day.sessions):,} sessions, {day.requests:,} segment requests over {opts.seconds:g} s")
            m = await _crowd(http, state, day.sessions, opts)
            crowd_s = time.monotonic() - t_crowd
            after = await try_json(http, f"{state['origin']}/admin/stats", state["origin_admin_token"])
            pipe: Any = None
            if state.get("pipeline"):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:  # wait until the collector has every request event
                    got = await try_json(http, f"{state['pipeline']}/v1/views/offload?since={since:.3f}")
                    if isinstance(got, dict):
                        rows = [dict(zip(got["columns"], r)) for r in got["rows"]]
                        pipe = rows
                        if sum(int(r.get("to_players") or 0) for r in rows) >= m.bytes:
                            break
                    await asyncio.sleep(0.5)  # polling the collector against a deadline
    finally:
        await up.stop()
        from ocsim.demo import discard_dir
        discard_dir(work / "state")  # gigabytes of caches; removed in the background
    origin_bytes = int((after or {}).get("bytes", 0)) - int((before or {}).get("bytes", 0))
    if not before or not after:
        raise RuntimeError("the origin's counters could not be read")
    return {"measured": m, "origin_bytes": origin_bytes, "pipeline_offload": pipe, "crowd_s": crowd_s}


def validate(p: PlanInputs, ev: Evaluated, opts: ValidateOptions, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    day = make_day(p, Scale(opts.titles, opts.requests, opts.time_factor))
    cap, _ = scaled_capacity(p, ev, day, opts.time_factor)
    factor = day.catalog_factor * opts.time_factor
    catalog_bytes = sum(day.file_bytes(t.id, k) for t in day.catalog.titles.values() for k in t.renditions)
    say(f"  scale: catalog {opts.titles} titles (/ {day.catalog_factor:g}), durations and watch / {opts.time_factor:g}:"
        f" disks / {factor:,.0f} = {cap / 1e6:,.0f} MB per edge, catalog {catalog_bytes / 1e9:.2f} GB; "
        f"{len(day.sessions):,} sessions, {day.requests:,} segment requests")
    t0 = time.monotonic()
    runs, tops = predict(p, ev, day, opts)
    say(f"  predicted by the simulator in {time.monotonic() - t0:.1f} s")
    work = out / "validate"
    work.mkdir(parents=True, exist_ok=True)
    from common.service import run_main
    holder: dict[str, Any] = {}

    async def go() -> None:
        holder["live"] = await _run_live(p, ev, day, tops, cap, opts, work, say)

    run_main(go)
    live = holder["live"]
    m: Measured = live["measured"]
    pred_bytes = sum(r.bytes for r in runs.values())
    pred_origin = sum(r.origin_bytes for r in runs.values())
    pred_hits = sum(r.hits for r in runs.values()) / max(1, sum(r.requests for r in runs.values()))
    pred_off = 1 - pred_origin / pred_bytes if pred_bytes else 0.0
    meas_off = 1 - live["origin_bytes"] / m.bytes if m.bytes else 0.0
    meas_hits = m.hits / m.requests if m.requests else 0.0
    rows = [("offload", f"{pred_off:.1%}", f"{meas_off:.1%}", f"{100 * (meas_off - pred_off):+.1f} pt"),
            ("hit ratio", f"{pred_hits:.1%}", f"{meas_hits:.1%}", f"{100 * (meas_hits - pred_hits):+.1f} pt"),
            ("origin egress", f"{pred_origin / 1e6:,.0f} MB", f"{live['origin_bytes'] / 1e6:,.0f} MB",
             f"{100 * (live['origin_bytes'] / pred_origin - 1) if pred_origin else 0:+.0f} %"),
            ("bytes to viewers", f"{pred_bytes / 1e6:,.0f} MB", f"{m.bytes / 1e6:,.0f} MB", ""),
            ("segment requests", f"{sum(r.requests for r in runs.values()):,}", f"{m.requests:,}", "")]
    say(f"  crowd played in {live['crowd_s']:.1f} s, {m.sessions:,} sessions, {m.errors} request errors (each retried on the next candidate)")
    say(f"  {'':<18}{'predicted':>12}{'measured':>12}{'diff':>10}")
    for r in rows:
        say(f"  {r[0]:<18}{r[1]:>12}{r[2]:>12}{r[3]:>10}")
    for isp, run in runs.items():
        got = m.by_isp.get(isp, [0, 0, 0])
        say(f"    {isp}: hit ratio predicted {run.hit_ratio:.1%}, measured {got[1] / max(1, got[0]):.1%}; "
            f"offload predicted {run.offload:.1%}")
    if live["pipeline_offload"]:
        say("  event pipeline (offload view over the crowd): " + ", ".join(
            f"{r['isp']} {float(r['offload'] or 0):.1%}" for r in live["pipeline_offload"]))
    agree = abs(meas_off - pred_off) <= 0.03
    say(f"  predicted and measured offload {'agree' if agree else 'DO NOT agree'} within 3 points "
        f"({100 * abs(meas_off - pred_off):.1f})")
    return {"predicted": {"offload": pred_off, "hit_ratio": pred_hits, "origin_bytes": pred_origin,
                          "bytes": pred_bytes, "requests": sum(r.requests for r in runs.values()), "per_isp": {k: {"offload": r.offload, "hit_ratio": r.hit_ratio}
                                                           for k, r in runs.items()}},
            "measured": {"offload": meas_off, "hit_ratio": meas_hits, "origin_bytes": live["origin_bytes"],
                         "bytes": m.bytes, "requests": m.requests, "errors": m.errors,
                         "pipeline_offload": live["pipeline_offload"]},
            "scale": {"titles": opts.titles, "time_factor": opts.time_factor, "capacity_bytes": cap,
                      "tops": tops, "seconds": opts.seconds},
            "agree_within_3_points": agree}
