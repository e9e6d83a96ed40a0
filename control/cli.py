"""`ocsim control`: run the control plane.

Secrets (operator token, fleet secret, token keyring) come from flags or environment
(`OCSIM_CONTROL_OPERATOR_TOKEN`, ...) or are generated on first start into --state-dir
and reused after; none is ever built in.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from common.auth import load_or_create_secret
from common.cli_args import HelpFormatter, port
from common.config import parse_service_args
from common.content import Catalog, load_catalog
from common.errors import OcsimError
from common.service import run_app
from common.tokens import Keyring
from control.app import ControlConfig, build_app
from control.topology import Topology, TopologyError, load_topology


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim control", description="Run the ocsim control plane.",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="TOML file; its [control] table sets defaults for these flags")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8090, help="0 = ephemeral")
    p.add_argument("--state-dir", default=".ocsim/control", help="generated secrets and the default database")
    p.add_argument("--db", help="SQLite file (default: <state-dir>/control.db)")
    p.add_argument("--topology", help="TOML file with [isps.NAME] prefixes = [...]")
    p.add_argument("--origin", help="origin URL; the catalog is loaded from its /v1/catalog at start")
    p.add_argument("--catalog", help="catalog JSON/TOML file (merged into the stored catalog)")
    p.add_argument("--operator-token", help="bearer token for operator endpoints (default: generated); "
                   "prefer --config or OCSIM_CONTROL_OPERATOR_TOKEN, argv shows in ps")
    p.add_argument("--fleet-secret", help="hex secret the per-edge keys derive from (default: generated); "
                   "prefer --config or OCSIM_CONTROL_FLEET_SECRET, argv shows in ps")
    p.add_argument("--token-key", help="URL token keys kid:hex[,kid:hex]; the first signs (default: generated)")
    p.add_argument("--token-ttl", type=int, default=3600, help="seconds a play URL stays valid")
    p.add_argument("--steer-to-origin", action="store_true",
                   help="offer the origin as the last candidate (and when no edge is available)")
    p.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds between edge heartbeats")
    p.add_argument("--fill-bandwidth-bps", type=int, default=100_000_000,
                   help="default fill cap per plan in bit/s (0 = none)")
    p.add_argument("--plan-timeout", type=float, default=120.0,
                   help="fail a fill plan whose edge has been gone this many seconds")
    p.add_argument("--origin-wait", type=float, default=10.0, help="seconds to retry the origin's catalog")
    p.add_argument("--max-candidates", type=int, default=4, help="edges ranked in one play answer")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log one line per request")
    p.add_argument("--events", default="", metavar="nats://HOST:PORT",
                   help="publish steer.play and job.progress events to NATS JetStream")
    p.add_argument("--pipeline", default="", metavar="URL",
                   help="the event collector's read API (ocsim pipeline): the dashboard draws its time series, "
                        "and pre-position jobs value files by the bytes they streamed there (else by the catalog)")
    p.add_argument("--popularity-window", type=float, default=86_400.0, metavar="SECONDS",
                   help="how far back a job looks in the pipeline for what streamed (1 s to 7 days)")
    p.add_argument("--pin-headroom", type=float, default=0.0, metavar="FRACTION",
                   help="share of each edge a pre-position job leaves unpinned, for what is new (0 to <1)")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return p


def make_config(args: argparse.Namespace) -> ControlConfig:
    state = Path(args.state_dir)
    operator_token = args.operator_token or load_or_create_secret(state, "operator_token", 24)
    fleet_hex = args.fleet_secret or load_or_create_secret(state, "fleet_secret", 32)
    try:
        fleet_secret = bytes.fromhex(fleet_hex)
    except ValueError:
        raise ValueError("--fleet-secret must be hex") from None
    keyring = Keyring.parse(args.token_key or "k1:" + load_or_create_secret(state, "token_key", 32))
    topology = load_topology(args.topology) if args.topology else Topology()
    catalog: Catalog | None = load_catalog(args.catalog) if args.catalog else None
    if args.token_ttl <= 0 or args.heartbeat_interval <= 0 or args.plan_timeout <= 0 or args.max_candidates < 1:
        raise ValueError("--token-ttl, --heartbeat-interval, --plan-timeout and --max-candidates must be positive")
    return ControlConfig(
        db_path=Path(args.db) if args.db else state / "control.db",
        operator_token=operator_token, fleet_secret=fleet_secret, keyring=keyring,
        token_ttl_s=args.token_ttl, topology=topology, origin_url=args.origin, catalog=catalog,
        steer_to_origin=args.steer_to_origin, heartbeat_interval_s=args.heartbeat_interval,
        plan_timeout_s=args.plan_timeout, fill_bandwidth_bps=max(0, args.fill_bandwidth_bps),
        origin_wait_s=args.origin_wait, max_candidates=args.max_candidates, events=args.events,
        pipeline_url=pipeline_url(args.pipeline), popularity_window_s=args.popularity_window,
        pin_headroom=args.pin_headroom,
    )


def pipeline_url(value: str) -> str:
    """--pipeline: an http(s) URL with a host, or nothing."""
    if not value:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"--pipeline must be an http(s)://HOST:PORT URL, not {value[:80]!r}")
    return value.rstrip("/")


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parse_service_args(parser, "control", argv)
    try:
        config = make_config(args)
    except TopologyError as exc:
        parser.error(str(exc))
    except (OcsimError, ValueError, OSError) as exc:
        parser.error(str(getattr(exc, "reason", exc)))
    if args.steer_to_origin and not args.origin:
        parser.error("--steer-to-origin needs --origin")

    async def make() -> web.Application:
        return build_app(config)

    where = f" (operator token in {args.state_dir}/operator_token)" if not args.operator_token else ""
    print(f"control: db {config.db_path}{where}", file=sys.stderr)
    try:
        return run_app(make, args.host, args.port, service="control", access_log=args.access_log,
                       log_level=args.log_level)
    except OcsimError as exc:  # at startup: the origin's catalog unreachable, a bad database
        print(f"ocsim control: {exc.reason}", file=sys.stderr)
        return 1
