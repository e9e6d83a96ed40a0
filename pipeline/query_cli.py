"""`ocsim query "SELECT ..." | --view NAME`: read the event store.

Against a running collector (`--url`, the default when no `--db` is given) the query goes
to its read API; with `--db FILE` (one or more: collectors sharing a stream) the stores
are opened read-only here. Prints a table, or JSON with `--json`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from pipeline.query import BadQuery, QueryResult, check_readonly, open_readonly, run
from pipeline.views import VIEWS, parse_since, view_sql

DEFAULT_URL = os.environ.get("OCSIM_PIPELINE", "http://127.0.0.1:8300")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim query", description="Query the ocsim event store (read-only).")
    p.add_argument("sql", nargs="?", help="one SELECT statement")
    p.add_argument("--view", choices=sorted(VIEWS), help="a named view instead of SQL")
    p.add_argument("--since", default=None, help="views: epoch seconds or a window (90s, 5m, 1h); default 5m")
    p.add_argument("--db", action="append", default=[], help="a DuckDB store to open read-only (repeatable)")
    p.add_argument("--url", default=DEFAULT_URL, help="a running collector's read API")
    p.add_argument("--json", action="store_true", help="print {columns, rows} as JSON")
    p.add_argument("--list", action="store_true", help="list the named views")
    return p


def _via_api(url: str, sql: str | None, view: str | None, since: str | None) -> dict[str, Any]:
    base = url.rstrip("/")
    if view:
        req = urllib.request.Request(f"{base}/v1/views/{view}" + (
            "?" + urllib.parse.urlencode({"since": since}) if since else ""))
    else:
        req = urllib.request.Request(f"{base}/v1/query", data=json.dumps({"sql": sql}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", str(exc))
        except ValueError:
            reason = str(exc)
        raise BadQuery(reason) from None


def _local(paths: Sequence[str], sql: str | None, view: str | None, since: str | None) -> dict[str, Any]:
    con = open_readonly(paths)
    try:
        if view:
            text = view_sql(view)
            params = {"since": parse_since(since, time.time())} if "$since" in text else None
            res: QueryResult = run(con, text, params)
        else:
            assert sql is not None
            check_readonly(con, sql)
            res = run(con, sql)
    finally:
        con.close()
    return res.to_json()


def format_table(columns: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.6g}"
        return "" if v is None else str(v)
    cells = [[cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.list:
        for name, v in VIEWS.items():
            print(f"{name:<18} {v.help}")
        return 0
    if bool(args.sql) == bool(args.view):
        parser.error("give either SQL or --view NAME")
    try:
        out = (_local(args.db, args.sql, args.view, args.since) if args.db
               else _via_api(args.url, args.sql, args.view, args.since))
    except BadQuery as exc:
        print(f"ocsim query: {exc.reason}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"ocsim query: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"columns": out["columns"], "rows": out["rows"]}))
    else:
        print(format_table(out["columns"], out["rows"]))
    return 0
