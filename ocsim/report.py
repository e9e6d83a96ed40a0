"""The demo's report: numbers in, `report.json`, a text table and a self-contained HTML page out.

Pure: `build_report` takes what the demo measured (player session dicts, stats snapshots
of the origin and edges before and after the crowd, a timeline) and derives offload,
hit ratios, miss classes and the QoE distribution; `render_text` and `render_html` only
format. The HTML page has no external assets: CSS and SVG charts are inline, so the
file can be mailed or opened offline.

Definitions (the crowd phase only: counters are diffed between the snapshot taken after
pre-positioning and the one taken at the end; a killed edge's last snapshot is taken
just before it is killed):

    offload         1 - origin bytes / bytes delivered to players
    hit_ratio       hits / (hits + misses) of an edge's content requests
    byte_hit_ratio  bytes served from cache / all bytes served by the edge
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PipelineRows", "build_report", "percentile", "render_html", "render_text", "with_pipeline_figures"]

MISS_CLASSES = ("cold", "evicted", "coalesced", "peer", "stale")  # edge.metrics.MISS_CLASSES
BYTES_NOTE = ("<b>To players</b> is what the players received. <b>Served by edges</b> is what the edges sent, "
              "counted at each edge: a segment one edge fetched from a peer edge is counted at both, and a "
              "response a player gave up on (a failover) is counted at the edge but not at the player, so "
              "the two differ.")
FILL_SOURCES = ("peer", "origin")


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _dist(values: Sequence[float]) -> dict[str, float | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 4)
    return {"n": len(values), "mean": r(sum(values) / len(values)) if values else None,
            "p50": r(percentile(values, 50)), "p90": r(percentile(values, 90)),
            "p99": r(percentile(values, 99)), "max": r(max(values)) if values else None}


def _num(d: Mapping[str, Any] | None, *path: str) -> float:
    cur: Any = d or {}
    for p in path:
        if not isinstance(cur, Mapping):
            return 0.0
        cur = cur.get(p, 0)
    return float(cur) if isinstance(cur, (int, float)) and not isinstance(cur, bool) else 0.0


def edge_delta(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """What one edge did between two `/admin/stats` snapshots."""
    hits = _num(after, "hits") - _num(before, "hits")
    misses = {k: int(_num(after, "misses", k) - _num(before, "misses", k)) for k in MISS_CLASSES}
    # fills by source: `fills_by_source` (older edges said it under `misses`)
    where = "fills_by_source" if isinstance((after or {}).get("fills_by_source"), Mapping) else "misses"
    fills = {k: int(_num(after, where, k) - _num(before, where, k)) for k in FILL_SOURCES}
    from_cache = _num(after, "bytes_from_cache") - _num(before, "bytes_from_cache")
    filled = _num(after, "bytes_filled") - _num(before, "bytes_filled")
    requests = hits + sum(misses.values())
    return {
        "hits": int(hits), "misses": misses, "fills": fills, "requests": int(requests),
        "hit_ratio": round(hits / requests, 4) if requests else 0.0,
        "byte_hit_ratio": round(from_cache / (from_cache + filled), 4) if from_cache + filled else 0.0,
        "bytes_served": int(from_cache + filled), "bytes_from_cache": int(from_cache),
        "bytes_fetched": int(_num(after, "bytes_fetched") - _num(before, "bytes_fetched")),
        "used_bytes": int(_num(after, "used_bytes")), "objects": int(_num(after, "objects")),
        "fill_errors": int(_num(after, "fill_errors") - _num(before, "fill_errors")),
    }


def build_report(*, sessions: Sequence[Mapping[str, Any]], edges: Mapping[str, Mapping[str, Any]],
                 origin_before: Mapping[str, Any] | None, origin_after: Mapping[str, Any] | None,
                 settings: Mapping[str, Any], preposition: Sequence[Mapping[str, Any]] = (),
                 failure: Mapping[str, Any] | None = None, timeline: Sequence[Mapping[str, Any]] = (),
                 wall_s: float = 0.0) -> dict[str, Any]:
    """The report as a JSON-able dict.

    `sessions` are `PlayReport.to_dict()`s; `edges` maps edge id to `{"isp", "before",
    "after", "killed"}` with `/admin/stats` snapshots."""
    ok = [s for s in sessions if s.get("errors", 0) == 0 and s.get("state") == "ended"]
    failed = [s for s in sessions if s not in ok]
    player_bytes = sum(int(s.get("bytes", 0)) + int(s.get("playlist_bytes", 0)) for s in sessions)
    origin_bytes = int(_num(origin_after, "bytes") - _num(origin_before, "bytes"))
    offload = max(0.0, 1.0 - origin_bytes / player_bytes) if player_bytes else 0.0

    edge_rows: dict[str, Any] = {}
    miss_classes = dict.fromkeys(MISS_CLASSES, 0)
    fill_sources = dict.fromkeys(FILL_SOURCES, 0)
    for edge_id, e in sorted(edges.items()):
        d = edge_delta(e.get("before"), e.get("after"))
        d["isp"] = e.get("isp")
        d["killed"] = bool(e.get("killed"))
        d["player_bytes"] = sum(int(s.get("bytes_per_edge", {}).get(edge_id, 0)) for s in sessions)
        edge_rows[edge_id] = d
        for k in MISS_CLASSES:
            miss_classes[k] += d["misses"][k]
        for k in FILL_SOURCES:
            fill_sources[k] += d["fills"][k]
    hits = sum(d["hits"] for d in edge_rows.values())
    requests = sum(d["requests"] for d in edge_rows.values())

    started = [s for s in sessions if s.get("startup_s") is not None]
    by_isp: dict[str, dict[str, Any]] = {}
    for s in sessions:
        row = by_isp.setdefault(str(s.get("isp") or "-"), {"sessions": 0, "failed": 0, "bytes": 0})
        row["sessions"] += 1
        row["failed"] += s not in ok
        row["bytes"] += int(s.get("bytes", 0))
    return {
        "settings": dict(settings),
        "wall_s": round(wall_s, 2),
        "offload": round(offload, 4),
        "bytes": {"players": player_bytes, "origin": origin_bytes,
                  "edges": sum(d["bytes_served"] for d in edge_rows.values())},
        "hit_ratio": round(hits / requests, 4) if requests else 0.0,
        "sessions": len(sessions),
        "sessions_ok": len(ok),
        "sessions_failed": len(failed),
        "failures": [{"title": s.get("title"), "isp": s.get("isp"), "error": s.get("error"),
                      "error_kind": s.get("error_kind"), "state": s.get("state")} for s in failed[:20]],
        "failovers": sum(int(s.get("failovers", 0)) for s in sessions),
        "resteers": sum(int(s.get("resteers", 0)) for s in sessions),
        "failed_requests": sum(int(s.get("failed_requests", 0)) for s in sessions),
        "sessions_with_failover": sum(1 for s in sessions if s.get("failovers", 0)),
        "killed_edge": dict(failure) if failure else None,
        "qoe": {
            "startup_s": _dist([float(s["startup_s"]) for s in started]),
            "rebuffer_count": _dist([float(s.get("rebuffer_count", 0)) for s in ok]),
            "rebuffer_s": _dist([float(s.get("rebuffer_s", 0.0)) for s in ok]),
            "avg_bitrate_kbps": _dist([float(s.get("avg_bitrate_kbps", 0.0)) for s in ok]),
            "switches": _dist([float(s.get("switches", 0)) for s in ok]),
            "qoe_lin": _dist([float(s.get("qoe_lin", 0.0)) for s in ok]),
            "sessions_with_rebuffer": sum(1 for s in ok if s.get("rebuffer_count", 0)),
        },
        "edges": edge_rows,
        "miss_classes": miss_classes,
        "fill_sources": fill_sources,
        "by_isp": by_isp,
        "preposition": [dict(j) for j in preposition],
        "timeline": [dict(t) for t in timeline],
        "session_list": [{k: s.get(k) for k in ("title", "isp", "state", "startup_s", "rebuffer_count",
                                                 "rebuffer_s", "avg_bitrate_kbps", "switches", "qoe_lin",
                                                 "failovers", "bytes", "edges", "errors", "wall_s", "verified",
                                                 "media")}
                         for s in sessions],
        # players that verified: how many sessions had every byte checked (ids or digest lists)
        "verified": {"sessions": sum(1 for s in sessions if s.get("verified")),
                     "asked": sum(1 for s in sessions if s.get("verify")),
                     "media": sorted({str(s["media"]) for s in sessions if s.get("media")})},
    }


# --- the same crowd through the event pipeline ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class PipelineRows:
    """What the demo read from the pipeline for the crowd phase (rows of `/v1/query`).

    edges:    (edge, isp, hits, cold, evicted, coalesced, peer, stale, requests, bytes)
    fills:    (edge, source, fills, bytes)
    sessions: (state, errors, startup_s, rebuffer_count, rebuffer_s, avg_bitrate_kbps, switches, qoe_lin,
               bytes, isp) of every player.session `end`
    plays:    steer.play events
    """

    edges: Sequence[Sequence[Any]]
    fills: Sequence[Sequence[Any]]
    sessions: Sequence[Sequence[Any]]
    plays: int


# Figures compared exactly: each side counts the same thing once (an event per count).
EXACT = ("hits", "cold", "evicted", "coalesced", "requests", "fills.peer", "fills.origin")


def with_pipeline_figures(report: Mapping[str, Any], rows: PipelineRows,
                          sessions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The report with its headline figures taken from the pipeline's events, the services'
    own figures kept under `counters`, and `agreement`: each figure both ways.

    Exact agreement is expected for every edge that was not killed and for the sessions; a
    killed edge is compared too but not expected to agree (its counters were read just
    before the SIGKILL, and the events in its buffer at that moment are lost). Offload is
    compared within 0.02: the origin counts the bytes it sent, the edges the fills they
    finished, and a fill cut off by a failover or the kill is only in the first."""
    out = dict(report)
    killed = {e for e, d in report["edges"].items() if d.get("killed")}
    edges: dict[str, dict[str, Any]] = {}
    for edge, isp, hits, cold, evicted, coalesced, peer, stale, requests, nbytes in rows.edges:
        edges[str(edge)] = {"isp": isp, "hits": int(hits), "cold": int(cold), "evicted": int(evicted),
                            "coalesced": int(coalesced), "peer": int(peer), "stale": int(stale),
                            "requests": int(requests), "bytes": int(nbytes or 0), "fills.peer": 0,
                            "fills.origin": 0, "bytes_from_origin": 0}
    for edge, source, n, nbytes in rows.fills:
        e = edges.setdefault(str(edge), {k: 0 for k in ("hits", "cold", "evicted", "coalesced", "peer", "stale",
                                                         "requests", "bytes", "fills.peer", "fills.origin",
                                                         "bytes_from_origin")})
        if source in FILL_SOURCES:
            e[f"fills.{source}"] += int(n)
        if source == "origin":
            e["bytes_from_origin"] += int(nbytes or 0)
    agreement: list[dict[str, Any]] = []
    for edge_id, d in sorted(report["edges"].items()):
        p = edges.get(edge_id, {})
        counters = {"hits": d["hits"], **{k: d["misses"][k] for k in MISS_CLASSES},
                    "requests": d["requests"], "fills.peer": d["fills"]["peer"], "fills.origin": d["fills"]["origin"]}
        for figure in EXACT:
            a, b = int(p.get(figure, 0)), int(counters[figure])
            agreement.append({"figure": figure, "edge": edge_id, "pipeline": a, "counters": b, "equal": a == b,
                              "expected": edge_id not in killed})
    ended = list(rows.sessions)
    agreement.append({"figure": "sessions", "edge": None, "pipeline": len(ended), "counters": len(sessions),
                      "equal": len(ended) == len(sessions), "expected": True})
    p_bytes, c_bytes = sum(int(r[8] or 0) for r in ended), sum(int(s.get("bytes", 0)) for s in sessions)
    agreement.append({"figure": "session bytes", "edge": None, "pipeline": p_bytes, "counters": c_bytes,
                      "equal": p_bytes == c_bytes, "expected": True})

    served = sum(e["bytes"] for e in edges.values())
    from_origin = sum(e["bytes_from_origin"] for e in edges.values())
    offload = max(0.0, 1.0 - from_origin / served) if served else 0.0
    agreement.append({"figure": "offload", "edge": None, "pipeline": round(offload, 4),
                      "counters": report["offload"], "equal": abs(offload - report["offload"]) <= 0.02,
                      "expected": True, "tolerance": 0.02})
    hits = sum(e["hits"] for e in edges.values())
    misses = {k: sum(e[k] for e in edges.values()) for k in (*MISS_CLASSES, "peer", "stale")}
    requests = hits + sum(misses.values())
    ok = [r for r in ended if r[0] == "ended" and not r[1]]
    by_isp: dict[str, dict[str, Any]] = {}
    for r in ended:
        row = by_isp.setdefault(str(r[9] or "-"), {"sessions": 0, "failed": 0, "bytes": 0})
        row["sessions"] += 1
        row["failed"] += r not in ok
        row["bytes"] += int(r[8] or 0)
    out["counters"] = {k: report[k] for k in ("offload", "hit_ratio", "bytes", "sessions", "sessions_ok",
                                              "sessions_failed", "miss_classes", "fill_sources", "qoe", "by_isp")}
    qoe = dict(report["qoe"])
    qoe.update({
        "startup_s": _dist([float(r[2]) for r in ended if r[2] is not None]),
        "rebuffer_count": _dist([float(r[3]) for r in ok]),
        "rebuffer_s": _dist([float(r[4]) for r in ok]),
        "avg_bitrate_kbps": _dist([float(r[5]) for r in ok]),
        "switches": _dist([float(r[6]) for r in ok]),
        "qoe_lin": _dist([float(r[7]) for r in ok]),
        "sessions_with_rebuffer": sum(1 for r in ok if r[3]),
    })
    out.update({
        "source": "pipeline",
        "offload": round(offload, 4),
        "hit_ratio": round(hits / requests, 4) if requests else 0.0,
        "bytes": {**report["bytes"], "edges": served, "origin_fills": from_origin},
        "sessions": len(ended), "sessions_ok": len(ok), "sessions_failed": len(ended) - len(ok),
        "miss_classes": misses,
        "fill_sources": {k: sum(e[f"fills.{k}"] for e in edges.values()) for k in FILL_SOURCES},
        "qoe": qoe,
        "by_isp": by_isp,
        "plays": rows.plays,
        "pipeline_edges": edges,
        "agreement": agreement,
        "agrees": all(a["equal"] for a in agreement if a["expected"]),
    })
    return out


