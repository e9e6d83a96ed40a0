"""Control-plane benchmark: play requests/s and steering latency with 50 edges in 10 ISPs.

Two parts:

1. Pure core: `SteeringRanker.rank()` calls/s and per-call p50/p99 over a fleet of 50
   edges in 10 ISPs (no IO), for a known client ISP and for an unknown one.
2. The real service: starts `ocsim control` on 127.0.0.1 (ephemeral port, a throw-away
   state dir, generated operator token and fleet secret), simulates the 50 edges in this
   process (signed msgpack register, then a signed heartbeat per edge every second, each
   reporting the titles placement would have put there), and drives `POST /v1/play` with
   an asyncio load generator:
   - open loop at a fixed rate (default 1,000 plays/s for 10 s): request i is due at
     t0 + i/rate whether or not earlier ones finished, and its latency is measured from
     that due time, so a stalled server or generator shows up in the figures
     (no coordinated omission);
   - closed loop at max rate (default 32 concurrent clients for 5 s).
   Clients come from the ISPs' IPv4 and IPv6 prefixes, 5% from unknown networks (the
   fallback ranking); titles follow the catalog's Zipf popularity. Reported: achieved
   rate, p50/p99/max latency, errors, heartbeat errors, and the server's own steering
   time from its `ocsim_control_steering_seconds` histogram.

Everything runs on 127.0.0.1 and is bounded in time; the service is stopped at the end.

    .venv/bin/python bench/control_bench.py                      # both parts
    .venv/bin/python bench/control_bench.py --pure-only          # the pure core only
    .venv/bin/python bench/control_bench.py --rate 1000 --duration 10 --max-duration 5 --json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.content import Catalog, default_catalog  # noqa: E402
from control.steering import EdgeView, SteeringRanker, hrw_order  # noqa: E402

N_ISPS = 10
EDGES_PER_ISP = 5
TOP_PLACED = 100  # titles "pre-positioned": each on its rendezvous-first edge of every ISP


# ------------------------------------------------------------------ the fleet and the workload

@dataclass(frozen=True, slots=True)
class SimEdge:
    edge_id: str
    isp: str
    url: str
    titles: tuple[str, ...]


def isp_name(i: int) -> str:
    return f"isp-{i:02d}"


def make_fleet(catalog: Catalog) -> list[SimEdge]:
    top = [t.id for t in catalog.by_popularity()[:TOP_PLACED]]
    edges: list[SimEdge] = []
    for i in range(N_ISPS):
        ids = [f"edge-{i:02d}-{k}" for k in range(EDGES_PER_ISP)]
        holds: dict[str, list[str]] = {e: [] for e in ids}
        for t in top:
            holds[hrw_order(t, ids)[0]].append(t)
        for k, eid in enumerate(ids):
            edges.append(SimEdge(eid, isp_name(i), f"http://127.0.0.1:{31000 + i * 10 + k}", tuple(holds[eid])))
    return edges


def topology_toml() -> str:
    lines = []
    for i in range(N_ISPS):
        lines += [f"[isps.{isp_name(i)}]", f'prefixes = ["10.{i}.0.0/16", "fd00:{i:x}::/32"]', ""]
    return "\n".join(lines)


def make_requests(catalog: Catalog, n: int, seed: int = 1) -> list[dict[str, str]]:
    rng = random.Random(seed)
    titles = catalog.by_popularity()
    picks = rng.choices([t.id for t in titles], weights=[t.popularity for t in titles], k=n)
    out = []
    for title in picks:
        r = rng.random()
        i = rng.randrange(N_ISPS)
        if r < 0.05:
            ip = f"192.0.2.{rng.randrange(1, 255)}"  # TEST-NET-1: no ISP announces it
        elif r < 0.15:
            ip = f"fd00:{i:x}::{rng.randrange(1, 0xFFFF):x}"
        else:
            ip = f"10.{i}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        out.append({"title": title, "client_ip": ip})
    return out


def quantiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"p50": math.nan, "p99": math.nan, "max": math.nan, "mean": math.nan}
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {"p50": q(0.50), "p99": q(0.99), "max": s[-1], "mean": statistics.fmean(s)}


# ------------------------------------------------------------------ part 1: the pure core

def pure_bench(seconds: float = 2.0) -> dict[str, Any]:
    catalog = default_catalog(200)
    fleet = make_fleet(catalog)
    views = tuple(EdgeView(e.edge_id, e.isp, e.url, "up", frozenset(e.titles)) for e in fleet)
    reqs = make_requests(catalog, 20_000, seed=2)
    clients = [(r["title"], isp_name(i % N_ISPS)) for i, r in enumerate(reqs)]
    out: dict[str, Any] = {"edges": len(views), "isps": N_ISPS}
    for label, unknown in (("known_isp", False), ("unknown_isp", True)):
        ranker = SteeringRanker()
        per_call: list[float] = []
        n = 0
        sim_now = 0.0
        deadline = time.perf_counter() + seconds
        perf = time.perf_counter
        while perf() < deadline:
            for title, isp in clients[:2000]:
                t0 = perf()
                ranking = ranker.rank(title, None if unknown else isp, views, sim_now)
                ranker.record(ranking, sim_now)
                per_call.append(perf() - t0)
                sim_now += 0.001  # 1,000 plays/s of simulated time: the 10 s window stays full
                n += 1
        total = sum(per_call)
        q = quantiles(per_call)
        out[label] = {"calls": n, "calls_per_s": n / total, "p50_us": q["p50"] * 1e6, "p99_us": q["p99"] * 1e6}
    return out


# ------------------------------------------------------------------ part 2: the service

@dataclass(slots=True)
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    send_latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    started: int = 0
    wall_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def report(self) -> dict[str, Any]:
        done = len(self.latencies)
        q = quantiles(self.latencies)
        qs = quantiles(self.send_latencies)
        return {
            "phase": self.name, "requests": self.started, "ok": done,
            "errors": sum(self.errors.values()), "error_kinds": self.errors,
            "achieved_rate": done / self.wall_s if self.wall_s else 0.0,
            "p50_ms": q["p50"] * 1e3, "p99_ms": q["p99"] * 1e3, "max_ms": q["max"] * 1e3,
            "mean_ms": q["mean"] * 1e3, "p50_from_send_ms": qs["p50"] * 1e3, "p99_from_send_ms": qs["p99"] * 1e3,
        }


# uvloop's loop.time() ticks in milliseconds: every latency is taken with perf_counter.
clock = time.perf_counter


class RawClient:
    """A minimal HTTP/1.1 keep-alive client for `POST /v1/play` (JSON in, Content-Length out).

    aiohttp's client costs the generator ~10x more CPU per request than the server spends
    steering; on a 2-core box that CPU comes out of the server's share, so the default
    generator speaks HTTP/1.1 itself over a pool of keep-alive connections."""

    def __init__(self, url: str, connections: int) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.size = connections
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
        for _ in range(connections):
            self.pool.put_nowait(None)  # opened on first use

    async def post_json(self, body: dict[str, str]) -> tuple[int, bytes]:
        conn = await self.pool.get()
        ok = False
        try:
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
            reader, writer = conn
            data = json.dumps(body).encode()
            writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (self.path.encode(), self.host.encode(), self.port,
                                                               len(data), data))
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                elif name.strip().lower() == b"transfer-encoding":
                    raise ValueError("chunked replies are not expected from /v1/play")
            payload = await reader.readexactly(length)
            ok = b"connection: close" not in head.lower()
            return status, payload
        finally:
            if ok:
                self.pool.put_nowait(conn)
            else:
                if conn is not None:
                    conn[1].close()
                self.pool.put_nowait(None)

    async def close(self) -> None:
        while not self.pool.empty():
            conn = self.pool.get_nowait()
            if conn is not None:
                conn[1].close()


async def _play(session: Any, url: str, body: dict[str, str], due: float, phase: Phase) -> None:
    sent = clock()
    try:
        if isinstance(session, RawClient):
            status, data = await session.post_json(body)
        else:
            async with session.post(url, json=body) as resp:
                status, data = resp.status, await resp.read()
        if status != 200:
            phase.error(f"http-{status}")
            return
        obj = json.loads(data)
        if not obj.get("candidates"):
            phase.error("no-candidates")
            return
    except asyncio.TimeoutError:
        phase.error("timeout")
        return
    except Exception as exc:  # connection errors of any kind count, they do not stop the bench
        phase.error(type(exc).__name__)
        return
    end = clock()
    phase.latencies.append(end - due)
    phase.send_latencies.append(end - sent)


async def open_loop(session: Any, url: str, reqs: list[dict[str, str]], rate: float, duration: float,
                    name: str) -> Phase:
    """Request i is due at t0 + i/rate; latency counts from that due time."""
    phase = Phase(name)
    n = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()
    t0 = clock() + 0.01
    i = 0
    while i < n:
        now = clock()
        while i < n and t0 + i / rate <= now:
            task = asyncio.create_task(_play(session, url, reqs[i % len(reqs)], t0 + i / rate, phase))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        phase.started = i
        await asyncio.sleep(max(0.0, min(0.001, t0 + i / rate - clock())))
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=10.0)
        for task in pending:
            task.cancel()
            phase.error("unfinished")
    phase.wall_s = clock() - t0
    return phase


async def closed_loop(session: Any, url: str, reqs: list[dict[str, str]], concurrency: int, duration: float) -> Phase:
    phase = Phase(f"max rate ({concurrency} concurrent)")
    stop = clock() + duration
    counter = iter(range(10**9))

    async def worker() -> None:
        while clock() < stop:
            k = next(counter)
            phase.started += 1
            await _play(session, url, reqs[k % len(reqs)], clock(), phase)

    t0 = clock()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), duration + 15.0)
    phase.wall_s = clock() - t0
    return phase


class EdgeSim:
    """The 50 edges: signed register, then a signed heartbeat each per interval."""

    def __init__(self, session: Any, control: str, fleet_secret: bytes, fleet: list[SimEdge]) -> None:
        from common.wire import edge_key

        self.session = session
        self.control = control
        self.fleet = fleet
        self.keys = {e.edge_id: edge_key(fleet_secret, e.edge_id) for e in fleet}
        self.sent = 0
        self.errors: dict[str, int] = {}
        self._stop = asyncio.Event()
        self.registration_ts: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def _post(self, path: str, edge: SimEdge, msg: Any) -> None:
        from common.wire import CONTENT_TYPE, EDGE_HEADER, SIGNATURE_HEADER, ControlReply

        key = self.keys[edge.edge_id]
        body, signature = msg.seal(key)
        headers = {EDGE_HEADER: edge.edge_id, SIGNATURE_HEADER: signature, "Content-Type": CONTENT_TYPE}
        try:
            async with self.session.post(self.control + path, data=body, headers=headers) as resp:
                reply = await resp.read()
                if resp.status != 200:
                    self._error(f"http-{resp.status}")
                    return
                ControlReply.unseal(key, reply, resp.headers.get(SIGNATURE_HEADER))  # the reply is signed too
                self.sent += 1
        except Exception as exc:
            self._error(type(exc).__name__)

    async def register_all(self) -> None:
        from common.wire import Register

        self.registration_ts = {e.edge_id: time.time() for e in self.fleet}
        await asyncio.gather(*(self._post("/v1/edges/register", e, Register(
            edge_id=e.edge_id, isp=e.isp, url=e.url, capacity_bytes=10**12, ts=self.registration_ts[e.edge_id],
            policy="bench", version="bench")) for e in self.fleet))

    async def _beat(self, edge: SimEdge, phase: float) -> None:
        from common.wire import Heartbeat

        seq = 0
        try:
            await asyncio.wait_for(self._stop.wait(), phase)
        except asyncio.TimeoutError:
            pass
        while not self._stop.is_set():
            seq += 1
            await self._post(f"/v1/edges/{edge.edge_id}/heartbeat", edge, Heartbeat(
                edge_id=edge.edge_id, isp=edge.isp, url=edge.url, seq=seq, ts=time.time(), state="up",
                capacity_bytes=10**12, used_bytes=10**11, objects=10_000, req_rate=20.0, byte_rate=1e8,
                hit_ratio=0.95, titles=list(edge.titles), registration_ts=self.registration_ts[edge.edge_id]))
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def start(self) -> None:
        for k, edge in enumerate(self.fleet):
            self._tasks.append(asyncio.create_task(self._beat(edge, k / len(self.fleet))))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), 10.0)


def steering_histogram(metrics_text: str) -> dict[str, Any]:
    """Estimate the server's own steering time quantiles from its Prometheus histogram."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("ocsim_control_steering_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith("ocsim_control_steering_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith("ocsim_control_steering_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
    buckets.sort()

    def upper(p: float) -> float:
        for le, c in buckets:
            if count and c >= p * count:
                return le
        return math.nan

    return {"count": int(count), "mean_us": total / count * 1e6 if count else math.nan,
            "p50_le_us": upper(0.5) * 1e6, "p99_le_us": upper(0.99) * 1e6}


