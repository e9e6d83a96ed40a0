"""`ocsim origin`: run one origin server."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from common.auth import load_or_create_secret
from common.cli_args import HelpFormatter, port
from common.config import parse_service_args
from common.content import Catalog, default_catalog, load_catalog
from common.errors import OcsimError
from common.service import run_app
from origin.app import build_app
from origin.link import LinkSettings, parse_rate
from origin.media import MediaLibrary, catalog_with_media, load_media_library


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim origin", description="Run an ocsim origin server.",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", help="TOML file; its [origin] table sets defaults for these flags")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    p.add_argument("--port", type=port, default=8000, help="0 = ephemeral")
    p.add_argument("--catalog", help="catalog JSON/TOML file (default: 200 built-in titles)")
    p.add_argument("--media", help="media directory of `ocsim package`: its titles are served beside the catalog")
    p.add_argument("--media-only", action="store_true", help="serve only the packaged titles of --media")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added time to first byte")
    p.add_argument("--bandwidth", default="0", help="per-response cap in bits/s, e.g. 200Mbit or 25MB/s (bytes) (0 = none)")
    p.add_argument("--total-bandwidth", default="0", help="cap over all responses (the uplink), e.g. 1Gbit (0 = none)")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of content requests answered 503")
    p.add_argument("--down", choices=("off", "503", "refuse"), default="off",
                   help="start broken: answer 503, or refuse connections")
    p.add_argument("--seed", type=int, default=None, help="seed for injected errors")
    p.add_argument("--admin-token", default=os.environ.get("OCSIM_ORIGIN_ADMIN_TOKEN"),
                   help="bearer token for /admin (default: generated into --state-dir); "
                   "prefer --config or OCSIM_ORIGIN_ADMIN_TOKEN, argv shows in ps")
    p.add_argument("--state-dir", default=".ocsim/origin", help="generated secrets live here")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log one line per request")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parse_service_args(parser, "origin", argv)
    try:
        if args.media_only and not args.media:
            parser.error("--media-only needs --media DIR")
        catalog: Catalog = (Catalog() if args.media_only else
                            load_catalog(args.catalog) if args.catalog else default_catalog())
        media: MediaLibrary | None = load_media_library(args.media) if args.media else None
        if media is not None:
            catalog = catalog_with_media(catalog, media)
        link = LinkSettings(latency_ms=args.latency_ms, bandwidth_bps=parse_rate(args.bandwidth),
                            total_bandwidth_bps=parse_rate(args.total_bandwidth),
                            error_rate=args.error_rate, down=args.down)
    except (OcsimError, ValueError, OSError) as exc:
        parser.error(str(getattr(exc, "reason", exc)))
    token = args.admin_token or load_or_create_secret(args.state_dir, "admin_token", 24)

    async def make() -> web.Application:
        return build_app(catalog, link, token, args.seed, media)

    if media is not None:
        for name, why in media.refused.items():
            print(f"origin: refusing packaged title {name}: {why}", file=sys.stderr)
        print(f"origin: {len(media.titles)} packaged titles from {args.media}", file=sys.stderr)
    print(f"origin: {len(catalog)} titles; admin token in {args.state_dir}/admin_token"
          if not args.admin_token else f"origin: {len(catalog)} titles", file=sys.stderr)
    return run_app(make, args.host, args.port, service="origin", access_log=args.access_log,
                   log_level=args.log_level)
