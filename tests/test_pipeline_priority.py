"""The collector as a neighbour: its --nice reaches past its session (pipeline.cli._lower_priority),
and it stops at once when it never reached NATS.

Under autogroup, nice alone weighs a task only against its own session; the collector, which
ocsim starts in a session of its own, must lower its session's group too, and must leave a
shell's group alone when it is not the session leader."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHILD = ("from pipeline.cli import _lower_priority; import os\n"
         "lowered = _lower_priority(7)\n"
         "print(lowered, os.nice(0))\n"
         "print(open('/proc/self/autogroup').read().strip())\n")

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="kernel without autogroup")]


def _run(new_session: bool) -> tuple[list[str], str]:
    """The child's (lowered, nice) and its /proc/self/autogroup line: "/autogroup-N nice K", or
    empty in the root task group (a daemon's children in init's session, as under CI runners)."""
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, check=True,
                         start_new_session=new_session, timeout=20)
    first, _, group = out.stdout.partition("\n")
    return first.split(), group.strip()


def test_session_leader_lowers_its_group() -> None:
    answer, group = _run(new_session=True)
    assert answer == ["True", "7"]
    assert group.split()[-1] == "7"  # setsid gave it an autogroup of its own, now at nice 7


def test_not_a_session_leader_leaves_the_group_alone() -> None:
    mine = open("/proc/self/autogroup").read().strip()
    answer, group = _run(new_session=False)
    assert answer == ["False", "7"]
    assert group == mine  # the test runner's session group (or the root group) is untouched


def test_a_collector_that_never_reached_nats_stops_at_once(tmp_path: Path) -> None:
    """SIGTERM while every NATS address refuses: nothing is in hand, so no drain wait."""
    import signal

    from pipeline.natsserver import free_port
    from ocsim.procs import ServiceProcess
    nowhere = f"nats://127.0.0.1:{free_port('127.0.0.1')}"
    col = ServiceProcess("pipeline", ["pipeline", "--port", "0", "--events", nowhere, "--db",
                                      str(tmp_path / "ev.duckdb"), "--no-access-log"], log_dir=tmp_path).start(90)
    try:
        col.signal(signal.SIGTERM)
        assert col.proc is not None
        assert col.proc.wait(12) == 0  # it used to wait out a 15 s drain timeout first
    finally:
        col.stop()