async def drive(control: str, fleet_secret: bytes, catalog: Catalog, args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    fleet = make_fleet(catalog)
    reqs = make_requests(catalog, 50_000)
    play_url = control + "/v1/play"
    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=5.0)
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        edges = EdgeSim(session, control, fleet_secret, fleet)
        await edges.register_all()
        edges.start()
        players: Any = RawClient(play_url, args.connections) if args.client == "raw" else session
        try:
            warm = await open_loop(players, play_url, reqs, min(args.rate, 200.0), 1.0, "warm-up")
            out["warmup_errors"] = warm.errors
            fixed = await open_loop(players, play_url, reqs, args.rate, args.duration,
                                    f"open loop {args.rate:g}/s")
            out["fixed"] = fixed.report()
            if args.max_duration > 0:
                out["max"] = (await closed_loop(players, play_url, reqs, args.concurrency, args.max_duration)).report()
            async with session.get(control + "/metrics") as resp:
                out["server_steering"] = steering_histogram(await resp.text())
        finally:
            if isinstance(players, RawClient):
                await players.close()
            await edges.stop()
        out["client"] = args.client
        out["edges"] = {"count": len(fleet), "isps": N_ISPS, "signed_messages_ok": edges.sent,
                        "errors": edges.errors}
    return out


def service_bench(args: argparse.Namespace) -> dict[str, Any]:
    from ocsim.procs import ServiceProcess

    catalog = default_catalog(200)
    with tempfile.TemporaryDirectory(prefix="ocsim-control-bench-") as tmp:
        d = Path(tmp)
        (d / "topology.toml").write_text(topology_toml())
        (d / "catalog.json").write_text(json.dumps(catalog.to_json()))
        fleet_secret = secrets.token_bytes(32)
        proc = ServiceProcess("control", [
            "control", "--host", "127.0.0.1", "--port", "0", "--topology", str(d / "topology.toml"),
            "--state-dir", str(d / "state"), "--operator-token", secrets.token_hex(16),
            "--fleet-secret", fleet_secret.hex(), "--catalog", str(d / "catalog.json"),
            "--no-access-log", "--log-level", "WARNING",
        ], log_dir=d / "logs")
        proc.start(30.0)
        try:
            result: dict[str, Any] = _runner()(drive(proc.url, fleet_secret, catalog, args))
            return result
        finally:
            code = proc.stop(15.0)
            if code not in (0, None):
                print(f"control exited {code}; log:\n" + (d / "logs" / "control.log").read_text()[-2000:],
                      file=sys.stderr)


