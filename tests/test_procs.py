"""Service children never outlive their supervisor, even when it is SIGKILLed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUPERVISOR = """
import sys, time
from ocsim.procs import ServiceProcess
p = ServiceProcess('origin', ['origin', '--port', '0', '--admin-token', 'x', '--state-dir', sys.argv[1]]).start()
print(p.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_child_dies_with_a_killed_supervisor(tmp_path: Path) -> None:
    sup = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(tmp_path)], stdout=subprocess.PIPE,
                           text=True, cwd=ROOT)
    assert sup.stdout is not None
    child = int(sup.stdout.readline())
    sup.stdout.close()
    os.kill(sup.pid, signal.SIGKILL)
    sup.wait()
    deadline = time.monotonic() + 10
    while not _gone(child):
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the service outlived its SIGKILLed supervisor")
        time.sleep(0.02)


def test_a_child_that_dies_before_listening_is_a_failed_start(tmp_path: Path) -> None:
    from ocsim.procs import ServiceFailed, ServiceProcess

    proc = ServiceProcess("bad", ["origin", "--port", "not-a-port"], log_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(ServiceFailed, match="exit 2"):
        proc.start(timeout=20)
    assert time.monotonic() - t0 < 10  # noticed at the child's exit, not at the timeout
    assert not proc.alive()
