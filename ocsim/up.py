"""`ocsim up`: the whole topology as child processes on loopback, supervised.

Order: origin, then the control plane (given the origin, the topology file and the
secrets), then every edge (given the origin as upstream, the control plane, its edge key,
the token keyring and the other edges of its ISP as peers). `up` waits until every
service answers `/healthz` and every edge shows `up` in the control plane's fleet, writes
the state file, prints a table, and then watches: a child that dies stays dead (and is
marked so in the state file) unless `--restart`, which restarts it with the same
arguments and port after a backoff. SIGTERM or Ctrl-C stops edges first (they tell the
control plane they are draining), then control, then origin: SIGTERM, a bounded wait,
SIGKILL for stragglers, and the process group of each child too, so nothing is left
behind even by a child that died. The state file is removed at the end.

Secrets are generated once into the state directory (mode 0600) and handed to the
children through one `--config` file each (mode 0600, `origin.toml`, `control.toml`,
`edge-{id}.toml`), never on a command line (`ps` and /proc/*/cmdline show argv to every
local user): the control plane's operator token, the fleet secret (each edge gets only its
own `edge_key(fleet_secret, id)`), the token keyring, the origin's admin token, and the
edges' own operator token (per service: an edge's token does not open the control plane).

`--ephemeral-ports` binds every service to a port of the kernel's choosing (a second `up`
beside the first, Locust runs); `--init-secrets` only generates the secrets plus one
`--config` file per service (`origin.toml`, `control.toml`, `edge-{id}.toml`) and exits,
which is how docker-compose.yml gets its secrets without writing any down.

Rules: no fixed sleeps (every wait polls a condition against a deadline); the planning
of command lines (`origin_args`, `control_args`, `edge_args`) is plain code with no IO,
so tests and `docker-compose.yml` checks can look at it.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.auth import load_or_create_secret
from common.cli_args import HelpFormatter
from common.json_client import ApiError, request_json
from common.ids import is_title_id
from common.sizes import format_size
from common.tokens import Keyring
from common.wire import edge_key
from ocsim.procs import ServiceFailed, ServiceProcess
from ocsim.topology import DEFAULT_TOPOLOGY, EdgeSpec, Topology, TopologyError, load_topology

__all__ = ["Secrets", "Supervisor", "build_parser", "control_args", "edge_args", "load_secrets", "main",
           "origin_args", "write_service_configs"]

HOST = "127.0.0.1"
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a child that ran this long starts its backoff from scratch again
STOP_TIMEOUT_S = 15.0


class UpError(RuntimeError):
    """Something `up` could not do (a child that would not start or get healthy)."""


def say(msg: str) -> None:
    print(f"ocsim up: {msg}", file=sys.stderr, flush=True)


# --- secrets ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Secrets:
    operator_token: str
    fleet_secret: bytes
    keyring: Keyring
    origin_admin_token: str
    edge_operator_token: str = ""  # the edges' /admin token: it opens no other service's API

    def edge_key_hex(self, edge_id: str) -> str:
        return edge_key(self.fleet_secret, edge_id).hex()


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_secrets(state_dir: str | Path) -> Secrets:
    """The secrets of this state directory, generated on first use and kept (mode 0600)."""
    state = Path(state_dir)
    keys_path = state / "token_keys"
    text = keys_path.read_text().strip() if keys_path.exists() else ""
    if text:
        keyring = Keyring.parse(text)
    else:
        keyring = Keyring.generate()
        _write_private(keys_path, keyring.format() + "\n")
    return Secrets(
        operator_token=load_or_create_secret(state, "operator_token", 24),
        fleet_secret=bytes.fromhex(load_or_create_secret(state, "fleet_secret", 32)),
        keyring=keyring,
        origin_admin_token=load_or_create_secret(state, "origin_admin_token", 24),
        edge_operator_token=load_or_create_secret(state, "edge_operator_token", 24),
    )


def write_service_configs(topo: Topology, secrets: Secrets, state_dir: Path) -> list[Path]:
    """Per-service `--config` files holding each service's secrets (mode 0600), for setups
    where `up` does not start the services itself (docker-compose): `origin.toml`,
    `control.toml` and `edge-{id}.toml` with only that edge's key."""
    def toml(section: str, values: dict[str, str]) -> str:
        return f"[{section}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())

    files = {
        "origin.toml": toml("origin", {"admin_token": secrets.origin_admin_token}),
        "control.toml": toml("control", {"operator_token": secrets.operator_token,
                                         "fleet_secret": secrets.fleet_secret.hex(),
                                         "token_key": secrets.keyring.format()}),
    }
    for e in topo.edges:
        files[f"edge-{e.id}.toml"] = toml("edge", {"edge_key": secrets.edge_key_hex(e.id),
                                                   "token_key": secrets.keyring.format(),
                                                   "operator_token": secrets.edge_operator_token})
    written = []
    for name, text in files.items():
        _write_private(state_dir / name, text)
        written.append(state_dir / name)
    return written


