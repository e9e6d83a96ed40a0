"""The control plane's aiohttp service: HTTP in, calls into the pure cores, HTTP out.

Who may call what:

    public    GET /v1/catalog, GET /v1/titles/{id}, POST /v1/play, /healthz, /metrics,
              /openapi.json, /dashboard (the page; its data calls need the token)
    edges     POST /v1/edges/register, POST /v1/edges/{id}/heartbeat  (msgpack, signed
              with the per-edge key, see common/wire.py)
    operator  everything else, with `Authorization: Bearer <operator token>`
              (missing: 401 + WWW-Authenticate; wrong: 403)

The decisions live elsewhere and are pure: steering (`control.steering`), placement
(`control.placement`), edge health (`control.health`), prefix lookup
(`control.prefixes`), job bookkeeping (`control.jobs`). SQLite (`control.store`) runs
on its own thread. Play counts and job progress are kept in memory and flushed about
once a second; a new job, a catalog change and a plan reaching done/failed are written
before the answer goes out.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from common.auth import bearer_matches
from common.content import Catalog, Title, default_catalog
from common.errors import BadRequest, Conflict, Forbidden, NotFound, OcsimError, PayloadTooLarge, Unavailable, \
    UpstreamError
from common.ids import is_title_id, master_path
from common.logs import event
from common.metrics import Counter, Histogram
from common.service import HEALTH, REGISTRY, create_app
from common.tokens import NO_ISP, Keyring, token_url
from common.wire import CONTENT_TYPE, EDGE_HEADER, MAX_MESSAGE_BYTES, SIGNATURE_HEADER, BadSignature, ControlReply, \
    FillPlan, Heartbeat, Register, edge_key
from control import openapi
from control.fleet import EdgeRecord, Fleet, check_edge_id
from control.health import DOWN_AFTER_MISSED
from control.jobs import Job, JobBook, build_plans, new_job_id, title_bytes
from control.placement import EdgeSpace, TitleDemand, plan_placement
from control.prefixes import PrefixTable
from control.steering import Ranking, SteeringRanker
from control.store import AsyncStore, Store
from common.ids import ISP_RE
from control.topology import Topology

log = logging.getLogger("ocsim.control")

MAX_JSON_BYTES = 64 * 1024
MAX_JOB_TITLES = 1000
REPLY_BUDGET_BYTES = MAX_MESSAGE_BYTES * 3 // 4  # fill plans per reply stop here; the rest go next time


@dataclass(frozen=True, slots=True)
class ControlConfig:
    db_path: Path
    operator_token: str
    fleet_secret: bytes
    keyring: Keyring
    token_ttl_s: int = 3600
    topology: Topology = field(default_factory=Topology)
    origin_url: str | None = None
    catalog: Catalog | None = None  # from --catalog
    steer_to_origin: bool = False
    heartbeat_interval_s: float = 1.0
    flush_interval_s: float = 1.0
    plan_timeout_s: float = 120.0
    fill_bandwidth_bps: int = 100_000_000
    origin_wait_s: float = 10.0
    max_candidates: int = 4

    def __post_init__(self) -> None:
        if not self.operator_token:
            raise ValueError("an operator token is required")
        if len(self.fleet_secret) < 16:
            raise ValueError("the fleet secret must be at least 16 bytes")


class ControlState:
    """Everything the handlers share; built at startup."""

    def __init__(self, config: ControlConfig) -> None:
        self.config = config
        self.store: AsyncStore | None = None
        self.catalog = Catalog()
        self.prefixes = PrefixTable()
        for spec in config.topology.isps.values():
            for prefix in spec.prefixes:
                self.prefixes.add(prefix, spec.name)
        self.fleet = Fleet(config.heartbeat_interval_s)
        self.ranker = SteeringRanker(max_candidates=config.max_candidates,
                                     origin_url=config.origin_url if config.steer_to_origin else None)
        self.jobs = JobBook()
        self.plays: dict[tuple[str, str], int] = {}  # (isp or "-", title) -> plays, all time
        self.play_deltas: dict[tuple[str, str], int] = {}  # not yet in SQLite
        self.keys_text = config.keyring.format()
        self._edge_keys: dict[str, bytes] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self.flush_lock = asyncio.Lock()

    def edge_key(self, edge_id: str) -> bytes:
        key = self._edge_keys.get(edge_id)
        if key is None:
            if len(self._edge_keys) > 10_000:
                self._edge_keys.clear()
            key = self._edge_keys[edge_id] = edge_key(self.config.fleet_secret, edge_id)
        return key

    def db(self) -> AsyncStore:
        assert self.store is not None, "store not open"
        return self.store

    def known_isps(self) -> set[str]:
        return set(self.config.topology.isps) | self.fleet.isps()

    def observed(self, isp: str, title_id: str) -> int:
        return self.plays.get((isp, title_id), 0)

    def top_titles(self, isp: str, n: int) -> list[Title]:
        """Top n by plays observed in `isp`, then by catalog popularity."""
        return sorted(self.catalog.titles.values(),
                      key=lambda t: (-self.observed(isp, t.id), -t.popularity, t.id))[:n]

    def count_play(self, isp: str | None, title_id: str) -> None:
        key = (isp or NO_ISP, title_id)
        self.plays[key] = self.plays.get(key, 0) + 1
        self.play_deltas[key] = self.play_deltas.get(key, 0) + 1


STATE = web.AppKey("control_state", ControlState)
PLAYS = web.AppKey("control_plays", Counter)
STEER_SECONDS = web.AppKey("control_steer_seconds", Histogram)
MISSES = web.AppKey("control_misses", Counter)
BAD_SIGNATURES = web.AppKey("control_bad_signatures", Counter)
HEARTBEATS = web.AppKey("control_heartbeats", Counter)
STALE = web.AppKey("control_stale", Counter)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# (method, path) of every operator route; the auth tests walk this list.
OPERATOR_ROUTES: list[tuple[str, str]] = []


def operator(method: str, path: str) -> Callable[[Handler], Handler]:
    """Mark a handler as operator-only: the bearer token is checked before anything else."""
    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            require_operator(request)
            return await handler(request)
        checked.__name__ = handler.__name__
        checked.__doc__ = handler.__doc__
        OPERATOR_ROUTES.append((method, path))
        return checked
    return wrap


def require_operator(request: web.Request) -> None:
    header = request.headers.get("Authorization")
    if not header or not header.lower().startswith("bearer "):
        raise _Unauthorized()
    if not bearer_matches(header, request.app[STATE].config.operator_token):
        raise Forbidden("wrong operator token")


class _Unauthorized(web.HTTPUnauthorized):
    def __init__(self) -> None:
        super().__init__(reason="operator token required",
                         headers={"WWW-Authenticate": 'Bearer realm="ocsim-control"'})


# ---------------------------------------------------------------- input helpers

async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes before reading it all."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    """A JSON object body with only `allowed` keys (400 otherwise)."""
    raw = await read_limited(request, MAX_JSON_BYTES)
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("malformed JSON") from None
    if not isinstance(obj, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(k[:40] for k in unknown[:5])}")
    return obj


def _str_field(obj: dict[str, Any], name: str, *, required: bool = False, max_len: int = 128) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise BadRequest(f"{name} must be a non-empty string")
    return value


def _int_field(obj: dict[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadRequest(f"{name} must be an integer in [{lo}, {hi}]")
    return value


def _isp_field(obj: dict[str, Any], name: str = "isp", required: bool = False) -> str | None:
    isp = _str_field(obj, name, required=required, max_len=32)
    if isp is not None and not ISP_RE.match(isp):
        raise BadRequest(f"{name} must match [a-z0-9][a-z0-9-]{{0,31}}")
    return isp


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
    body = await read_json(request, PLAY_FIELDS)
    title_id = _str_field(body, "title", required=True, max_len=64)
    assert title_id is not None
    if not is_title_id(title_id):
        raise BadRequest("invalid title id")
    client_ip = _str_field(body, "client_ip", max_len=64)
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
    return web.json_response({
        "title": title.id, "isp": isp, "expires": expires,
        "candidates": [{"edge": c.edge_id, "url": token_url(c.url, token, path), "reason": c.reason}
                       for c in ranking.candidates],
    })


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
    if header is None or header != edge_id:
        raise BadRequest(f"{EDGE_HEADER} header missing or not the edge id")
    body = await read_limited(request, MAX_MESSAGE_BYTES)
    st = request.app[STATE]
    return st.edge_key(edge_id), body, request.headers.get(SIGNATURE_HEADER)


def _reply_for(st: ControlState, rec: EdgeRecord, now: float) -> ControlReply:
    """Outstanding plans the edge does not already report as running, within the size budget."""
    plans: list[FillPlan] = []
    budget = REPLY_BUDGET_BYTES
    for p in st.jobs.outstanding(rec.edge_id):
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
    if any(p.terminal for p in changed):
        # The edge stops reporting a plan once this reply acknowledges its final state, so
        # the final state must be on disk first: a crash now must not lose it.
        await flush(st)
    return _signed_reply(key, _reply_for(st, rec, now))


# ---------------------------------------------------------------- operator: catalog

@operator("POST", "/v1/titles")
async def add_title(request: web.Request) -> web.Response:
    st = request.app[STATE]
    raw = await read_limited(request, MAX_JSON_BYTES)
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("malformed JSON") from None
    if isinstance(obj, dict) and isinstance(obj.get("duration_s"), bool):
        raise BadRequest("duration_s must be a number")
    if isinstance(obj, dict) and isinstance(obj.get("popularity"), bool):
        raise BadRequest("popularity must be a number")
    title = Title.from_json(obj)
    if title.id in st.catalog:
        raise Conflict(f"title {title.id} exists")
    await st.db().call(st.db().store.put_title, title)
    st.catalog.titles[title.id] = title
    event(log, "title added", title=title.id)
    return web.json_response(title.to_json(), status=201, headers={"Location": f"/v1/titles/{title.id}"})


@operator("DELETE", "/v1/titles/{id}")
async def retire_title(request: web.Request) -> web.Response:
    st = request.app[STATE]
    tid = _title_param(request)
    st.catalog.get(tid)
    await st.db().call(st.db().store.retire_title, tid)
    st.catalog.titles.pop(tid, None)  # a concurrent retire may have got here first
    event(log, "title retired", title=tid)
    return web.json_response({"id": tid, "retired": True})


@operator("GET", "/v1/popularity")
async def get_popularity(request: web.Request) -> web.Response:
    """Observed plays per title for one ISP (`-`: unknown networks), most played first."""
    st = request.app[STATE]
    isp = request.query.get("isp", NO_ISP)
    if isp != NO_ISP and not ISP_RE.match(isp):
        raise BadRequest("isp must match [a-z0-9][a-z0-9-]{0,31} or be -")
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise BadRequest("limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be in [1, 1000]")
    rows = sorted(((t, n) for (i, t), n in st.plays.items() if i == isp), key=lambda r: (-r[1], r[0]))[:limit]
    return web.json_response({"isp": isp, "titles": [{"id": t, "plays": n} for t, n in rows]})


# ---------------------------------------------------------------- operator: fleet

@operator("GET", "/v1/fleet")
async def get_fleet(request: web.Request) -> web.Response:
    st = request.app[STATE]
    now = time.time()
    return web.json_response({"edges": st.fleet.to_json(now), "states": st.fleet.counts_by_state(now),
                              "isps": st.config.topology.prefixes()})


@operator("POST", "/v1/edges/{id}/admin")
async def edge_admin(request: web.Request) -> web.Response:
    st = request.app[STATE]
    edge_id = check_edge_id(request.match_info["id"])
    body = await read_json(request, frozenset({"down"}))
    down = body.get("down")
    if not isinstance(down, bool):
        raise BadRequest("down must be true or false")
    st.fleet.get(edge_id)
    await st.db().call(st.db().store.set_admin, edge_id, down)
    rec = st.fleet.set_admin(edge_id, down)
    event(log, "edge admin", edge=edge_id, down=down)
    return web.json_response(rec.to_json(time.time()))


# ---------------------------------------------------------------- operator: jobs

JOB_FIELDS = frozenset({"isp", "titles", "top", "renditions", "bandwidth_bps", "replicas"})


@operator("POST", "/v1/prepositions")
async def create_job(request: web.Request) -> web.Response:
    st = request.app[STATE]
    body = await read_json(request, JOB_FIELDS)
    isp = _isp_field(body, required=True)
    assert isp is not None
    if ("titles" in body) == ("top" in body):
        raise BadRequest("give exactly one of titles or top")
    if "titles" in body:
        ids = body["titles"]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_JOB_TITLES \
                or not all(isinstance(t, str) for t in ids):
            raise BadRequest(f"titles must be a non-empty list of at most {MAX_JOB_TITLES} title ids")
        for t in ids:
            if not is_title_id(t):
                raise BadRequest(f"invalid title id {t[:80]!r}")
        titles = [st.catalog.get(t) for t in dict.fromkeys(ids)]
    else:
        top = _int_field(body, "top", 1, MAX_JOB_TITLES)
        assert top is not None
        titles = st.top_titles(isp, top)
    renditions: tuple[int, ...] | None = None
    if body.get("renditions") is not None:
        rends = body["renditions"]
        if not isinstance(rends, list) or not rends or not all(
                isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rends):
            raise BadRequest("renditions must be a non-empty list of kbit/s")
        renditions = tuple(sorted(set(rends)))
        for t in titles:
            if not set(renditions) & set(t.renditions):
                raise BadRequest(f"title {t.id} has none of the renditions {list(renditions)}")
    bandwidth = _int_field(body, "bandwidth_bps", 0, 10**12)
    replicas = _int_field(body, "replicas", 1, 64)
    if isp not in st.known_isps():
        raise NotFound(f"unknown isp {isp}")
    now = time.time()
    edges = [r for r in st.fleet.edges.values() if r.isp == isp and r.health.state_at(now) == "up"]
    if not edges:
        raise Conflict(f"no healthy edge in isp {isp}")
    spaces = [st.jobs.space_for(r.edge_id, r.free_bytes, frozenset(r.titles)) for r in edges]
    popularity = {t.id: st.observed(isp, t.id) + t.popularity for t in titles}
    bw = st.config.fill_bandwidth_bps if bandwidth is None else bandwidth
    # Sizing titles hashes every segment id and a plan lists every path: a few hundred ms for
    # a large job, so it runs on a worker thread over snapshots (titles are immutable).
    job = await asyncio.to_thread(_plan_job, new_job_id(), isp, titles, popularity, spaces, renditions, bw,
                                  replicas, now)
    await st.db().call(st.db().store.insert_job, job)
    st.jobs.add(job)
    event(log, "preposition job created", job=job.id, isp=isp, titles=len(titles), plans=len(job.plans),
          unplaced=len(job.unplaced))
    return web.json_response(job.to_json(with_plans=False), status=202,
                             headers={"Location": f"/v1/prepositions/{job.id}"})


def _plan_job(job_id: str, isp: str, titles: list[Title], popularity: dict[str, float], spaces: list[EdgeSpace],
              renditions: tuple[int, ...] | None, bandwidth_bps: int, replicas: int | None, now: float) -> Job:
    """Placement and fill plans for one job (pure; runs on a worker thread)."""
    demands = [TitleDemand(t.id, popularity[t.id], title_bytes(t, renditions)) for t in titles]
    placed = plan_placement(demands, spaces, max_replicas=replicas)
    plans = build_plans(job_id, {e: ts for e, ts in placed.assignments.items() if ts}, {t.id: t for t in titles},
                        renditions, bandwidth_bps, now)
    return Job(job_id, isp, tuple(t.id for t in titles), renditions, bandwidth_bps, now, plans,
               tuple(placed.unplaced),
               "nothing could be placed within the edges' free capacity" if placed.unplaced and not plans else "",
               now)


@operator("GET", "/v1/prepositions")
async def list_jobs(request: web.Request) -> web.Response:
    st = request.app[STATE]
    return web.json_response({"jobs": [j.to_json(with_plans=False) for j in st.jobs.listing()]})


@operator("GET", "/v1/prepositions/{id}")
async def get_job(request: web.Request) -> web.Response:
    st = request.app[STATE]
    job = st.jobs.get(request.match_info["id"])
    if job is None:
        raise NotFound("unknown job")
    return web.json_response(job.to_json())


# ---------------------------------------------------------------- docs

async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi.spec())


async def get_dashboard(request: web.Request) -> web.Response:
    from control.dashboard import PAGE
    return web.Response(text=PAGE, content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache",
                                 "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline' "
                                                            "'self'; style-src 'unsafe-inline'"})


# ---------------------------------------------------------------- lifecycle

async def flush(st: ControlState) -> None:
    """Write play counts and job progress changed since the last flush."""
    async with st.flush_lock:
        deltas, st.play_deltas = st.play_deltas, {}
        plans, jobs = st.jobs.take_dirty()
        try:
            if deltas:
                await st.db().call(st.db().store.add_plays, deltas)
            if plans or jobs:
                await st.db().call(st.db().store.save_progress, plans, jobs)
        except Exception:
            # Put the work back so the next flush retries it.
            for k, n in deltas.items():
                st.play_deltas[k] = st.play_deltas.get(k, 0) + n
            for p in plans:
                st.jobs.mark_dirty(p, time.time())
            raise


async def _flusher(st: ControlState) -> None:
    interval = st.config.flush_interval_s
    while True:
        await asyncio.sleep(interval)
        now = time.time()

        def alive(edge_id: str) -> bool:  # not yet `down` by the health table's rule
            rec = st.fleet.edges.get(edge_id)
            missed = rec.health.missed_at(now) if rec is not None else None
            return missed is not None and missed < DOWN_AFTER_MISSED

        for p in st.jobs.sweep(now, st.config.plan_timeout_s, alive):
            event(log, "fill plan timed out", level=logging.WARNING, plan=p.plan_id, edge=p.edge_id)
        try:
            await flush(st)
        except Exception:
            log.exception("flush failed; will retry")


async def _fetch_origin_catalog(url: str, wait_s: float) -> Catalog:
    """GET {origin}/v1/catalog, retrying until `wait_s` has passed (the origin may start with us)."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            try:
                async with session.get(url.rstrip("/") + "/v1/catalog") as resp:
                    if resp.status == 200:
                        return Catalog.from_json(await resp.json(content_type=None))
                    last = f"status {resp.status}"
            except OcsimError as exc:
                raise UpstreamError(f"origin catalog: {exc.reason}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise UpstreamError(f"origin catalog from {url}: {last}")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


async def _load(st: ControlState) -> None:
    cfg = st.config
    store = AsyncStore(await asyncio.get_running_loop().run_in_executor(None, Store, cfg.db_path))
    st.store = store
    s = store.store
    if cfg.catalog is not None:
        await store.call(s.merge_catalog, list(cfg.catalog.titles.values()))
    if cfg.origin_url:
        try:
            fetched = await _fetch_origin_catalog(cfg.origin_url, cfg.origin_wait_s)
        except UpstreamError as exc:
            catalog, _ = await store.call(s.load_catalog)
            if not len(catalog):
                raise
            event(log, "origin catalog unavailable; using the stored catalog", level=logging.WARNING,
                  error=exc.reason, titles=len(catalog))
        else:
            await store.call(s.merge_catalog, list(fetched.titles.values()))
    catalog, retired = await store.call(s.load_catalog)
    if not len(catalog) and not retired and cfg.catalog is None and not cfg.origin_url:
        await store.call(s.merge_catalog, list(default_catalog().titles.values()))
        catalog, retired = await store.call(s.load_catalog)
    st.catalog = catalog
    st.plays = await store.call(s.load_plays)
    st.fleet.admin_down.update(await store.call(s.load_admin))
    now = time.time()
    for job in await store.call(s.load_jobs, now):
        st.jobs.add(job)
    resumed = sum(1 for j in st.jobs.jobs.values() if j.state in ("pending", "running"))
    event(log, "control state loaded", titles=len(catalog), retired=len(retired), jobs=len(st.jobs.jobs),
          resumed_jobs=resumed, db=str(cfg.db_path))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    await _load(st)
    task = asyncio.create_task(_flusher(st), name="control-flusher")
    st.background.add(task)
    task.add_done_callback(st.background.discard)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await flush(st)
        except Exception:
            log.exception("final flush failed")
        if st.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, st.store.close)
            st.store = None


