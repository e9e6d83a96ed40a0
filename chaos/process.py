"""Process faults on children started by ocsim's supervisor (ocsim/procs.py): signals only.

Rules of this module:
1. A fault is a pair of moves, one at its start and one at its end, written once in
   `PROCESS_FAULTS`: kill (SIGKILL; at the end, start it again on the same port), pause
   (SIGSTOP; SIGCONT at the end: the gray failure a heartbeat alone is slow to see), restart
   (SIGKILL and start again at once; nothing at the end).
2. The driver remembers every fault it has made and `release_all()` undoes what is still in
   force (resumes paused processes, restarts killed ones), so an experiment that aborts or
   is interrupted leaves no process stopped behind it.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from ocsim.procs import ServiceProcess


def _with_port(args: list[str], url: str) -> list[str]:
    """The same arguments with `--port` fixed to the port the first start got, so a restarted
    service keeps its URL."""
    out = list(args)
    if "--port" in out and url:
        out[out.index("--port") + 1] = url.rsplit(":", 1)[1].split("/", 1)[0]
    return out


def respawn(proc: ServiceProcess, timeout: float = 30.0) -> ServiceProcess:
    """A fresh ServiceProcess with the same name, arguments (same port), logs and environment."""
    again = ServiceProcess(proc.name, _with_port(proc.args, proc.url), env=proc.env,
                           log_dir=proc.log_path.parent if proc.log_path else None)
    return again.start(timeout)


@dataclass(frozen=True)
class ProcessFaultKind:
    begin: Callable[[ProcessFaultDriver, str], None]
    end: Callable[[ProcessFaultDriver, str], None] | None


class ProcessFaultDriver:
    """Holds the services by name; `begin(kind, name)` / `end(kind, name)` make and undo faults."""

    def __init__(self, services: dict[str, ServiceProcess]) -> None:
        self.services = dict(services)
        self.paused: set[str] = set()
        self.killed: set[str] = set()
        self.log: list[tuple[str, str]] = []  # (move, service) in the order they were made

    def kill(self, name: str) -> None:
        self.services[name].kill()
        self.killed.add(name)
        self.log.append(("kill", name))

    def pause(self, name: str) -> None:
        self.services[name].signal(signal.SIGSTOP)
        self.paused.add(name)
        self.log.append(("pause", name))

    def resume(self, name: str) -> None:
        self.services[name].signal(signal.SIGCONT)
        self.paused.discard(name)
        self.log.append(("resume", name))

    def start_again(self, name: str) -> None:
        old = self.services[name]
        old.kill()  # no-op when already dead; reaps it
        self.services[name] = respawn(old)
        self.killed.discard(name)
        self.log.append(("start", name))

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start_again(name)

    def begin(self, kind: str, name: str) -> None:
        PROCESS_FAULTS[kind].begin(self, name)

    def end(self, kind: str, name: str) -> None:
        undo = PROCESS_FAULTS[kind].end
        if undo is not None:
            undo(self, name)

    def release_all(self) -> None:
        """Undo every fault still in force: resume the paused, start the killed again."""
        for name in sorted(self.paused):
            self.resume(name)
        for name in sorted(self.killed):
            self.start_again(name)


PROCESS_FAULTS: dict[str, ProcessFaultKind] = {
    "kill": ProcessFaultKind(ProcessFaultDriver.kill, ProcessFaultDriver.start_again),
    "pause": ProcessFaultKind(ProcessFaultDriver.pause, ProcessFaultDriver.resume),
    "restart": ProcessFaultKind(ProcessFaultDriver.restart, None),
}
