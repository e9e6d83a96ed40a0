"""Origin benchmark: in-process byte generation, and segment throughput over loopback.

    .venv/bin/python bench/origin_bench.py [--duration 10] [--connections 16]

Part 1 generates whole 5800 kbit/s segments (~2.9 MB) in one thread for a few seconds:
the bytes/s of `SegmentSpec.chunks` with the chunks copied out (what the origin's
`resp.write` costs at least). Target: >= 2 GB/s on one core.
Part 2 starts a real origin (no link emulation, no access log) on 127.0.0.1 and drives it
with wrk (apt-get install wrk) over a set of segment URLs; without wrk, an aiohttp
client. Everything is bounded in time and stopped at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.content import default_catalog  # noqa: E402
from ocsim.procs import ServiceProcess  # noqa: E402

CAT = default_catalog()
TITLE = CAT.get("title-001")


def generation(seconds: float = 3.0) -> tuple[float, float]:
    specs = [TITLE.segment(5800, i) for i in range(64)]
    n = 0
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    i = 0
    while time.perf_counter() - t0 < seconds:
        for chunk in specs[i % 64].chunks(0, specs[i % 64].length):
            n += len(bytes(chunk))
        i += 1
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    return n / wall, n / cpu


def wrk_run(url: str, paths: list[str], duration: int, connections: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("paths = {" + ",".join(f'"{p}"' for p in paths) + "}\n"
                "i = 0\nrequest = function()\n i = i + 1\n"
                " return wrk.format('GET', paths[(i % #paths) + 1])\nend\n")
        script = f.name
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    assert tr is not None
    unit = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[tr.group(2)]
    p99 = re.search(r"99%\s+([\d.]+)(\w+)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "gbps": float(tr.group(1)) * unit * 8 / 1e9, "p99_ms": p99_ms,
            "errors": float(errors.group(1)) if errors else 0.0}


async def client_run(url: str, paths: list[str], duration: int, connections: int) -> dict[str, float]:
    import aiohttp
    n = nbytes = 0
    deadline = time.monotonic() + duration

    async def worker(k: int) -> None:
        nonlocal n, nbytes
        async with aiohttp.ClientSession() as s:
            i = k
            while time.monotonic() < deadline:
                async with s.get(url + paths[i % len(paths)]) as r:
                    nbytes += len(await r.read())
                n += 1
                i += 1
    await asyncio.gather(*(worker(k) for k in range(connections)))
    return {"rps": n / duration, "gbps": nbytes * 8 / duration / 1e9, "p99_ms": float("nan"), "errors": 0.0}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()

    wall_rate, cpu_rate = generation()
    print("\n== in-process generation (one thread) ==")
    print(f"{'measure':<28}{'GB/s':>10}")
    print(f"{'wall clock':<28}{wall_rate / 1e9:>10.2f}")
    print(f"{'per CPU second':<28}{cpu_rate / 1e9:>10.2f}")
    print(f"target >= 2 GB/s: {'met' if cpu_rate >= 2e9 else 'NOT met'}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        origin = ServiceProcess("origin", ["origin", "--host", "127.0.0.1", "--port", "0", "--admin-token",
                                           "bench", "--no-access-log", "--log-level", "WARNING"], log_dir=tmp)
        origin.start()
        try:
            for kbps in (5800, 235):
                paths = [TITLE.segment(kbps, i).id.path for i in range(32)]
                size = sum(TITLE.segment(kbps, i).length for i in range(32)) / 32
                if shutil.which("wrk"):
                    res, tool = wrk_run(origin.url, paths, args.duration, args.connections), "wrk"
                else:
                    res, tool = asyncio.run(client_run(origin.url, paths, args.duration, args.connections)), "aiohttp"
                rows.append((f"{kbps} kbit/s ({size / 1e6:.2f} MB)", tool, res))
        finally:
            origin.stop()
    print(f"\n== origin over loopback ({args.connections} connections, {args.duration}s each) ==")
    print(f"{'segments':<26}{'client':<9}{'req/s':>10}{'Gbit/s':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name, tool, r in rows:
        print(f"{name:<26}{tool:<9}{r['rps']:>10.0f}{r['gbps']:>9.2f}{r['p99_ms']:>9.1f}{r['errors']:>9.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
