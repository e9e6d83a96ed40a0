"""Child ocsim services: start, learn their URL, stop cleanly. Used by `ocsim up` and tests.

A service prints `{"event": "listening", "url": ...}` on stdout once it accepts
connections; `ServiceProcess.start` waits for exactly that line (never a fixed sleep),
so services can bind port 0. stderr (JSON logs) goes to a log file per service.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO


class ServiceFailed(RuntimeError):
    pass


class ServiceProcess:
    def __init__(self, name: str, args: Sequence[str], *, log_dir: str | Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = Path(log_dir) / f"{name}.log" if log_dir else None
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url: str = ""
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["OCSIM_SUPERVISOR_PID"] = str(os.getpid())  # the child dies with us (ocsim.cli)
        if self.env:
            env.update(self.env)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ocsim", *self.args],
            stdout=subprocess.PIPE, stderr=self._log if self._log else subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, name=f"{self.name}-stdout", daemon=True).start()
        if not self._listening.wait(timeout) or not self.url:
            # no listening line in time, or stdout closed first: the child died starting
            try:
                code = self.proc.wait(1) if not self.url else self.proc.poll()
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            raise ServiceFailed(f"{self.name} did not start within {timeout}s (exit {code}); "
                                f"see {self.log_path or 'its stderr'}")
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if not self._listening.is_set() and line.startswith("{"):
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("event") == "listening":
                    self.url = str(msg["url"])
                    self._listening.set()
        self._listening.set()  # EOF: let start() notice the death at once

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the service (crash simulation) and reap it."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel always delivers SIGKILL
            pass
        self._close()

    def _close(self) -> None:
        if self._log:
            self._log.close()
            self._log = None