# --- text ------------------------------------------------------------------------------------

def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _f(x: Any, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
            for r in rows]


def render_text(r: Mapping[str, Any]) -> str:
    s = r["settings"]
    lines = [f"ocsim demo: {r['sessions']} sessions by {s.get('viewers')} viewers over {s.get('duration_s')} s "
             f"at speed {s.get('speed')}x; wall time {r['wall_s']:.0f} s", ""]
    lines += _table([
        ("origin offload", f"{r['offload']:.1%}",
         f"{_mb(r['bytes']['origin'])} from origin for {_mb(r['bytes']['players'])} to players"),
        ("edge hit ratio", f"{r['hit_ratio']:.1%}", "all edges, requests"),
        ("sessions ok / failed", f"{r['sessions_ok']} / {r['sessions_failed']}", "goal: 0 failed"),
        ("failovers", str(r["failovers"]),
         f"in {r['sessions_with_failover']} sessions; {r['resteers']} re-steers, "
         f"{r['failed_requests']} failed requests recovered"),
    ])
    v = r.get("verified") or {}
    if v.get("asked"):
        lines.append(f"  verified every byte in {v['sessions']} of {v['asked']} sessions "
                     f"({', '.join(v.get('media') or []) or '-'} media)")
    if r.get("killed_edge"):
        k = r["killed_edge"]
        lines.append(f"  killed {k['edge']} (SIGKILL) at t={k['at_s']:.1f} s")
    if r.get("preposition"):
        lines += ["", "pre-positioning:"]
        lines += _table([("isp", "state", "titles", "seconds")] + [
            (str(j.get("isp")), str(j.get("state")), str(len(j.get("titles", []))), _f(j.get("seconds"), "{:.1f}"))
            for j in r["preposition"]])
    lines += ["", "edges (crowd phase):"]
    rows = [("edge", "isp", "hit ratio", "byte hit", "requests", "cold", "evicted", "coalesced", "peer fills",
             "served", "")]
    for edge_id, e in r["edges"].items():
        rows.append((edge_id, str(e["isp"]), f"{e['hit_ratio']:.1%}", f"{e['byte_hit_ratio']:.1%}",
                     str(e["requests"]), str(e["misses"]["cold"]), str(e["misses"]["evicted"]),
                     str(e["misses"]["coalesced"]), str(e["fills"]["peer"]), _mb(e["bytes_served"]),
                     "killed" if e["killed"] else ""))
    lines += _table(rows)
    q = r["qoe"]
    lines += ["", "QoE (sessions that ended):"]
    qrows: list[tuple[str, ...]] = [("metric", "p50", "p90", "max")]
    for name, key, fmt in (("startup (media s)", "startup_s", "{:.2f}"), ("rebuffers", "rebuffer_count", "{:.0f}"),
                           ("rebuffer (media s)", "rebuffer_s", "{:.2f}"), ("bitrate (kbit/s)", "avg_bitrate_kbps", "{:.0f}"),
                           ("switches", "switches", "{:.0f}"), ("qoe_lin", "qoe_lin", "{:.1f}")):
        qrows.append((name, _f(q[key]["p50"], fmt), _f(q[key]["p90"], fmt), _f(q[key]["max"], fmt)))
    lines += _table(qrows)
    lines.append(f"  sessions with a rebuffer: {q['sessions_with_rebuffer']} of {r['sessions_ok']}")
    if r["failures"]:
        lines += ["", "failed sessions:"] + [f"  {f['title']} ({f['isp']}): {f['error']}" for f in r["failures"]]
    if r.get("agreement"):
        same = sum(1 for a in r["agreement"] if a["equal"])
        lines += ["", "figures from the event pipeline; against the services' own counters: " +
                  ("they agree" if r["agrees"] else "THEY DIFFER") + f" ({same} of {len(r['agreement'])} equal)"]
        lines += _table([("figure", "edge", "pipeline", "counters", "")] + [
            (a["figure"], str(a["edge"] or "-"), str(a["pipeline"]), str(a["counters"]),
             "=" if a["equal"] else ("differs" if a["expected"] else "differs (killed edge)"))
            for a in r["agreement"] if not a["equal"] or a["edge"] is None])
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------

