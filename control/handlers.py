"""The control plane's request handlers: HTTP in, calls into the pure cores, HTTP out.

Rules of this module: a handler parses and checks its input (through `common.http_input`),
calls the cores held by `ControlState`, and answers; it never checks who the caller is
(the route table, `control.routes`, wraps operator handlers in the token check, and the
edge handlers verify the message signature themselves). Time is read here, once per
request, and passed into the cores.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from common.content import DEFAULT_LADDER, MAX_DURATION_S, MAX_RENDITION_KBPS, Title
from common.events import JobProgress, SteerPlay
from common.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable, UpstreamError, UpstreamTimeout
from common.http_input import JsonObject, int_field, int_list_field, number_field, query_int, read_json_object, \
    read_limited, str_field
from common.ids import ISP_RULE, TITLE_RULE, check_edge_id, check_isp, is_isp, is_title_id, master_path
from common.logs import event
from common.tokens import NO_ISP, token_url
from common.wire import CONTENT_TYPE, EDGE_HEADER, MAX_MESSAGE_BYTES, SIGNATURE_HEADER, BadSignature, ControlReply, \
    FillPlan, Heartbeat, Register
from control.fleet import EdgeRecord
from media.digests import DigestList
from control.health import UP
from control.jobs import Job, rendition_bytes, build_file_plans, new_job_id
from control.lifecycle import flush
from control.metrics import BAD_SIGNATURES, HEARTBEATS, MISSES, PLAYS, STALE, STEER_SECONDS
from control.placement import ALL_SPACE_PINNED, FileDemand, FileSpace, edge_budget, plan_files, split_file_key
from control.popularity import measured_from_pipeline, valuation
from control.window import FillWindow, check_tz, parse_window
from control.state import EVENTS, STATE, ControlState
from control.steering import Ranking

log = logging.getLogger("ocsim.control")

MAX_JOB_TITLES = 1000
MAX_POPULARITY_LIMIT = 1000
REPLY_BUDGET_BYTES = MAX_MESSAGE_BYTES * 3 // 4  # fill plans per reply stop here; the rest go next time


def _isp_field(obj: JsonObject, name: str = "isp", required: bool = False) -> str | None:
    isp = str_field(obj, name, required=required, max_len=32)
    return None if isp is None else check_isp(isp, name)


# ---------------------------------------------------------------- public

async def get_catalog(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].catalog.to_json())


def _title_param(request: web.Request) -> str:
    tid = request.match_info["id"]
    if not is_title_id(tid):
        raise BadRequest("invalid title id")
    return tid


async def get_title(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].catalog.get(_title_param(request)).to_json())


PLAY_FIELDS = frozenset({"title", "client_ip", "isp"})


async def play(request: web.Request) -> web.Response:
    app = request.app
    st = app[STATE]
    body = await read_json_object(request, PLAY_FIELDS)
    title_id = str_field(body, "title", required=True, max_len=64)
    assert title_id is not None
    if not is_title_id(title_id):
        raise BadRequest("invalid title id")
    client_ip = str_field(body, "client_ip", max_len=64)
    isp = _isp_field(body)
    if client_ip is not None and isp is not None:
        raise BadRequest("give client_ip or isp, not both")
    title = st.catalog.get(title_id)
    if isp is not None and isp not in st.known_isps():
        # An ISP nobody announces and no edge serves is an unknown network: the fallback
        # ranking. (This also keeps made-up names out of the play counts and metric labels.)
        isp = None
    if client_ip is not None:
        try:
            ipaddress.ip_address(client_ip)
        except ValueError:
            raise BadRequest("client_ip is not an IP address") from None
        isp = st.prefixes.lookup(client_ip)  # None: unknown network -> the fallback ranking
    now = time.time()
    t0 = time.perf_counter()
    views = st.fleet.views(now)
    ranking = st.ranker.rank(title.id, isp, views, now)
    if ranking.candidates:
        st.ranker.record(ranking, now)
    app[STEER_SECONDS].observe(time.perf_counter() - t0)
    st.count_play(isp, title.id)
    app[PLAYS].inc((isp or NO_ISP,))
    _count_misses(app, ranking)
    if not ranking.candidates:
        raise Unavailable("no edge available")
    expires = int(now) + st.config.token_ttl_s
    token = st.config.keyring.sign(title.id, expires, isp or NO_ISP)
    path = master_path(title.id)
    play_id = secrets.token_hex(8)  # players send it back as X-Ocsim-Session
    sink = app[EVENTS]
    if sink.enabled:
        sink.emit(SteerPlay(play_id, title.id, isp, tuple(c.edge_id for c in ranking.candidates),
                            None if not ranking.candidates else not ranking.content_miss,
                            ranking.content_miss, ranking.health_miss))
    return web.json_response({
        "title": title.id, "isp": isp, "expires": expires, "play_id": play_id,
        "candidates": [{"edge": c.edge_id, "url": token_url(c.url, token, path), "reason": c.reason}
                       for c in ranking.candidates],
    })


def _emit_job_progress(app: web.Application, job_ids: set[str]) -> None:
    st = app[STATE]
    for job_id in sorted(job_ids):
        job = st.jobs.get(job_id)
        if job is None:
            continue
        app[EVENTS].emit(JobProgress(
            job.id, job.isp, str(job.state), float(job.progress),
            sum(p.done_objects for p in job.plans), sum(p.total_objects for p in job.plans),
            sum(p.done_bytes for p in job.plans)))


def _count_misses(app: web.Application, ranking: Ranking) -> None:
    if ranking.content_miss:
        app[MISSES].inc(("content",))
    if ranking.health_miss:
        app[MISSES].inc(("health",))


# ---------------------------------------------------------------- edges (msgpack, signed)

def _signed_reply(key: bytes, reply: ControlReply) -> web.Response:
    body, signature = reply.seal(key)
    return web.Response(body=body, content_type=CONTENT_TYPE, headers={SIGNATURE_HEADER: signature})


async def _read_signed(request: web.Request, edge_id: str) -> tuple[bytes, bytes, str | None]:
    header = request.headers.get(EDGE_HEADER)
    if header is None:
        raise BadRequest(f"{EDGE_HEADER} header missing")
    if header != edge_id:  # well-formed, but it names another edge than the path: not authenticated
        raise Forbidden(f"{EDGE_HEADER} is not the edge id of the path")
    body = await read_limited(request, MAX_MESSAGE_BYTES)
    st = request.app[STATE]
    return st.edge_key(edge_id), body, request.headers.get(SIGNATURE_HEADER)


def _reply_for(st: ControlState, rec: EdgeRecord, now: float) -> ControlReply:
    """Outstanding plans the edge does not already report as running, within the size budget."""
    plans: list[FillPlan] = []
    budget = REPLY_BUDGET_BYTES
    for p in st.jobs.outstanding(rec.edge_id, now):
        if p.plan_id in rec.running_plans:
            continue  # the edge has it (it dedupes by plan_id anyway; this saves the bytes)
        cost = 200 + sum(len(x) + 2 for x in p.paths)
        if cost > budget and plans:
            break
        budget -= cost
        plans.append(p.fill_plan())
        st.jobs.delivered(p, now)
    return ControlReply(ts=now, heartbeat_interval_s=st.config.heartbeat_interval_s,
                        token_keys=st.keys_text, fill_plans=plans)


def _edge_id_from_header(request: web.Request) -> str:
    edge_id = request.headers.get(EDGE_HEADER)
    if not edge_id:
        raise BadRequest(f"{EDGE_HEADER} header missing")
    return check_edge_id(edge_id)


async def register(request: web.Request) -> web.Response:
    app = request.app
    st = app[STATE]
    edge_id = _edge_id_from_header(request)
    key, body, signature = await _read_signed(request, edge_id)
    try:
        msg = Register.unseal(key, body, signature)
    except BadSignature:
        app[BAD_SIGNATURES].inc(("register",))
        raise
    if msg.edge_id != edge_id:
        raise BadRequest("edge_id does not match the edge header")
    now = time.time()
    try:
        rec = st.fleet.register(msg, now)
    except Conflict:
        app[STALE].inc(("register",))
        raise
    event(log, "edge registered", edge=rec.edge_id, isp=rec.isp, url=rec.url, capacity=rec.capacity_bytes)
    if rec.isp not in st.config.topology.isps and st.config.topology.isps:
        event(log, "edge isp not in topology", level=logging.WARNING, edge=rec.edge_id, isp=rec.isp)
    st.jobs.seen(rec.edge_id, now)
    return _signed_reply(key, _reply_for(st, rec, now))


async def heartbeat(request: web.Request) -> web.Response:
    app = request.app
    st = app[STATE]
    edge_id = check_edge_id(request.match_info["id"])
    key, body, signature = await _read_signed(request, edge_id)
    try:
        msg = Heartbeat.unseal(key, body, signature)
    except BadSignature:
        app[BAD_SIGNATURES].inc(("heartbeat",))
        raise
    if msg.edge_id != edge_id:
        raise BadRequest("edge_id does not match the path")
    now = time.time()
    try:
        rec = st.fleet.heartbeat(msg, now)
    except Conflict:
        app[STALE].inc(("heartbeat",))
        raise
    app[HEARTBEATS].inc((msg.state,))
    st.jobs.seen(edge_id, now)
    changed = st.jobs.report(edge_id, msg.fills, now)
    if changed and app[EVENTS].enabled:
        _emit_job_progress(app, {p.job_id for p in changed})
    if any(p.terminal for p in changed):
        # The edge stops reporting a plan once this reply acknowledges its final state, so
        # the final state must be on disk first: a crash now must not lose it.
        await flush(st)
    return _signed_reply(key, _reply_for(st, rec, now))


# ---------------------------------------------------------------- operator: catalog

TITLE_FIELDS = frozenset({"id", "duration_s", "renditions", "popularity"})
MAX_POPULARITY = 1e12  # plays or a weight; well inside SQLite's integer and a float's exact range


def _title_from_body(body: JsonObject) -> Title:
    """A `Title` from a POST /v1/titles body, every field checked before it is built (so a
    bad value is a 400 naming the field, never a TypeError in a sort or an overflow in SQLite)."""
    tid = str_field(body, "id", required=True, max_len=64)
    if not is_title_id(tid):
        raise BadRequest(f"id must match {TITLE_RULE}")
    if "duration_s" not in body:
        raise BadRequest("duration_s is required")
    duration = number_field(body, "duration_s", 0, MAX_DURATION_S, above_lo=True)
    if duration is None:
        raise BadRequest("duration_s must be a number")
    renditions = DEFAULT_LADDER
    if "renditions" in body:
        rends = int_list_field(body, "renditions", 1, MAX_RENDITION_KBPS)
        if rends is None:
            raise BadRequest("renditions must be a list of kbit/s")
        renditions = tuple(sorted(rends))
    popularity = 1.0
    if "popularity" in body:
        pop = number_field(body, "popularity", 0, MAX_POPULARITY)
        if pop is None:
            raise BadRequest("popularity must be a number")
        popularity = pop
    assert tid is not None
    return Title(tid, duration, renditions, popularity)


async def add_title(request: web.Request) -> web.Response:
    st = request.app[STATE]
    title = _title_from_body(await read_json_object(request, TITLE_FIELDS))
    if title.id in st.catalog:
        raise Conflict(f"title {title.id} exists")
    await st.db().call(st.db().store.put_title, title)
    st.catalog.titles[title.id] = title
    event(log, "title added", title=title.id)
    return web.json_response(title.to_json(), status=201, headers={"Location": f"/v1/titles/{title.id}"})


async def retire_title(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tid = _title_param(request)
    st.catalog.get(tid)
    await st.db().call(st.db().store.retire_title, tid)
    st.catalog.titles.pop(tid, None)  # a concurrent retire may have got here first
    event(log, "title retired", title=tid)
    return web.json_response({"id": tid, "retired": True})


async def get_popularity(request: web.Request) -> web.Response:
    """Observed plays per title for one ISP (`-`: unknown networks), most played first."""
    st = request.app[STATE]
    isp = request.query.get("isp", NO_ISP)
    if isp != NO_ISP and not is_isp(isp):
        raise BadRequest(f"isp must match {ISP_RULE} or be {NO_ISP}")
    limit = query_int(request.query, "limit", 20, 1, MAX_POPULARITY_LIMIT)
    rows = sorted(((t, n) for (i, t), n in st.plays.items() if i == isp), key=lambda r: (-r[1], r[0]))[:limit]
    return web.json_response({"isp": isp, "titles": [{"id": t, "plays": n} for t, n in rows]})


# ---------------------------------------------------------------- operator: fleet

async def get_fleet(request: web.Request) -> web.Response:
    st = request.app[STATE]
    now = time.time()
    return web.json_response({"edges": st.fleet.to_json(now), "states": st.fleet.counts_by_state(now),
                              "isps": st.config.topology.prefixes()})


async def edge_admin(request: web.Request) -> web.Response:
    st = request.app[STATE]
    edge_id = check_edge_id(request.match_info["id"])
    body = await read_json_object(request, ADMIN_FIELDS)
    down = body.get("down")
    if not isinstance(down, bool):
        raise BadRequest("down must be true or false")
    st.fleet.get(edge_id)
    await st.db().call(st.db().store.set_admin, edge_id, down)
    rec = st.fleet.set_admin(edge_id, down)
    event(log, "edge admin", edge=edge_id, down=down)
    return web.json_response(rec.to_json(time.time()))


# ---------------------------------------------------------------- operator: jobs

ADMIN_FIELDS = frozenset({"down"})
JOB_FIELDS = frozenset({"isp", "titles", "top", "renditions", "bandwidth_bps", "replicas", "refresh", "now",
                        "window", "timezone"})
MAX_JOB_FILES = 20_000
MAX_REFRESH_CANDIDATES = 5_000  # a refresh weighs at most this many of the most valuable files


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A checked pre-position request (from the API or the nightly schedule)."""

    isp: str
    titles: tuple[Title, ...] | None  # None: the most valuable files of the catalog
    top: int | None
    renditions: tuple[int, ...] | None
    bandwidth_bps: int
    replicas: int | None
    refresh: bool
    window: FillWindow | None


