"""`ocsim pipeline`: the event collector and its read API, a service like the others."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from common.config import parse_service_args
from common.service import run_app
from pipeline.app import build_app
from pipeline.store import EventStore
from pipeline.stream import StreamSettings

DEFAULT_EVENTS = os.environ.get("OCSIM_EVENTS", "nats://127.0.0.1:4222")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim pipeline", description="Run the ocsim event collector and read API.")
    p.add_argument("--config", help="TOML file; its [pipeline] table sets defaults for these flags")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8300, help="0 = ephemeral")
    p.add_argument("--events", default=DEFAULT_EVENTS,
                   help="NATS server(s), comma-separated: nats://HOST:PORT[,nats://...]")
    p.add_argument("--db", default=".ocsim/pipeline/events.duckdb", help="the DuckDB event store")
    p.add_argument("--parquet-dir", default=None, help="hourly Parquet files (default: beside --db)")
    p.add_argument("--replicas", type=int, default=1, help="stream replicas when creating it (3 on a cluster)")
    p.add_argument("--roll-interval", type=float, default=30.0, help="seconds between Parquet roll checks")
    p.add_argument("--nice", type=int, default=0,
                   help="lower this process's CPU priority by N (0..19) at start (its session's too, when it "
                        "leads one): on a shared machine the collector then yields the CPU to the services it "
                        "watches; while they hold every core it falls behind (the stream keeps the events), its "
                        "views lag and its read API answers slowly, and it catches up when they do not. "
                        "Default 0: compete as an equal, so the views stay near real time")
    p.add_argument("--no-access-log", dest="access_log", action="store_false")
    p.add_argument("--log-level", default="INFO")
    return p


def _lower_priority(nice: int) -> bool:
    """Lower this process's CPU priority by `nice`, against every other process on the machine.
    True when the session's scheduling group was lowered too.

    `os.nice` alone is not enough where the kernel groups tasks by session (autogroup, the
    default on desktop Linux and on these machines): nice then weighs a task only against the
    tasks of its own session, and every service ocsim starts runs in a session of its own, so a
    collector at nice 19 still took a full share of a core from the edge beside it. A session's
    group has a nice value of its own, /proc/self/autogroup, which a process may raise without
    privilege. It is raised only when this process leads its session (as under `ocsim up`, the
    demo, the chaos runner): started from a shell, the group is the shell's and is left alone."""
    os.nice(nice)
    if os.getsid(0) != os.getpid():
        return False
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:  # no autogroup (not Linux, or a kernel built without it): os.nice holds
        return False
    return True


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parse_service_args(parser, "pipeline", argv)
    if not 1 <= args.replicas <= 5:
        parser.error("--replicas must be 1..5")
    if not 0 <= args.nice <= 19:
        parser.error("--nice must be 0..19")
    parquet = args.parquet_dir or str(Path(args.db).parent / "parquet")
    if args.nice:
        _lower_priority(args.nice)

    async def make() -> web.Application:
        store = EventStore(args.db, parquet_dir=parquet)
        return build_app(args.events, store, settings=StreamSettings(replicas=args.replicas),
                         roll_interval=args.roll_interval)

    print(f"pipeline: {args.events} -> {args.db}", file=sys.stderr)
    return run_app(make, args.host, args.port, service="pipeline", access_log=args.access_log,
                   log_level=args.log_level)
