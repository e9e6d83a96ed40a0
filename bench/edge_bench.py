"""Edge hit-path benchmark: the ocsim edge against nginx `proxy_cache`, same files, same wrk.

    .venv/bin/python bench/edge_bench.py [--duration 10] [--threads 2] [--connections 64]
                                         [--nginx-workers 1,auto] [--edge auto|ocsim|mini]

One run starts, on 127.0.0.1 only:
  * an origin (`ocsim origin --latency-ms 20`) with a bench catalog: title `big` has one
    4194 kbit/s rendition (4 s segments of ~2 MiB = 4194*1000/8*4 +-10% VBR), title
    `small` one 33 kbit/s rendition (~16 KiB segments), title `ttfb` both, for cold misses;
  * nginx with `proxy_cache` in front of it, once per `--nginx-workers` entry ("1": one
    worker process = one core, like the edge, which is one Python process; "auto": one
    worker per core). sendfile, tcp_nopush, keep-alive to clients and upstream;
  * the ocsim edge (`ocsim edge ... --no-access-log`, no token key) when edge/cli.py
    exists, else (or with `--edge mini`) a minimal aiohttp edge built here around
    edge.hitpath.HitSender + HotTier, so the hit-path design can be measured on its own.

Every server is warmed (each URL fetched until it is a HIT, bodies verified against
common.segbytes, then a short wrk run), then the SAME wrk command runs against each one:
`wrk -t{threads} -c{connections} -d{duration}s --latency -s paths.lua URL`, the Lua script
cycling over the paths of one case (16 segments, or 200 media playlists). Then time to first byte: sequential GETs of
distinct, never-fetched 2 MiB segments straight from the origin and through each cache
(keep-alive connections opened beforehand, so TTFB is request -> first response byte).
Prints the tables and whether the targets are met:
  edge Gbit/s >= 0.9x nginx (the last --nginx-workers entry, auto) on ~2 MiB objects;
  edge req/s >= 0.8x nginx (1 worker) on 16 KiB segments and on 200 distinct media
  playlists of ~16 KiB (the playlist case, as players ask for them); edge miss TTFB p50 <= origin TTFB p50 + 5 ms.
Every load is bounded in time; every process is stopped at the end, even on error.
Exit status: 0 when all targets are met, 1 otherwise, 2 on a setup failure.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.content import Catalog, Title  # noqa: E402
from common.hls import media_playlist  # noqa: E402
from ocsim.procs import ServiceProcess  # noqa: E402

BIG_KBPS, SMALL_KBPS = 4194, 33
N_PATHS = 16
CATALOG = Catalog.from_json({"titles": [
    {"id": "big", "duration_s": 4 * N_PATHS, "renditions": [BIG_KBPS], "popularity": 3},
    {"id": "small", "duration_s": 4 * N_PATHS, "renditions": [SMALL_KBPS], "popularity": 2},
    {"id": "ttfb", "duration_s": 4 * 400, "renditions": [SMALL_KBPS, BIG_KBPS], "popularity": 1},
    # the playlist case: many distinct media playlists of ~16 KiB (600 segments each)
    *({"id": f"pl-{i:03d}", "duration_s": 4 * 600, "renditions": [SMALL_KBPS], "popularity": 1}
      for i in range(200)),
]})
N_PLAYLISTS = 200
CATALOG_T: dict[str, Title] = dict(CATALOG.titles)
TOKEN = "bench-admin-token"

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    open_file_cache max=1000 inactive=60s;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=edge:32m max_size=2g inactive=1d use_temp_path=off;
    upstream origin {{ server {origin}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            proxy_buffering on;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""

WRK_LUA = """\
local paths = {{{paths}}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {{"requests": %d, "bytes": %d, "duration_us": %d, "errors": %d, ' ..
    '"non2xx": %d, "p50_us": %d, "p99_us": %d}}\\n', summary.requests, summary.bytes, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(99)))
end
"""


# ----------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Nginx:
    """One nginx master (+ workers) with a proxy_cache, started from a generated config."""

    def __init__(self, workdir: Path, origin: str, workers: str) -> None:
        self.dir = workdir
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(NGINX_CONF.format(
            workers=workers, dir=self.dir, origin=origin.removeprefix("http://"), port=self.port, user=user))

    def start(self) -> Nginx:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.log", "wb"), start_new_session=True)
        try:
            wait_port(self.port)
        except OSError:
            self.stop()
            raise RuntimeError(f"nginx did not start; see {self.dir}/stderr.log and error.log") from None
        return self

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)] if self.proc else []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)  # fast shutdown of master and its workers
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


class MiniEdge:
    """This script's own minimal edge (see `serve_mini_edge`), a child process."""

    def __init__(self, workdir: Path, origin: str, loop: str, extra: list[str]) -> None:
        self.extra = extra
        self.dir = workdir
        self.origin = origin
        self.loop = loop
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MiniEdge:
        self.dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, OCSIM_LOOP=self.loop, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-mini-edge", "--upstream", self.origin,
                                      "--cache-dir", str(self.dir / "cache"), *self.extra],
                                     stdout=subprocess.PIPE, stderr=open(self.dir / "stderr.log", "wb"),
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "listening":
                self.url = msg["url"]
                return self
        self.stop()
        raise RuntimeError(f"mini edge did not start; see {self.dir}/stderr.log")

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------- clients

