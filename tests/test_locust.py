"""Locust viewers against a real topology, driven as a subprocess (Locust monkey-patches
on import, so it never enters this process).

`ocsim up` starts origin + control + two edges of one ISP with a catalog of short
titles; a short, bounded headless run of a few fast viewers (20x, every segment
verified) must download segments with zero failures, Locust's request table must
hold only real HTTP requests, and the QoE table (its own CSV) must count the
sessions. One run is Locust's distributed mode: a master and 2 workers.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests.qoe import read_qoe_csv
from tests.topologies import ONE_ISP_TWO_EDGES, SHORT_CATALOG

ROOT = Path(__file__).resolve().parents[1]

TOPOLOGY = ONE_ISP_TWO_EDGES
CATALOG = SHORT_CATALOG


@pytest.fixture
def state_file(tmp_path: Path) -> Iterator[Path]:
    """`ocsim up` with short titles on ephemeral ports; yields its state file."""
    yield from _up(tmp_path, [])


@pytest.fixture
def events_state_file(tmp_path: Path) -> Iterator[Path]:
    """The same with `--events`: a local nats-server and the collector beside it."""
    yield from _up(tmp_path, ["--events"])


def _up(tmp_path: Path, extra: list[str]) -> Iterator[Path]:
    pytest.importorskip("locust")  # installed? (not imported here: just located)
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    state = tmp_path / "state.json"
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ocsim", "up", "--topology", str(tmp_path / "topology.toml"),
             "--state-dir", str(tmp_path / "up"), "--state-file", str(state), "--ephemeral-ports", *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "ocsim up wrote no state file in 60 s"
            try:
                if json.loads(state.read_text()).get("status") == "running":
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        yield state
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def run_locust(state: Path, out: Path, *, users: int, seconds: int,
               **env: str) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    """A bounded headless run; Locust's request rows and the QoE table."""
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
           "-u", str(users), "-r", str(users), "--run-time", f"{seconds}s", "--only-summary",
           "--csv", str(out / "locust"), "--exit-code-on-error", "0"]
    full_env = dict(os.environ, OCSIM_STATE_FILE=str(state), OCSIM_SPEED="20", OCSIM_VERIFY="1", **env)
    r = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=seconds + 45)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_csvs(out)


def read_csvs(out: Path) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any]]:
    with open(out / "locust_stats.csv", newline="") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    failures = (out / "locust_failures.csv").read_text()
    assert ("GET", "segment") in rows and failures.count("\n") <= 1, f"no segments or failures:\n{failures}"
    # Locust's own table: real HTTP requests only (and its Aggregated row)
    assert {kind for kind, _ in rows} <= {"GET", "POST", ""}, sorted(rows)
    assert int(rows[("", "Aggregated")]["Request Count"]) == sum(
        int(r["Request Count"]) for (kind, _), r in rows.items() if kind)
    return rows, read_qoe_csv(out / "locust_qoe.csv")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_locust_viewers_download_segments_without_failures(state_file: Path, tmp_path: Path) -> None:
    rows, qoe = run_locust(state_file, tmp_path, users=4, seconds=12)
    segment = rows[("GET", "segment")]
    assert int(segment["Request Count"]) > 0
    for key, row in rows.items():
        assert int(row["Failure Count"]) == 0, (key, row)
    assert int(rows[("POST", "play")]["Request Count"]) > 0
    assert int(rows[("GET", "manifest")]["Request Count"]) > 0
    assert_qoe(qoe, viewers=4)


