"""The `ocsim` console script: one subcommand per part; each part owns its own parser.

`ocsim <command> [args]` imports `<module>.main(argv)` lazily, so `ocsim sim` never
imports aiohttp and `ocsim origin` never imports Locust.
"""
from __future__ import annotations

import ctypes
import importlib
import os
import signal
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "origin": ("origin.cli", "run an origin server"),
    "edge": ("edge.cli", "run an edge cache node"),
    "control": ("control.cli", "run the control plane"),
    "preposition": ("control.preposition_cli", "operator: place titles on an ISP's edges"),
    "play": ("player.cli", "one player session with a QoE report"),
    "up": ("ocsim.up", "the whole topology as child processes on loopback"),
    "demo": ("ocsim.demo", "up + pre-position + a crowd of players + a failure + a report"),
    "sim": ("sim.cli", "offline trace-driven simulation on the live cores"),
    "pipeline": ("pipeline.cli", "the event collector (JetStream -> DuckDB + Parquet) and its read API"),
    "query": ("pipeline.query_cli", "query the event store (read-only): SQL or a named view"),
    "package": ("media.cli", "package real media (a video file or a test source) as an HLS ladder"),
    "chaos": ("chaos.runner", "chaos experiments: a scenario, two cohorts, a verdict"),
    "plan": ("plan.cli", "from an audience and targets to a topology: derivation, simulated search, live check"),
}


def usage() -> str:
    lines = ["usage: ocsim <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {desc}" for name, (_, desc) in COMMANDS.items()]
    lines += ["", "`ocsim <command> --help` describes each command; `ocsim --version` prints the version."]
    return "\n".join(lines)


def _die_with_supervisor() -> None:
    """A child of `ocsim up` (or a test) gets SIGTERM when its supervisor dies, even by
    SIGKILL, so no service outlives it (Linux PR_SET_PDEATHSIG; elsewhere a no-op)."""
    supervisor = os.environ.pop("OCSIM_SUPERVISOR_PID", "")
    if not supervisor.isdigit() or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != int(supervisor):  # it died before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-V", "--version", "version"):
        from common.cli_args import ocsim_version
        print(f"ocsim {ocsim_version()}")
        sys.exit(0)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else 2)
    name, rest = args[0], args[1:]
    _die_with_supervisor()
    if name not in COMMANDS:
        print(f"ocsim: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as exc:
        if exc.name and COMMANDS[name][0].startswith(exc.name):
            print(f"ocsim: `{name}` is not available in this build", file=sys.stderr)
            sys.exit(2)
        raise
    code = module.main(rest)
    sys.exit(code or 0)
