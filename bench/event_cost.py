"""What an edge.request event adds to a RAM hit, in CPU, measured in one process.

    .venv/bin/python bench/event_cost.py [--hits 20000] [--blocks 40]

`bench/pipeline_bench.py` measures the goal figure (hit throughput, events on vs off, with
wrk); on a VM whose speed drifts by 10-20 % from one 8 s run to the next, a 5 % effect sits
inside that noise. This bench takes the drift out: two edges (`edge.server.EdgeNode`) in
one process on one origin, identical but for `--events` (a real nats-server with JetStream
stores the events), and the fast lane's question (`EdgeNode._fast_get`, where a hit's
event is recorded) asked `--hits` times of each, in alternating blocks. Each block's CPU
(`time.process_time`) counts the hits and then the publisher's work until everything the
block emitted is published (slicing, packing, the NATS publish), so the difference is the
whole in-process cost of the events. The result is the median over blocks of (on - off)
per hit, next to a hit's whole cost in the wrk bench for scale. On 127.0.0.1 only.

Instructions instead of CPU time (no drift at all): `--only on|off --hits N` runs one
block on one edge; under `valgrind --tool=cachegrind --cache-sim=no` at two N, the
difference of the totals over the difference of N is instructions per hit, start-up
cancelled (`bench/event_cost.py --instructions --hits 10000` does the four runs and
prints it; needs `apt-get install valgrind`).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import edge_bench  # noqa: E402
from edge.policy import DEFAULT_POLICY  # noqa: E402
from edge.server import EdgeConfig, EdgeNode  # noqa: E402
from ocsim.procs import ServiceProcess  # noqa: E402
from pipeline.natsserver import NatsServer  # noqa: E402
from pipeline.stream import StreamSettings, ensure_stream  # noqa: E402


CHUNK = 2048  # hits between turns of the loop (the publisher takes what is buffered then)


def instructions(args: argparse.Namespace) -> int:
    """Instructions per hit, events off and on, from four runs under cachegrind."""
    counts: dict[tuple[str, int], int] = {}
    for mode in ("off", "on"):
        for n in (args.hits, 3 * args.hits):
            out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                                  sys.executable, __file__, "--only", mode, "--hits", str(n)],
                                 capture_output=True, text=True, timeout=1800)
            m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
            if m is None:
                raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
            counts[(mode, n)] = int(m.group(1).replace(",", ""))
    per = {mode: (counts[(mode, 3 * args.hits)] - counts[(mode, args.hits)]) / (2 * args.hits) for mode in ("off", "on")}
    print(f"instructions per fast-lane hit (cachegrind, {args.hits:,} and {3 * args.hits:,} hits): "
          f"events off {per['off']:,.0f}, on {per['on']:,.0f}: events add {per['on'] - per['off']:,.0f} "
          f"({(per['on'] - per['off']) / per['off'] * 100:.1f} % of the lane's question)")
    print("EVENTCOSTJSON " + json.dumps({"instr_off": round(per["off"]), "instr_on": round(per["on"])}))
    return 0


async def _serve(node: EdgeNode) -> tuple[web.AppRunner, str]:
    app = await node.start()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _warm(url: str, paths: list[str]) -> None:
    async with aiohttp.ClientSession() as s:
        for p in paths:
            for _ in range(5):
                async with s.get(url + p) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url}{p}: {r.status}")
                    if r.headers.get("X-Cache", "").startswith("HIT"):
                        break


async def _block(node: EdgeNode, paths: list[str], hits: int) -> float:
    """CPU seconds of `hits` fast-lane hits and of publishing their events."""
    ask = node._fast_get
    k = len(paths)
    sink = node.events
    t0 = time.process_time()
    for i in range(hits):
        if ask(paths[i % k]) is None:
            raise RuntimeError(f"{paths[i % k]} is not a fast-lane hit")
        if i % CHUNK == CHUNK - 1:  # let the loop turn, as a serving edge's does between reads
            if sink.enabled:
                sink._wake.set()  # type: ignore[attr-defined]
            await asyncio.sleep(0)
    if sink.enabled:
        sink._wake.set()  # type: ignore[attr-defined]  # take now, not at the next flush interval
        while sink.stats()["buffered"]:  # the publisher task runs meanwhile; few, cheap turns of the loop
            await asyncio.sleep(0.005)
    return time.process_time() - t0


async def _stream(nats_url: str) -> None:
    """The stream the events go to (a collector makes it in `ocsim up`; none runs here)."""
    import nats

    nc = await nats.connect(nats_url)
    try:
        await ensure_stream(nc.jetstream(), StreamSettings())
    finally:
        await nc.close()


async def run(args: argparse.Namespace, tmp: Path, origin_url: str, nats_url: str) -> dict[str, float]:
    await _stream(nats_url)
    nodes: dict[str, EdgeNode] = {}
    runners = []
    title, kbps = "small", edge_bench.SMALL_KBPS
    paths = [edge_bench.seg_path(title, kbps, i) for i in range(edge_bench.N_PATHS)]
    try:
        for name, events in (("off", ""), ("on", nats_url)):
            cfg = EdgeConfig(f"edge-{name}", "bench", origin_url, str(tmp / f"cache-{name}"), 256 << 20,
                             "bench-operator", DEFAULT_POLICY, events=events, scrub_bytes_per_s=0)
            nodes[name] = EdgeNode(cfg, None)
            runner, url = await _serve(nodes[name])
            runners.append(runner)
            await _warm(url, paths)
        if args.only:  # one block on one edge (instruction counts: see the module docstring)
            cpu = await _block(nodes[args.only], paths, args.hits)
            return {"only_us": cpu / args.hits * 1e6}
        for name in nodes:
            await _block(nodes[name], paths, args.hits)  # warm-up
        per_hit: dict[str, list[float]] = {"off": [], "on": []}
        diffs: list[float] = []
        for b in range(args.blocks):
            order = ("off", "on") if b % 2 == 0 else ("on", "off")
            got = {name: await _block(nodes[name], paths, args.hits) / args.hits for name in order}
            for name, v in got.items():
                per_hit[name].append(v)
            diffs.append(got["on"] - got["off"])
        stats = nodes["on"].events.stats()
        return {"off_us": statistics.median(per_hit["off"]) * 1e6, "on_us": statistics.median(per_hit["on"]) * 1e6,
                "diff_us": statistics.median(diffs) * 1e6,
                "diff_q1_us": statistics.quantiles(diffs, n=4)[0] * 1e6,
                "diff_q3_us": statistics.quantiles(diffs, n=4)[2] * 1e6,
                "published": stats["published"], "dropped": stats["dropped"]}
    finally:
        for runner in runners:
            await runner.cleanup()  # the app's cleanup closes the node (its sink flushes)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hits", type=int, default=20_000, help="hits per block")
    ap.add_argument("--blocks", type=int, default=40, help="blocks per edge, alternating")
    ap.add_argument("--wrk-us", type=float, default=15.6,
                    help="a 16 KiB hit's whole edge CPU under wrk, events off (pipeline_bench's figure), for scale")
    ap.add_argument("--only", choices=("on", "off"),
                    help="one block of --hits on that edge and nothing else, for an instruction count")
    ap.add_argument("--instructions", action="store_true", help="count instructions per hit under valgrind instead")
    args = ap.parse_args(argv)
    if args.instructions:
        return instructions(args)
    with tempfile.TemporaryDirectory(prefix="ocsim-event-cost-") as tmpname:
        tmp = Path(tmpname)
        catalog = tmp / "catalog.json"
        catalog.write_text(json.dumps({"titles": [
            {"id": "small", "duration_s": 4 * edge_bench.N_PATHS, "renditions": [edge_bench.SMALL_KBPS],
             "popularity": 1}]}))
        nats = NatsServer(tmp / "nats").start()
        origin = ServiceProcess("origin", ["origin", "--port", "0", "--catalog", str(catalog), "--no-access-log",
                                           "--admin-token", "bench-origin-admin", "--state-dir",
                                           str(tmp / "origin")], log_dir=tmp / "logs").start(60)
        try:
            r = asyncio.run(run(args, tmp, origin.url, nats.url))
        finally:
            origin.stop()
            nats.stop()
    if args.only:
        print(f"one block of {args.hits:,} hits on the events-{args.only} edge: {r['only_us']:.2f} us CPU per hit")
        return 0
    share = r["diff_us"] / args.wrk_us
    print(f"fast-lane hit (the lane's question only), events off: {r['off_us']:.2f} us CPU; on: {r['on_us']:.2f} us "
          f"(recording + slicing + packing + publishing)")
    print(f"events add {r['diff_us']:.3f} us per hit (median of {args.blocks} alternating blocks of {args.hits:,}; "
          f"quartiles {r['diff_q1_us']:.3f} .. {r['diff_q3_us']:.3f}); published {r['published']:,}, "
          f"dropped {r['dropped']:,}")
    print(f"against a whole 16 KiB hit under wrk ({args.wrk_us:g} us, --wrk-us): {share * 100:.1f} %, "
          f"so events on / off ~ {1 / (1 + share):.3f}x if the edge's CPU is the limit")
    print("EVENTCOSTJSON " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
