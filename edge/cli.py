"""`ocsim edge`: run one edge cache node."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from common.auth import load_or_create_secret
from common.cli_args import HelpFormatter, port
from common.config import parse_service_args
from common.service import ON_LISTENING, run_app
from common.sizes import parse_size
from common.tokens import Keyring
from edge.policy import DEFAULT_POLICY, POLICIES



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim edge", description="Run an ocsim edge cache node.",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="TOML file; its [edge] table sets defaults for these flags")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8100, help="0 = ephemeral")
    p.add_argument("--id", dest="id", default="edge-1", help="edge id (also names it in Cache-Status)")
    p.add_argument("--isp", default="-", help="the ISP this edge serves (a name of the topology)")
    p.add_argument("--upstream", default="http://127.0.0.1:8000", help="origin (or parent cache) base URL")
    p.add_argument("--cache-dir", default=".ocsim/edge-1/cache", help="directory of the disk cache")
    p.add_argument("--capacity", default="1GiB", help="byte budget of the disk cache (SIZE)")
    p.add_argument("--control", default="", help="control plane base URL (register + heartbeat)")
    p.add_argument("--peer", action="append", default=[], metavar="URL",
                   help="peer edge to try (only-if-cached) before the upstream; repeat or comma-separate")
    p.add_argument("--policy", default=DEFAULT_POLICY, choices=POLICIES, help="eviction policy")
    p.add_argument("--token-key", default="", help="kid:hex[,kid:hex]; when set, content needs /t/{token}/")
    p.add_argument("--edge-key", default="", help="hex key shared with the control plane (needed with --control); a secret: "
                   "prefer edge_key in --config or OCSIM_EDGE_EDGE_KEY, argv shows in ps")
    p.add_argument("--operator-token", default="", help="bearer token for /admin (default: generated into --state-dir); "
                   "prefer --config or OCSIM_EDGE_OPERATOR_TOKEN, argv shows in ps")
    p.add_argument("--fault-api", action="store_true",
                   help="serve /faults (disk full, read errors, corrupt objects, clock skew) for chaos "
                        "experiments; off by default; needs the fault token (edge/faults.py)")
    p.add_argument("--fault-token", default="", help="bearer token for /faults (default: generated into "
                   "--state-dir/fault_token); prefer fault_token in --config or OCSIM_EDGE_FAULT_TOKEN")
    p.add_argument("--state-dir", default="", help="secrets live here (default: <cache-dir>.state)")
    p.add_argument("--fill-timeout", type=float, default=10.0,
                   help="seconds allowed to connect, to get headers, and between body reads of a fill")
    p.add_argument("--hot-bytes", default="64MiB", help="RAM tier for small objects (SIZE, 0 = off)")
    p.add_argument("--scrub-rate", default="8MiB",
                   help="bytes per second the background scrubber re-verifies on disk (SIZE, 0 = off)")
    p.add_argument("--scrub-interval", type=float, default=600.0,
                   help="seconds from the start of one scrub pass over the cache to the next (0 = back to back): "
                        "a pass re-reads every object once; between passes the scrubber reads nothing")
    p.add_argument("--public-url", default="", help="URL the control plane should hand out (default: the bound URL)")
    p.add_argument("--heartbeat-interval", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds to drain in-flight requests on SIGTERM")
    p.add_argument("--no-fast-lane", dest="fast_lane", action="store_false",
                   help="answer every request through aiohttp (no fast lane for plain GETs of RAM objects)")
    p.add_argument("--events", default="", metavar="nats://HOST:PORT",
                   help="publish edge.request/fill/evict events to NATS JetStream (comma-separate a cluster)")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log one line per request")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return p


def _peers(values: Sequence[str] | str) -> tuple[str, ...]:
    items = [values] if isinstance(values, str) else list(values)
    return tuple(p.strip() for v in items for p in v.split(",") if p.strip())


def main(argv: Sequence[str]) -> int:
    from edge.server import EdgeConfig, EdgeNode  # aiohttp only once the flags are good

    parser = build_parser()
    args = parse_service_args(parser, "edge", argv)
    try:
        capacity = parse_size(args.capacity)
        hot_bytes = parse_size(args.hot_bytes)
        scrub_rate = parse_size(args.scrub_rate)
        if not 0 <= args.scrub_interval <= 30 * 86400:
            raise ValueError("--scrub-interval must be 0..2592000 seconds")
        keyring = Keyring.parse(args.token_key) if args.token_key else None
        edge_key = bytes.fromhex(args.edge_key) if args.edge_key else b""
    except ValueError as exc:
        parser.error(str(exc))
    if args.control and not edge_key:
        parser.error("--control needs --edge-key (the key the control plane derives for this edge)")
    if args.fill_timeout <= 0:
        parser.error("--fill-timeout must be > 0")
    state_dir = args.state_dir or str(Path(args.cache_dir).resolve()) + ".state"
    token = args.operator_token or load_or_create_secret(state_dir, "operator_token", 24)
    config = EdgeConfig(
        edge_id=args.id, isp=args.isp, upstream=args.upstream, cache_dir=args.cache_dir, capacity=capacity,
        operator_token=token, policy=args.policy, peers=_peers(args.peer), fill_timeout=args.fill_timeout,
        hot_bytes=hot_bytes, control=args.control, edge_key=edge_key, public_url=args.public_url,
        heartbeat_interval=args.heartbeat_interval, fast_lane=args.fast_lane, events=args.events,
        scrub_bytes_per_s=scrub_rate, scrub_interval_s=args.scrub_interval)
    if not args.operator_token:
        print(f"edge {args.id}: operator token in {state_dir}/operator_token", file=sys.stderr)
    fault_token = ""
    if args.fault_api:
        fault_token = args.fault_token or load_or_create_secret(state_dir, "fault_token", 24)
        print(f"edge {args.id}: fault API on; its token in {state_dir}/fault_token"
              if not args.fault_token else f"edge {args.id}: fault API on", file=sys.stderr)

    async def make() -> web.Application:
        node = EdgeNode(config, keyring)
        if fault_token:
            from edge.faults import EdgeFaults
            EdgeFaults(node, fault_token).install(node.app)  # before the content catch-all route
        app = await node.start()
        app[ON_LISTENING].append(node.on_listening)  # the agent must learn the bound port
        return app

    return run_app(make, args.host, args.port, service="edge", access_log=args.access_log,
                   log_level=args.log_level, shutdown_timeout=args.shutdown_timeout)