def _runner() -> Any:
    try:
        import uvloop

        return uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the bench should still run
        return asyncio.run


# ------------------------------------------------------------------ output

def print_report(result: dict[str, Any]) -> None:
    pure = result["pure"]
    print("machine: {} CPUs, load average at start {:.2f} / {:.2f} / {:.2f} (other work skews the tails)".format(
        result["cpus"], *result["loadavg"]))
    print(f"pure core: SteeringRanker.rank() + record(), {pure['edges']} edges in {pure['isps']} ISPs")
    for label in ("known_isp", "unknown_isp"):
        p = pure[label]
        print(f"  {label:12s} {p['calls_per_s']:>10,.0f} calls/s   p50 {p['p50_us']:6.1f} us   p99 {p['p99_us']:6.1f} us")
    svc = result.get("service")
    if svc is None:
        print("service: skipped")
        return
    e = svc["edges"]
    print(f"service: ocsim control on 127.0.0.1, {e['count']} simulated edges in {e['isps']} ISPs "
          f"({e['signed_messages_ok']} signed register/heartbeats ok, errors {e['errors'] or 'none'}); "
          f"{svc['client']} play client")
    for key in ("fixed", "max"):
        ph = svc.get(key)
        if ph is None:
            continue
        print(f"  {ph['phase']:26s} achieved {ph['achieved_rate']:8,.0f} plays/s  "
              f"p50 {ph['p50_ms']:6.2f} ms  p99 {ph['p99_ms']:6.2f} ms  max {ph['max_ms']:7.2f} ms  "
              f"errors {ph['errors']} {ph['error_kinds'] or ''}")
        print(f"  {'':26s} (from send, without the generator's scheduling lag: p50 {ph['p50_from_send_ms']:.2f} ms, "
              f"p99 {ph['p99_from_send_ms']:.2f} ms)")
    s = svc["server_steering"]
    print(f"  server-side steering (histogram, {s['count']} plays): mean {s['mean_us']:.1f} us, "
          f"p50 <= {s['p50_le_us']:.0f} us, p99 <= {s['p99_le_us']:.0f} us")
    fixed = svc["fixed"]
    verdict = "OK" if fixed["p99_ms"] <= 10.0 and fixed["errors"] == 0 else "MISSED"
    print(f"  target p99 <= 10 ms at {fixed['phase']}: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop plays/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of the open-loop phase")
    parser.add_argument("--max-duration", type=float, default=5.0, help="seconds of the max-rate phase (0: skip)")
    parser.add_argument("--concurrency", type=int, default=32, help="clients of the max-rate phase")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections to the service")
    parser.add_argument("--client", choices=("raw", "aiohttp"), default="raw",
                        help="play load generator: a minimal keep-alive HTTP/1.1 client, or aiohttp's")
    parser.add_argument("--pure-seconds", type=float, default=2.0)
    parser.add_argument("--pure-only", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if not (0 < args.rate <= 100_000 and 0 < args.duration <= 120 and 0 <= args.max_duration <= 120):
        parser.error("--rate in (0, 100000], --duration in (0, 120], --max-duration in [0, 120]")
    result: dict[str, Any] = {"cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                              "pure": pure_bench(args.pure_seconds)}
    if not args.pure_only:
        result["service"] = service_bench(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_report(result)
    svc = result.get("service")
    return 0 if svc is None or (svc["fixed"]["errors"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
