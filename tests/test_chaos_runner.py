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

# buffer_s = 8: two 4 s segments ahead, so a player keeps downloading all through its session
# and a kill hits every session on the edge. With the default 60 s cap a short session has its
# whole title by the time a kill comes, and steering moves new plays away within ~1.5 s (one
# missed heartbeat): on a quiet machine the kill then met no download at all.
HEAD = """
seed = 4
duration_s = 12
[cohorts]
viewers = 24
isp = "isp-a"
buffer_s = 8
[[steady_state]]
metric = "failed"
absolute = 0.05
[[abort]]
metric = "failed"
max_excess = 0.2
min_sessions = 3
"""

EDGE_KILLED = """
[[fault]]
kind = "kill"
target = "edge:isp-a-1"
at_s = 1
duration_s = 8
"""


def _scenario(failover: bool) -> str:
    head = HEAD.replace('isp = "isp-a"', f'isp = "isp-a"\nexperiment_failover = {str(failover).lower()}')
    return f'name = "edge-killed-failover-{"on" if failover else "off"}"\n' + head + EDGE_KILLED


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_with_failover_switched_off_an_edge_kill_fails_and_aborts_early() -> None:
    # metrics from the players' own reports here (--metrics players); the pipeline's below
    report = asyncio.run(run_experiment(parse_scenario(_scenario(False)), pipeline=False))
    assert report["metrics_source"] == "players" and report["pipeline"] is None
    assert report["outcome"] == "fail" and report["experiment_failover"] is False
    assert report["aborted"] and "failed" in report["aborted"]
    abort = next(e for e in report["timeline"] if e["move"] == "abort")
    assert abort["t"] < 12  # before the scenario's end
    exp = [s for s in report["sessions"] if s["cohort"] == "experiment"]
    ctl = [s for s in report["sessions"] if s["cohort"] == "control"]
    assert any(s["errors"] for s in exp), exp[:3]
    assert ctl and all(s["state"] == "ended" and not s["errors"] for s in ctl)  # outside the blast radius
    # the killed edge was started again and every fault undone
    assert [e["move"] for e in report["timeline"] if e["move"] in ("begin", "end")] == ["begin"]
    assert report["undo_errors"] == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_same_experiment_with_failover_on_passes() -> None:
    report = asyncio.run(run_experiment(parse_scenario(_scenario(True))))
    assert report["metrics_source"] == "pipeline"  # the default
    assert report["aborted"] is None
    assert report["outcome"] == "pass", report["verdicts"]
    assert [e["move"] for e in report["timeline"] if e["move"] in ("begin", "end")] == ["begin", "end"]
    exp = [s for s in report["sessions"] if s["cohort"] == "experiment"]
    assert sum(s.get("failovers", 0) for s in exp) >= 1  # the players did fail over past the dead edge


def test_the_runner_refuses_what_it_cannot_make_before_starting() -> None:
    edges = {"isp-a-1", "isp-a-2"}
    for fault, message in [
        ("kind = 'kill'\ntarget = 'edge:zz'\nat_s = 1\nduration_s = 1", r"fault\[0\]\.target: no edge 'zz'"),
        ("kind = 'disk_full'\ntarget = 'edge:zz'\nat_s = 1\nduration_s = 1", r"fault\[0\]\.target: no edge 'zz'"),
        ("kind = 'partition'\ntarget = 'isp:zz'\nat_s = 1\nduration_s = 1", r"fault\[0\]\.target: no ISP 'zz'"),
        ("kind = 'latency'\ntarget = 'link:edge-origin'\nedge = 'zz'\nat_s = 1\nduration_s = 1\nlatency_s = 1",
         r"fault\[0\]\.edge: no edge 'zz' \(known: isp-a-1, isp-a-2\)"),
    ]:
        s = parse_scenario('name = "x"\n' + HEAD + "[[fault]]\n" + fault + "\n")
        with pytest.raises(BadRequest, match=message):
            check_runnable(s, edges, {"isp-a", "isp-b"})
    for link in ("player-edge", "edge-control", "edge-origin", "edge-peer"):  # all four are made
        s = parse_scenario('name = "x"\n' + HEAD + f"[[fault]]\nkind = 'reset'\ntarget = 'link:{link}'\n"
                           "edge = 'isp-a-2'\nat_s = 1\nduration_s = 1\n")
        check_runnable(s, edges, {"isp-a", "isp-b"})


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


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_with_the_pipeline_the_windows_come_from_the_collector_and_the_run_still_aborts_early() -> None:
    report = asyncio.run(run_experiment(parse_scenario(_scenario(False))))
    assert report["metrics_source"] == "pipeline"
    pipe = report["pipeline"]
    assert pipe["polls"]["control"] >= 2 and pipe["polls"]["experiment"] >= 2  # read while it ran
    # every session a player reported is in its cohort's collector, with the same outcome
    assert pipe["ended_sessions"] == pipe["reports"], pipe
    assert report["outcome"] == "fail" and report["aborted"] and "failed" in report["aborted"]
    abort = next(e for e in report["timeline"] if e["move"] == "abort")
    assert abort["t"] < 12
    exp = [s for s in report["sessions"] if s["cohort"] == "experiment"]
    failed_reports = sum(1 for s in exp if s["state"] != "ended" or s["errors"])
    v = {x["metric"]: x for x in report["verdicts"]}["failed"]
    assert v["n_experiment"] == len(exp) and v["n_control"] == pipe["reports"]["control"]
    assert failed_reports >= 1 and pipe["failed_sessions"]["experiment"] == failed_reports
    # the samples' counts are the collector's: the last ones cannot exceed what the players reported
    last = {s["cohort"]: s for s in report["samples"]}
    assert last["experiment"]["failed"] <= failed_reports
    assert all(s["play_id"] for s in report["sessions"])  # each report matched to its events
