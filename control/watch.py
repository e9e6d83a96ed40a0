"""The watch page: `GET /watch/{title}` plays a title through the CDN in a browser, with hls.js.

The page asks `POST /v1/play` (same origin), plays the best candidate with hls.js (a pinned
copy vendored in `control/static/`, served at `/static/hls.min.js` with its licence at
`/static/hls.js.LICENSE`; see `control/static/VENDORED.md`) and, on a fatal network error,
falls over to the next candidate at the position it had reached; when the list runs out it
asks steering again (a few times). Playlists and segments come straight from the edges, so
they answer CORS (`common.cors`); every request carries the play id as `X-Ocsim-Session`
(a preflighted header), so the edges' requests join the steering decision.

It shows, live: which edge plays (and its X-Cache for the last segment), which rendition,
the buffer ahead, start-up time (from the play request to the first frame shown), rebuffers
(count and time), level switches, failovers, decoded and dropped frames. The same figures
are in `window.ocsimWatch.snapshot()`, which the browser test reads over the DevTools protocol.

Query parameters: `isp` (passed to /v1/play; default: the control plane decides from the
client address) and `buffer` (hls.js's forward buffer goal in seconds, 4..120, default 30).
The title is a checked id and goes into the page as JSON; all values are inserted as text.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from common.errors import BadRequest
from common.ids import is_isp, is_title_id
from control.state import STATE

STATIC = Path(__file__).resolve().parent / "static"
HLS_JS = STATIC / "hls.min.js"
HLS_JS_LICENSE = STATIC / "hls.js.LICENSE"
HLS_JS_VERSION = "1.7.4"
HLS_JS_SHA256 = "cfc70cc9e9fc63d071919e087670abc760c8fd1bc889b88588026e4d22193bbe"
DEFAULT_BUFFER_S = 30
# The page's own script is inline; hls.js is same-origin and runs its demuxer in a blob: worker;
# MSE plays from blob: URLs; playlists and segments come from the edges (any http(s) origin).
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; "
       "connect-src 'self' http: https:; media-src 'self' blob:; worker-src 'self' blob:; img-src 'self' data:")


def check_vendored() -> None:
    """The vendored hls.js is the pinned one (raises OSError/ValueError otherwise)."""
    got = hashlib.sha256(HLS_JS.read_bytes()).hexdigest()
    if got != HLS_JS_SHA256:
        raise ValueError(f"{HLS_JS}: sha256 {got} is not the pinned hls.js {HLS_JS_VERSION} ({HLS_JS_SHA256})")
    if not HLS_JS_LICENSE.is_file():
        raise ValueError(f"{HLS_JS_LICENSE}: missing (hls.js ships under the Apache License 2.0)")


def page_config(title: str, isp: str | None, buffer_s: int) -> str:
    """The page's settings as a JSON literal safe inside <script> (ids are [a-z0-9-] only)."""
    return json.dumps({"title": title, "isp": isp, "buffer_s": buffer_s, "hls_version": HLS_JS_VERSION})


def parse_query(query: Mapping[str, str]) -> tuple[str | None, int]:
    """(isp, buffer seconds) from the page's query; BadRequest names the bad one."""
    isp = query.get("isp")
    if isp is not None and not is_isp(isp):
        raise BadRequest("isp: not a valid ISP name")
    raw = query.get("buffer")
    if raw is None:
        return isp, DEFAULT_BUFFER_S
    if not raw.isdigit() or not 4 <= int(raw) <= 120:
        raise BadRequest("buffer: must be whole seconds in 4..120")
    return isp, int(raw)


def render(title: str, isp: str | None, buffer_s: int) -> str:
    if not is_title_id(title):
        raise BadRequest("invalid title id")
    return PAGE.replace("__CONFIG__", page_config(title, isp, buffer_s)).replace("__TITLE__", title)


async def get_watch(request: web.Request) -> web.Response:
    """The watch page of one title (400: invalid id or query, 404: unknown title)."""
    title = request.match_info["title"]
    if not is_title_id(title):
        raise BadRequest("invalid title id")
    request.app[STATE].catalog.get(title)  # NotFound (404) for a title the catalog lacks
    isp, buffer_s = parse_query(request.query)
    return web.Response(text=render(title, isp, buffer_s), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP,
                                 "X-Content-Type-Options": "nosniff"})


