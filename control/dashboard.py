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
.up{color:#080}.suspect{color:#b80}.down,.failed,.admin_down{color:#c00}.draining{color:#888}.done{color:#080}
.bar{display:inline-block;width:120px;height:.8em;background:#eee;vertical-align:middle}
.bar span{display:block;height:100%;background:#48c}#err{color:#c00}
.hint{color:#555;max-width:48em}.unplaced{color:#b80}
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
<h2>Pre-position jobs</h2>
<table><thead><tr><th>job</th><th>isp</th><th>state</th><th>progress</th><th>titles placed / asked</th>
<th>unplaced (no edge had room)</th><th>error</th></tr></thead>
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
      j.id, j.isp, j.state, bar(j.progress),
      (j.titles.length - (j.unplaced || []).length) + " / " + j.titles.length,
      unplacedText(j), j.error || ""], [null, null, j.state, null, null, "unplaced", "failed"])));
    $("err").textContent = "";
  } catch (err) { $("err").textContent = String(err.message || err); }
}
setInterval(refresh, 2000); refresh();
</script></body></html>
"""
