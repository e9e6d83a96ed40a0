"""`ocsim preposition`: ask the control plane to place titles on an ISP's edges, and watch.

    ocsim preposition --control URL --token T --isp isp-a --top 10 --wait

The token comes from --token, else OCSIM_OPERATOR_TOKEN, else the `--state-file` that
`ocsim up` writes (which also gives the control URL). With --wait a progress bar is
drawn until the job is done (exit 0), partial: done but some files left out (exit 4),
or failed (exit 1). `--refresh` swaps pinned files that are no longer among the most
valuable for those that are; `--now` ignores the ISP's fill window (a job outside it
waits). Plain stdlib HTTP: this is a short-lived operator tool.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from common.cli_args import HelpFormatter
from common.json_client import ApiError, call_json

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ERROR, EXIT_PARTIAL = 0, 1, 2, 3, 4
FINAL_STATES = ("done", "partial", "failed")


def exit_code(state: str) -> int:
    return {"done": EXIT_OK, "partial": EXIT_PARTIAL}.get(state, EXIT_FAILED)


def render_bar(job: dict[str, Any], width: int = 30) -> str:
    """`[#########.....]  45.0%  running  2/3 plans  1.2 GB` for one job document."""
    p = max(0.0, min(1.0, float(job.get("progress", 0.0))))
    filled = int(round(p * width))
    plans = job.get("plans", [])
    done = sum(1 for x in plans if x.get("state") == "done")
    nbytes = sum(int(x.get("done_bytes", 0)) for x in plans)
    return (f"[{'#' * filled}{'.' * (width - filled)}] {100 * p:5.1f}%  {job.get('state', '?'):<7}  "
            f"{done}/{len(plans)} plans  {nbytes / 1e6:,.1f} MB")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim preposition",
                                description="Place files (title renditions) on an ISP's edges (a pre-position job).",
                                epilog="exit status: 0 done, 4 partial (some files left out: no room), 1 failed, "
                                       "2 usage, 3 control plane error",
                                formatter_class=HelpFormatter)
    p.add_argument("--control", help="control plane URL (default: from --state-file)")
    p.add_argument("--token", help="operator token (default: $OCSIM_OPERATOR_TOKEN, then --state-file)")
    p.add_argument("--state-file", help="the JSON state file of `ocsim up`")
    p.add_argument("--isp", required=True, help="the ISP whose edges get the files")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--titles", help="comma-separated title ids (all their renditions, or --renditions)")
    what.add_argument("--top", type=int, help="the N most valuable files (title renditions) in that ISP")
    p.add_argument("--refresh", action="store_true",
                   help="unpin files no longer among the most valuable, then fill those that are")
    p.add_argument("--now", action="store_true", help="fill at once, even outside the ISP's fill window")
    p.add_argument("--renditions", help="comma-separated kbit/s (default: all)")
    p.add_argument("--bandwidth-bps", type=int, help="fill cap per edge in bit/s (0 = none)")
    p.add_argument("--replicas", type=int, help="at most this many edges per file")
    p.add_argument("--wait", action="store_true", help="draw a progress bar until the job ends")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up waiting after this many seconds")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between progress polls")
    p.add_argument("--json", action="store_true", help="print the final job document as JSON")
    return p


def _resolve(args: argparse.Namespace) -> tuple[str, str]:
    control, token = args.control, args.token or os.environ.get("OCSIM_OPERATOR_TOKEN")
    if args.state_file and (not control or not token):
        try:
            with open(args.state_file) as f:
                state = json.load(f)
        except (OSError, ValueError) as exc:
            raise ApiError(f"state file {args.state_file}: {exc}") from None
        control = control or state.get("control")
        token = token or state.get("operator_token")
    if not control:
        raise ApiError("no control URL: give --control or --state-file")
    if not token:
        raise ApiError("no operator token: give --token, OCSIM_OPERATOR_TOKEN or --state-file")
    return str(control).rstrip("/"), str(token)


def wait_for(control: str, token: str, job_id: str, timeout: float, interval: float, out: TextIO) -> dict[str, Any]:
    tty = out.isatty()
    deadline = time.monotonic() + timeout
    last_line = ""
    while True:
        job: dict[str, Any] = call_json("GET", f"{control}/v1/prepositions/{job_id}", token=token)
        line = render_bar(job)
        if tty:
            out.write("\r" + line)
        elif line != last_line:
            out.write(line + "\n")
        out.flush()
        last_line = line
        if job.get("state") in FINAL_STATES:
            if tty:
                out.write("\n")
            return job
        if time.monotonic() > deadline:
            raise ApiError(f"job {job_id} still {job.get('state')} after {timeout:g}s")
        time.sleep(interval)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.titles is None and args.top is None and not args.refresh:
        parser.error("one of --titles, --top or --refresh is required")
    body: dict[str, Any] = {"isp": args.isp}
    if args.refresh:
        body["refresh"] = True
    if args.now:
        body["now"] = True
    try:
        if args.titles is not None:
            body["titles"] = [t.strip() for t in args.titles.split(",") if t.strip()]
        elif args.top is not None:
            body["top"] = args.top
        if args.renditions:
            body["renditions"] = [int(r) for r in args.renditions.split(",") if r.strip()]
    except ValueError:
        parser.error("--renditions takes comma-separated integers")
    if args.bandwidth_bps is not None:
        body["bandwidth_bps"] = args.bandwidth_bps
    if args.replicas is not None:
        body["replicas"] = args.replicas
    try:
        control, token = _resolve(args)
        created = call_json("POST", f"{control}/v1/prepositions", token=token, body=body)
        job_id = created["id"]
        print(f"job {job_id}: {len(created.get('titles', []))} titles on {args.isp}"
              + (f", {len(created.get('placed', {}))} files placed" if "placed" in created else "")
              + (f", {created['shortfall']} left out" if created.get("shortfall") else "")
              + (f", valued by the {created['popularity']}" if created.get("popularity") else "")
              + (f" ({created['popularity_note']})" if created.get("popularity_note") else "")
              + (f", waiting for the {created['window']} fill window" if created.get("state") == "waiting" else "")
              + (f": {created['error']}" if created.get("error") else ""),
              file=sys.stderr)
        if not args.wait:
            print(json.dumps(created) if args.json else job_id)
            state = str(created.get("state"))
            return exit_code(state) if state in FINAL_STATES else EXIT_OK
        job = wait_for(control, token, job_id, args.timeout, args.interval, sys.stderr)
    except ApiError as exc:
        print(f"ocsim preposition: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(job))
    else:
        print(f"job {job_id}: {job['state']}"
              + (f" ({job['shortfall']} files left out: {', '.join(sorted(set(job['left_out'].values())))})"
                 if job.get("shortfall") else ""))
    return exit_code(str(job["state"]))