PALETTE = ("#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 640, 240, 56, 16, 16, 36


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(v))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if v <= m * mag:
            return m * mag
    return 10.0 * mag


def _axes(ymax: float, xmax: float, xlabel: str, ylabel: str, yfmt: str = "{:g}", xfmt: str = "{:g}") -> list[str]:
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    out = [f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fff" stroke="#cbd5e0"/>']
    for i in range(5):
        y = PAD_T + ph - ph * i / 4
        out.append(f'<line x1="{PAD_L}" x2="{PAD_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#edf2f7"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
                   f'{_e(yfmt.format(ymax * i / 4))}</text>')
    for i in range(5):
        x = PAD_L + pw * i / 4
        out.append(f'<text x="{x:.1f}" y="{PAD_T + ph + 14}" text-anchor="middle" class="tick">'
                   f'{_e(xfmt.format(xmax * i / 4))}</text>')
    out.append(f'<text x="{PAD_L + pw / 2}" y="{H - 4}" text-anchor="middle" class="label">{_e(xlabel)}</text>')
    out.append(f'<text x="12" y="{PAD_T + ph / 2}" transform="rotate(-90 12 {PAD_T + ph / 2})" '
               f'text-anchor="middle" class="label">{_e(ylabel)}</text>')
    return out


def _nice_step(span: float, bins: int) -> float:
    """The smallest round step (1, 2, 2.5 or 5 x 10^k) with `bins` steps covering `span`."""
    return _nice_max(span / max(1, bins)) if span > 0 else 1.0


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], *, xlabel: str, ylabel: str,
               markers: Sequence[tuple[float, str]] = (), yfmt: str = "{:g}",
               limits: Sequence[tuple[float, str]] = ()) -> str:
    """An SVG line chart of named (x, y) series, with vertical event markers and horizontal
    limit lines (e.g. a link's cap). Both axes end on a round number, so the ticks are round."""
    pts = [p for s in series.values() for p in s]
    xmax = _nice_max(max([p[0] for p in pts] + [m[0] for m in markers] + [1.0]))
    ymax = _nice_max(max([p[1] for p in pts] + [y for y, _ in limits] + [0.0]) * (1.08 if limits else 1.0))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    out = _axes(ymax, xmax, xlabel, ylabel, yfmt, "{:g}")
    for y, label in limits:
        py = PAD_T + ph - ph * y / ymax
        out.append(f'<line x1="{PAD_L}" x2="{PAD_L + pw}" y1="{py:.1f}" y2="{py:.1f}" stroke="#718096" '
                   f'stroke-dasharray="6 3"/><text x="{PAD_L + pw - 4}" y="{py - 4:.1f}" text-anchor="end" '
                   f'class="marker" style="fill:#4a5568">{_e(label)}</text>')

    def xy(x: float, y: float) -> str:
        return f"{PAD_L + pw * x / xmax:.1f},{PAD_T + ph - ph * y / ymax:.1f}"
    for x, label in markers:
        px = PAD_L + pw * x / xmax
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{PAD_T}" y2="{PAD_T + ph}" stroke="#e53e3e" '
                   f'stroke-dasharray="4 3"/><text x="{px + 4:.1f}" y="{PAD_T + 12}" class="marker">{_e(label)}</text>')
    legend = []
    for i, (name, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        if s:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                       f'points="{" ".join(xy(x, y) for x, y in s)}"/>')
        legend.append(f'<span class="key"><i style="background:{color}"></i>{_e(name)}</span>')
    return _svg(out) + f'<div class="legend">{"".join(legend)}</div>'


