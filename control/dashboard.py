"""The dashboard: one static HTML page that polls /v1/fleet and /v1/prepositions.

The page holds no secret: the operator types the token, it stays in the tab's
sessionStorage and goes out only as a Bearer header to this origin. All values are
inserted as text (never as HTML), so an edge id cannot inject markup.
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
</style></head><body>
<h1>ocsim control plane</h1>
<p><label>Operator token <input id="tok" type="password" size="40"></label>
<button id="go">Show</button> <span id="err"></span></p>
<h2>Fleet</h2>
<table><thead><tr><th>edge</th><th>isp</th><th>state</th><th>req/s</th><th>MB/s</th><th>disk</th>
<th>hit ratio</th><th>titles</th><th>last heartbeat</th></tr></thead><tbody id="fleet"></tbody></table>
<h2>Pre-position jobs</h2>
<table><thead><tr><th>job</th><th>isp</th><th>state</th><th>progress</th><th>titles</th><th>files placed</th><th>left out</th></tr></thead>
<tbody id="jobs"></tbody></table>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
$("tok").value = sessionStorage.getItem("ocsimToken") || "";
$("go").onclick = () => { sessionStorage.setItem("ocsimToken", $("tok").value); refresh(); };
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
async function get(path) {
  const r = await fetch(path, {headers: {"Authorization": "Bearer " + $("tok").value}});
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function refresh() {
  if (!$("tok").value) return;
  try {
    const [fleet, jobs] = await Promise.all([get("/v1/fleet"), get("/v1/prepositions")]);
    $("fleet").replaceChildren(...fleet.edges.map((e) => row([
      e.id, e.isp, e.state, e.req_rate.toFixed(1), (e.byte_rate / 1e6).toFixed(2),
      (e.used_bytes / 1e9).toFixed(2) + " / " + (e.capacity_bytes / 1e9).toFixed(2) + " GB",
      (100 * e.hit_ratio).toFixed(1) + "%", e.titles,
      e.last_heartbeat_age_s === null ? "never" : e.last_heartbeat_age_s.toFixed(1) + " s ago"],
      [null, null, e.state])));
    $("jobs").replaceChildren(...jobs.jobs.map((j) => row([
      j.id, j.isp, j.state + (j.waiting_for ? " (" + j.waiting_for + ")" : ""), bar(j.progress), j.titles.length,
      j.placed ? Object.keys(j.placed).length : "-",
      j.shortfall ? j.shortfall + " (" + [...new Set(Object.values(j.left_out))].join(", ") + ")" : "0"],
      [null, null, j.state])));
    $("err").textContent = "";
  } catch (err) { $("err").textContent = String(err.message || err); }
}
setInterval(refresh, 2000); refresh();
</script></body></html>
"""
