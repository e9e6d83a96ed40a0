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
from typing import Any, TextIO

from common.cli_args import HelpFormatter, http_url, positive_float
from common.content import SEGMENT_SECONDS
from common.eventsink import make_sink
from common.sizes import format_size
from player.abr import ABR_NAMES
from player.driver import Timeouts, play_session
from player.report import PlayerEvent, PlayReport


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ocsim play", formatter_class=HelpFormatter,
        description="Play one title and print its QoE report. By default it plays in real time (--speed 1):\n"
                    "a 40-minute title takes 40 minutes; --speed 20 plays it 20x faster. On a terminal a\n"
                    "one-line status shows the progress.")
    p.add_argument("title", help="title id, e.g. title-001 (see GET /v1/catalog)")
    p.add_argument("--control", type=http_url, default=os.environ.get("OCSIM_CONTROL"),
                   help="control plane URL, e.g. http://127.0.0.1:8100 ($OCSIM_CONTROL, or --state-file)")
    p.add_argument("--state-file", help="read the control URL from an `ocsim up` state file")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--isp", help="play as a client of this ISP (a name of the topology)")
    who.add_argument("--client-ip", help="play as a client with this address (steering maps it to an ISP)")
    p.add_argument("--speed", type=positive_float, default=1.0,
                   help="playback clock speed-up: 1 = real time, 20 = 20x faster")
    p.add_argument("--verify", action="store_true", help="verify every byte of every segment")
    p.add_argument("--abr", choices=ABR_NAMES, default="bba", help="bitrate adaptation algorithm")
    p.add_argument("--max-segments", type=int, help="stop after N segments")
    p.add_argument("--buffer-s", type=float, default=60.0, help="buffer cap in media seconds")
    p.add_argument("--connect-timeout", type=float, default=2.0, help="seconds")
    p.add_argument("--read-timeout", type=float, default=5.0, help="seconds to first byte / between reads")
    p.add_argument("--segment-timeout", type=float, default=30.0, help="seconds for one whole segment")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--events", default="", metavar="nats://HOST:PORT",
                   help="publish player.session start/progress/end events to NATS JetStream")
    p.add_argument("--quiet", action="store_true", help="no status line on a terminal")
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
        extra = (f", {d['verified_files']} playlists and init segments against the digest list"
                 if d["media"] == "packaged" else "")
        lines.append(f"  verified         {'yes' if d['verified'] else 'NO'}  "
                     f"({d['verified_segments']}/{d['segments']} segments{extra})")
    lines.append(f"  wall time        {d['wall_s']:.3f} s")
    return "\n".join(lines)


def render_failure(report: PlayReport) -> str:
    """One clear line for a session that played nothing: what went wrong, not a table of zeros."""
    d = report.to_dict()
    return f"ocsim play: {d['title']} did not play: {d['error'] or 'no segment could be fetched'}" \
           + (f" ({d['error_kind']})" if d["error_kind"] else "")


class SteeredAs:
    """The ISP of the control plane's (last) play answer, from the player's "steer" events."""

    def __init__(self) -> None:
        self.steered = False
        self.isp: str | None = None

    def on_event(self, event: PlayerEvent) -> None:
        if event.kind == "steer":
            self.steered, self.isp = True, event.isp


def unknown_isp_warning(asked_isp: str | None, steered: SteeredAs) -> str | None:
    """A warning when --isp named a network the control plane does not know (it then steers
    as for an unknown network: the fallback ranking)."""
    if asked_isp is None or not steered.steered or steered.isp == asked_isp:
        return None
    return (f"ocsim play: warning: the control plane knows no ISP {asked_isp!r}; "
            "played as a client of an unknown network (check the topology's ISP names)")


class StatusLine:
    """A one-line status on a terminal (`\r`-rewritten on stderr), fed by the player's events."""

    def __init__(self, title: str, speed: float, stream: TextIO) -> None:
        self.title, self.speed, self.stream = title, speed, stream
        self.segments, self.nbytes, self.failures = 0, 0, 0
        self.edge: str | None = None
        self.bitrate: int | None = None
        self.shown = False

    def text(self) -> str:
        rate = f"{self.bitrate} kbit/s" if self.bitrate else "-"
        return (f"{self.title}: {self.segments} segments ({self.segments * SEGMENT_SECONDS:.0f} s of media) "
                f"{format_size(self.nbytes)}  {rate}  from {self.edge or '-'}  failures {self.failures}  "
                f"[{self.speed:g}x]")

    def on_event(self, event: PlayerEvent) -> None:
        if event.kind == "segment":
            self.segments += 1
            self.nbytes += event.nbytes
            self.edge, self.bitrate = event.edge, event.bitrate_kbps
        elif event.kind == "failure":
            self.failures += 1
        elif event.kind != "end":
            return
        self.stream.write("\r\x1b[K" + self.text())
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    control = _control_url(args, parser)
    if args.max_segments is not None and args.max_segments < 1:
        parser.error("--max-segments must be >= 1")
    timeouts = Timeouts(connect_s=args.connect_timeout, read_s=args.read_timeout,
                        segment_s=args.segment_timeout)
    status = StatusLine(args.title, args.speed, sys.stderr) \
        if sys.stderr.isatty() and not args.quiet and not args.json else None
    steered = SteeredAs()

    def on_event(event: PlayerEvent) -> None:
        steered.on_event(event)
        if status is not None:
            status.on_event(event)

    try:
        async def run() -> PlayReport:
            sink = make_sink(args.events, "player")
            await sink.start()
            try:
                return await play_session(
                    control, args.title, isp=args.isp, client_ip=args.client_ip, speed=args.speed,
                    verify=args.verify, abr=args.abr, timeouts=timeouts, buffer_cap_s=args.buffer_s,
                    max_segments=args.max_segments, events=sink, on_event=on_event)
            finally:
                await sink.close()

        report = asyncio.run(run())
    except ValueError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        if status is not None:
            status.clear()
    warning = unknown_isp_warning(args.isp, steered)
    if warning:
        print(warning, file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), sort_keys=True))
    elif not report.ok and report.to_dict()["segments"] == 0:
        print(render_failure(report), file=sys.stderr)
    else:
        print(render_text(report))
    failed = not report.ok or (args.verify and not report.verified)
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
