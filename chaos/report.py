"""report.html of one chaos experiment: the verdict, the timeline of faults and both cohorts'
metrics as charts. Pure: a function of the report dict `chaos.runner.run_experiment` returns
(the same one written as report.json); the SVG charts are ocsim.report's.
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ocsim.report import CSS, line_chart

COHORTS = ("control", "experiment")


def _e(x: Any) -> str:
    return html.escape(str(x))


def _fault_markers(r: Mapping[str, Any]) -> list[tuple[float, str]]:
    out = []
    for ev in r["timeline"]:
        if ev.get("move") in ("begin", "end"):
            out.append((float(ev["t"]), f"{ev['kind']} {ev['move']}"))
        elif ev.get("move") == "abort":
            out.append((float(ev["t"]), "abort"))
    return out


def _series(r: Mapping[str, Any], field: str) -> dict[str, list[tuple[float, float]]]:
    return {c: [(float(s["t"]), float(s[field])) for s in r["samples"] if s["cohort"] == c] for c in COHORTS}


def _startup_series(r: Mapping[str, Any]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for c in COHORTS:
        pts = []
        for s in sorted((s for s in r["sessions"] if s.get("cohort") == c), key=lambda s: s["started_at_s"]):
            v = s.get("startup_s")
            if v is not None and math.isfinite(v):
                pts.append((float(s["started_at_s"]), float(v)))
        out[c] = pts
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.3g}"
    return "-" if x is None else str(x)


def _rows(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(r: Mapping[str, Any]) -> str:
    outcome = str(r["outcome"])
    markers = _fault_markers(r)
    n = {c: sum(1 for s in r["sessions"] if s.get("cohort") == c) for c in COHORTS}
    cards = [
        ("verdict", outcome.upper(), "good" if outcome == "pass" else "bad"),
        ("control sessions", str(n["control"]), ""),
        ("experiment sessions", str(n["experiment"]), ""),
        ("aborted", "yes" if r["aborted"] else "no", "bad" if r["aborted"] else ""),
        ("wall time", f"{r['wall_s']:.0f} s", ""),
    ]
    card_html = "".join(f'<div class="card {cls}"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for k, v, cls in cards)
    verdicts = _rows(["metric", "outcome", "p", "control median", "experiment median", "n control", "n experiment"],
                     [[v["metric"], v["outcome"], v["p"], v["control_median"], v["experiment_median"],
                       v["n_control"], v["n_experiment"]] for v in r["verdicts"]])
    test = r["verdicts"][0]["test"] if r["verdicts"] else ""
    timeline = _rows(["t (s)", "move", "fault", "target", "made as / reason"],
                     [[ev["t"], ev["move"], ev.get("kind", ""), ev.get("target", ""),
                       ev.get("made_as") or ev.get("reason") or ev.get("count", "")]
                      for ev in r["timeline"] if ev.get("move") != "corrupted"])
    charts = [
        ("Stream starts per second (last 4 s)", line_chart(_series(r, "sps"), xlabel="experiment time (s)",
                                                           ylabel="starts / s", markers=markers)),
        ("Failed sessions (cumulative)", line_chart(_series(r, "failed"), xlabel="experiment time (s)",
                                                    ylabel="sessions", markers=markers)),
        ("Start-up time per session, by start", line_chart(_startup_series(r), xlabel="session start (s)",
                                                           ylabel="start-up (player s)", markers=markers)),
        ("Sessions finished (cumulative)", line_chart(_series(r, "sessions"), xlabel="experiment time (s)",
                                                      ylabel="sessions", markers=markers)),
    ]
    panels = "".join(f'<div class="panel"><h3>{_e(t)}</h3>{c}</div>' for t, c in charts)
    effects = r.get("fault_effects") or {}
    effect_keys = ["disk_full", "read_errors", "clock_skew_s", "writes_refused", "reads_refused", "corrupted",
                   "corrupt_detected", "cut_short"]
    effects_html = ("<h2>What the faulted edges saw (their /faults at the end)</h2>"
                    + _rows(["edge", *effect_keys], [[e, *[v.get(k) for k in effect_keys]]
                                                     for e, v in sorted(effects.items())])) if effects else ""
    aborted = f"<p><b>Aborted:</b> {_e(r['aborted'])}</p>" if r["aborted"] else ""
    undo = (f"<p><b>Could not undo:</b> {_e('; '.join(r['undo_errors']))}</p>" if r.get("undo_errors") else "")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>ocsim chaos: {_e(r['scenario'])}</title><style>{CSS}</style></head><body><main>
<h1>Chaos experiment {_e(r['scenario'])}: {_e(outcome.upper())}</h1>
<p class="sub">{_e(r.get('description', ''))} Seed {_e(r['seed'])}, {_e(r['duration_s'])} s;
experiment failover {'on' if r.get('experiment_failover', True) else 'OFF'}.
Metrics from {_e(r.get('metrics_source_detail') or r['metrics_source'])}.</p>
<div class="cards">{card_html}</div>{aborted}{undo}
<h2>Verdict per metric</h2>{verdicts}<p class="sub">Test: {_e(test)}; a metric fails when the
experiment cohort is significantly worse than the control cohort moved by the allowed margin.</p>
<h2>Timeline</h2><div class="grid">{panels}</div>
<h2>Faults and abort</h2>{timeline}{effects_html}
</main></body></html>
"""