def _register_metrics(app: web.Application, st: ControlState) -> None:
    reg = app[REGISTRY]
    app[PLAYS] = reg.counter("ocsim_control_plays_total", "Play requests answered or refused, by client ISP",
                             ("isp",))
    app[STEER_SECONDS] = reg.histogram("ocsim_control_steering_seconds", "Time to rank candidates for one play",
                                       buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                0.025, 0.1))
    app[MISSES] = reg.counter("ocsim_control_steering_misses_total",
                              "content: the first choice did not hold the title; health: an edge of the "
                              "client's ISP was passed over for its health", ("kind",))
    app[BAD_SIGNATURES] = reg.counter("ocsim_control_bad_signatures_total",
                                      "Edge messages refused for a bad or missing signature", ("message",))
    app[HEARTBEATS] = reg.counter("ocsim_control_heartbeats_total", "Heartbeats accepted, by reported state",
                                  ("state",))
    app[STALE] = reg.counter("ocsim_control_stale_messages_total",
                             "Edge messages refused as replayed, reordered or off-clock", ("message",))
    reg.gauge("ocsim_control_edges", "Edges by health state", ("state",),
              callback=lambda: {(s,): float(n) for s, n in st.fleet.counts_by_state(time.time()).items()})
    reg.gauge("ocsim_control_jobs", "Pre-position jobs by state", ("state",),
              callback=lambda: {(s,): float(n) for s, n in st.jobs.counts_by_state().items()})
    reg.gauge("ocsim_control_titles", "Titles in the catalog", callback=lambda: float(len(st.catalog)))