def _static(path: Path, content_type: str) -> web.StreamResponse:
    # FileResponse reads in the executor (or sendfile): the loop never waits on the disk.
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "public, max-age=86400",
                                           "X-Content-Type-Options": "nosniff"})


async def get_hls_js(request: web.Request) -> web.StreamResponse:
    """The vendored hls.js (pinned: HLS_JS_VERSION, HLS_JS_SHA256)."""
    return _static(HLS_JS, "text/javascript; charset=utf-8")


async def get_hls_js_license(request: web.Request) -> web.StreamResponse:
    """hls.js's licence (Apache License 2.0)."""
    return _static(HLS_JS_LICENSE, "text/plain; charset=utf-8")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ocsim watch: __TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.2em 0 .6em}
#wrap{display:flex;gap:1.4em;flex-wrap:wrap;align-items:flex-start}
video{width:640px;max-width:100%;background:#000;aspect-ratio:16/9}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{font-weight:600;color:#555}.num{font-variant-numeric:tabular-nums}
#cands li.cur{font-weight:700}#cands li.dead{color:#c00;text-decoration:line-through}
#log{font:12px ui-monospace,monospace;max-height:12em;overflow:auto;background:#fff;border:1px solid #ddd;
padding:.4em;width:640px;max-width:100%;white-space:pre-wrap}.bad{color:#c00}.ok{color:#080}
</style></head><body>
<h1>ocsim watch: <span id="title"></span></h1>
<div id="wrap">
<div><video id="v" controls muted playsinline></video>
<p class="hint">Muted so it may start by itself; unmute with the player's controls.</p>
<div id="log"></div></div>
<div><table><tbody>
<tr><th>state</th><td id="s-state">asking steering</td></tr>
<tr><th>edge</th><td id="s-edge"></td></tr>
<tr><th>last segment</th><td id="s-frag"></td></tr>
<tr><th>rendition</th><td id="s-level"></td></tr>
<tr><th>level switches</th><td id="s-switches" class="num">0</td></tr>
<tr><th>position</th><td id="s-pos" class="num"></td></tr>
<tr><th>buffer ahead</th><td id="s-buf" class="num"></td></tr>
<tr><th>start-up</th><td id="s-startup" class="num"></td></tr>
<tr><th>rebuffers</th><td id="s-rebuf" class="num">0</td></tr>
<tr><th>failovers</th><td id="s-failovers" class="num">0</td></tr>
<tr><th>frames decoded / dropped</th><td id="s-frames" class="num"></td></tr>
<tr><th>bandwidth estimate</th><td id="s-bw" class="num"></td></tr>
<tr><th>player</th><td id="s-player"></td></tr>
</tbody></table>
<h3>Candidates (steering's order)</h3><ol id="cands"></ol></div>
</div>
<script src="/static/hls.min.js"></script>
<script>
"use strict";
const CONFIG = __CONFIG__;
const $ = (id) => document.getElementById(id);
const video = $("v");
const T0 = performance.now();
const W = {title: CONFIG.title, isp: null, playId: null, candidates: [], current: -1, edge: null, level: null,
  levels: [], switches: 0, failovers: 0, resteers: 0, startupS: null, rebuffers: 0, rebufferS: 0,
  stalledAt: null, fatal: [], errors: [], fragments: [], state: "starting", ended: false,
  framesBefore: {decoded: 0, dropped: 0}};  // frames of earlier MediaSources (each failover starts a new one)
let hls = null;
$("title").textContent = CONFIG.title;
$("s-player").textContent = "hls.js " + (window.Hls ? Hls.version : "missing") + " (pinned " + CONFIG.hls_version + ")";

function log(text, cls) {
  const line = document.createElement("div");
  line.textContent = ((performance.now() - T0) / 1000).toFixed(2) + "s " + text;
  if (cls) line.className = cls;
  $("log").appendChild(line);
  while ($("log").childNodes.length > 200) $("log").removeChild($("log").firstChild);  // a long film stays light
  $("log").scrollTop = $("log").scrollHeight;
}
function setState(s) { W.state = s; $("s-state").textContent = s; }
function hostOf(url) { try { return new URL(url).host; } catch (e) { return "?"; } }
function drawCandidates() {
  const ol = $("cands"); ol.textContent = "";
  W.candidates.forEach((c, i) => {
    const li = document.createElement("li");
    li.textContent = c.edge + " (" + hostOf(c.url) + ")";
    if (i === W.current) li.className = "cur"; else if (i < W.current) li.className = "dead";
    ol.appendChild(li);
  });
}

async function steer() {
  const body = {title: CONFIG.title};
  if (CONFIG.isp) body.isp = CONFIG.isp;
  const r = await fetch("/v1/play", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error("play request: " + r.status + " " + (answer.error || ""));
  W.isp = answer.isp; W.playId = answer.play_id || null;
  W.candidates = (answer.candidates || []).filter((c) => c && typeof c.url === "string");
  if (!W.candidates.length) throw new Error("play answer has no candidates");
  log("steering (isp " + (answer.isp || "unknown") + "): " + W.candidates.map((c) => c.edge).join(", "));
}

function start(index, position) {
  if (hls) {
    const f = frames();
    W.framesBefore = f.decoded === null ? W.framesBefore : f;
    hls.destroy(); hls = null;
  }
  W.current = index;
  const c = W.candidates[index];
  W.edge = c.edge; W.level = null;
  $("s-edge").textContent = c.edge + " (" + hostOf(c.url) + "), candidate " + (index + 1) + " of " + W.candidates.length;
  drawCandidates();
  setState("loading from " + c.edge);
  log("playing from " + c.edge + (position > 0 ? " at " + position.toFixed(2) + " s" : ""));
  const quick = {maxNumRetry: 1, retryDelayMs: 300, maxRetryDelayMs: 600};  // fail over soon, not after a minute
  const policy = {default: {maxTimeToFirstByteMs: 5000, maxLoadTimeMs: 20000, timeoutRetry: quick, errorRetry: quick}};
  hls = new Hls({
    startPosition: position > 0 ? position : -1,
    maxBufferLength: CONFIG.buffer_s, maxMaxBufferLength: CONFIG.buffer_s,
    fragLoadPolicy: policy, playlistLoadPolicy: policy, manifestLoadPolicy: policy,
    xhrSetup: (xhr) => { if (W.playId) xhr.setRequestHeader("X-Ocsim-Session", W.playId); },
  });
  const mine = hls;
  hls.on(Hls.Events.MANIFEST_PARSED, (ev, d) => {
    W.levels = d.levels.map((l) => ({bitrate: l.bitrate, width: l.width, height: l.height}));
    video.play().catch((e) => log("play(): " + e.message, "bad"));
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (ev, d) => {
    const l = mine.levels[d.level];
    if (W.level !== null && W.level !== d.level) W.switches++;
    W.level = d.level;
    $("s-level").textContent = l ? (l.width + "x" + l.height + " @ " + Math.round(l.bitrate / 1000) + " kbit/s"
                                    + " (level " + (d.level + 1) + " of " + mine.levels.length + ")") : String(d.level);
    $("s-switches").textContent = String(W.switches);
  });
  hls.on(Hls.Events.FRAG_LOADED, (ev, d) => {
    if (d.frag.sn === "initSegment") return;
    let cache = null;
    const xhr = d.networkDetails;
    try { cache = xhr && xhr.getResponseHeader ? xhr.getResponseHeader("X-Cache") : null; } catch (e) { cache = null; }
    const f = {edge: W.edge, host: hostOf(d.frag.url), level: d.frag.level, sn: d.frag.sn,
               bytes: d.frag.stats ? d.frag.stats.loaded : null, cache: cache,
               at: (performance.now() - T0) / 1000, position: video.currentTime};
    W.fragments.push(f);
    $("s-frag").textContent = "#" + f.sn + " of level " + (f.level + 1) + " from " + f.host + " (" + (cache || "?") + ")";
  });
  hls.on(Hls.Events.ERROR, (ev, d) => {
    const what = d.type + "/" + d.details + (d.response && d.response.code !== undefined ? " " + d.response.code : "");
    if (!d.fatal) { W.errors.push(what); if (W.errors.length > 200) W.errors.shift(); log(what + " (recovering)"); return; }
    W.fatal.push({edge: W.edge, what: what, at: (performance.now() - T0) / 1000});
    log("fatal: " + what + " on " + W.edge, "bad");
    if (d.type === Hls.ErrorTypes.MEDIA_ERROR) { mine.recoverMediaError(); return; }
    if (d.type === Hls.ErrorTypes.NETWORK_ERROR) { failOver(); return; }
    setState("stopped: " + what); mine.destroy();
  });
  hls.loadSource(c.url);
  hls.attachMedia(video);
}

async function failOver() {
  const position = video.currentTime;
  W.failovers++; $("s-failovers").textContent = String(W.failovers);
  if (W.current + 1 < W.candidates.length) { start(W.current + 1, position); return; }
  if (W.resteers >= 3) { setState("stopped: every edge failed"); if (hls) hls.destroy(); return; }
  W.resteers++;
  try { await steer(); start(0, position); }
  catch (e) { setState("stopped: " + e.message); log(e.message, "bad"); }
}

video.addEventListener("playing", () => {
  if (W.startupS === null) {
    W.startupS = (performance.now() - T0) / 1000;
    $("s-startup").textContent = W.startupS.toFixed(2) + " s";
    log("first frame after " + W.startupS.toFixed(2) + " s", "ok");
  }
  if (W.stalledAt !== null) { W.rebufferS += (performance.now() - W.stalledAt) / 1000; W.stalledAt = null; }
  setState("playing from " + W.edge);
});
video.addEventListener("waiting", () => {
  if (W.startupS === null || W.stalledAt !== null || video.ended) return;
  W.rebuffers++; W.stalledAt = performance.now(); setState("rebuffering");
});
video.addEventListener("ended", () => { W.ended = true; setState("ended"); log("ended", "ok"); });

function bufferAhead() {
  const b = video.buffered, t = video.currentTime;
  for (let i = 0; i < b.length; i++) if (b.start(i) <= t + 0.1 && t <= b.end(i)) return b.end(i) - t;
  return 0;
}
function frames() {
  const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
  if (!q) return {decoded: null, dropped: null};
  const base = W.framesBefore;  // totals count from the current MediaSource only
  return {decoded: base.decoded + q.totalVideoFrames, dropped: base.dropped + q.droppedVideoFrames};
}
window.ocsimWatch = {snapshot: () => Object.assign({}, W, {currentTime: video.currentTime, paused: video.paused,
  buffer: bufferAhead(), frames: frames(), bandwidthEstimate: hls ? hls.bandwidthEstimate : null,
  rebufferS: W.rebufferS + (W.stalledAt !== null ? (performance.now() - W.stalledAt) / 1000 : 0)})};

setInterval(() => {
  const s = window.ocsimWatch.snapshot();
  $("s-pos").textContent = s.currentTime.toFixed(2) + " s" + (isFinite(video.duration) ? " of " + video.duration.toFixed(1) + " s" : "");
  $("s-buf").textContent = s.buffer.toFixed(2) + " s";
  $("s-rebuf").textContent = s.rebuffers + " (" + s.rebufferS.toFixed(2) + " s)";
  $("s-frames").textContent = s.frames.decoded === null ? "n/a" : s.frames.decoded + " / " + s.frames.dropped;
  $("s-bw").textContent = s.bandwidthEstimate ? (s.bandwidthEstimate / 1e6).toFixed(1) + " Mbit/s" : "";
}, 250);

(async () => {
  if (!window.Hls || !Hls.isSupported()) { setState("stopped: this browser has no Media Source Extensions"); return; }
  try { await steer(); start(0, 0); }
  catch (e) { setState("stopped: " + e.message); log(e.message, "bad"); }
})();
</script></body></html>
"""
