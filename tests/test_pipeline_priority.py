"""The collector's --nice reaches past its session (pipeline.cli._lower_priority).

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
         "print(lowered, os.nice(0), open('/proc/self/autogroup').read().split()[-1])\n")

pytestmark = [pytest.mark.timeout(30),
              pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="kernel without autogroup")]


def _run(new_session: bool) -> list[str]:
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, capture_output=True, text=True, check=True,
                         start_new_session=new_session, timeout=20)
    return out.stdout.split()


def test_session_leader_lowers_its_group() -> None:
    assert _run(new_session=True) == ["True", "7", "7"]


def test_not_a_session_leader_leaves_the_group_alone() -> None:
    mine = open("/proc/self/autogroup").read().split()[-1]
    lowered, nice, group = _run(new_session=False)
    assert (lowered, nice) == ("False", "7")
    assert group == mine  # the test runner's session group is untouched
