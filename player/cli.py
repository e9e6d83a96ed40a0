"""`ocsim play`: one player session against a control plane, with a QoE report.

Exit codes: 0 the session played to the end (and, with --verify, every segment
verified); 1 it did not (unknown title, control plane unreachable, no edge
left, a broken manifest, a verification failure nothing could recover);
2 bad arguments.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from player.abr import ABR_NAMES
from common.eventsink import make_sink
from player.driver import Timeouts, play_session
from player.report import PlayReport
from player.report import PlayReport


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim play", description="Play one title and print its QoE report.")
    p.add_argument("title")
    p.add_argument("--control", default=os.environ.get("OCSIM_CONTROL"),
                   help="control plane URL (default: $OCSIM_CONTROL, or --state-file)")
    p.add_argument("--state-file", help="read the control URL from an `ocsim up` state file")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--isp", help="play as a client of this ISP")
    who.add_argument("--client-ip", help="play as a client with this address (steering maps it to an ISP)")
    p.add_argument("--speed", type=float, default=1.0, help="playback clock speed-up (e.g. 20: 20x real time)")
    p.add_argument("--verify", action="store_true", help="verify every byte of every segment")
    p.add_argument("--abr", choices=ABR_NAMES, default="bba")
    p.add_argument("--max-segments", type=int, help="stop after N segments")
    p.add_argument("--buffer-s", type=float, default=60.0, help="buffer cap in media seconds")
    p.add_argument("--connect-timeout", type=float, default=2.0, help="seconds")
    p.add_argument("--read-timeout", type=float, default=5.0, help="seconds to first byte / between reads")
    p.add_argument("--segment-timeout", type=float, default=30.0, help="seconds for one whole segment")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--events", default="", metavar="nats://HOST:PORT",
                   help="publish player.session start/progress/end events to NATS JetStream")
    return p


def _control_url(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if args.state_file:
        try:
            state = json.loads(Path(args.state_file).read_text())
            return str(state["control"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"cannot read the control URL from {args.state_file}: {exc}")
    if not args.control:
        parser.error("--control URL (or --state-file, or $OCSIM_CONTROL) is required")
    return str(args.control)


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def render_text(report: PlayReport) -> str:
    d = report.to_dict()
    lines = [f"title {d['title']}  isp {d['isp'] or '-'}  abr {d['abr'] or '-'}  speed {d['speed']}x",
             f"  state            {d['state']}"]
    if d["error"]:
        lines.append(f"  ERROR            {d['error_kind']}: {d['error']}")
    lines += [
        f"  segments         {d['segments']}/{d['n_segments']}  ({_fmt(d['played_s'], ' s', 1)} played)",
        f"  startup          {_fmt(d['startup_s'], ' s', 3)}",
        f"  rebuffers        {d['rebuffer_count']}  ({_fmt(d['rebuffer_s'], ' s', 3)})",
        f"  avg bitrate      {_fmt(d['avg_bitrate_kbps'], ' kbit/s', 0)}  ({d['switches']} switches)",
        f"  QoE_lin          {_fmt(d['qoe_lin'], '', 3)}",
        f"  failovers        {d['failovers']}  (retries {d['retries']}, re-steers {d['resteers']}, "
        f"failed requests {d['failed_requests']})",
        f"  bytes            {d['bytes']}  (+{d['playlist_bytes']} playlist bytes)",
    ]
    for edge, n in d["bytes_per_edge"].items():
        lines.append(f"    {edge:<14} {n}")
    if d["failure_reasons"]:
        lines.append("  failures         " + ", ".join(f"{k}={v}" for k, v in d["failure_reasons"].items()))
    if report.verify:
        lines.append(f"  verified         {'yes' if d['verified'] else 'NO'}  "
                     f"({d['verified_segments']}/{d['segments']} segments)")
    lines.append(f"  wall time        {d['wall_s']:.3f} s")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    control = _control_url(args, parser)
    if not args.speed > 0:
        parser.error("--speed must be > 0")
    if args.max_segments is not None and args.max_segments < 1:
        parser.error("--max-segments must be >= 1")
    timeouts = Timeouts(connect_s=args.connect_timeout, read_s=args.read_timeout,
                        segment_s=args.segment_timeout)
    try:
        async def run() -> PlayReport:
            sink = make_sink(args.events, "player")
            await sink.start()
            try:
                return await play_session(
                    control, args.title, isp=args.isp, client_ip=args.client_ip, speed=args.speed,
                    verify=args.verify, abr=args.abr, timeouts=timeouts, buffer_cap_s=args.buffer_s,
                    max_segments=args.max_segments, events=sink)
            finally:
                await sink.close()

        report = asyncio.run(run())
    except ValueError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    else:
        print(render_text(report))
    failed = not report.ok or (args.verify and not report.verified)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
