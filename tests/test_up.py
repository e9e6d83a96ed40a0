"""`ocsim up` and its topology file: pure checks of the schema and the command lines it plans,
then `up` itself as a subprocess (state file, health, SIGTERM, a killed child, --restart,
a bad topology). Every wait polls a condition against a deadline."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from control.topology import parse_topology as control_parse
from ocsim.topology import DEFAULT_TOPOLOGY, TopologyError, load_topology, parse_topology
from ocsim.up import Secrets, control_args, edge_args, origin_args

ROOT = Path(__file__).resolve().parent.parent

SMALL = """
[origin]
port = 0
catalog = "catalog.json"
latency_ms = 0
total_bandwidth = "0"
args = ["--no-access-log"]

[control]
port = 0

[edge]
capacity = "32MiB"
policy = "lru"
args = ["--no-access-log"]

[isps.isp-a]
prefixes = ["10.1.0.0/16"]
edges = 2

[isps.isp-b]
prefixes = ["10.2.0.0/16"]

[[edges]]
id = "b-only"
isp = "isp-b"
capacity = "16MiB"
"""

CATALOG = {"titles": [{"id": f"t{i}", "duration_s": 8.0, "renditions": [235, 750], "popularity": 1.0 / (i + 1)}
                      for i in range(3)]}


# --- the schema (pure) -----------------------------------------------------------------------

def test_default_file_is_the_built_in_topology() -> None:
    assert load_topology(ROOT / "topologies" / "default.toml") == DEFAULT_TOPOLOGY
    assert {i: [e.id for e in s.edges] for i, s in DEFAULT_TOPOLOGY.isps.items()} == {
        "isp-a": ["isp-a-1", "isp-a-2"], "isp-b": ["isp-b-1", "isp-b-2"]}
    assert DEFAULT_TOPOLOGY.prefixes() == {"isp-a": ["10.1.0.0/16"], "isp-b": ["10.2.0.0/16"]}
    assert DEFAULT_TOPOLOGY.origin.latency_ms > 0 and DEFAULT_TOPOLOGY.origin.total_bandwidth_bps > 0


def test_every_topology_file_is_also_a_control_topology() -> None:
    for path in sorted((ROOT / "topologies").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        ours = load_topology(path)
        assert control_parse(data).prefixes() == ours.prefixes(), path


def test_to_toml_round_trips(tmp_path: Path) -> None:
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    topo = parse_topology(tomllib.loads(SMALL), base_dir=tmp_path)
    assert [e.id for e in topo.edges] == ["isp-a-1", "isp-a-2", "b-only"]
    assert topo.isps["isp-b"].edges[0].capacity == 16 * 2**20
    assert topo.isps["isp-a"].edges[0].policy == "lru"
    assert topo.origin.catalog == str(tmp_path / "catalog.json")
    again = parse_topology(tomllib.loads(topo.to_toml()))
    assert again == topo
    assert control_parse(tomllib.loads(topo.to_toml())).prefixes() == topo.prefixes()
    eph = DEFAULT_TOPOLOGY.with_ephemeral_ports()
    assert eph.origin.port == eph.control.port == 0 and all(e.port == 0 for e in eph.edges)


BAD = [
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[[edges]]\nid = "a"\nisp = "isp-a"\n'
     '[[edges]]\nid = "b"\nisp = "isp-a"\ncapacity = "2XB"\n', "edges[1].capacity", "not a size"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/33"]\n', "isps.isp-a.prefixes[0]", ""),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\ncolour = 1\n', "isps.isp-a", "colour"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\nedges = 3\n[[edges]]\nid = "a"\nisp = "isp-a"\n',
     "isps.isp-a.edges", "lists 1"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[[edges]]\nid = "a"\nisp = "isp-z"\n', "edges[0].isp", "isp-z"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[[edges]]\nid = "a"\nisp = "isp-a"\n[[edges]]\nid = "a"\n'
     'isp = "isp-a"\n', "edges[1].id", "duplicate"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[edge]\npolicy = "fifo"\n', "edge.policy", "fifo"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[origin]\nlatency_ms = -1\n', "origin.latency_ms", ""),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[origin]\ntotal_bandwidth = "fast"\n', "origin.total_bandwidth", ""),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[origin]\ncatalog = "missing.json"\n', "origin.catalog", ""),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[origin]\nport = 9000\n[control]\nport = 9000\n', "control.port",
     "9000"),
    ('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n[edges]\nid = "x"\n', "edges", "array"),
    ('[nodes]\n', "nodes", "unknown"),
    ('[origin]\nport = 0\n', "isps", "required"),
]


@pytest.mark.parametrize(("text", "field", "words"), BAD)
def test_bad_topology_names_the_field(tmp_path: Path, text: str, field: str, words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert field in str(info.value) and words in str(info.value)
    assert str(path) in str(info.value)


def test_command_lines_parse_with_each_part_s_own_parser(tmp_path: Path) -> None:
    """What `up` passes each child is accepted by that child's real argparse parser."""
    from common.tokens import Keyring
    from control.cli import build_parser as control_parser
    from edge.cli import build_parser as edge_parser
    from origin.cli import build_parser as origin_parser

    from common.config import apply_config
    from ocsim.up import write_service_configs

    secrets = Secrets("op-token", bytes(32), Keyring.generate(), "origin-token", "edge-op-token")
    topo = DEFAULT_TOPOLOGY
    write_service_configs(topo, secrets, tmp_path)

    def parse(parser: Any, section: str, argv: list[str]) -> Any:
        for secret in ("op-token", "origin-token", "edge-op-token", bytes(32).hex(), secrets.keyring.format()):
            assert secret not in argv  # secrets never on a command line (ps, /proc/*/cmdline)
        apply_config(parser, section, argv, env={})
        return parser.parse_args(argv)

    o = parse(origin_parser(), "origin", origin_args(topo, secrets, tmp_path, 0)[1:])
    assert o.latency_ms == topo.origin.latency_ms and o.admin_token == "origin-token"
    c = parse(control_parser(), "control", control_args(topo, tmp_path / "t.toml", "http://127.0.0.1:1", secrets,
                                                        tmp_path, 0)[1:])
    assert c.operator_token == "op-token" and c.fleet_secret == bytes(32).hex() and c.origin == "http://127.0.0.1:1"
    edge = topo.isps["isp-a"].edges[0]
    e = parse(edge_parser(), "edge", edge_args(edge, "http://127.0.0.1:1", "http://127.0.0.1:2", secrets, tmp_path, 0,
                                               ["http://127.0.0.1:3"])[1:])
    assert e.id == "isp-a-1" and e.isp == "isp-a" and e.peer == ["http://127.0.0.1:3"]
    assert e.edge_key == secrets.edge_key_hex("isp-a-1") != secrets.edge_key_hex("isp-a-2")
    assert e.operator_token == "edge-op-token" != c.operator_token  # per-service operator tokens
    for f in tmp_path.glob("*.toml"):
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert e.cache_dir == str(tmp_path / "cache" / "isp-a-1")