def build_app(config: ControlConfig) -> web.Application:
    """The control-plane app; state is loaded from SQLite (and the origin) on startup."""
    app = create_app("control", client_max_size=MAX_MESSAGE_BYTES)
    st = ControlState(config)
    app[STATE] = st
    _register_metrics(app, st)
    app[HEALTH].append(lambda: {"edges": len(st.fleet.edges), "titles": len(st.catalog),
                                "jobs_active": sum(1 for j in st.jobs.jobs.values()
                                                   if j.state in ("pending", "running"))})
    app.cleanup_ctx.append(_lifecycle)
    r = app.router
    r.add_get("/v1/catalog", get_catalog)
    r.add_get("/v1/titles/{id}", get_title)
    r.add_post("/v1/titles", add_title)
    r.add_delete("/v1/titles/{id}", retire_title)
    r.add_post("/v1/play", play)
    r.add_post("/v1/edges/register", register)
    r.add_post("/v1/edges/{id}/heartbeat", heartbeat)
    r.add_post("/v1/edges/{id}/admin", edge_admin)
    r.add_get("/v1/fleet", get_fleet)
    r.add_get("/v1/popularity", get_popularity)
    r.add_post("/v1/prepositions", create_job)
    r.add_get("/v1/prepositions", list_jobs)
    r.add_get("/v1/prepositions/{id}", get_job)
    r.add_get("/openapi.json", get_openapi)
    r.add_get("/dashboard", get_dashboard)
    return app


__all__ = ["ControlConfig", "ControlState", "build_app", "OPERATOR_ROUTES", "STATE"]