class HttpConn:
    """A blocking keep-alive HTTP/1.1 client: enough to warm, verify and time TTFB."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path: str) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, ttfb seconds)."""
        t0 = time.perf_counter()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        ttfb = None
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed before the headers")
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            self.buf += data
        if ttfb is None:
            ttfb = time.perf_counter() - t0
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        n = int(headers.get("content-length", "0"))
        parts, got = [self.buf[:n]], len(self.buf[:n])
        self.buf = self.buf[n:]
        while got < n:
            data = self.sock.recv(min(1 << 20, n - got))
            if not data:
                raise ConnectionError("closed mid-body")
            parts.append(data)
            got += len(data)
        return int(lines[0].split()[1]), headers, b"".join(parts), ttfb

    def close(self) -> None:
        self.sock.close()


def seg_path(title: str, kbps: int, i: int) -> str:
    return f"/content/{title}/{kbps}/{i}.seg"


def body_length(path: str) -> int:
    _, title, kbps, name = path.strip("/").split("/")
    if name == "index.m3u8":
        return len(media_playlist(CATALOG_T[title], int(kbps)).encode())
    return CATALOG_T[title].segment(int(kbps), int(name.split(".")[0])).length


def verify(path: str, body: bytes) -> bool:
    _, title, kbps, name = path.strip("/").split("/")
    if name == "index.m3u8":
        return body == media_playlist(CATALOG_T[title], int(kbps)).encode()
    spec = CATALOG_T[title].segment(int(kbps), int(name.split(".")[0]))
    return len(body) == spec.length and spec.verify(0, body)


def warm(url: str, paths: list[str]) -> str:
    """Fetch every path until the cache says HIT; verify bytes. Returns a problem or ''."""
    conn = HttpConn(url)
    try:
        for p in paths:
            for attempt in range(5):
                status, headers, body, _ = conn.get(p)
                if status != 200 or not verify(p, body):
                    return f"{url}{p}: status {status}, {len(body)} bytes, verified=False"
                if headers.get("x-cache", "").upper().startswith("HIT"):
                    break
            else:
                return f"{url}{p}: never a HIT (X-Cache {headers.get('x-cache')!r})"
    finally:
        conn.close()
    return ""


@dataclass
class WrkResult:
    requests: int
    bytes: int
    seconds: float
    errors: int
    non2xx: int
    p50_ms: float
    p99_ms: float
    server_cpu: float  # cores used by the server process(es) during the run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def gbps(self) -> float:
        return self.bytes * 8 / self.seconds / 1e9


def wrk(url: str, lua: Path, args: argparse.Namespace, duration: float, pids: list[int]) -> WrkResult:
    cmd = wrk_cmd(args, duration) + ["-s", str(lua), url]
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30)
    cpu = (cpu_seconds(pids) - cpu0) / (time.monotonic() - t0)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            d = json.loads(line[8:])
            return WrkResult(d["requests"], d["bytes"], d["duration_us"] / 1e6, d["errors"], d["non2xx"],
                             d["p50_us"] / 1000, d["p99_us"] / 1000, cpu)
    raise RuntimeError(f"wrk gave no result: {out.stdout[-500:]} {out.stderr[-500:]}")


def wrk_cmd(args: argparse.Namespace, duration: float) -> list[str]:
    return ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration:g}s", "--latency"]


def ttfb_samples(url: str, paths: list[str]) -> list[float]:
    conn = HttpConn(url)
    out = []
    try:
        for p in paths:
            status, _, body, ttfb = conn.get(p)
            if status != 200 or not verify(p, body):
                raise RuntimeError(f"{url}{p}: status {status}, bad body")
            out.append(ttfb * 1000)
    finally:
        conn.close()
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]


# ----------------------------------------------------------------------------- the run

