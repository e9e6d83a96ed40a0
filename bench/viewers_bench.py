"""How many concurrent real-time viewers this machine holds (0 failures, segment p99 < 200 ms).

    .venv/bin/python bench/viewers_bench.py [--users 25,50,100,200] [--run-time 40s] [--warmup 30s]

Brings up the built-in topology (2 ISPs x 2 edges, an origin 40 ms and 400 Mbit/s away)
with the demo's catalog of short titles, pre-positions the top 6 titles per ISP as
the demo does, warms the caches with one short Locust run, then runs Locust viewers
(real-time playback, Zipf titles, load generator on the same 2 cores) at each user
count in turn against the same running topology, and prints one row per step. A step
"holds" when it had no failed request, no failed session and segment p99 < 200 ms.
Everything is on 127.0.0.1 and every run is bounded in time.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from ocsim.demo import DemoOptions, UpProcess, demo_catalog, preposition  # noqa: E402
from ocsim.topology import DEFAULT_TOPOLOGY  # noqa: E402

P99_LIMIT_MS = 200.0


def locust_step(state_file: Path, users: int, run_time: str, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "loadtests.run", "--state-file", str(state_file), "--users", str(users),
           "--run-time", run_time, "--speed", "1", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = out / "summary.json"
    if not summary.exists():
        return {"users": users, "error": f"no summary (see {out})"}
    return json.loads(summary.read_text())  # type: ignore[no-any-return]


async def bring_up(state_dir: Path, warm: bool) -> tuple[UpProcess, dict[str, Any]]:
    """The demo's setup; `warm`: 20 titles, every rendition pre-positioned, so every
    segment is a hit and the steps measure the edges and this machine, not the origin."""
    catalog = demo_catalog(20 if warm else 40, 1)
    catalog_file = state_dir / "catalog.json"
    catalog_file.write_text(json.dumps(catalog.to_json()))
    topo = DEFAULT_TOPOLOGY.with_ephemeral_ports().with_catalog(catalog_file).with_extra_args("--no-access-log")
    topology_file = state_dir / "topology.toml"
    text = topo.to_toml()
    if warm:
        text = text.replace(f"capacity = {2 * 1024**3}", f"capacity = {4 * 1024**3}")  # the whole catalog fits
    topology_file.write_text(text)
    up = UpProcess(topology_file, state_dir)
    state = await up.start()
    opts = (DemoOptions(top=len(catalog), preposition_renditions=(), preposition_bandwidth_bps=0,
                        preposition_timeout_s=300.0) if warm else DemoOptions())
    async with aiohttp.ClientSession() as http:
        jobs = await preposition(http, state, opts)
    print("pre-positioned: " + ", ".join(f"{j['isp']} {j.get('state')} {j.get('seconds')}s" for j in jobs),
          file=sys.stderr, flush=True)
    return up, state


async def run_steps(steps: list[int], run_time: str, warmup: str, keep: str | None,
                    warm: bool) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="ocsim-viewers-") as tmp:
        state_dir = Path(keep) if keep else Path(tmp)
        state_dir.mkdir(parents=True, exist_ok=True)
        up, _state = await bring_up(state_dir, warm)
        try:
            await asyncio.to_thread(locust_step, up.state_file, steps[0], warmup, state_dir / "warmup")
            for users in steps:
                rows.append(await asyncio.to_thread(locust_step, up.state_file, users, run_time,
                                                    state_dir / f"u{users}"))
                print(f"step {users} users done", file=sys.stderr, flush=True)
        finally:
            await up.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="25,50,100,200")
    ap.add_argument("--run-time", default="40s")
    ap.add_argument("--warmup", default="30s")
    ap.add_argument("--warm", action="store_true",
                    help="pre-position every rendition of a 20-title catalog: measure the edges, not the origin")
    ap.add_argument("--keep", metavar="DIR", help="keep Locust's CSV/HTML and the services' logs here")
    args = ap.parse_args()
    steps = [int(u) for u in args.users.split(",")]
    rows = asyncio.run(run_steps(steps, args.run_time, args.warmup, args.keep, args.warm))
    setup = ("every rendition of 20 titles pre-positioned (all hits)" if args.warm
             else "demo setup: top 6 of 40 titles pre-positioned at 3 renditions, origin 40 ms / 400 Mbit/s away")
    print(f"\n== real-time viewers, {args.run_time} per step; {setup} ==")
    print(f"{'users':>6}{'requests':>10}{'failures':>10}{'sessions failed':>17}{'seg p50 ms':>12}"
          f"{'seg p99 ms':>12}{'Mbit/s':>9}{'rebuffers':>11}  holds")
    held = 0
    for r in rows:
        if "error" in r:
            print(f"{r['users']:>6}  {r['error']}")
            continue
        failed = r["qoe"].get("session_failed", 0)
        ok = r["failures"] == 0 and r["qoe_failures"] == 0 and failed == 0 and r["segment_p99_ms"] < P99_LIMIT_MS
        held = max(held, r["users"]) if ok else held
        print(f"{r['users']:>6}{r['requests']:>10}{r['failures']:>10}{failed:>17}{r['segment_p50_ms']:>12g}"
              f"{r['segment_p99_ms']:>12g}{r['segment_mbit_s']:>9}{r['qoe'].get('rebuffer', 0):>11}  "
              f"{'yes' if ok else 'no'}")
    print(f"\nholds with 0 failures and segment p99 < {P99_LIMIT_MS:.0f} ms: {held} concurrent viewers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
