"""`python -m loadtests.run`: one bounded load run of Locust viewers against a topology.

    python -m loadtests.run --users N --run-time 60s --out DIR [--state-file F] [--workers W]

Without --state-file it starts `ocsim up --ephemeral-ports` (its state, logs and
caches under DIR/up), waits for the state file, runs
`locust -f loadtests/locustfile.py --headless -u N -r R --run-time T --csv DIR/locust
--html DIR/locust.html` under a hard time limit (with --workers W: a master and
W worker processes on 127.0.0.1, Locust's distributed mode), stops `ocsim up`
(SIGTERM, then SIGKILL of its process group if it lingers) and prints a summary
from the CSVs: the QoE table (DIR/locust_qoe.csv: sessions, failed sessions,
rebuffer ratio, start-up p50/p90, average bitrate), then requests, failures,
segment p50/p99 as a diagnostic, and the CPU the Locust processes used. The
summary is also written to DIR/summary.json. Exit code: 0 when the run had no
failed request and no failed session, 1 otherwise, 2 when the topology or Locust
could not be run at all.

Locust runs as a subprocess (it monkey-patches on import), never in this process.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtests.qoe import read_qoe_csv

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
    return {
        "requests": int(sum(num(r, "Request Count") for r in http.values())),
        "failures": int(sum(num(r, "Failure Count") for r in http.values())),
        "requests_per_s": round(sum(num(r, "Requests/s") for r in http.values()), 1),
        "segments": int(num(seg, "Request Count")),
        "segment_failures": int(num(seg, "Failure Count")),
        "segment_p50_ms": num(seg, "50%"),
        "segment_p99_ms": num(seg, "99%"),
        "segment_avg_bytes": round(num(seg, "Average Content Size")),
        "segment_mbit_s": round(num(seg, "Requests/s") * num(seg, "Average Content Size") * 8 / 1e6, 1),
        "segment_bytes_per_s": round(num(seg, "Requests/s") * num(seg, "Average Content Size")),
        "play_p99_ms": num(rows.get(("POST", "play")), "99%"),
        "aggregated_requests": int(num(agg, "Request Count")),
        "types": sorted({k[0] for k in rows if k[0]}),
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
    p.add_argument("--workers", type=int, default=0,
                   help="Locust worker processes under one master (distributed mode); 0: one local process")
    p.add_argument("--shape", choices=("steady", "evening", "ramp", "flash"), help="OCSIM_SHAPE")
    p.add_argument("--crowd-s", type=float, help="the shape's T in seconds (OCSIM_CROWD_S): flash window, "
                   "evening ramp, steady ramp-up")
    p.add_argument("--verify-share", type=float, help="share of segments verified byte for byte (OCSIM_VERIFY_SHARE)")
    p.add_argument("--isp", help="OCSIM_ISP (default: a random ISP per viewer)")
    p.add_argument("--verify", action="store_true", help="verify every byte of every segment (OCSIM_VERIFY=1)")
    p.add_argument("--max-segments", type=int, help="OCSIM_MAX_SEGMENTS")
    return p


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_locust(cmd: list[str], workers: int, env: dict[str, str], out: Path, limit_s: float) -> int:
    """Locust alone (workers 0) or a master and `workers` workers on 127.0.0.1; the
    master's exit code (-1: killed at the time limit). Workers quit with the master."""
    if workers <= 0:
        with open(out / "locust.log", "wb") as log:
            try:
                return subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=limit_s).returncode
            except subprocess.TimeoutExpired:
                return -1
    port = _free_port()
    master_cmd = cmd + ["--master", "--expect-workers", str(workers), "--master-bind-host", "127.0.0.1",
                        "--master-bind-port", str(port)]
    worker_cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", "127.0.0.1",
                  "--master-port", str(port)]
    logs = [open(out / "locust.log", "wb")] + [open(out / f"locust-worker{i}.log", "wb") for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(subprocess.Popen(master_cmd, cwd=ROOT, env=env, stdout=logs[0], stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL))
        for i in range(workers):
            procs.append(subprocess.Popen(worker_cmd, cwd=ROOT, env=env, stdout=logs[i + 1],
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        try:
            code = procs[0].wait(limit_s)
        except subprocess.TimeoutExpired:
            code = -1
        for proc in procs[1:]:  # workers leave when the master quits; bounded wait, then stop them
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.terminate()
        return code
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        for log in logs:
            log.close()


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
        for key, value in (("OCSIM_SHAPE", args.shape), ("OCSIM_ISP", args.isp), ("OCSIM_CROWD_S", args.crowd_s),
                           ("OCSIM_VERIFY_SHARE", args.verify_share),
                           ("OCSIM_MAX_SEGMENTS", args.max_segments), ("OCSIM_VERIFY", "1" if args.verify else None)):
            if value is not None:
                env[key] = str(value)
        rate = args.spawn_rate or max(1.0, args.users / 5)
        cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", state["control"],
               "-u", str(args.users), "-r", str(rate), "--run-time", args.run_time, "--only-summary",
               "--csv", str(out / "locust"), "--html", str(out / "locust.html"), "--exit-code-on-error", "0"]
        how = f"a master and {args.workers} workers" if args.workers > 0 else "one process"
        print(f"loadtests.run: locust ({how}), {args.users} users at {rate:g}/s for {args.run_time} "
              f"(speed {args.speed:g}x) against {state['control']}", file=sys.stderr)
        cpu0, t0 = _children_cpu_s(), time.monotonic()
        code = run_locust(cmd, args.workers, env, out, run_s + GRACE_S)
        locust_cpu_s, wall_s = _children_cpu_s() - cpu0, time.monotonic() - t0
        if code == -1:
            print("loadtests.run: locust overran its time limit and was killed", file=sys.stderr)
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
    qoe_csv = out / "locust_qoe.csv"
    qoe = read_qoe_csv(qoe_csv) if qoe_csv.exists() else None
    summary = {"users": args.users, "run_time": args.run_time, "speed": args.speed, "shape": args.shape,
               "workers": args.workers, "locust_cpu_s": round(locust_cpu_s, 2), "locust_wall_s": round(wall_s, 1),
               **read_stats(stats_csv), "qoe": qoe}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"users {summary['users']}  run {summary['run_time']}  speed {summary['speed']:g}x  "
          f"locust {'1 process' if not args.workers else f'master + {args.workers} workers'}")
    if qoe is None:
        print("  QoE              no QoE table (see locust.log)")
    else:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v * 1000:.0f} ms"
        print(f"  sessions         {qoe['sessions']} (failed {qoe['failed']}, still playing {qoe['playing']})")
        print(f"  rebuffer ratio   {qoe['rebuffer_ratio'] * 100:.3f} %  ({qoe['stalled_s']:g} s of "
              f"{qoe['watched_s']:g} s watched)")
        print(f"  start-up         p50 {ms(qoe['startup_p50_s'])}, p90 {ms(qoe['startup_p90_s'])}")
        print(f"  avg bitrate      {qoe['avg_bitrate_kbps']:.0f} kbit/s")
    print(f"  requests         {summary['requests']}  ({summary['requests_per_s']}/s), failures {summary['failures']}")
    print(f"  segments         {summary['segments']}  ({summary['segment_mbit_s']} Mbit/s), "
          f"p50 {summary['segment_p50_ms']:g} ms, p99 {summary['segment_p99_ms']:g} ms (diagnostic)")
    print(f"  play p99         {summary['play_p99_ms']:g} ms")
    print(f"  locust CPU       {summary['locust_cpu_s']:g} s over {summary['locust_wall_s']:g} s")
    print(f"  report           {out / 'locust.html'}")
    failed_sessions = qoe["failed"] if qoe else 1
    return 0 if summary["failures"] == 0 and failed_sessions == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