def _job_spec(st: ControlState, body: JsonObject) -> JobSpec:
    """Check a job request; every refusal names its field."""
    isp = _isp_field(body, required=True)
    assert isp is not None
    refresh = body.get("refresh", False)
    now_flag = body.get("now", False)
    for name, value in (("refresh", refresh), ("now", now_flag)):
        if not isinstance(value, bool):
            raise BadRequest(f"{name} must be true or false")
    if "titles" in body and "top" in body:
        raise BadRequest("titles, top: give at most one of them")
    if not refresh and "titles" not in body and "top" not in body:
        raise BadRequest("titles or top is required (or refresh: true)")
    titles: tuple[Title, ...] | None = None
    if "titles" in body:
        ids = body["titles"]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_JOB_TITLES \
                or not all(isinstance(t, str) for t in ids):
            raise BadRequest(f"titles must be a non-empty list of at most {MAX_JOB_TITLES} title ids")
        for i, t in enumerate(ids):
            if not is_title_id(t):
                raise BadRequest(f"titles[{i}]: invalid title id {t[:80]!r}")
            if t not in st.catalog:
                raise NotFound(f"titles[{i}]: unknown title {t[:80]}")
        titles = tuple(st.catalog.get(t) for t in dict.fromkeys(ids))
    top = int_field(body, "top", 1, MAX_JOB_FILES)
    if "top" in body and top is None:  # "top": null
        raise BadRequest(f"top must be an integer in [1, {MAX_JOB_FILES}]")
    renditions: tuple[int, ...] | None = None
    if "renditions" in body:
        rends = int_list_field(body, "renditions", 1, MAX_RENDITION_KBPS)
        if rends is None:  # "renditions": null
            raise BadRequest("renditions must be a list of kbit/s")
        renditions = tuple(sorted(rends))
        for t in titles or ():  # well-formed, but not what this title has: a conflict with the catalog
            if not set(renditions) & set(t.renditions):
                raise Conflict(f"renditions: title {t.id} has none of the renditions {list(renditions)}")
        # every rendition named must be one some title of the job (or of the catalog) has
        known = {r for t in (titles if titles is not None else st.catalog.titles.values()) for r in t.renditions}
        unknown = [r for r in renditions if r not in known]
        if unknown:
            where = "the job's titles have" if titles is not None else "the catalog has"
            raise Conflict(f"renditions: {unknown} {'is' if len(unknown) == 1 else 'are'} not a rendition "
                           f"{where}")
    bandwidth = int_field(body, "bandwidth_bps", 0, 10**12)
    replicas = int_field(body, "replicas", 1, 64)
    if isp not in st.known_isps():
        raise NotFound(f"isp: unknown isp {isp}")
    spec = st.config.topology.isps.get(isp)
    window = spec.fill_window if spec is not None else None
    if "window" in body or "timezone" in body:
        tz = str_field(body, "timezone", max_len=64) or (spec.timezone if spec is not None else "UTC")
        try:
            tz = check_tz(tz)
        except ValueError as exc:
            raise BadRequest(f"timezone: {exc}") from None
        text = str_field(body, "window", max_len=16)
        if text is None:
            raise BadRequest("window is required with timezone (HH:MM-HH:MM)")
        try:
            window = parse_window(text, tz)
        except ValueError as exc:
            raise BadRequest(f"window: {exc}") from None
    if now_flag:
        window = None
    if bandwidth is None:
        bandwidth = spec.fill_rate_bps if spec is not None and spec.fill_rate_bps else st.config.fill_bandwidth_bps
    return JobSpec(isp, titles, top, renditions, bandwidth, replicas, refresh, window)