def assert_qoe(qoe: dict[str, Any], viewers: int) -> None:
    """Every viewer's viewing is in the table; none failed; they watched and started."""
    assert qoe["sessions"] >= viewers and qoe["failed"] == 0, qoe
    assert qoe["sessions"] == qoe["finished"] + qoe["failed"] + qoe["playing"], qoe
    assert qoe["watched_s"] > 0 and 0.0 <= qoe["rebuffer_ratio"] < 1.0, qoe
    assert qoe["startup_p50_s"] is not None and 0 < qoe["startup_p50_s"] <= qoe["startup_p90_s"], qoe
    assert qoe["avg_bitrate_kbps"] > 0, qoe


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_locust_flash_crowd_all_start_the_same_title(state_file: Path, tmp_path: Path) -> None:
    rows, qoe = run_locust(state_file, tmp_path, users=6, seconds=8, OCSIM_SHAPE="flash", OCSIM_CROWD_S="2",
                           OCSIM_FLASH_TITLE="short-c", OCSIM_MAX_SEGMENTS="3")
    assert int(rows[("GET", "segment")]["Request Count"]) > 0
    assert all(int(r["Failure Count"]) == 0 for r in rows.values())
    # the flash shape: every viewer's first viewing is the flash title
    assert qoe["flash"] == 6, qoe


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_locust_master_and_two_workers(state_file: Path, tmp_path: Path) -> None:
    """Distributed mode through `loadtests.run --workers 2`: a master and two worker
    processes; the master's CSV holds the workers' segments and their sessions' QoE."""
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "loadtests.run", "--state-file", str(state_file), "--users", "6",
           "--spawn-rate", "6", "--run-time", "12s", "--workers", "2", "--speed", "20", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + (out / "locust.log").read_text()[-3000:]
    for i in range(2):  # both workers ran viewers
        log = (out / f"locust-worker{i}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
    master_log = (out / "locust.log").read_text()
    assert "2 workers connected" in master_log or "workers connected" in master_log.lower(), master_log[-2000:]
    rows, qoe = read_csvs(out)
    assert int(rows[("GET", "segment")]["Request Count"]) > 0
    assert all(int(row["Failure Count"]) == 0 for row in rows.values()), rows
    assert_qoe(qoe, viewers=6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["workers"] == 2 and summary["failures"] == 0 and summary["qoe"]["failed"] == 0
    assert summary["locust_cpu_s"] > 0


def _rows(pipeline: str, sql: str) -> list[list[Any]]:
    url = pipeline + "/v1/query?sql=" + urllib.parse.quote(sql)
    with urllib.request.urlopen(url, timeout=10) as resp:
        return list(json.loads(resp.read())["rows"])


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_locust_viewers_emit_player_session_events_into_the_store(events_state_file: Path, tmp_path: Path) -> None:
    """Under gevent, through the relay child: every finished viewing lands a start, its
    progress events and an end with the QoE it reported; its segments join to it."""
    rows, qoe = run_locust(events_state_file, tmp_path, users=3, seconds=10, OCSIM_MAX_SEGMENTS="12")
    assert all(int(r["Failure Count"]) == 0 for r in rows.values()), rows
    assert qoe["finished"] > 0 and qoe["failed"] == 0, qoe
    pipeline = json.loads(events_state_file.read_text())["pipeline"]
    # Locust waited for its relay to flush at quit; the collector commits within a second or so
    deadline = time.monotonic() + 20
    while True:
        (ends,), = _rows(pipeline, "SELECT count(*) FROM player_session WHERE phase = 'end'")
        if ends >= qoe["finished"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)  # polling the store with a deadline
    # a viewing cut off by the run's end has a start (and progress) but no end
    assert ends == qoe["finished"], (ends, qoe)
    (starts,), = _rows(pipeline, "SELECT count(DISTINCT session) FROM player_session WHERE phase = 'start'")
    assert starts >= ends
    (progress,), = _rows(pipeline, "SELECT count(*) FROM player_session WHERE phase = 'progress'")
    assert progress >= ends  # 6 to 10 segments each: a progress event every 5
    end_rows = _rows(pipeline, "SELECT state, startup_s, segments, bytes, verified, isp, src, title FROM player_session "
                               "WHERE phase = 'end'")
    n_segments = {t["id"]: -(-int(t["duration_s"]) // 4) for t in CATALOG["titles"]}  # type: ignore[index]
    assert all(r[0] == "ended" and r[1] is not None and r[1] > 0 and r[2] == n_segments[r[7]] and r[3] > 0
               and r[4] is True and r[5] == "isp-a" and str(r[6]).startswith("locust-") for r in end_rows), end_rows
    # the QoE the store holds is part of the QoE table's (which also counts the viewings still playing)
    (played, stalled), = _rows(pipeline, "SELECT sum(played_s), sum(rebuffer_s) FROM player_session "
                                         "WHERE phase = 'end'")
    assert 0 < played <= qoe["watched_s"] + 0.01 and stalled <= qoe["stalled_s"] + 0.01, (played, stalled, qoe)
    # segment requests carry the play id: they join to steering's decision and the session
    # (the edge's fast lane does not yet record the session of a hit: issue 10's perf half)
    (joined,), = _rows(pipeline, "SELECT count(*) FROM edge_request r JOIN steer_play s ON s.play_id = r.session "
                                 "WHERE r.path LIKE '%.seg'")
    (with_session,), = _rows(pipeline, "SELECT count(*) FROM edge_request WHERE path LIKE '%.seg' "
                                       "AND session IS NOT NULL")
    (sessions_joined,), = _rows(pipeline, "SELECT count(DISTINCT p.session) FROM player_session p "
                                          "JOIN edge_request r ON r.session = p.session WHERE p.phase = 'end'")
    assert with_session > 0 and joined == with_session and sessions_joined == ends