def bar_chart(bars: Sequence[tuple[str, float]], *, ylabel: str, ymax: float | None = None,
              yfmt: str = "{:g}", vfmt: str = "{:g}", colors: Sequence[str] | None = None, xlabel: str = "") -> str:
    """An SVG bar chart of labelled values."""
    top = ymax if ymax is not None else _nice_max(max([v for _, v in bars] + [0.0]))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    out = _axes(top, 1, "", ylabel, yfmt)[:-2]  # no numeric x ticks for categories
    out = [o for o in out if 'class="tick"' not in o or "text-anchor=\"end\"" in o]
    n = max(1, len(bars))
    slot = pw / n
    for i, (label, v) in enumerate(bars):
        h = ph * min(v, top) / top if top else 0
        x = PAD_L + slot * i + slot * 0.15
        color = (colors[i] if colors else PALETTE[0])
        out.append(f'<rect x="{x:.1f}" y="{PAD_T + ph - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                   f'fill="{color}"><title>{_e(label)}: {_e(vfmt.format(v))}</title></rect>')
        out.append(f'<text x="{x + slot * 0.35:.1f}" y="{PAD_T + ph - h - 4:.1f}" text-anchor="middle" '
                   f'class="value">{_e(vfmt.format(v))}</text>')
        out.append(f'<text x="{x + slot * 0.35:.1f}" y="{PAD_T + ph + 14}" text-anchor="middle" '
                   f'class="tick">{_e(label)}</text>')
    out.append(f'<text x="12" y="{PAD_T + ph / 2}" transform="rotate(-90 12 {PAD_T + ph / 2})" '
               f'text-anchor="middle" class="label">{_e(ylabel)}</text>')
    if xlabel:
        out.append(f'<text x="{PAD_L + pw / 2}" y="{H - 4}" text-anchor="middle" class="label">{_e(xlabel)}</text>')
    return _svg(out)


def histogram_bins(values: Sequence[float], bins: int = 8) -> tuple[float, float, list[int]]:
    """(first edge, bin width, counts): round bin edges (a 1/2/2.5/5 x 10^k width) covering
    the values, at most `bins` + 1 of them; a value on an edge goes to the bin it starts."""
    lo, hi = min(values), max(values)
    width = _nice_step(hi - lo, bins)
    start = math.floor(lo / width) * width
    def index(v: float) -> int:  # the epsilon keeps 1.4 / 0.2 = 6.9999... in bin 7, [1.4, 1.6)
        return math.floor((v - start) / width + 1e-9)
    n = max(1, index(hi) + 1)
    counts = [0] * n
    for v in values:
        counts[min(n - 1, index(v))] += 1
    return start, width, counts


def histogram(values: Sequence[float], *, xlabel: str, bins: int = 8, fmt: str = "{:g}") -> str:
    """An SVG histogram: sessions per bin; each bar is labelled with its range [from, to)."""
    if not values:
        return '<p class="empty">no data</p>'
    start, width, counts = histogram_bins(values, bins)
    labels = [f"{fmt.format(start + i * width)}–{fmt.format(start + (i + 1) * width)}" for i in range(len(counts))]
    return bar_chart(list(zip(labels, (float(c) for c in counts))), ylabel="sessions", vfmt="{:.0f}",
                     xlabel=f"{xlabel} (bins [from, to))")


def _svg(parts: Sequence[str]) -> str:
    return (f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">'
            + "".join(parts) + "</svg>")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f7fafc;color:#1a202c}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.sub{color:#4a5568;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px}
.card b{display:block;font-size:24px}.card span{color:#4a5568;font-size:12px}
.card.bad b{color:#c53030}.card.good b{color:#2f855a}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:16px}
.panel{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px}
.panel h3{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e2e8f0;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#edf2f7;font-weight:600}
.tick{font-size:10px;fill:#4a5568}.label{font-size:11px;fill:#2d3748}.value{font-size:10px;fill:#1a202c}
.marker{font-size:10px;fill:#c53030}
.legend{font-size:12px;margin-top:4px}.key{margin-right:14px}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.empty{color:#718096}
"""


def render_html(r: Mapping[str, Any]) -> str:
    s = r["settings"]
    q = r["qoe"]
    killed = r.get("killed_edge")
    cards = [
        ("good" if r["offload"] >= 0.5 else "", f"{r['offload']:.1%}", "origin offload"),
        ("", f"{r['hit_ratio']:.1%}", "edge hit ratio"),
        ("", str(r["sessions"]), "sessions"),
        ("bad" if r["sessions_failed"] else "good", str(r["sessions_failed"]), "sessions failed"),
        ("", str(r["failovers"]), "failovers"),
        ("", _f(q["startup_s"]["p50"]) + " s", "startup p50 (media clock)"),
        ("", _f(q["avg_bitrate_kbps"]["p50"], "{:.0f}") + " kbit/s", "bitrate p50"),
        ("", _f(q["qoe_lin"]["p50"], "{:.1f}"), "QoE_lin p50"),
    ]
    body = [f"<h1>ocsim demo report</h1><p class=\"sub\">{r['sessions']} sessions by {_e(s.get('viewers'))} "
            f"viewers over {_e(s.get('duration_s'))} s at speed {_e(s.get('speed'))}x; "
            f"{_e(s.get('topology', ''))}. Wall time {r['wall_s']:.0f} s."
            + (f" Edge <b>{_e(killed['edge'])}</b> was killed (SIGKILL) at t={killed['at_s']:.1f} s." if killed else "")
            + "</p>",
            '<div class="cards">' + "".join(f'<div class="card {c}"><b>{_e(v)}</b><span>{_e(t)}</span></div>'
                                            for c, v, t in cards) + "</div>"]

    tl = r.get("timeline") or []
    markers = [(float(killed["at_s"]), f"{killed['edge']} killed")] if killed else []
    panels: list[str] = []
    if len(tl) >= 2:
        def rate(key: str) -> list[tuple[float, float]]:
            pts = []
            for a, b in zip(tl, tl[1:]):
                dt = b["t"] - a["t"]
                if dt > 0:
                    pts.append((b["t"], (b[key] - a[key]) * 8 / dt / 1e6))
            return pts
        cap_bps = float((s.get("origin") or {}).get("total_bandwidth_bps") or 0)
        limits = [(cap_bps / 1e6, f"origin uplink cap {cap_bps / 1e6:g} Mbit/s")] if cap_bps > 0 else []
        panels.append("<h3>Throughput (Mbit/s)</h3>" + line_chart(
            {"to players": rate("player_bytes"), "from origin": rate("origin_bytes")},
            xlabel="seconds into the crowd", ylabel="Mbit/s", markers=markers, limits=limits))
        edge_ids = sorted({e for t in tl for e in t.get("edge_bytes", {})})
        per_edge = {}
        for e in edge_ids:
            pts = []
            for a, b in zip(tl, tl[1:]):
                dt = b["t"] - a["t"]
                if dt > 0:
                    pts.append((b["t"], (b.get("edge_bytes", {}).get(e, 0) - a.get("edge_bytes", {}).get(e, 0))
                                * 8 / dt / 1e6))
            per_edge[e] = pts
        panels.append("<h3>Bytes to players by edge (Mbit/s)</h3>" + line_chart(
            per_edge, xlabel="seconds into the crowd", ylabel="Mbit/s", markers=markers))
        panels.append("<h3>Sessions playing</h3>" + line_chart(
            {"active sessions": [(t["t"], float(t.get("active", 0))) for t in tl]},
            xlabel="seconds into the crowd", ylabel="sessions", markers=markers))
    edges = r["edges"]
    panels.append("<h3>Hit ratio by edge</h3>" + bar_chart(
        [(k + (" ✝" if v["killed"] else ""), v["hit_ratio"] * 100) for k, v in edges.items()],
        ylabel="% of requests", ymax=100, vfmt="{:.0f}%",
        colors=[PALETTE[1] if v["killed"] else PALETTE[0] for v in edges.values()]))
    panels.append("<h3>Misses by class, fills by source</h3>" + bar_chart(
        [*((k, float(v)) for k, v in r["miss_classes"].items()),
         *((f"fill:{k}", float(v)) for k, v in r["fill_sources"].items())],
        ylabel="requests", vfmt="{:.0f}",
        colors=[PALETTE[1]] * len(r["miss_classes"]) + [PALETTE[2]] * len(r["fill_sources"])))
    sl = [x for x in r.get("session_list", []) if x.get("state") == "ended" and not x.get("errors")]
    panels.append("<h3>Start-up delay</h3>" + histogram(
        [float(x["startup_s"]) for x in sl if x.get("startup_s") is not None], xlabel="start-up delay, media s"))
    panels.append("<h3>Average bitrate</h3>" + histogram(
        [float(x["avg_bitrate_kbps"] or 0) for x in sl], xlabel="average bitrate, kbit/s"))
    panels.append("<h3>QoE_lin</h3>" + histogram([float(x["qoe_lin"] or 0) for x in sl], xlabel="QoE_lin"))
    panels.append("<h3>Rebuffer time</h3>" + histogram([float(x["rebuffer_s"] or 0) for x in sl],
                                                       xlabel="time rebuffering, media s"))
    body.append("<h2>Charts</h2><div class=\"grid\">" + "".join(f'<div class="panel">{p}</div>' for p in panels)
                + "</div>")

    rows = "".join(
        f"<tr><td>{_e(k)}{' (killed)' if v['killed'] else ''}</td><td>{_e(v['isp'])}</td>"
        f"<td>{v['hit_ratio']:.1%}</td><td>{v['byte_hit_ratio']:.1%}</td><td>{v['requests']}</td>"
        f"<td>{v['misses']['cold']}</td><td>{v['misses']['evicted']}</td><td>{v['misses']['coalesced']}</td>"
        f"<td>{v['fills']['peer']}</td><td>{v['fills']['origin']}</td><td>{_mb(v['bytes_served'])}</td></tr>"
        for k, v in edges.items())
    body.append("<h2>Edges (crowd phase)</h2><table><tr><th>edge</th><th>isp</th><th>hit ratio</th>"
                "<th>byte hit ratio</th><th>requests</th><th>cold</th><th>evicted</th><th>coalesced</th>"
                f"<th>peer fills</th><th>origin fills</th><th>served</th></tr>{rows}</table>")
    qrows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_f(q[k]['p50'], fmt)}</td><td>{_f(q[k]['p90'], fmt)}</td>"
        f"<td>{_f(q[k]['p99'], fmt)}</td><td>{_f(q[k]['max'], fmt)}</td></tr>"
        for name, k, fmt in (("startup (media s)", "startup_s", "{:.2f}"), ("rebuffers", "rebuffer_count", "{:.0f}"),
                             ("rebuffer (media s)", "rebuffer_s", "{:.2f}"),
                             ("bitrate (kbit/s)", "avg_bitrate_kbps", "{:.0f}"),
                             ("switches", "switches", "{:.0f}"), ("QoE_lin", "qoe_lin", "{:.1f}")))
    body.append(f"<h2>QoE</h2><table><tr><th>metric</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>"
                f"{qrows}</table><p class=\"sub\">{q['sessions_with_rebuffer']} of {r['sessions_ok']} ended "
                f"sessions rebuffered; {r['resteers']} re-steers; {r['failed_requests']} failed requests "
                f"recovered by the players.</p>")
    bytes_ = r["bytes"]
    body.append(f"<h2>Bytes</h2><table><tr><th>to players</th><th>from origin (crowd)</th><th>served by edges</th>"
                f"</tr><tr><td>{_mb(bytes_['players'])}</td><td>{_mb(bytes_['origin'])}</td>"
                f"<td>{_mb(bytes_['edges'])}</td></tr></table>"
                f"<p class=\"sub\">{BYTES_NOTE}</p>")
    if r.get("preposition"):
        prow = "".join(f"<tr><td>{_e(j.get('isp'))}</td><td>{_e(j.get('state'))}</td>"
                       f"<td>{_e(', '.join(j.get('titles', [])))}</td><td>{_f(j.get('seconds'), '{:.1f}')}</td></tr>"
                       for j in r["preposition"])
        body.append("<h2>Pre-positioning</h2><table><tr><th>isp</th><th>state</th><th>titles</th><th>seconds</th>"
                    f"</tr>{prow}</table>")
    if r["failures"]:
        frow = "".join(f"<tr><td>{_e(f['title'])}</td><td>{_e(f['isp'])}</td><td>{_e(f['error'])}</td></tr>"
                       for f in r["failures"])
        body.append(f"<h2>Failed sessions</h2><table><tr><th>title</th><th>isp</th><th>error</th></tr>{frow}</table>")
    if r.get("agreement"):
        arow = "".join(f"<tr><td>{_e(a['figure'])}</td><td>{_e(a['edge'] or '-')}</td><td>{_e(a['pipeline'])}</td>"
                       f"<td>{_e(a['counters'])}</td><td>{'=' if a['equal'] else 'differs'}"
                       f"{'' if a['expected'] else ' (killed edge: not expected to agree)'}</td></tr>"
                       for a in r["agreement"])
        body.append("<h2>Pipeline vs counters</h2><p class=\"sub\">The figures above come from the event pipeline "
                    "(its events, queried from the collector). Each is checked here against the services' own "
                    "counters: " + ("they agree." if r["agrees"] else "<b>they differ</b>.") +
                    "</p><table><tr><th>figure</th><th>edge</th><th>pipeline</th><th>counters</th><th></th></tr>"
                    + arow + "</table>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ocsim demo report</title>"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n")