def popularity_view(st: ControlState, isp: str) -> dict[str, float]:
    """Title -> the prior popularity in `isp`: plays observed there plus the catalog's
    popularity (what files are valued by when no pipeline measures them)."""
    return {t.id: st.observed(isp, t.id) + t.popularity for t in st.catalog.titles.values()}


async def create_job(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await read_json_object(request, JOB_FIELDS)
    spec = _job_spec(st, body)
    job = await start_job(st, spec, time.time())
    return web.json_response(job.to_json(with_plans=False, now=time.time()), status=202,
                             headers={"Location": f"/v1/prepositions/{job.id}"})


async def start_job(st: ControlState, spec: JobSpec, now: float) -> Job:
    """Plan a job over the ISP's healthy edges, store it, hand it to the book."""
    edges = [r for r in st.fleet.edges.values() if r.isp == spec.isp and r.health.state_at(now) is UP]
    if not edges:
        raise Conflict(f"isp: no healthy edge in isp {spec.isp}; nothing can be placed")
    if spec.refresh and any(not j.state.terminal for j in st.jobs.jobs.values() if j.isp == spec.isp):
        raise Conflict(f"isp: a job for {spec.isp} is still running; refresh once it is done")
    spaces: list[FileSpace] = []
    for r in edges:
        held = {k: v for k, v in st.jobs.placed_files(r.edge_id).items() if split_file_key(k)[0] in r.titles}
        spaces.append(FileSpace(r.edge_id, edge_budget(r.capacity_bytes, r.pinned_bytes,
                                                       st.jobs.in_flight_bytes(r.edge_id), sum(held.values()),
                                                       refresh=spec.refresh, headroom=st.config.pin_headroom),
                                  frozenset(held)))
    urls = {r.edge_id: r.url for r in edges}
    catalog = dict(st.catalog.titles)
    popularity = popularity_view(st, spec.isp)
    measured: dict[str, float] | None = None
    note = ""
    if st.config.pipeline_url:
        measured, note = await measured_from_pipeline(st.config.pipeline_url, st.config.popularity_window_s,
                                                      spec.isp, catalog)
    # Sizing files hashes every segment id and a plan lists every path: a few hundred ms for
    # a large job, so it runs on a worker thread over snapshots (titles are immutable).
    job = await asyncio.to_thread(_plan_file_job, new_job_id(), spec, catalog, popularity, spaces, urls, now,
                                  measured, note)
    await st.db().call(st.db().store.insert_job, job)
    st.jobs.add(job)
    event(log, "preposition job created", job=job.id, isp=spec.isp, refresh=spec.refresh, plans=len(job.plans),
          placed=len(job.placed), left_out=len(job.left_out), window=str(job.window) if job.window else None,
          popularity=job.popularity)
    return job


def _plan_file_job(job_id: str, spec: JobSpec, catalog: dict[str, Title], popularity: dict[str, float],
                   spaces: list[FileSpace], urls: dict[str, str], now: float,
                   measured: dict[str, float] | None = None, note: str = "") -> Job:
    """Placement of files and their fill plans for one job (pure; runs on a worker thread).
    `popularity`: the values by title when nothing is measured (plays and catalog);
    `measured`: the pipeline's file values, if any, forecast over the catalog's prior
    (`control.popularity.valuation`)."""
    chosen = spec.titles if spec.titles is not None else tuple(catalog.values())
    ladders = {t.id: [r for r in t.renditions if spec.renditions is None or r in spec.renditions] for t in chosen}
    catalog_prior = {t.id: t.popularity for t in catalog.values()}
    valued = valuation(catalog_prior, ladders, measured, note, fallback_by_title=popularity)
    values = valued.values
    ranked = sorted(values, key=lambda k: (-values[k], k))
    if spec.top is not None:
        ranked = ranked[:spec.top]
    elif spec.titles is None:
        ranked = [k for k in ranked if values[k] > 0][:MAX_REFRESH_CANDIDATES]
    # A refresh keeps a held file only if it is still among the candidates (the top N, or
    # the most valuable files) and fits; every other held file is unpinned.
    demands = []
    for key in ranked:
        tid, rend = split_file_key(key)
        demands.append(FileDemand(tid, rend, values.get(key, 0.0), rendition_bytes(catalog[tid], rend)))
    placement = plan_files(demands, spaces, refresh=spec.refresh, max_replicas=spec.replicas)
    # A refresh asks for "the most valuable that fits": its tail is no shortfall.
    asked_left_out = {} if (spec.refresh and spec.top is None) else placement.left_out
    sources = {eid: [urls[o] for o in sorted(urls) if o != eid] for eid in placement.fills}
    plans = build_file_plans(job_id, placement, catalog, spec.bandwidth_bps, now, sources)
    error = ""
    if not plans and asked_left_out:
        reasons = set(asked_left_out.values())
        error = ("nothing could be placed: all space on the edges of " + spec.isp +
                 " is pinned or promised to fills in flight" if reasons == {ALL_SPACE_PINNED} else
                 "nothing could be placed: no edge of " + spec.isp + " has room for any of the files")
    titles = tuple(dict.fromkeys(split_file_key(k)[0] for k in ranked))
    return Job(job_id, spec.isp, titles, spec.renditions, spec.bandwidth_bps, now, plans,
               tuple(sorted({split_file_key(k)[0] for k in asked_left_out} -
                            {split_file_key(k)[0] for k in placement.placed})),
               error, now, placed=dict(placement.placed), left_out=dict(asked_left_out), window=spec.window,
               refresh=spec.refresh, popularity=valued.source, popularity_note=valued.note)


async def list_jobs(request: web.Request) -> web.Response:
    st = request.app[STATE]
    now = time.time()
    return web.json_response({"jobs": [j.to_json(with_plans=False, now=now) for j in st.jobs.listing()]})


async def get_job(request: web.Request) -> web.Response:
    st = request.app[STATE]
    job = st.jobs.get(request.match_info["id"])
    if job is None:
        raise NotFound("unknown job")
    return web.json_response(job.to_json(now=time.time()))


# ---------------------------------------------------------------- docs

async def get_dashboard(request: web.Request) -> web.Response:
    from control.dashboard import PAGE
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' "
                                                            "'self'; style-src 'unsafe-inline'"})


