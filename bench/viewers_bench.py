"""The largest crowd of real-time, full-ladder viewers this machine holds, all hits.

    .venv/bin/python bench/viewers_bench.py [--users 250,500,1000] [--workers 0,2]
        [--run-time 60s] [--warmup 30s] [--spawn-s 20] [--keep DIR]

Brings up the built-in topology (2 ISPs x 2 edges, origin 40 ms / 400 Mbit/s away)
with a catalog of 20 short titles (48-100 s), pre-positions every rendition of every
title, then asks every edge once for every playlist and segment (so every segment is
a hit on whichever edge steering picks), warms up with one short Locust run, then runs Locust viewers at each crowd size in turn, for each Locust
layout (`--workers 0`: one Locust process; `2`: a master and 2 worker processes),
against the same running topology, load generator and CDN sharing this machine.

Viewers play in real time (speed 1) on the full ladder (ABR `bba` over every
rendition, buffer cap 60 s), Zipf titles, one after another; they arrive evenly
over --spawn-s seconds. A step HOLDS when:
  - no request failed and no session failed,
  - the rebuffer ratio (stalled / watched media time) is < 0.1 %,
  - every segment was an edge hit (edges' miss counters unchanged over the step).

Printed per step: viewers, sessions (failed), rebuffer ratio, start-up p50/p90,
average bitrate, segment p99 (diagnostic), segment bytes/s, Locust CPU per viewer
(ms of CPU per viewer per second: the load generator's cost), machine CPU busy
(all processes, 2 cores = 200 %), load average, and the verdict; at the end, for
each layout, the largest crowd that held. The machine may be shared: the load
average beside each row says how quiet it was. Everything is on 127.0.0.1 and every
run is bounded in time. Run under `flock /tmp/ocsim-bench.lock`.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from ocsim.demo import DemoOptions, UpProcess, demo_catalog, edge_stats, preposition  # noqa: E402
from ocsim.topology import DEFAULT_TOPOLOGY  # noqa: E402
from player.play_answer import parse_play_answer  # noqa: E402
from player.playlists import parse_master, parse_media  # noqa: E402

REBUFFER_LIMIT = 0.001  # 0.1 %


def cpu_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def misses(stats: dict[str, Any]) -> int:
    """Cache misses of all edges (cold, evicted, coalesced; peer/origin are their fills)."""
    return sum(int((s.get("misses") or {}).get(k, 0)) for s in stats.values() for k in ("cold", "evicted", "coalesced", "peer", "stale"))


async def warm_every_edge(http: aiohttp.ClientSession, state: dict[str, Any], titles: list[str]) -> int:
    """Ask every candidate edge of every ISP once for every title's playlists and every
    segment of every rendition (bodies discarded), so that the steps see hits only:
    pre-positioning places each object on some edges of an ISP, steering may send a
    viewer to another one."""
    sem = asyncio.Semaphore(8)

    async def get(url: str, text: bool = False) -> str:
        async with sem, http.get(url) as resp:
            if resp.status != 200:
                raise RuntimeError(f"warm-up GET {url[:120]}: HTTP {resp.status}")
            if text:
                return await resp.text()
            async for _ in resp.content.iter_chunked(1 << 20):
                pass
            return ""

    urls: list[str] = []
    for isp in state["isps"]:
        for title in titles:
            async with http.post(f"{state['control']}/v1/play", json={"title": title, "isp": isp}) as resp:
                _, cands = parse_play_answer(await resp.json())
            for cand in cands:
                master = parse_master(await get(cand.url, True), cand.url)
                for url in master.renditions.values():
                    media = parse_media(await get(url, True), url)
                    urls.extend(media.segment_urls)
    await asyncio.gather(*(get(u) for u in urls))
    return len(urls)


def locust_step(state_file: Path, users: int, workers: int, run_time: str, spawn_s: float,
                out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "loadtests.run", "--state-file", str(state_file), "--users", str(users),
           "--spawn-rate", f"{max(1.0, users / spawn_s):g}", "--run-time", run_time, "--speed", "1",
           "--workers", str(workers), "--out", str(out)]
    busy0, total0 = cpu_busy_ticks()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    busy1, total1 = cpu_busy_ticks()
    (out / "run.out").write_text(r.stdout + r.stderr)
    summary = out / "summary.json"
    if not summary.exists():
        return {"users": users, "workers": workers, "error": f"no summary (see {out / 'run.out'})"}
    got: dict[str, Any] = json.loads(summary.read_text())
    ncpu = os.cpu_count() or 1
    got["machine_busy_pct"] = round(100.0 * ncpu * (busy1 - busy0) / max(1, total1 - total0), 1)
    got["loadavg"] = os.getloadavg()
    return got


async def bring_up(state_dir: Path) -> tuple[UpProcess, dict[str, Any]]:
    """20 titles, every rendition pre-positioned on every edge: every segment is a hit,
    so the steps measure the edges and the viewers, not the origin."""
    catalog = demo_catalog(20, 1)
    catalog_file = state_dir / "catalog.json"
    catalog_file.write_text(json.dumps(catalog.to_json()))
    topo = DEFAULT_TOPOLOGY.with_ephemeral_ports().with_catalog(catalog_file).with_extra_args("--no-access-log")
    topology_file = state_dir / "topology.toml"
    text = topo.to_toml().replace(f"capacity = {2 * 1024**3}", f"capacity = {4 * 1024**3}")  # all fits
    topology_file.write_text(text)
    up = UpProcess(topology_file, state_dir)
    state = await up.start()
    opts = DemoOptions(top=len(catalog), preposition_renditions=(), preposition_bandwidth_bps=0,
                       preposition_timeout_s=300.0)
    async with aiohttp.ClientSession() as http:
        jobs = await preposition(http, state, opts)
        t0 = time.monotonic()
        n = await warm_every_edge(http, state, list(catalog.titles))
    print(f"every edge asked once for every playlist and segment ({n} segments, "
          f"{time.monotonic() - t0:.0f} s); pre-positioned: " + ", ".join(f"{j['isp']} {j.get('state')} {j.get('seconds')}s" for j in jobs),
          file=sys.stderr, flush=True)
    return up, state


async def run_steps(steps: list[int], layouts: list[int], run_time: str, warmup: str, spawn_s: float,
                    keep: str | None) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ocsim-viewers-") as tmp:
        state_dir = Path(keep) if keep else Path(tmp)
        state_dir.mkdir(parents=True, exist_ok=True)
        up, state = await bring_up(state_dir)
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.to_thread(locust_step, up.state_file, min(steps), 0, warmup, spawn_s,
                                        state_dir / "warmup")
                for workers in layouts:
                    for users in steps:
                        before = misses(await edge_stats(http, state))
                        row = await asyncio.to_thread(locust_step, up.state_file, users, workers, run_time,
                                                      spawn_s, state_dir / f"w{workers}-u{users}")
                        row["misses"] = misses(await edge_stats(http, state)) - before
                        rows.append(row)
                        print(f"step: {users} viewers, {workers} workers done", file=sys.stderr, flush=True)
        finally:
            await up.stop()
    return rows


def verdict(r: dict[str, Any]) -> tuple[bool, str]:
    q = r.get("qoe") or {}
    why = []
    if r["failures"]:
        why.append(f"{r['failures']} failed requests")
    if not q:
        why.append("no QoE table")
    elif q["failed"]:
        why.append(f"{q['failed']} failed sessions")
    if q and q["rebuffer_ratio"] >= REBUFFER_LIMIT:
        why.append("rebuffer >= 0.1 %")
    if r["misses"]:
        why.append(f"{r['misses']} misses")
    if not r["segments"] or not q or not q["sessions"]:
        why.append("no segments or no sessions")
    return not why, "holds" if not why else "no: " + ", ".join(why)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("--users", default="250,500,1000", help="crowd sizes to try, ascending (default %(default)s)")
    ap.add_argument("--workers", default="0,2",
                    help="Locust layouts: 0 = one process, N = a master and N workers (default %(default)s)")
    ap.add_argument("--run-time", default="60s", help="per step (default %(default)s)")
    ap.add_argument("--warmup", default="30s", help="one warm-up run before the steps (default %(default)s)")
    ap.add_argument("--spawn-s", type=float, default=20.0, help="viewers arrive evenly over this many "
                    "seconds at the start of each step (default %(default)s)")
    ap.add_argument("--warm", action="store_true", help="accepted for old command lines: always on now")
    ap.add_argument("--keep", metavar="DIR", help="keep Locust's CSVs/HTML and the services' logs here")
    args = ap.parse_args()
    steps = sorted(int(u) for u in args.users.split(","))
    layouts = [int(w) for w in args.workers.split(",")]
    load0 = os.getloadavg()
    t0 = time.monotonic()
    rows = asyncio.run(run_steps(steps, layouts, args.run_time, args.warmup, args.spawn_s, args.keep))
    print(f"\n== real-time full-ladder viewers, all hits; {args.run_time} per step, arrivals over "
          f"{args.spawn_s:g} s; {os.cpu_count()} cores shared by the CDN and Locust ==")
    print("   (CPU/viewer: Locust CPU ms per viewer per second; machine: all processes, 100 % = one core)")
    print(f"{'locust':>9}{'viewers':>8}{'sessions':>9}{'failed':>7}{'rebuf %':>9}{'start p50':>10}{'p90':>7}"
          f"{'kbit/s':>8}{'seg p99':>8}{'MB/s':>7}{'CPU/viewer':>11}{'machine':>8}{'load1':>6}  verdict")
    best: dict[int, int] = {w: 0 for w in layouts}
    for r in rows:
        layout = "1 proc" if not r["workers"] else f"m+{r['workers']}w"
        if "error" in r:
            print(f"{layout:>9}{r['users']:>8}  {r['error']}")
            continue
        ok, why = verdict(r)
        if ok:
            best[r["workers"]] = max(best[r["workers"]], r["users"])
        q = r.get("qoe") or {}

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f}ms"
        cpu_per_viewer = 1000.0 * r["locust_cpu_s"] / max(1e-9, r["users"] * r["locust_wall_s"])
        print(f"{layout:>9}{r['users']:>8}{q.get('sessions', 0):>9}{q.get('failed', 0):>7}"
              f"{q.get('rebuffer_ratio', 0) * 100:>9.3f}{ms(q.get('startup_p50_s')):>10}"
              f"{ms(q.get('startup_p90_s')):>7}{q.get('avg_bitrate_kbps', 0):>8.0f}{r['segment_p99_ms']:>8g}"
              f"{r['segment_bytes_per_s'] / 1e6:>7.1f}{cpu_per_viewer:>10.2f}ms{r['machine_busy_pct']:>7.0f}%"
              f"{r['loadavg'][0]:>6.1f}  {why}")
    print()
    for w, n in best.items():
        print(f"largest crowd that held ({'one Locust process' if not w else f'a master and {w} workers'}): "
              f"{n} viewers" + ("" if n else " (none of the steps)"))
    print(f"load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.monotonic() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
