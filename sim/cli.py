"""``ocsim sim``: replay a trace (from a file or generated) through the edge's policies."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edge.policy import DEFAULT_POLICY, POLICIES
from sim.mrc import miss_ratio_curve, write_mrc
from sim.replay import BELADY, replay
from sim.sizes import parse_size
from sim.steering import assign_edges
from sim.trace import Trace, TraceFormatError, read_trace, write_trace
from sim.workload import SessionWorkload, session_trace, zipf_trace

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocsim sim",
        description="Offline trace-driven replay through the edge's eviction policies. "
                    "Without --trace a synthetic trace is generated (--synthetic).")
    src = parser.add_argument_group("trace")
    src.add_argument("--trace", help="CSV file: timestamp,object_id,size_bytes (header line)")
    src.add_argument("--synthetic", choices=("sessions", "zipf"), default="sessions",
                     help="generator used when no --trace is given (default: sessions)")
    src.add_argument("--requests", type=int, default=200_000, help="synthetic: number of requests")
    src.add_argument("--alpha", type=float, default=None,
                     help="synthetic: Zipf exponent (default 0.8 for zipf, 0.9 for sessions)")
    src.add_argument("--objects", type=int, default=100_000, help="zipf: catalog size (objects)")
    src.add_argument("--object-size", default="4000", help="zipf: SIZE of every object")
    src.add_argument("--titles", type=int, default=500, help="sessions: catalog size (titles)")
    src.add_argument("--new-releases", type=int, default=5, help="sessions: titles launched during the trace")
    src.add_argument("--seed", type=int, default=0)
    src.add_argument("--write-trace", metavar="FILE", help="write the trace replayed to FILE (CSV)")
    run = parser.add_argument_group("replay")
    run.add_argument("--cache-size", default="5%",
                     help="SIZE per edge: bytes, KB..TB, KiB..TiB, or N%% of the trace's unique bytes "
                          "(default 5%%)")
    run.add_argument("--policies", help=f"comma list from {','.join(POLICIES + (BELADY,))} "
                                        f"(default: lru,{BELADY},{DEFAULT_POLICY})")
    run.add_argument("--edges", type=int, default=1, help="edges sharing the load (title-hashed)")
    run.add_argument("--preposition", type=float, default=0.0, metavar="FRACTION",
                     help="also replay with the top objects pinned up to FRACTION of each cache")
    run.add_argument("--mrc-out", metavar="DIR", help="write mrc.csv and mrc.png over cache sizes")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def load_trace(args: argparse.Namespace) -> Trace:
    if args.trace:
        return read_trace(args.trace)
    if args.synthetic == "zipf":
        alpha = 0.8 if args.alpha is None else args.alpha
        return zipf_trace(args.objects, args.requests, alpha, parse_size(args.object_size), seed=args.seed)
    alpha = 0.9 if args.alpha is None else args.alpha
    return session_trace(SessionWorkload(titles=args.titles, requests=args.requests, alpha=alpha,
                                         new_releases=args.new_releases, seed=args.seed))


def run(args: argparse.Namespace) -> dict[str, Any]:
    trace = load_trace(args)
    if args.write_trace:
        write_trace(trace, args.write_trace)
    policies = (args.policies.split(",") if args.policies
                else list(dict.fromkeys(["lru", BELADY, DEFAULT_POLICY])))
    for name in policies:
        if name not in POLICIES and name != BELADY:
            raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES + (BELADY,))}")
    unique_bytes = trace.unique_bytes
    capacity = parse_size(args.cache_size, percent_of=unique_bytes)
    assignment = assign_edges(trace.keys, args.edges)
    report: dict[str, Any] = {
        "default": DEFAULT_POLICY,
        "trace": {"source": args.trace or f"synthetic:{args.synthetic}", "requests": len(trace),
                  "unique_objects": len(trace.object_sizes()), "unique_bytes": unique_bytes,
                  "requested_bytes": trace.requested_bytes},
        "cache_size_bytes": capacity,
        "edges": args.edges,
        "steering": "rendezvous order of the title over edge ids (sim.steering, control.steering.hrw_order)",
        "policies": {},
    }
    for name in policies:
        result = replay(trace, name, capacity, args.edges, assignment=assignment).to_dict()
        if args.preposition > 0:
            pre = replay(trace, name, capacity, args.edges, preposition=args.preposition,
                         assignment=assignment).to_dict()
            pre["fraction"] = args.preposition
            result["prepositioned"] = pre
        report["policies"][name] = result
    if args.mrc_out:
        csv_path, png_path = write_mrc(miss_ratio_curve(trace, policies, args.edges), args.mrc_out)
        report["mrc"] = {"csv": str(csv_path), "png": str(png_path)}
    return report


def format_table(report: dict[str, Any]) -> str:
    t = report["trace"]
    lines = [f"trace {t['source']}: {t['requests']} requests, {t['unique_objects']} objects, "
             f"{t['unique_bytes']} unique bytes; cache {report['cache_size_bytes']} B x "
             f"{report['edges']} edge(s); default policy {report['default']}",
             f"{'policy':<10} {'obj miss':>9} {'byte miss':>10} {'offload':>8} {'origin bytes':>15} "
             f"{'req/s':>11} {'pre byte miss':>14}"]
    for name, r in report["policies"].items():
        pre = r.get("prepositioned")
        lines.append(f"{name:<10} {r['object_miss_ratio']:>9.4f} {r['byte_miss_ratio']:>10.4f} "
                     f"{r['offload']:>8.4f} {r['origin_bytes']:>15} {r['requests_per_s']:>11.0f} "
                     f"{pre['byte_miss_ratio'] if pre else float('nan'):>14.4f}")
    if "mrc" in report:
        lines.append(f"miss-ratio curve: {report['mrc']['csv']}, {report['mrc']['png']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.edges < 1:
        parser.error("--edges must be >= 1")
    try:
        report = run(args)
    except (OSError, TraceFormatError, ValueError) as exc:
        print(f"ocsim sim: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
