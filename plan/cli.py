"""`ocsim plan FILE [--validate]`: from an audience and targets to a topology, and a live check.

1. Read and validate the plan (`plan.inputs`); an error names the field, exit 2.
2. Print the back-of-envelope derivation (`plan.envelope`), every number with its formula.
3. Generate the scaled synthetic day (`plan.workload`) and search the candidates in the
   simulator (`plan.search`); print each, then the cheapest that meets every target, or
   which targets fail and what would meet them (exit 1, no topology written).
4. Write OUT/curves.csv, OUT/curves.png, OUT/topology.toml (+ OUT/catalog.json), read
   back with `ocsim up`'s own loader, and OUT/plan.json.
5. `--validate`: run the chosen topology scaled down to this machine (`plan.validate`)
   and print predicted vs measured offload, hit ratio and origin egress.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.cli_args import HelpFormatter
from plan.envelope import envelope
from plan.inputs import PlanError, PlanInputs, load_plan
from plan.search import SearchResult, search
from plan.workload import Scale, make_day

__all__ = ["build_parser", "main"]


def say(msg: str) -> None:
    print(msg, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim plan", formatter_class=HelpFormatter,
                                description="From an audience, a catalog and targets to a topology: the "
                                            "back-of-envelope derivation, a simulated search, a topology file for "
                                            "`ocsim up`, and (--validate) a live check of the simulator.")
    p.add_argument("file", help="plan TOML (see plans/example.toml)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the file, e.g. --set targets.offload=0.95 --set audience.isps.isp-a=50000")
    p.add_argument("--out", help="directory for curves.csv/png, topology.toml, plan.json "
                                 "(default: plans/out/<file stem>)")
    p.add_argument("--validate", action="store_true",
                   help="run the chosen topology scaled down to this machine and compare with the simulator")
    p.add_argument("--validate-titles", type=int, default=24, help="--validate: titles in the scaled catalog")
    p.add_argument("--validate-requests", type=int, default=4000, help="--validate: segment requests (about)")
    p.add_argument("--validate-time-factor", type=float, default=30.0,
                   help="--validate: durations and watch times divided by this")
    p.add_argument("--validate-seconds", type=float, default=90.0,
                   help="--validate: the day's session starts are spread over this many seconds")
    p.add_argument("--quiet", action="store_true", help="do not list every candidate")
    return p


def describe_inputs(p: PlanInputs) -> list[str]:
    a, c, lad, t, e = p.audience, p.catalog, p.ladder, p.targets, p.edge
    return [
        "audience: " + ", ".join(f"{isp} {v:,} peak viewers" for isp, v in a.peak_viewers.items())
        + f"; daily curve +-{a.daily_amplitude:.0%} around the mean, peak at {a.peak_hour:g}h; "
          f"mean watch {a.mean_watch_minutes:g} min",
        f"catalog: {c.titles:,} titles of {c.mean_duration_minutes:g} min mean, Zipf alpha {c.alpha:g}, "
        f"{c.new_releases_per_day} new releases a day (x{c.release_boost:g} the top title at launch, "
        f"half-life {c.release_half_life_hours:g} h)",
        "ladder: " + ", ".join(f"{k} kbit/s {s:.0%}" for k, s in zip(lad.kbps, lad.share))
        + f" (mean {lad.mean_kbps:,.0f} kbit/s)",
        f"targets: offload >= {t.offload:.1%}, start-up p90 <= {t.startup_p90_s:g} s, rebuffer ratio <= "
        f"{t.rebuffer_ratio:g}, origin egress <= {t.origin_egress_cap_bps / 1e9:g} Gbit/s",
        f"edges: NIC {e.nic_bps / 1e9:g} Gbit/s at <= {e.max_utilization:.0%}; disks "
        + ", ".join(f"{o.disk_bytes / 1e12:g} TB (cost {o.cost:g})" for o in e.options)
        + f"; policies {', '.join(e.policies)}; fill windows {', '.join(e.fill_windows)} at {e.fill_share:.0%} "
          f"of the NIC; pre-position {e.preposition_share:.0%} of each disk",
    ]


def summary(result: SearchResult) -> dict[str, Any]:
    def ev_dict(ev: Any) -> dict[str, Any]:
        return {"choice": ev.choice.describe(), "cost": ev.choice.cost, "offload": ev.offload,
                "hit_ratio": ev.hit_ratio, "origin_peak_bps": ev.origin_peak_bps, "startup_p90_s": ev.startup_p90_s,
                "rebuffer_ratio": ev.rebuffer_ratio, "failures": ev.failures,
                "isps": {isp: {"edges": r.edges, "offload": r.offload, "hit_ratio": r.hit_ratio, "top": r.top,
                               "startup_p90_s": r.startup_p90()} for isp, r in ev.runs.items()}}
    return {"best": ev_dict(result.best) if result.best else None, "shortfalls": result.shortfalls,
            "elapsed_s": result.elapsed_s, "complete": result.complete, "min_edges": result.min_edges,
            "candidates": [ev_dict(e) for e in result.evaluated]}


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        p = load_plan(args.file, args.set)
    except PlanError as exc:
        print(f"ocsim plan: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("plans/out") / Path(args.file).stem
    say("== inputs ==")
    for line in describe_inputs(p):
        say("  " + line)
    say("\n== back of envelope ==")
    for section, figs in envelope(p).items():
        say(f"  {section}:")
        for f in figs:
            say("    " + f.line())

    t0 = time.monotonic()
    day = make_day(p, Scale(p.sim.titles, p.sim.requests, p.sim.time_factor, p.sim.warmup))
    say(f"\n== simulated search ==\n  scale: {p.sim.titles} titles (catalog and disks / {day.catalog_factor:g}), "
        f"durations and watch / {p.sim.time_factor:g}, {len(day.sessions):,} sessions = {day.requests:,} segment "
        f"requests (seed {p.sim.seed}; {'after a warm-up day; ' if p.sim.warmup else ''}generated in {time.monotonic() - t0:.1f} s)")
    result = search(p, day, progress=None if args.quiet else (lambda m: say("  " + m)))
    say(f"  {len(result.evaluated)} candidates, {len(result.runs)} replays in {result.elapsed_s:.1f} s")
    csv_path, png_path = __import__("plan.output", fromlist=["write_curves"]).write_curves(
        result, result.best, out, p.targets.offload)
    say(f"  curves: {csv_path}, {png_path}")
    report: dict[str, Any] = {"plan": str(args.file), "search": summary(result)}
    if result.best is None:
        say("\n== targets not met ==")
        for s in result.shortfalls:
            say("  " + s)
        say("  no topology written (the plan would not meet its targets)")
        (out / "plan.json").write_text(json.dumps(report, indent=2) + "\n")
        return 1
    from ocsim.topology import load_topology
    from plan.output import topology_for, write_topology
    best = result.best
    full = make_day(p, Scale(p.catalog.titles, 0, 1.0))
    catalog_file = out / "catalog.json"
    catalog_file.write_text(json.dumps(full.catalog.to_json()) + "\n")
    topo_path = write_topology(topology_for(p, best, catalog_file), out / "topology.toml")
    loaded = load_topology(topo_path)  # `ocsim up`'s own loader: what it reads is what it runs
    say("\n== chosen ==")
    say(f"  {best.choice.describe()}  (cost {best.choice.cost:g})")
    say(f"  predicted: offload {best.offload:.1%}, hit ratio {best.hit_ratio:.1%}, origin egress at peak "
        f"{best.origin_peak_bps / 1e9:.2f} Gbit/s, start-up p90 {best.startup_p90_s:.2f} s, rebuffer ratio "
        f"{best.rebuffer_ratio:.4f}")
    for isp, r in best.runs.items():
        say(f"    {isp}: {r.edges} edges, offload {r.offload:.1%}, hit ratio {r.hit_ratio:.1%}, {r.top} files "
            f"pre-positioned, start-up p90 {r.startup_p90():.2f} s")
    say(f"  topology: {topo_path} ({len(loaded.edges)} edges; `ocsim up --topology {topo_path}`)")
    if args.validate:
        from plan.validate import ValidateOptions, validate
        opts = ValidateOptions(titles=args.validate_titles, requests=args.validate_requests,
                               time_factor=args.validate_time_factor, seconds=args.validate_seconds)
        say("\n== validation (live, scaled down to this machine) ==")
        try:
            report["validation"] = validate(p, best, opts, out, say)
        except RuntimeError as exc:
            print(f"ocsim plan: validation failed: {exc}", file=sys.stderr)
            (out / "plan.json").write_text(json.dumps(report, indent=2) + "\n")
            return 1
    (out / "plan.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0