def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured wrk run")
    ap.add_argument("--warm-duration", type=float, default=2.0, help="seconds of wrk warm-up per server/case")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--nginx-workers", default="1,auto", help="comma list: one nginx per entry")
    ap.add_argument("--edge", choices=("auto", "ocsim", "mini"), default="auto",
                    help="auto: `ocsim edge` if edge/cli.py exists, else the mini edge")
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="OCSIM_LOOP for the edge")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="origin added TTFB")
    ap.add_argument("--ttfb-samples", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved measured runs per server; best is kept")
    ap.add_argument("--cases", default="big,small,playlists",
                    help="comma list of big (~2 MiB), small (~16 KiB), playlists (200 media playlists, ~16 KiB)")
    ap.add_argument("--mini-edge-args", default="", help="extra args for the mini edge (experiments)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, configs)")
    args = ap.parse_args(argv)
    if not shutil.which("wrk") or not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        print("needs wrk and nginx: apt-get install -y nginx wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="ocsim-edge-bench-"))
    procs: list[Any] = []
    try:
        return run(args, tmp, procs)
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception as exc:  # keep stopping the others
                print(f"stopping {p}: {exc}", file=sys.stderr)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path, procs: list[Any]) -> int:
    cat_file = tmp / "catalog.json"
    cat_file.write_text(json.dumps({"titles": [t.to_json() for t in CATALOG_T.values()]}))
    origin = ServiceProcess("origin", ["origin", "--host", "127.0.0.1", "--port", "0", "--admin-token", TOKEN,
                                       "--catalog", str(cat_file), "--latency-ms", f"{args.latency_ms:g}",
                                       "--no-access-log", "--state-dir", str(tmp / "origin")],
                            log_dir=tmp / "logs")
    procs.append(origin)
    origin.start()

    use_ocsim = args.edge == "ocsim" or (args.edge == "auto" and (ROOT / "edge" / "cli.py").exists())
    edge: Any
    if use_ocsim:
        edge = ServiceProcess("edge", ["edge", "--host", "127.0.0.1", "--port", "0", "--id", "e1", "--isp", "a",
                                       "--upstream", origin.url, "--cache-dir", str(tmp / "edge-cache"),
                                       "--capacity", "2GiB", "--no-access-log"],
                              log_dir=tmp / "logs", env={"OCSIM_LOOP": args.loop})
        edge_name = f"ocsim edge ({args.loop})"
    else:
        edge = MiniEdge(tmp / "mini-edge", origin.url, args.loop, args.mini_edge_args.split())
        edge_name = f"mini edge ({args.loop})"
    procs.append(edge)
    edge.start()
    edge_pids = lambda: [edge.pid] if use_ocsim else edge.pids()  # noqa: E731

    servers: list[tuple[str, str, Any]] = []  # (name, url, pids())
    for w in [w.strip() for w in args.nginx_workers.split(",") if w.strip()]:
        ngx = Nginx(tmp / f"nginx-{w}", origin.url, w)
        procs.append(ngx)
        ngx.start()
        n = os.cpu_count() if w == "auto" else int(w)
        servers.append((f"nginx proxy_cache, {n} worker{'s' if n != 1 else ''}", ngx.url, ngx.pids))
    servers.append((edge_name, edge.url, edge_pids))

    all_cases = {
        "~2 MiB": ("big", [seg_path("big", BIG_KBPS, i) for i in range(N_PATHS)]),
        "~16 KiB": ("small", [seg_path("small", SMALL_KBPS, i) for i in range(N_PATHS)]),
        # players ask for many distinct media playlists, each a plain GET
        "playlists": ("playlists", [f"/content/pl-{i:03d}/{SMALL_KBPS}/index.m3u8" for i in range(N_PLAYLISTS)]),
    }
    wanted = args.cases.split(",")
    cases = {c: paths for c, (key, paths) in all_cases.items() if key in wanted}
    sizes = {c: statistics.mean(body_length(p) for p in ps) for c, ps in cases.items()}
    print(f"cpus: {os.cpu_count()}; origin {origin.url} (+{args.latency_ms:g} ms); "
          + "; ".join(f"{name} {url}" for name, url, _ in servers))
    print(f"objects: " + ", ".join(f"{c}: {len(ps)} objects, mean {sizes[c] / 1024:.1f} KiB"
                                    for c, ps in cases.items()))

    for name, url, _ in servers:
        for c, paths in cases.items():
            problem = warm(url, paths)
            if problem:
                print(f"warm-up failed for {name}: {problem}", file=sys.stderr)
                return 2
    print("warmed: every path verified and a HIT on every server")

    # Rounds interleave the servers (A B C A B C ...) so a burst of outside load hits them
    # alike; each server's best round is reported, with the spread over rounds.
    results: dict[tuple[str, str], WrkResult] = {}
    spread: dict[tuple[str, str], list[float]] = {}
    for c, paths in cases.items():
        lua = tmp / f"paths-{len(paths)}-{c.strip('~ ').replace(' ', '')}.lua"
        lua.write_text(WRK_LUA.format(paths=", ".join(json.dumps(p) for p in paths)))
        for rnd in range(args.rounds):
            for name, url, pids in servers:
                if args.warm_duration > 0 and rnd == 0:
                    wrk(url, lua, args, args.warm_duration, pids())
                r = wrk(url, lua, args, args.duration, pids())
                key = (c, name)
                metric = (lambda x: x.gbps) if c == "~2 MiB" else (lambda x: x.rps)
                spread.setdefault(key, []).append(metric(r))
                if key not in results or metric(r) > metric(results[key]):
                    results[key] = r
                print(f"  round {rnd + 1} {c:8} {name:34} {r.rps:10.0f} req/s {r.gbps:7.2f} Gbit/s "
                      f"p99 {r.p99_ms:6.2f} ms cpu {r.server_cpu:4.2f} errors {r.errors + r.non2xx}", flush=True)

    # TTFB: distinct cold 2 MiB segments, origin direct vs through each cache.
    n = args.ttfb_samples
    ttfb: dict[str, list[float]] = {"origin direct": []}
    if n:
        ttfb["origin direct"] = ttfb_samples(origin.url, [seg_path("ttfb", BIG_KBPS, i) for i in range(n)])
    for k, (name, url, _) in enumerate([servers[0], servers[-1]] if n else [], start=1):
        ttfb[f"{name}, miss"] = ttfb_samples(url, [seg_path("ttfb", BIG_KBPS, k * n + i) for i in range(n)])

    # ------------------------------------------------------------------ report
    ref = servers[0][0]
    print()
    print(f"wrk command (same for every server): {' '.join(wrk_cmd(args, args.duration))} -s paths.lua URL"
          f"   ({N_PATHS} paths per case, {args.warm_duration:g}s wrk warm-up before each run)")
    print(f"best of {args.rounds} interleaved rounds per server; 'rounds' = the metric (Gbit/s for ~2 MiB, "
          f"req/s for ~16 KiB) of every round")
    hdr = (f"{'case':9} {'server':36} {'req/s':>9} {'Gbit/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'cpu':>5} "
           f"{'vs nginx 1w':>14} {'per core':>12}  rounds")
    print(hdr)
    print("-" * len(hdr))
    for c in cases:
        base = results[(c, ref)]
        for name, _, _ in servers:
            r = results[(c, name)]
            ratio = r.gbps / base.gbps if c == "~2 MiB" else r.rps / base.rps
            unit = "x Gbit/s" if c == "~2 MiB" else "x req/s"
            rounds = " ".join(f"{x:.2f}" if c == "~2 MiB" else f"{x:.0f}" for x in spread[(c, name)])
            eff = (f"{r.gbps / r.server_cpu:6.1f} Gb/s" if c == "~2 MiB" else f"{r.rps / r.server_cpu / 1000:5.1f} kreq/s") \
                if r.server_cpu > 0 else "n/a"
            print(f"{c:9} {name:36} {r.rps:9.0f} {r.gbps:7.2f} {r.p50_ms:7.2f} {r.p99_ms:7.2f} "
                  f"{r.server_cpu:5.2f} {ratio:5.2f}{unit:>9} {eff:>12}  {rounds}")
    print("(cpu = cores the server's processes used during the run; per core = the metric per core used: "
          "wrk runs on the same cores, so on a small box the client is often the limit and this is the "
          "steadier comparison)")
    print()
    o = ttfb["origin direct"]
    if n:
        print(f"{'TTFB (ms), ' + str(n) + ' cold 2 MiB GETs each':44} {'p50':>7} {'p99':>7} {'p50 - origin':>13} {'p99 - origin':>13}")
    for name, xs in ttfb.items() if n else []:
        print(f"{name:44} {pct(xs, 50):7.2f} {pct(xs, 99):7.2f} {pct(xs, 50) - pct(o, 50):13.2f} "
              f"{pct(xs, 99) - pct(o, 99):13.2f}")
    print()
    edge = servers[-1][0]
    checks = []
    if "~2 MiB" in cases:
        ref_all = servers[-2][0]  # the last nginx: "auto" workers with the default --nginx-workers
        checks.append((f"~2 MiB Gbit/s >= 0.9x {ref_all}",
                       results[("~2 MiB", edge)].gbps / results[("~2 MiB", ref_all)].gbps, 0.9))
    if "~16 KiB" in cases:
        checks.append((f"~16 KiB req/s >= 0.8x {ref}",
                       results[("~16 KiB", edge)].rps / results[("~16 KiB", ref)].rps, 0.8))
    if "playlists" in cases:
        checks.append((f"playlists req/s >= 0.8x {ref}",
                       results[("playlists", edge)].rps / results[("playlists", ref)].rps, 0.8))
    ok = True
    for label, value, target in checks:
        met = value >= target
        ok &= met
        print(f"target {label:52} {value:5.2f}x  {'met' if met else 'NOT met'}")
    if n:
        edge_ttfb = ttfb[f"{edge}, miss"]
        extra = pct(edge_ttfb, 50) - pct(o, 50)
        met = extra <= 5.0
        ok &= met
        print(f"target {'miss TTFB p50 <= origin p50 + 5 ms':52} {extra:+5.2f} ms  {'met' if met else 'NOT met'}"
              f"  (p99 {pct(edge_ttfb, 99) - pct(o, 99):+.2f} ms)")
    return 0 if ok else 1


# ----------------------------------------------------------------------------- mini edge

def serve_mini_edge(argv: list[str]) -> int:
    """A minimal edge around HitSender + HotTier: disk store keyed by path, misses streamed
    from the upstream while written to a temp file (renamed when complete). Bench only: no
    ranges, no coalescing, no eviction, no tokens."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve-mini-edge", action="store_true")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--cache-dir", required=True)
    ap.add_argument("--hot-bytes", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-sendfile", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--no-sendfile", action="store_true", help="the executor path (FileResponse-like)")
    args = ap.parse_args(argv)

    import hashlib

    import aiohttp
    from aiohttp import web

    from common.service import create_app, run_app
    from edge.hitpath import HitSender, HotTier

    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    sender = HitSender(max_sendfile=args.max_sendfile, use_sendfile=not args.no_sendfile)
    hot = HotTier(args.hot_bytes, max_object_bytes=256 * 1024)
    index: dict[str, tuple[int, int, dict[str, str]]] = {}  # path -> (fd, size, headers)
    session: dict[str, aiohttp.ClientSession] = {}
    keep = ("ETag", "Cache-Control", "Content-Type", "Last-Modified")

    async def content(request: web.Request) -> web.StreamResponse:
        key = request.path
        data = hot.get(key)
        if data is not None:
            entry = index[key]
            return HotTier.response(data, headers={**entry[2], "X-Cache": "HIT"})
        entry = index.get(key)
        if entry is not None:
            fd, size, headers = entry
            resp = web.StreamResponse(headers={**headers, "X-Cache": "HIT"})
            resp.content_length = size
            await sender.send(request, resp, fd, 0, size)
            if size <= hot.max_object_bytes:
                hot.put(key, await asyncio.get_running_loop().run_in_executor(None, os.pread, fd, size, 0))
            return resp
        return await miss(request, key)

    async def miss(request: web.Request, key: str) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        if "s" not in session:
            session["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        async with session["s"].get(args.upstream + key) as up:
            if up.status != 200:
                return web.Response(status=up.status, body=await up.read())
            headers = {k: up.headers[k] for k in keep if k in up.headers}
            resp = web.StreamResponse(headers={**headers, "X-Cache": "MISS"})
            resp.content_length = up.content_length
            await resp.prepare(request)
            name = hashlib.sha1(key.encode()).hexdigest()
            tmp_path, final = cache / f".{name}.tmp", cache / name
            f = open(tmp_path, "wb")
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                    await loop.run_in_executor(None, f.write, chunk)
            finally:
                f.close()
            if tmp_path.stat().st_size == up.content_length:
                os.rename(tmp_path, final)
                index[key] = (os.open(final, os.O_RDONLY), up.content_length or 0, headers)
            await resp.write_eof()
            return resp

    async def make() -> web.Application:
        app = create_app("edge")
        app.router.add_get("/content/{tail:.*}", content)

        async def close(_: web.Application) -> None:
            if "s" in session:
                await session["s"].close()
        app.on_cleanup.append(close)
        return app

    return run_app(make, "127.0.0.1", args.port, service="edge", access_log=False, log_level="WARNING")


if __name__ == "__main__":
    if "--serve-mini-edge" in sys.argv:
        sys.exit(serve_mini_edge(sys.argv[1:]))
    sys.exit(main(sys.argv[1:]))