# --- command lines (pure) --------------------------------------------------------------------

def origin_args(topo: Topology, secrets: Secrets, state_dir: Path, port: int, host: str = HOST) -> list[str]:
    o = topo.origin
    args = ["origin", "--host", host, "--port", str(port),
            "--latency-ms", f"{o.latency_ms:g}", "--bandwidth", str(o.bandwidth_bps),
            "--total-bandwidth", str(o.total_bandwidth_bps), "--error-rate", f"{o.error_rate:g}",
            "--config", str(state_dir / "origin.toml"), "--state-dir", str(state_dir / "origin")]
    if o.catalog:
        args += ["--catalog", o.catalog]
    if o.media:
        args += ["--media", o.media] + (["--media-only"] if o.media_only else [])
    return args + list(o.args)


def control_args(topo: Topology, topology_file: Path, origin_url: str, secrets: Secrets, state_dir: Path,
                 port: int, host: str = HOST) -> list[str]:
    return ["control", "--host", host, "--port", str(port),
            "--db", str(state_dir / "control.db"), "--state-dir", str(state_dir / "control"),
            "--topology", str(topology_file), "--origin", origin_url,
            "--config", str(state_dir / "control.toml"), *topo.control.args]


def edge_args(edge: EdgeSpec, origin_url: str, control_url: str, secrets: Secrets, state_dir: Path,
              port: int, peers: Sequence[str], host: str = HOST) -> list[str]:
    args = ["edge", "--host", host, "--port", str(port), "--id", edge.id, "--isp", edge.isp,
            "--upstream", origin_url, "--control", control_url,
            "--cache-dir", str(state_dir / "cache" / edge.id), "--capacity", str(edge.capacity),
            "--policy", edge.policy, "--config", str(state_dir / f"edge-{edge.id}.toml")]
    for peer in peers:
        args += ["--peer", peer]
    return args + list(edge.args)


