"""`python -m loadtests.run`: one bounded load run of Locust viewers against a topology.

    python -m loadtests.run --users N --run-time 60s --out DIR [--state-file F]

Without --state-file it starts `ocsim up --ephemeral-ports` (its state, logs and
caches under DIR/up), waits for the state file, runs
`locust -f loadtests/locustfile.py --headless -u N -r R --run-time T --csv DIR/locust
--html DIR/locust.html` under a hard time limit, stops `ocsim up` (SIGTERM, then
SIGKILL of its process group if it lingers) and prints a summary from the CSV:
requests, failures, segment p50/p99, QoE events. The summary is also written to
DIR/summary.json. Exit code: 0 when the run had no failures, 1 otherwise, 2 when
the topology or Locust could not be run at all.

Locust runs as a subprocess (it monkey-patches on import), never in this process.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
UP_TIMEOUT_S = 120.0
GRACE_S = 60.0  # Locust's own shutdown, on top of --run-time


def parse_duration(text: str) -> float:
    """Locust's --run-time syntax: 90, 90s, 2m, 1h30m."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)\s*([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != re.sub(r"\s+", "", text):
        raise ValueError(f"not a duration: {text!r} (e.g. 60s, 2m, 1h30m)")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def read_stats(csv_path: Path) -> dict[str, Any]:
    """The summary numbers from Locust's `*_stats.csv`."""
    rows = {}
    with csv_path.open(newline="") as f:
        for row in csv.DictReader(f):
            rows[(row["Type"], row["Name"])] = row

    def num(row: dict[str, str] | None, col: str) -> float:
        if not row:
            return 0.0
        try:
            return float(row.get(col) or 0)
        except ValueError:  # "N/A" for empty rows
            return 0.0

    agg = rows.get(("", "Aggregated"))
    http = {k: v for k, v in rows.items() if k[0] in ("GET", "POST")}
    seg = rows.get(("GET", "segment"))
    qoe = {name: int(num(row, "Request Count")) for (kind, name), row in rows.items() if kind == "QOE"}
    return {
        "requests": int(sum(num(r, "Request Count") for r in http.values())),
        "failures": int(sum(num(r, "Failure Count") for r in http.values())),
        "qoe_failures": int(sum(num(r, "Failure Count") for (k, _), r in rows.items() if k == "QOE")),
        "requests_per_s": round(sum(num(r, "Requests/s") for r in http.values()), 1),
        "segments": int(num(seg, "Request Count")),
        "segment_failures": int(num(seg, "Failure Count")),
        "segment_p50_ms": num(seg, "50%"),
        "segment_p99_ms": num(seg, "99%"),
        "segment_avg_bytes": round(num(seg, "Average Content Size")),
        "segment_mbit_s": round(num(seg, "Requests/s") * num(seg, "Average Content Size") * 8 / 1e6, 1),
        "play_p99_ms": num(rows.get(("POST", "play")), "99%"),
        "qoe": qoe,
        "aggregated_requests": int(num(agg, "Request Count")),
    }


def _wait_state(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ocsim up exited with {proc.returncode}")
        try:
            state = json.loads(path.read_text())
            if isinstance(state, dict) and state.get("status", "running") == "running" and state.get("control"):
                return state
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ocsim up wrote no state file within {timeout:.0f}s")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: users / 5)")
    p.add_argument("--run-time", default="60s")
    p.add_argument("--out", default="reports/load")
    p.add_argument("--state-file", help="use a running `ocsim up` instead of starting one")
    p.add_argument("--topology", help="topology TOML for the `ocsim up` this starts")
    p.add_argument("--speed", type=float, default=1.0, help="viewers' playback speed-up (OCSIM_SPEED); 1 = real time")
    p.add_argument("--shape", choices=("steady", "ramp", "flash"), help="OCSIM_SHAPE")
    p.add_argument("--isp", help="OCSIM_ISP (default: a random ISP per viewer)")
    p.add_argument("--verify", action="store_true", help="verify every segment (OCSIM_VERIFY=1)")
    p.add_argument("--max-segments", type=int, help="OCSIM_MAX_SEGMENTS")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run_s = parse_duration(args.run_time)
    except ValueError as exc:
        print(f"loadtests.run: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    up: subprocess.Popen[bytes] | None = None
    try:
        if args.state_file:
            state_file = Path(args.state_file).resolve()
        else:
            state_file = out / "up-state.json"
            state_file.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "ocsim", "up", "--ephemeral-ports", "--state-dir", str(out / "up"),
                   "--state-file", str(state_file)]
            if args.topology:
                cmd += ["--topology", args.topology]
            print(f"loadtests.run: starting ocsim up (log {out / 'up.log'})", file=sys.stderr)
            with open(out / "up.log", "wb") as log:
                up = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        state = _wait_state(state_file, up, UP_TIMEOUT_S) if up else json.loads(state_file.read_text())
        env = dict(os.environ, OCSIM_STATE_FILE=str(state_file), OCSIM_SPEED=str(args.speed),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        for key, value in (("OCSIM_SHAPE", args.shape), ("OCSIM_ISP", args.isp),
                           ("OCSIM_MAX_SEGMENTS", args.max_segments), ("OCSIM_VERIFY", "1" if args.verify else None)):
            if value is not None:
                env[key] = str(value)
        rate = args.spawn_rate or max(1.0, args.users / 5)
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", state["control"],
               "-u", str(args.users), "-r", str(rate), "--run-time", args.run_time, "--only-summary",
               "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--exit-code-on-error", "0"]
        print(f"loadtests.run: locust, {args.users} users at {rate:g}/s for {args.run_time} "
              f"(speed {args.speed:g}x) against {state['control']}", file=sys.stderr)
        with open(out / "locust.log", "wb") as log:
            try:
                code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=run_s + GRACE_S).returncode
            except subprocess.TimeoutExpired:
                print("loadtests.run: locust overran its time limit and was killed", file=sys.stderr)
                code = -1
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        print(f"loadtests.run: {exc}", file=sys.stderr)
        return 2
    finally:
        if up is not None:
            _stop(up)
    stats_csv = out / "locust_stats.csv"
    if code != 0 or not stats_csv.exists():
        print(f"loadtests.run: locust failed (exit {code}); see {out / 'locust.log'}", file=sys.stderr)
        return 2
    summary = {"users": args.users, "run_time": args.run_time, "speed": args.speed, "shape": args.shape,
               **read_stats(stats_csv)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"users {summary['users']}  run {summary['run_time']}  speed {summary['speed']:g}x")
    print(f"  requests         {summary['requests']}  ({summary['requests_per_s']}/s), failures {summary['failures']}")
    print(f"  segments         {summary['segments']}  ({summary['segment_mbit_s']} Mbit/s), "
          f"p50 {summary['segment_p50_ms']:g} ms, p99 {summary['segment_p99_ms']:g} ms")
    print(f"  play p99         {summary['play_p99_ms']:g} ms")
    print("  QoE events       " + (", ".join(f"{k}={v}" for k, v in sorted(summary["qoe"].items())) or "-"))
    print(f"  report           {out / 'locust.html'}")
    return 0 if summary["failures"] == 0 and summary["qoe_failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
