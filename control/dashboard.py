"""The dashboard: one static HTML page that polls /v1/fleet and /v1/prepositions and,
when the control plane has an event pipeline (`--pipeline`), draws its live time series.

The page holds no secret: the operator types the token, it stays in the tab's
sessionStorage and goes out only as a Bearer header to this origin. All values are
inserted as text (never as HTML), so an edge id cannot inject markup.

The charts (`CHARTS`: throughput, origin fill, offload, stream starts per second,
start-up delay, rebuffer ratio and misses per ISP, and misses by class) come from
`GET /v1/pipeline/series` on this same origin, which the control plane answers from the
collector's read API (`control.pipeline_read`): the browser never talks to the collector,
so the page's CSP (`default-src 'self'`) holds and the read API needs no CORS. They are
inline SVG drawn with DOM calls, no library; each chart's `<svg>` carries `data-series`,
`data-points` and `data-last-t`, which the headless-browser test reads.
"""
from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ocsim control</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}
.up{color:#080}.suspect{color:#b80}.down,.failed,.admin_down{color:#c00}.draining{color:#888}.done{color:#080}.partial,.waiting{color:#b80}
.bar{display:inline-block;width:120px;height:.8em;background:#eee;vertical-align:middle}
.bar span{display:block;height:100%;background:#48c}#err{color:#c00}
.hint{color:#555;max-width:48em}.unplaced{color:#b80}
#charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #ddd;padding:.4em .6em;width:380px}
.chart h3{font-size:13px;margin:0 0 .2em}.chart svg{display:block;background:#fafafa}
.legend{font-size:12px;color:#444}.legend span{margin-right:.8em}.now{font-size:12px;color:#555}
</style></head><body>
<h1>ocsim control plane</h1>
<p><label>Operator token <input id="tok" type="password" size="40"></label>
<button id="go">Show</button> <span id="err"></span></p>
<p id="hint" class="hint">The fleet and the jobs need the operator token. <code>ocsim up</code> prints where it is
when it is ready: the file <code>operator_token</code> in its state directory (by default
<code>.ocsim/up/operator_token</code>; <code>cat</code> it and paste it here). A control plane started alone
keeps it in <code>--state-dir</code> (default <code>.ocsim/control/operator_token</code>). The token stays in
this tab only.</p>
<h2>Fleet</h2>
<table><thead><tr><th>edge</th><th>isp</th><th>state</th><th>req/s</th><th>served/s</th><th>disk used / capacity</th>
<th>hit ratio</th><th>titles</th><th>last heartbeat</th></tr></thead><tbody id="fleet"></tbody></table>
<h2>Live, from the event pipeline <select id="window"><option value="2m|1s">last 2 min, 1 s steps</option>
<option value="10m|10s">last 10 min, 10 s steps</option><option value="1h|1m">last hour, 1 min steps</option>
</select></h2>
<p id="pipeline-note" class="hint"></p>
<div id="charts"></div>
<h2>Pre-position jobs</h2>
<table><thead><tr><th>job</th><th>isp</th><th>state</th><th>progress</th><th>titles placed / asked</th>
<th>files placed</th><th>left out (why)</th><th>unplaced (no edge had room)</th><th>error</th></tr></thead>
<tbody id="jobs"></tbody></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
$("tok").value = sessionStorage.getItem("ocsimToken") || "";
$("go").onclick = () => { sessionStorage.setItem("ocsimToken", $("tok").value); refresh(); refreshCharts(); };
function row(cells, cls) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = String(c);
    if (cls && cls[i]) td.className = cls[i];
    tr.appendChild(td);
  });
  return tr;
}
function bar(p) {
  const b = document.createElement("span"); b.className = "bar";
  const f = document.createElement("span"); f.style.width = (100 * p).toFixed(1) + "%";
  b.appendChild(f); b.title = (100 * p).toFixed(1) + "%"; return b;
}
// Sizes as the CLI prints them (common.sizes.format_size): binary units, 1024-based.
function fmtSize(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
}
function unplacedText(j) {
  const u = j.unplaced || [];
  if (!u.length) return "";
  return u.slice(0, 5).join(", ") + (u.length > 5 ? " and " + (u.length - 5) + " more" : "");
}
async function get(path) {
  const r = await fetch(path, {headers: {"Authorization": "Bearer " + $("tok").value}});
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function refresh() {
  $("hint").hidden = Boolean($("tok").value);
  if (!$("tok").value) return;
  try {
    const [fleet, jobs] = await Promise.all([get("/v1/fleet"), get("/v1/prepositions")]);
    $("fleet").replaceChildren(...fleet.edges.map((e) => row([
      e.id, e.isp, e.state, e.req_rate.toFixed(1), fmtSize(e.byte_rate) + "/s",
      fmtSize(e.used_bytes) + " / " + fmtSize(e.capacity_bytes),
      (100 * e.hit_ratio).toFixed(1) + "%", e.titles,
      e.last_heartbeat_age_s === null ? "never" : e.last_heartbeat_age_s.toFixed(1) + " s ago"],
      [null, null, e.state])));
    $("jobs").replaceChildren(...jobs.jobs.map((j) => row([
      j.id, j.isp, j.state + (j.waiting_for ? " (" + j.waiting_for + ")" : ""), bar(j.progress),
      (j.titles.length - (j.unplaced || []).length) + " / " + j.titles.length,
      j.placed ? Object.keys(j.placed).length : "-",
      j.shortfall ? j.shortfall + " (" + [...new Set(Object.values(j.left_out))].join(", ") + ")" : "0",
      unplacedText(j), j.error || ""], [null, null, j.state, null, null, null, j.shortfall ? "partial" : null,
      "unplaced", "failed"])));
    $("err").textContent = "";
  } catch (err) { $("err").textContent = String(err.message || err); }
}
// ---- live charts from the event pipeline (GET /v1/pipeline/series on this origin)
const CHARTS = [
  {id: "throughput", title: "Throughput to players", metrics: ["bytes_to_players"], fmt: (v) => fmtSize(v) + "/s"},
  {id: "origin", title: "Filled from the origin", metrics: ["bytes_from_origin"], fmt: (v) => fmtSize(v) + "/s"},
  {id: "offload", title: "Offload (1 - origin / served)", metrics: ["offload"], fmt: (v) => (100 * v).toFixed(1) + "%",
   max: 1},
  {id: "sps", title: "Stream starts per second (SPS)", metrics: ["sps"], fmt: (v) => v.toFixed(2) + "/s"},
  {id: "startup", title: "QoE: start-up delay", metrics: ["startup_s"], fmt: (v) => v.toFixed(2) + " s"},
  {id: "rebuffer", title: "QoE: rebuffer ratio", metrics: ["rebuffer_ratio"], fmt: (v) => (100 * v).toFixed(2) + "%"},
  {id: "misses", title: "Misses by class (all ISPs)", metrics: ["misses.cold", "misses.evicted", "misses.coalesced",
   "misses.peer", "misses.stale"], byClass: true, fmt: (v) => v.toFixed(1) + "/s"},
  {id: "misses_isp", title: "Misses per ISP (every class)", metrics: ["misses"], fmt: (v) => v.toFixed(1) + "/s"},
];
const COLORS = ["#48c", "#e63", "#2a2", "#a4c", "#c90", "#099", "#666", "#c36"];
const SVG = "http://www.w3.org/2000/svg";
let pipelineOff = false;
function svgEl(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}
function chartBox(c) {
  let box = document.getElementById("chart-" + c.id);
  if (box) return box;
  box = document.createElement("div"); box.className = "chart"; box.id = "chart-" + c.id;
  const h = document.createElement("h3"); h.textContent = c.title; box.appendChild(h);
  box.appendChild(svgEl("svg", {width: 380, height: 130, viewBox: "0 0 380 130", "data-series": 0,
                                "data-points": 0, "data-last-t": ""}));
  const legend = document.createElement("div"); legend.className = "legend"; box.appendChild(legend);
  const now = document.createElement("div"); now.className = "now"; box.appendChild(now);
  $("charts").appendChild(box);
  return box;
}
// series: {key: [[t, v], ...]}; drawn over [t0, t1] with y from 0 to the largest value.
function draw(c, series, t0, t1) {
  const box = chartBox(c), svg = box.querySelector("svg");
  const W = 380, H = 130, L = 4, B = 14;
  const keys = Object.keys(series).sort();
  let top = c.max || 0, points = 0, last = 0;
  for (const k of keys) for (const [t, v] of series[k]) {
    if (v !== null) { top = Math.max(top, v); points++; last = Math.max(last, t); }
  }
  top = top > 0 ? top * 1.1 : 1;
  const x = (t) => L + (W - 2 * L) * (t - t0) / Math.max(1, t1 - t0);
  const y = (v) => (H - B) - (H - B - 4) * v / top;
  const kids = [svgEl("line", {x1: L, y1: H - B, x2: W - L, y2: H - B, stroke: "#bbb"})];
  const axis = svgEl("text", {x: L, y: H - 2, "font-size": 10, fill: "#777"});
  axis.textContent = "max " + c.fmt(top / 1.1);
  kids.push(axis);
  const legend = [];
  keys.forEach((k, i) => {
    const pts = series[k].filter((p) => p[1] !== null).map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1));
    const color = COLORS[i % COLORS.length];
    if (pts.length === 1) kids.push(svgEl("circle", {cx: pts[0].split(",")[0], cy: pts[0].split(",")[1], r: 2,
                                                     fill: color, "data-key": k}));
    kids.push(svgEl("polyline", {points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 1.5,
                                 "data-key": k}));
    const s = document.createElement("span"); s.style.color = color;
    const lastV = series[k].filter((p) => p[1] !== null).slice(-1)[0];
    s.textContent = (k || "-") + (lastV ? " " + c.fmt(lastV[1]) : "");
    legend.push(s);
  });
  svg.replaceChildren(...kids);
  svg.setAttribute("data-series", keys.length);
  svg.setAttribute("data-points", points);
  svg.setAttribute("data-last-t", last ? String(last) : "");
  box.querySelector(".legend").replaceChildren(...legend);
  box.querySelector(".now").textContent = points ? "" : "no data in this window yet";
}
async function pipelineSeries(metric, win, step) {
  const q = new URLSearchParams({metric: metric, by: "isp", step: step, since: win});
  const r = await fetch("/v1/pipeline/series?" + q, {headers: {"Authorization": "Bearer " + $("tok").value}});
  if (r.status === 404) { const e = new Error("off"); e.off = true; throw e; }
  if (!r.ok) throw new Error("/v1/pipeline/series " + metric + ": " + r.status);
  return r.json();
}
async function refreshCharts() {
  if (pipelineOff || !$("tok").value) return;
  const [win, step] = $("window").value.split("|");
  const now = Date.now() / 1000;
  const span = {"2m": 120, "10m": 600, "1h": 3600}[win];
  try {
    await Promise.all(CHARTS.map(async (c) => {
      const answers = await Promise.all(c.metrics.map((m) => pipelineSeries(m, win, step)));
      let series = {};
      if (c.byClass) {  // one line per class: the sum over ISPs of each step
        answers.forEach((a, i) => {
          const sum = new Map();
          for (const pts of Object.values(a.series)) for (const [t, v] of pts) sum.set(t, (sum.get(t) || 0) + (v || 0));
          const cls = c.metrics[i].split(".")[1];
          if (sum.size) series[cls] = [...sum.entries()].sort((p, q) => p[0] - q[0]);
        });
      } else {
        series = answers[0].series;
      }
      draw(c, series, now - span, now);
    }));
    $("pipeline-note").textContent = "";
  } catch (err) {
    if (err.off) {
      pipelineOff = true;
      $("pipeline-note").textContent = "No event pipeline: start with `ocsim up --events` (or give the control " +
        "plane --pipeline URL) to see live throughput, offload, SPS, QoE and misses here.";
    } else { $("pipeline-note").textContent = String(err.message || err); }
  }
}
$("window").onchange = refreshCharts;
setInterval(refresh, 2000); refresh();
setInterval(refreshCharts, 2000); refreshCharts();
</script></body></html>
"""