# --- `ocsim up` as a process ------------------------------------------------------------------

def http_json(url: str, token: str | None = None, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    pause = 0.02
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone as far as anyone can tell once reaped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


class Up:
    def __init__(self, tmp: Path, *extra: str, topology: str = SMALL) -> None:
        self.dir = tmp
        (tmp / "catalog.json").write_text(json.dumps(CATALOG))
        self.topology = tmp / "topology.toml"
        self.topology.write_text(topology)
        self.state_file = tmp / "up-state.json"
        self.stderr = open(tmp / "up.stderr", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ocsim", "up", "--topology", str(self.topology), "--state-dir",
             str(tmp / "state"), "--state-file", str(self.state_file), *extra],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL)
        self.pids: list[int] = []

    def wait_state(self, timeout: float = 45.0) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"up exited {self.proc.returncode}: {self.log()}"
            if self.state_file.exists():
                state: dict[str, Any] = json.loads(self.state_file.read_text())
                return state
            return None
        state = wait_for(ready, timeout, "the state file")
        self.pids += [p for p in state["pids"].values() if p]
        return state

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_file.read_text())  # type: ignore[no-any-return]

    def log(self) -> str:
        return (self.dir / "up.stderr").read_text(errors="replace")[-3000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.pids:  # whatever went wrong, leave nothing behind
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.proc.stdout:
            self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    runs: list[Up] = []

    def start(*extra: str, topology: str = SMALL) -> Up:
        where = tmp_path / f"run{len(runs)}"
        where.mkdir()
        run = Up(where, *extra, topology=topology)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.close()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_up_writes_the_state_file_and_everything_is_healthy(start_up: Callable[..., Up]) -> None:
    up = start_up()
    state = up.wait_state()
    for key in ("origin", "control", "operator_token", "origin_admin_token", "edges", "isps", "pids", "up_pid"):
        assert key in state, key
    assert state["up_pid"] == up.proc.pid
    assert state["isps"] == {"isp-a": ["10.1.0.0/16"], "isp-b": ["10.2.0.0/16"]}
    assert [(e["id"], e["isp"]) for e in state["edges"]] == [("isp-a-1", "isp-a"), ("isp-a-2", "isp-a"),
                                                             ("b-only", "isp-b")]
    for e in state["edges"]:
        assert {"id", "isp", "url", "pid"} <= set(e) and e["alive"] and e["pid"] == state["pids"][e["id"]]
    assert len({e["url"] for e in state["edges"]} | {state["origin"], state["control"]}) == 5
    for url in [state["origin"], state["control"], *(e["url"] for e in state["edges"])]:
        assert http_json(f"{url}/healthz")[0] == 200, url
    status, fleet = http_json(f"{state['control']}/v1/fleet", state["operator_token"])
    assert status == 200
    assert {e["id"]: e["state"] for e in fleet["edges"]} == {"isp-a-1": "up", "isp-a-2": "up", "b-only": "up"}
    assert http_json(f"{state['origin']}/admin/stats", state["origin_admin_token"])[0] == 200
    for e in state["edges"]:  # the edges have their own operator token, which opens nothing else
        assert http_json(f"{e['url']}/admin/stats", state["edge_operator_token"])[0] == 200
        assert http_json(f"{e['url']}/admin/stats", state["operator_token"])[0] == 403
    assert http_json(f"{state['control']}/v1/fleet", state["edge_operator_token"])[0] == 403
    for pid in state["pids"].values():  # and no secret is on any child's command line
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for secret in (state["operator_token"], state["edge_operator_token"], state["origin_admin_token"]):
            assert secret not in cmdline, pid
    # The topology reached the control plane: a client of isp-b is steered to isp-b's edge first,
    # and the signed URL plays (token keyring shared by control and edges).
    status, play = http_json(f"{state['control']}/v1/play", method="POST", body={"title": "t0",
                                                                                "client_ip": "10.2.3.4"})
    assert status == 200 and play["isp"] == "isp-b" and play["candidates"][0]["edge"] == "b-only"
    with urllib.request.urlopen(play["candidates"][0]["url"], timeout=5) as resp:
        assert resp.status == 200 and b"#EXTM3U" in resp.read()
    secrets_dir = up.dir / "state"
    for name in ("operator_token", "fleet_secret", "token_keys", "origin_admin_token", "edge_operator_token",
                 "control.toml", "origin.toml", "edge-isp-a-1.toml"):
        assert (secrets_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert (secrets_dir / "operator_token").read_text().strip() == state["operator_token"]
    assert (up.state_file.stat().st_mode & 0o777) == 0o600


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigterm_stops_every_child(start_up: Callable[..., Up]) -> None:
    up = start_up()
    state = up.wait_state()
    pids = [p for p in state["pids"].values() if p]
    assert len(pids) == 5 and all(not gone(p) for p in pids)
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(30) == 0, up.log()
    wait_for(lambda: all(gone(p) for p in pids), 5, "every child to be gone")
    assert not up.state_file.exists()
    assert not processes_mentioning(str(up.dir / "state"))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_killed_child_stays_dead_and_up_keeps_running(start_up: Callable[..., Up]) -> None:
    up = start_up()
    state = up.wait_state()
    victim = state["edges"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: not up.state()["services"][victim["id"]]["alive"], 10, "up to notice the death")
    # The control plane stops trusting it (three missed heartbeats); meanwhile nobody restarted it.
    wait_for(lambda: {e["id"]: e["state"] for e in http_json(f"{state['control']}/v1/fleet",
                                                              state["operator_token"])[1]["edges"]}
             [victim["id"]] == "down", 15, "the fleet to mark it down")
    now = up.state()
    assert up.proc.poll() is None
    assert now["services"][victim["id"]]["restarts"] == 0 and gone(victim["pid"])
    assert now["services"][victim["id"]]["exit_code"] == -signal.SIGKILL
    for e in state["edges"][1:]:
        assert http_json(f"{e['url']}/healthz")[0] == 200
    pids = [p for p in now["pids"].values() if p]
    up.proc.send_signal(signal.SIGTERM)
    assert up.proc.wait(30) == 0, up.log()
    wait_for(lambda: all(gone(p) for p in pids), 5, "every child to be gone")


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_restart_brings_a_dead_child_back_on_its_port(start_up: Callable[..., Up]) -> None:
    up = start_up("--restart")
    state = up.wait_state()
    victim = state["edges"][1]
    os.kill(victim["pid"], signal.SIGKILL)
    after = wait_for(lambda: (s := up.state())["services"][victim["id"]]["restarts"] == 1
                     and s["services"][victim["id"]]["alive"] and s, 20, "the restart")
    svc = after["services"][victim["id"]]
    assert svc["pid"] != victim["pid"] and svc["url"] == victim["url"]
    up.pids.append(svc["pid"])
    assert http_json(f"{victim['url']}/healthz")[0] == 200
    wait_for(lambda: {e["id"]: e["state"] for e in http_json(f"{state['control']}/v1/fleet",
                                                              state["operator_token"])[1]["edges"]}
             [victim["id"]] == "up", 15, "the restarted edge to be up in the fleet")


@pytest.mark.timeout(30)
def test_bad_topology_exits_2_before_anything_starts(tmp_path: Path) -> None:
    bad = SMALL.replace('capacity = "16MiB"', 'capacity = "2XB"')
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    (tmp_path / "bad.toml").write_text(bad)
    done = subprocess.run([sys.executable, "-m", "ocsim", "up", "--topology", str(tmp_path / "bad.toml"),
                           "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "edges[0].capacity" in done.stderr and "not a size: '2XB'" in done.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_child_that_cannot_start_stops_everything(tmp_path: Path) -> None:
    """The first edge's port is taken: `up` says which child failed, exits 1, leaves nothing behind."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        topology = SMALL.replace('capacity = "16MiB"', f'capacity = "16MiB"\nport = {port}')
        (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
        (tmp_path / "t.toml").write_text(topology)
        done = subprocess.run([sys.executable, "-m", "ocsim", "up", "--topology", str(tmp_path / "t.toml"),
                               "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=50)
    assert done.returncode == 1, done.stderr
    assert "b-only" in done.stderr
    assert not (tmp_path / "state" / "state.json").exists()
    started = [int(line.split()[3]) for line in done.stdout.splitlines() if line.startswith(("origin ", "control "))]
    assert not started  # the table is printed only once everything is healthy
    # every child it started is gone: no live process has the state directory on its command line
    assert list((tmp_path / "state" / "logs").glob("*.log"))
    assert not processes_mentioning(str(tmp_path))


def processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text.encode() in (proc / "cmdline").read_bytes() and not gone(int(proc.name)):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found