DIGESTS_TIMEOUT_S = 5.0
MAX_DIGESTS_BYTES = 8 * 1024 * 1024


async def get_title_digests(request: web.Request) -> web.Response:
    """A packaged title's digest list (length and SHA-256 of every file), as the origin has it,
    so a player that verifies (`ocsim play --verify`) checks real media against the origin's record.
    404 for a synthetic title (its bytes verify from their ids); 502/504 when the origin fails."""
    st = request.app[STATE]
    tid = request.match_info["title"]
    if not is_title_id(tid):
        raise BadRequest("invalid title id")
    title = st.catalog.get(tid)
    if title.media != "packaged":
        raise NotFound(f"title {title.id} is synthetic: its bytes verify from their ids, it has no digest list")
    if not st.config.origin_url:
        raise Unavailable("this control plane has no origin to ask for the digest list")
    url = f"{st.config.origin_url.rstrip('/')}/v1/digests/{title.id}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DIGESTS_TIMEOUT_S)) as http:
            async with http.get(url) as resp:
                raw = await resp.content.read(MAX_DIGESTS_BYTES + 1)
                status = resp.status
    except asyncio.TimeoutError:
        raise UpstreamTimeout(f"origin's digest list of {title.id}: timed out") from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(f"origin's digest list of {title.id}: {exc.__class__.__name__}") from None
    if status != 200 or len(raw) > MAX_DIGESTS_BYTES:
        raise UpstreamError(f"origin's digest list of {title.id}: status {status}")
    try:
        DigestList.loads(raw.decode("utf-8"))  # pass on only what a player can use
    except (BadRequest, UnicodeDecodeError) as exc:
        raise UpstreamError(f"origin's digest list of {title.id} is malformed: {exc}") from None
    return web.Response(body=raw, content_type="application/json", headers={"Cache-Control": "no-cache"})
