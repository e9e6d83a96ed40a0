"""`ocsim chaos run` end to end on loopback: the verdict can fail (and aborts early) and can pass.

Each run brings up the built-in topology; the experiment cohort alone goes through the fault
proxies. Bounded: short scenarios, a few viewers, a per-test timeout."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.runner import check_runnable, run_experiment
from chaos.scenario import parse_scenario
from common.errors import BadRequest

ROOT = Path(__file__).resolve().parents[1]

HEAD = """
seed = 4
duration_s = 20
[cohorts]
viewers = 6
isp = "isp-a"
[[steady_state]]
metric = "failed"
absolute = 0.25
alpha = 0.01
[[steady_state]]
metric = "startup_s"
tolerance = 0.5
absolute = 0.5
alpha = 0.01
[[abort]]
metric = "failed"
max_excess = 0.5
min_sessions = 2
"""

BROKEN = 'name = "every-edge-resets"\n' + HEAD + """
[[fault]]
kind = "reset"
target = "link:player-edge"
at_s = 0
duration_s = 20
"""

HARMLESS = 'name = "one-ms-more"\n' + HEAD.replace("duration_s = 20", "duration_s = 8") + """
[[fault]]
kind = "latency"
target = "link:player-edge"
at_s = 0
duration_s = 8
latency_s = 0.001
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_fault_the_players_cannot_absorb_fails_and_aborts_early() -> None:
    report = asyncio.run(run_experiment(parse_scenario(BROKEN)))
    assert report["outcome"] == "fail"
    assert report["aborted"] and "failed" in report["aborted"]
    abort = next(e for e in report["timeline"] if e["move"] == "abort")
    assert abort["t"] < 20  # before the scenario's end
    exp = [s for s in report["sessions"] if s["cohort"] == "experiment"]
    ctl = [s for s in report["sessions"] if s["cohort"] == "control"]
    assert exp and all(s["state"] != "ended" or s["errors"] for s in exp)
    assert ctl and all(s["state"] == "ended" and not s["errors"] for s in ctl)  # outside the blast radius


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_harmless_fault_passes() -> None:
    report = asyncio.run(run_experiment(parse_scenario(HARMLESS)))
    assert report["aborted"] is None
    assert report["outcome"] == "pass", report["verdicts"]
    assert [e["move"] for e in report["timeline"]] == ["begin", "end"]


def test_the_runner_refuses_what_it_cannot_confine_before_starting() -> None:
    edges = {"isp-a-1", "isp-a-2"}
    for fault, message in [
        ("kind = 'kill'\ntarget = 'origin'\nat_s = 1\nduration_s = 1", r"fault\[0\]\.target: .*both cohorts"),
        ("kind = 'restart'\ntarget = 'edge:isp-a-1'\nat_s = 1", r"fault\[0\]\.kind: restart is not made"),
        ("kind = 'kill'\ntarget = 'edge:zz'\nat_s = 1\nduration_s = 1", r"fault\[0\]\.target: no edge 'zz'"),
        ("kind = 'latency'\ntarget = 'link:edge-origin'\nat_s = 1\nduration_s = 1",
         r"fault\[0\]\.target: link:edge-origin is not made"),
    ]:
        s = parse_scenario('name = "x"\n' + HEAD + "[[fault]]\n" + fault + "\n")
        with pytest.raises(BadRequest, match=message):
            check_runnable(s, edges)


def test_cli_names_the_bad_field_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n' + HEAD + "[[fault]]\nkind = 'latency'\ntarget = 'link:player-edge'\n"
                   "at_s = 0\nduration_s = 5\nlatency_ms = 3\n")
    out = subprocess.run([sys.executable, "-m", "ocsim", "chaos", "run", str(bad)], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert "fault[0].latency_ms: unknown field" in out.stderr and "Traceback" not in out.stderr
    ok = subprocess.run([sys.executable, "-m", "ocsim", "chaos", "check",
                         *map(str, sorted((ROOT / "chaos" / "scenarios").glob("*.toml")))],
                        cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert json.dumps(ok.stdout).count(": ok") >= 3