def free_port(host: str = HOST) -> int:
    """A port that was free a moment ago (edges need their peers' URLs before they start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _replace_port(args: list[str], port: int) -> list[str]:
    out = list(args)
    out[out.index("--port") + 1] = str(port)
    return out


# --- HTTP probes -----------------------------------------------------------------------------

def http_json(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[int, Any]:
    """(status, JSON body or None) of a GET; (0, None) when nothing answered (a probe)."""
    try:
        reply = request_json("GET", url, token=token, timeout=timeout)
    except ApiError:
        return 0, None
    return reply.status, reply.body


def healthy(url: str) -> bool:
    return http_json(f"{url}/healthz")[0] == 200


# --- the supervisor --------------------------------------------------------------------------

@dataclass(slots=True)
class Child:
    name: str
    kind: str  # origin | control | edge
    args: list[str]
    log_dir: Path
    edge: EdgeSpec | None = None
    proc: ServiceProcess | None = None
    url: str = ""
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    exit_code: int | None = None
    dead: bool = False
    pids: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def start(self, timeout: float) -> None:
        self.proc = ServiceProcess(self.name, self.args, log_dir=self.log_dir)
        self.started_at = time.monotonic()
        try:
            self.proc.start(timeout)
        finally:
            if self.proc.proc is not None:
                self.pids.append(self.proc.pid)
        self.url = self.proc.url
        self.dead = False
        self.exit_code = None
        self.restart_at = None
        # Restarts reuse the port the first start got, so URLs in the state file stay true.
        self.args = _replace_port(self.args, int(self.url.rsplit(":", 1)[1]))


def start_failure_text(name: str, args: Sequence[str], failure: str, log_path: Path | None) -> str:
    """Why a child did not start, in words an operator can act on: the cause from the end of
    its log (an address in use above all, with the way out), else the process' own failure."""
    tail = ""
    if log_path is not None:
        try:
            with open(log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            tail = ""
    if "address already in use" in tail.lower() or "errno 98" in tail.lower():
        port = args[args.index("--port") + 1] if "--port" in args else "?"
        return (f"{name} could not listen on port {port}: address already in use (another `ocsim up`, or "
                f"another program, has it). Stop that, or run `ocsim up --ephemeral-ports` to let every "
                f"service pick a free port (the state file then tells the URLs).")
    for line in reversed(tail.splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            return f"{name} did not start: {record.get('msg', '')}: {record.get('error', '')} (log: {log_path})"
    return f"{name} did not start: {failure}"


def kill_group(pid: int) -> None:
    """SIGKILL what is left of a child's process group (the child is its own session leader)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Supervisor:
    """Starts, watches and stops the children of one `ocsim up`."""

    def __init__(self, topo: Topology, *, topology_file: Path | None, state_dir: Path, state_file: Path,
                 restart: bool = False, host: str = HOST, start_timeout: float = 30.0,
                 stopping: threading.Event | None = None, events: str = "") -> None:
        self.topo = topo
        # "" no pipeline; "local" a nats-server -js child; else nats://... of an existing server
        self.events = events
        self.events_url = ""
        self.pipeline_url = ""  # the collector's read API, once started; control's --pipeline
        self.nats: Any = None  # pipeline.natsserver.NatsServer when local
        self.state_dir = state_dir.resolve()
        self.state_file = state_file
        self.restart = restart
        self.host = host
        self.start_timeout = start_timeout
        self.stopping = stopping or threading.Event()
        self.secrets = load_secrets(self.state_dir)
        self.log_dir = self.state_dir / "logs"
        if topology_file is None:  # the control plane reads the same topology from a file
            topology_file = self.state_dir / "topology.toml"
            _write_private(topology_file, topo.to_toml())
        self.topology_file = topology_file.resolve()
        self.children: list[Child] = []
        self.started_at = time.time()

    # -- start ------------------------------------------------------------------------------

    def _start(self, child: Child) -> Child:
        if self.stopping.is_set():
            raise UpError("interrupted")
        self.children.append(child)
        try:
            child.start(self.start_timeout)
        except ServiceFailed as exc:
            log_path = child.proc.log_path if child.proc is not None else None
            raise UpError(start_failure_text(child.name, child.args, str(exc), log_path)) from None
        return child

    def _start_pipeline(self) -> None:
        """nats-server (local) and the collector, before anyone publishes: the collector
        creates the stream, so the first events have somewhere to go."""
        if self.events == "local":
            from pipeline.natsserver import NatsServer
            self.nats = NatsServer(self.state_dir / "nats", log_path=self.log_dir / "nats.log").start()
            self.events_url = self.nats.url
        else:
            self.events_url = self.events
        db = self.state_dir / "pipeline" / "events.duckdb"
        # a fixed port, so a restarted collector is where the control plane's --pipeline points
        col = self._start(Child("pipeline", "pipeline", [
            "pipeline", "--host", self.host, "--port", str(free_port(self.host)), "--events", self.events_url,
            "--db", str(db)],
            self.log_dir))
        self.pipeline_url = col.url
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            status, body = http_json(f"{col.url}/healthz")
            if status == 200 and isinstance(body, dict) and body.get("bound"):
                return
            self.stopping.wait(0.05)
        raise UpError(f"the collector did not bind to the stream at {self.events_url}; "
                      f"see {self.log_dir / 'pipeline.log'}")

    def _with_events(self, args: list[str]) -> list[str]:
        return [*args, "--events", self.events_url] if self.events_url else args

    def start_all(self) -> None:
        # Secrets reach the children through their --config files (mode 0600), never argv.
        write_service_configs(self.topo, self.secrets, self.state_dir)
        if self.events:
            self._start_pipeline()
        origin = self._start(Child("origin", "origin",
                                   origin_args(self.topo, self.secrets, self.state_dir, self.topo.origin.port,
                                               self.host), self.log_dir))
        control_argv = self._with_events(control_args(self.topo, self.topology_file, origin.url, self.secrets,
                                                      self.state_dir, self.topo.control.port, self.host))
        # the dashboard draws the pipeline's series through the control plane, and pre-position
        # jobs value files by what streamed there (control.popularity)
        if self.pipeline_url:
            control_argv += ["--pipeline", self.pipeline_url]
        control = self._start(Child("control", "control", control_argv, self.log_dir))
        ports = {e.id: e.port or free_port(self.host) for e in self.topo.edges}
        for edge in self.topo.edges:
            peers = [self.edge_peer_url(edge, p, f"http://{self.host}:{ports[p.id]}")
                     for p in self.topo.isps[edge.isp].edges if p.id != edge.id]
            args = edge_args(edge, self.edge_upstream_url(edge, origin.url), self.edge_control_url(edge, control.url),
                             self.secrets, self.state_dir, ports[edge.id], peers, self.host)
            self._start(Child(edge.id, "edge", self._with_events(args), self.log_dir, edge=edge))

    # The URLs an edge is given for the other services: hooks where chaos/stack.py puts a fault
    # proxy on each of the edge's links (edge -> control, edge -> origin, edge -> peer).

    def edge_control_url(self, edge: EdgeSpec, control_url: str) -> str:
        """The control plane's URL as `edge` is to reach it."""
        return control_url

    def edge_upstream_url(self, edge: EdgeSpec, origin_url: str) -> str:
        """The origin's URL as `edge` is to fill from it (its `--upstream`)."""
        return origin_url

    def edge_peer_url(self, edge: EdgeSpec, peer: EdgeSpec, peer_url: str) -> str:
        """`peer`'s URL as `edge` is to ask it before the origin (one `--peer`)."""
        return peer_url

    def wait_healthy(self, timeout: float) -> None:
        """Every child answers /healthz 200 and every edge is `up` in the control plane's fleet."""
        deadline = time.monotonic() + timeout
        waiting: list[str] = []
        pause = 0.05
        while time.monotonic() < deadline and not self.stopping.is_set():
            for c in self.children:
                if not c.alive():
                    raise UpError(f"{c.name} exited with code {c.proc.proc.returncode if c.proc and c.proc.proc else '?'}"
                                  f" during start-up; see {self.log_dir / (c.name + '.log')}")
            waiting = [c.name for c in self.children if not healthy(c.url)]
            if not waiting:
                waiting = self._edges_not_up()
                if not waiting:
                    return
            self.stopping.wait(pause)
            pause = min(pause * 2, 0.5)
        if self.stopping.is_set():
            raise UpError("interrupted")
        raise UpError(f"not healthy within {timeout:g}s: {', '.join(waiting)}; logs in {self.log_dir}")

    def fleet(self) -> dict[str, str]:
        """Edge id -> state, as the control plane sees the fleet (empty if it does not answer)."""
        control = self.child("control")
        status, body = http_json(f"{control.url}/v1/fleet", self.secrets.operator_token)
        if status != 200 or not isinstance(body, dict):
            return {}
        return {str(e.get("id")): str(e.get("state")) for e in body.get("edges", []) if isinstance(e, dict)}

    def _edges_not_up(self) -> list[str]:
        states = self.fleet()
        return [f"{c.name} ({states.get(c.name, 'not registered')} in fleet)"
                for c in self.children if c.kind == "edge" and states.get(c.name) != "up"]

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    # -- state file -------------------------------------------------------------------------

    def state(self, status: str = "running") -> dict[str, Any]:
        def entry(c: Child) -> dict[str, Any]:
            return {"url": c.url, "pid": c.pid, "alive": c.alive(), "restarts": c.restarts,
                    "exit_code": c.exit_code, "log": str(self.log_dir / f"{c.name}.log")}

        origin, control = self.child("origin"), self.child("control")
        edges = []
        for c in self.children:
            if c.kind == "edge" and c.edge is not None:
                edges.append({"id": c.name, "isp": c.edge.isp, **entry(c), "capacity": c.edge.capacity,
                              "policy": c.edge.policy, "cache_dir": str(self.state_dir / "cache" / c.name)})
        return {
            "status": status,
            "up_pid": os.getpid(),
            "started_at": self.started_at,
            "state_dir": str(self.state_dir),
            "topology": str(self.topology_file),
            "origin": origin.url,
            "control": control.url,
            "operator_token": self.secrets.operator_token,
            "origin_admin_token": self.secrets.origin_admin_token,
            "edge_operator_token": self.secrets.edge_operator_token,
            "edges": edges,
            "isps": self.topo.prefixes(),
            "pids": {c.name: c.pid for c in self.children},
            "events": self.events_url or None,
            "pipeline": next((c.url for c in self.children if c.kind == "pipeline"), None),
            "services": {c.name: {"kind": c.kind, **entry(c)} for c in self.children},
        }

    def write_state(self) -> None:
        _write_private(self.state_file, json.dumps(self.state(), indent=2) + "\n")

    def table(self) -> str:
        rows = [("SERVICE", "ISP", "URL", "PID", "DETAIL")]
        o = self.topo.origin
        for c in self.children:
            if c.kind == "origin":
                detail = f"latency {o.latency_ms:g} ms, uplink {o.total_bandwidth_bps / 1e6:g} Mbit/s" + \
                    (f", {o.error_rate:.1%} errors" if o.error_rate else "")
            elif c.kind == "edge" and c.edge is not None:
                detail = f"{format_size(c.edge.capacity)} {c.edge.policy}"
            else:
                detail = ""
            rows.append((c.name, c.edge.isp if c.edge else "-", c.url, str(c.pid), detail))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)

    # -- watch ------------------------------------------------------------------------------

    def check(self, now: float) -> bool:
        """Notice deaths, run due restarts; True when the state file needs rewriting."""
        changed = False
        for c in self.children:
            if c.proc is None or c.dead and c.restart_at is None:
                continue
            if not c.dead and not c.alive():
                c.dead = True
                c.exit_code = c.proc.proc.returncode if c.proc.proc else None
                kill_group(c.proc.pid)  # whatever it left behind
                changed = True
                if self.restart:
                    ran = now - c.started_at
                    backoff = BACKOFF_FIRST_S if ran >= STABLE_AFTER_S else \
                        min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(c.restarts, 10))
                    c.restart_at = now + backoff
                    say(f"{c.name} exited (code {c.exit_code}); restarting in {backoff:g}s")
                else:
                    say(f"{c.name} exited (code {c.exit_code}); it stays down (use --restart to restart)")
            elif c.dead and c.restart_at is not None and now >= c.restart_at:
                c.restarts += 1
                try:
                    c.start(self.start_timeout)
                    say(f"{c.name} restarted (pid {c.pid}, {c.url})")
                except ServiceFailed as exc:
                    c.restart_at = None  # picked up as a fresh death on the next check
                    c.dead = False
                    say(f"{c.name} restart failed: {exc}")
                changed = True
        return changed

    def next_wakeup(self, now: float) -> float:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        return max(0.05, min([0.5, *[d - now for d in due]]))

    def run(self, on_ready: Callable[[], None] | None = None, health_timeout: float = 60.0) -> None:
        """Start everything, wait for health, write the state file, watch until stopping is set."""
        self.start_all()
        self.wait_healthy(health_timeout)
        self.write_state()
        if on_ready:
            on_ready()
        while not self.stopping.is_set():
            if self.check(time.monotonic()):
                self.write_state()
            self.stopping.wait(self.next_wakeup(time.monotonic()))

    # -- stop -------------------------------------------------------------------------------

    def stop_all(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Edges, then control, then origin: SIGTERM, wait, SIGKILL; then their process groups."""
        # the collector last: it takes what the others flush on their way out
        tiers = [[c for c in self.children if c.kind == "edge"],
                 [c for c in self.children if c.kind == "control"],
                 [c for c in self.children if c.kind == "origin"],
                 [c for c in self.children if c.kind == "pipeline"]]
        for tier in tiers:
            live = [c for c in tier if c.alive()]
            for c in live:
                assert c.proc is not None
                c.proc.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for c in live:
                assert c.proc is not None and c.proc.proc is not None
                try:
                    c.proc.proc.wait(max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - TimeoutExpired: it gets SIGKILL below
                    say(f"{c.name} did not stop within {timeout:g}s; killing it")
                c.proc.kill()  # reaps; SIGKILL only if still running
        for c in self.children:
            for pid in c.pids:
                kill_group(pid)
            if c.proc is not None:
                c.proc.kill()
        if self.nats is not None:
            self.nats.stop()
            self.nats = None


# --- command line ----------------------------------------------------------------------------

def ready_text(services: int, seconds: float, state_file: Path, control_url: str, token_file: Path,
               watch: Sequence[str] = ()) -> str:
    """What `ocsim up` says once all is healthy: where the dashboard and the token are, and
    the watch page of each packaged title (`watch`)."""
    pages = "".join(f"watch: {control_url}/watch/{title}\n" for title in watch)
    return (f"{services} services healthy in {seconds:.1f}s; state file {state_file}\n"
            f"dashboard: {control_url}/dashboard  (paste the operator token from {token_file})\n"
            f"{pages}Ctrl-C stops all")


def packaged_titles(media: str | None, limit: int = 10) -> list[str]:
    """The titles a media directory holds (those with a digest list), for the ready text."""
    if not media:
        return []
    root = Path(media)
    return sorted(p.name for p in root.iterdir() if is_title_id(p.name) and (p / "digests.json").is_file())[:limit]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim up", description="Run the whole topology as child processes on "
                                "loopback; Ctrl-C or SIGTERM stops it all.", formatter_class=HelpFormatter)
    p.add_argument("--topology", help="topology TOML (default: built-in, see topologies/default.toml)")
    p.add_argument("--state-dir", default=".ocsim/up", help="secrets, caches, logs, control db")
    p.add_argument("--state-file", help="JSON state file (default: STATE_DIR/state.json)")
    p.add_argument("--restart", action="store_true", help="restart a child that dies, with backoff")
    p.add_argument("--ephemeral-ports", action="store_true", help="bind every service to an ephemeral port")
    p.add_argument("--media", metavar="DIR", help="serve the packaged titles of DIR (`ocsim package --out DIR`) "
                   "at the origin, beside the catalog (overrides the topology's origin.media)")
    p.add_argument("--media-only", action="store_true", help="with --media: serve only the packaged titles")
    p.add_argument("--health-timeout", type=float, default=60.0, help="seconds to wait for all to be healthy")
    p.add_argument("--events", nargs="?", const="local", default="", metavar="nats://HOST:PORT",
                   help="the event pipeline: alone, start a local nats-server -js (store under the state dir) "
                        "and the collector; with a URL, publish to that NATS server or cluster instead")
    p.add_argument("--init-secrets", action="store_true",
                   help="only generate the secrets and per-service --config files (origin.toml, control.toml, "
                        "edge-ID.toml) into --state-dir, then exit (docker-compose uses this)")
    return p


def _other_up(state_file: Path) -> int | None:
    """The pid of a live `ocsim up` that owns this state file, if any."""
    try:
        pid = int(json.loads(state_file.read_text()).get("up_pid"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        topo = load_topology(args.topology) if args.topology else DEFAULT_TOPOLOGY
    except TopologyError as exc:
        print(f"ocsim up: {exc}", file=sys.stderr)
        return 2
    if args.ephemeral_ports:
        topo = topo.with_ephemeral_ports()
    if args.media_only and not args.media:
        print("ocsim up: --media-only needs --media DIR", file=sys.stderr)
        return 2
    if args.media:
        if not Path(args.media).is_dir():
            print(f"ocsim up: --media {args.media}: no such directory (make one with `ocsim package ... --out DIR`)",
                  file=sys.stderr)
            return 2
        topo = topo.with_media(args.media, args.media_only)
    state_dir = Path(args.state_dir)
    if args.init_secrets:
        for path in write_service_configs(topo, load_secrets(state_dir), state_dir):
            print(path)
        return 0
    state_file = Path(args.state_file) if args.state_file else state_dir / "state.json"
    other = _other_up(state_file)
    if other:
        print(f"ocsim up: another `ocsim up` (pid {other}) owns {state_file}", file=sys.stderr)
        return 1

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            say(f"{signal.Signals(signum).name}: stopping")
        stopping.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    sup = Supervisor(topo, topology_file=Path(args.topology) if args.topology else None, state_dir=state_dir,
                     state_file=state_file, restart=args.restart, stopping=stopping, events=args.events)
    t0 = time.monotonic()

    def ready() -> None:
        print(sup.table())
        print(ready_text(len(sup.children), time.monotonic() - t0, state_file, sup.child("control").url,
                         sup.state_dir / "operator_token", packaged_titles(topo.origin.media)), flush=True)

    code = 0
    try:
        sup.run(ready, args.health_timeout)
    except UpError as exc:
        if not stopping.is_set():
            say(str(exc))
            code = 1
    finally:
        sup.stop_all()
        try:
            state_file.unlink()
        except FileNotFoundError:
            pass
        for s, h in previous.items():
            signal.signal(s, h)
    say("stopped")
    return code
