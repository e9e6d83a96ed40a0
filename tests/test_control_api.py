"""The control plane's HTTP API, in process (aiohttp test client): auth, input checking,
the OpenAPI document, play answers and their tokens, popularity, the catalog, the edge
protocol's defences, and pre-position jobs surviving a restart on the same SQLite file."""
from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp.test_utils import TestClient

from common.content import Catalog, Title
from common.metrics import parse_text
from common.tokens import Keyring, TokenVerdict, split_token_path
from common.wire import CONTENT_TYPE, EDGE_HEADER, SIGNATURE_HEADER, Heartbeat, sign
from control import openapi
from control.app import OPERATOR_ROUTES, STATE, ControlConfig, build_app
from control.handlers import ADMIN_FIELDS, JOB_FIELDS, PLAY_FIELDS
from control.routes import ROUTES
from control.topology import parse_topology
from test_control_support import FLEET_SECRET, OPERATOR_TOKEN, TOKEN_KEY, TOPOLOGY, ControlRefused, SimEdge, \
    aiohttp_poster, bearer

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Any]]

TITLES = [Title("alpha", 40.0, (235, 750), 0.5), Title("beta", 20.0, (235, 750), 0.3),
          Title("gamma", 12.0, (235,), 0.2), Title("delta", 8.0, (235, 750, 1750), 0.1)]


def make_config(db: Path, **kw: Any) -> ControlConfig:
    return ControlConfig(db_path=db, operator_token=OPERATOR_TOKEN, fleet_secret=FLEET_SECRET,
                         keyring=Keyring.parse(TOKEN_KEY), topology=parse_topology(tomllib.loads(TOPOLOGY)),
                         catalog=Catalog.of(TITLES), flush_interval_s=0.05, **kw)


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    c: Client = await aiohttp_client(build_app(make_config(tmp_path / "control.db")))
    return c


def edge(client: Client, edge_id: str, isp: str, **kw: Any) -> SimEdge:
    return SimEdge(aiohttp_poster(client, ""), edge_id, isp, **kw)


async def play(client: Client, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/play", json=body)
    return resp.status, await resp.json()


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


# ------------------------------------------------------------------ auth

async def test_every_operator_route_needs_the_token(client: Client) -> None:
    assert len(OPERATOR_ROUTES) >= 8
    for method, path in OPERATOR_ROUTES:
        url = _concrete(path)
        resp = await client.request(method, url, json={})
        assert resp.status == 401, (method, path)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        assert "error" in await resp.json()
        resp = await client.request(method, url, json={}, headers={"Authorization": "Basic Zm9vOmJhcg=="})
        assert resp.status == 401, (method, path)
        resp = await client.request(method, url, json={}, headers=bearer("wrong-token"))
        assert resp.status == 403, (method, path)
        assert (await resp.json())["error"] == "wrong operator token"
    # and the right token gets past the check (whatever the handler then says)
    resp = await client.get("/v1/fleet", headers=bearer())
    assert resp.status == 200


async def test_public_routes_need_no_token(client: Client) -> None:
    for path in ("/v1/catalog", "/v1/titles/alpha", "/healthz", "/metrics", "/openapi.json", "/dashboard"):
        resp = await client.get(path)
        assert resp.status == 200, path


# ------------------------------------------------------------------ openapi

async def test_openapi_lists_exactly_the_registered_routes(client: Client) -> None:
    registered = set()
    for route in client.app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        registered.add((route.method.lower(), path))
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    documented = {(m, p) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert registered == documented
    # every operator route is marked as needing the bearer token, and only those
    for m, p in documented:
        op = doc["paths"][p][m]
        assert (("security" in op) == ((m.upper(), p) in OPERATOR_ROUTES)), (m, p)
        assert all(re.fullmatch(r"[1-5][0-9][0-9]", code) for code in op["responses"])
    # every $ref resolves
    text = json.dumps(doc)
    for ref in set(re.findall(r'"#/components/schemas/([A-Za-z]+)"', text)):
        assert ref in doc["components"]["schemas"]
    assert openapi.spec(ROUTES) == doc


async def test_openapi_says_who_may_call_and_what_bodies_hold(client: Client) -> None:
    """The document is derived from the route table; check it against what the app does."""
    doc = await (await client.get("/openapi.json")).json()
    for p, item in doc["paths"].items():
        for m, op in item.items():
            if m == "parameters":
                continue
            # the path parameters are the route's placeholders
            assert [x["name"] for x in item.get("parameters", [])] == re.findall(r"\{([^}]+)\}", p), p
            resp = await client.request(m.upper(), _concrete(p), json={})
            if "security" in op:  # documented as operator-only: the app refuses without the token
                assert resp.status == 401, (m, p)
                assert {"401", "403"} <= set(op["responses"]), (m, p)
            else:  # documented as open: the app does not ask for the token
                assert resp.status != 401, (m, p)
                assert "401" not in op["responses"], (m, p)
            assert str(resp.status) in op["responses"] or "security" in op, (m, p, resp.status)
    # the JSON bodies the handlers accept are the fields the schemas describe
    schemas = doc["components"]["schemas"]
    for name, fields in (("PlayRequest", PLAY_FIELDS), ("JobRequest", JOB_FIELDS), ("AdminRequest", ADMIN_FIELDS)):
        assert set(schemas[name]["properties"]) == fields, name
        assert schemas[name]["additionalProperties"] is False, name


# ------------------------------------------------------------------ play

async def test_play_answer_shape_and_tokens_verify(client: Client) -> None:
    a1, a2, b1 = edge(client, "a1", "isp-a"), edge(client, "a2", "isp-a"), edge(client, "b1", "isp-b")
    for e in (a1, a2, b1):
        await e.register()
        await e.heartbeat()
    status, body = await play(client, title="alpha", client_ip="10.1.2.3")
    assert status == 200
    # play_id: X-Ocsim-Session; fallback: for starts while control is down (issue 11)
    assert set(body) == {"title", "isp", "candidates", "expires", "play_id", "fallback"}
    assert body["title"] == "alpha" and body["isp"] == "isp-a"
    edges = [c["edge"] for c in body["candidates"]]
    assert set(edges[:2]) == {"a1", "a2"} and edges[2:] == ["b1"]
    assert all(set(c) == {"edge", "url", "reason"} for c in body["candidates"])
    ring = Keyring.parse(TOKEN_KEY)
    now = time.time()
    assert body["expires"] > now + 3000
    for cand in body["candidates"]:
        base = {"a1": a1, "a2": a2, "b1": b1}[cand["edge"]].url
        assert cand["url"].startswith(base + "/t/")
        token, path = split_token_path(cand["url"][len(base):])
        assert path == "/content/alpha/master.m3u8"
        assert ring.check(token, path, now) is TokenVerdict.OK
        assert ring.check(token, "/content/alpha/235/0.seg", now) is TokenVerdict.OK
        assert ring.check(token, "/content/beta/master.m3u8", now) is TokenVerdict.BAD_SIGNATURE
        assert ring.check(token, path, body["expires"] + 1) is TokenVerdict.EXPIRED
        assert token is not None and ".isp-a." in token
    fb = body["fallback"]
    assert [e["edge"] for e in fb["edges"]] == edges
    assert all(e["url"] == {"a1": a1, "a2": a2, "b1": b1}[e["edge"]].url for e in fb["edges"])
    assert now + 800 < fb["expires"] < body["expires"] and ".isp-a.all." in fb["token"]
    assert ring.check(fb["token"], "/content/beta/master.m3u8", now) is TokenVerdict.OK
    # explicit ISP
    status, body = await play(client, title="beta", isp="isp-b")
    assert status == 200 and body["isp"] == "isp-b" and body["candidates"][0]["edge"] == "b1"


async def test_play_unknown_title_network_and_no_edges(client: Client) -> None:
    status, body = await play(client, title="alpha", client_ip="192.0.2.1")
    assert status == 503 and body == {"error": "no edge available"}
    e = edge(client, "b1", "isp-b")
    await e.register()
    status, body = await play(client, title="nope", client_ip="10.1.0.1")
    assert status == 404
    status, body = await play(client, title="alpha", client_ip="192.0.2.1")  # no ISP announces it
    assert status == 200 and body["isp"] is None and body["candidates"][0]["edge"] == "b1"
    token = split_token_path(body["candidates"][0]["url"].split("/b1", 1)[1])[0]
    assert token is not None and ".-." in token
    status, body = await play(client, title="alpha", client_ip="::ffff:10.2.0.9")
    assert status == 200 and body["isp"] == "isp-b"


@pytest.mark.parametrize("raw,status", [
    (b"{not json", 400),
    (b"[1, 2]", 400),
    (b'"alpha"', 400),
    (json.dumps({"title": 5, "isp": "isp-a"}).encode(), 400),
    (json.dumps({"title": "alpha", "isp": "ISP A"}).encode(), 400),
    (json.dumps({"title": "alpha", "isp": "isp-a", "extra": 1}).encode(), 400),
    (json.dumps({"title": "alpha", "client_ip": "10.1.0.1", "isp": "isp-a"}).encode(), 400),
    (json.dumps({"title": "alpha", "client_ip": "not-an-ip"}).encode(), 400),
    (json.dumps({"title": "../etc", "isp": "isp-a"}).encode(), 400),
    (json.dumps({"isp": "isp-a"}).encode(), 400),
    (b"\xff\xfe", 400),
    (json.dumps({"title": "alpha", "isp": "isp-a", "pad": "x" * 70_000}).encode(), 413),
])
async def test_play_bad_input_is_a_4xx_and_counts_nothing(client: Client, raw: bytes, status: int) -> None:
    resp = await client.post("/v1/play", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == status
    assert (await resp.json())["error"]
    st = client.app[STATE]
    assert st.plays == {} and st.play_deltas == {}


async def test_bad_operator_input_changes_nothing(client: Client) -> None:
    st = client.app[STATE]
    before = st.catalog.to_json()
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/v1/titles", {"id": "new", "duration_s": "long"}),
        ("POST", "/v1/titles", {"id": "new", "duration_s": 10, "colour": "red"}),
        ("POST", "/v1/titles", {"id": "Bad Id", "duration_s": 10}),
        ("POST", "/v1/titles", {"id": "new", "duration_s": True}),
        ("POST", "/v1/titles", [1]),
        ("POST", "/v1/titles", {"id": "alpha", "duration_s": 10}),  # exists: 409
        ("DELETE", "/v1/titles/nope", None),
        ("POST", "/v1/prepositions", {"isp": "isp-a"}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "titles": ["alpha"], "top": 2}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "titles": "alpha"}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "titles": ["nope"]}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "top": 0}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "top": True}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "top": 1, "renditions": [99]}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "top": 1, "when": "now"}),
        ("POST", "/v1/prepositions", {"isp": "nowhere", "top": 1}),
        ("POST", "/v1/prepositions", {"isp": "isp-a", "top": 1}),  # no healthy edge: 409
        ("POST", "/v1/edges/e1/admin", {"down": "yes"}),
        ("POST", "/v1/edges/e1/admin", {"down": True}),  # unknown edge: 404
        ("GET", "/v1/prepositions/job-nope", None),
        ("GET", "/v1/popularity?limit=zero", None),
    ]
    for method, path, body in cases:
        resp = await client.request(method, path, json=body, headers=bearer())
        assert 400 <= resp.status < 500, (method, path, body, resp.status)
        assert (await resp.json())["error"], (method, path, body)
    resp = await client.post("/v1/titles", data=b"{" * 70_000, headers=bearer())
    assert resp.status == 413
    assert st.catalog.to_json() == before
    assert st.jobs.jobs == {}


# ------------------------------------------------------------------ catalog

async def test_catalog_add_retire_and_persist(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "c.db")
    client = await aiohttp_client(build_app(cfg))
    cat = await (await client.get("/v1/catalog")).json()
    assert [t["id"] for t in cat["titles"]] == ["alpha", "beta", "gamma", "delta"]
    assert cat["titles"][0] == {"id": "alpha", "duration_s": 40.0, "renditions": [235, 750], "popularity": 0.5,
                                "media": "synthetic"}
    resp = await client.post("/v1/titles", json={"id": "new-one", "duration_s": 30, "popularity": 0.9},
                             headers=bearer())
    assert resp.status == 201 and resp.headers["Location"] == "/v1/titles/new-one"
    assert (await (await client.get("/v1/titles/new-one")).json())["renditions"] == [235, 750, 1750, 3000, 5800]
    resp = await client.delete("/v1/titles/beta", headers=bearer())
    assert resp.status == 200 and await resp.json() == {"id": "beta", "retired": True}
    assert (await client.get("/v1/titles/beta")).status == 404
    assert (await play(client, title="beta", isp="isp-a"))[0] == 404
    await client.close()
    # a restart with the same catalog file: the retired title stays retired, the added one stays
    client = await aiohttp_client(build_app(cfg))
    ids = [t["id"] for t in (await (await client.get("/v1/catalog")).json())["titles"]]
    assert ids == ["new-one", "alpha", "gamma", "delta"]


# ------------------------------------------------------------------ popularity

async def test_plays_count_per_isp_and_feed_top_n(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "p.db")
    client = await aiohttp_client(build_app(cfg))
    e = edge(client, "a1", "isp-a")
    await e.register()
    for _ in range(3):
        assert (await play(client, title="delta", client_ip="10.1.9.9"))[0] == 200
    assert (await play(client, title="gamma", isp="isp-a"))[0] == 200
    assert (await play(client, title="gamma", isp="isp-b"))[0] == 200
    assert (await play(client, title="alpha", client_ip="198.51.100.7"))[0] == 200
    pop = await (await client.get("/v1/popularity?isp=isp-a", headers=bearer())).json()
    assert pop == {"isp": "isp-a", "titles": [{"id": "delta", "plays": 3}, {"id": "gamma", "plays": 1}]}
    pop = await (await client.get("/v1/popularity", headers=bearer())).json()
    assert pop["titles"] == [{"id": "alpha", "plays": 1}]
    metrics = parse_text(await (await client.get("/metrics")).text())
    assert metrics['ocsim_control_plays_total{isp="isp-a"}'] == 4
    assert metrics['ocsim_control_plays_total{isp="-"}'] == 1
    assert metrics["ocsim_control_steering_seconds_count"] == 6
    # top 4 files for isp-a: observed plays first (delta, gamma), not catalog popularity (alpha, beta)
    resp = await client.post("/v1/prepositions", json={"isp": "isp-a", "top": 4}, headers=bearer())
    assert resp.status == 202
    assert sorted((await resp.json())["titles"]) == ["delta", "gamma"]
    # for isp-b: gamma (1 play), then catalog popularity
    resp = await client.post("/v1/prepositions", json={"isp": "isp-b", "top": 2}, headers=bearer())
    assert resp.status == 409  # isp-b has no edge; the choice is checked via the state below
    assert [t.id for t in client.app[STATE].top_titles("isp-b", 2)] == ["gamma", "alpha"]
    await client.close()
    # flushed to SQLite: a new app on the same file knows the counts
    client = await aiohttp_client(build_app(cfg))
    assert client.app[STATE].plays[("isp-a", "delta")] == 3


# ------------------------------------------------------------------ edge protocol

async def test_edge_messages_are_authenticated_and_fresh(client: Client) -> None:
    e = edge(client, "a1", "isp-a")
    # heartbeat before register: 404 (the edge registers again)
    with pytest.raises(ControlRefused) as err:
        await e.send("/v1/edges/a1/heartbeat", e.heartbeat_msg())
    assert err.value.status == 404
    await e.register()
    await e.heartbeat()
    # a wrong key (another edge's, or a guess): 403, counted
    with pytest.raises(ControlRefused) as err:
        await e.send("/v1/edges/a1/heartbeat", e.heartbeat_msg(), key=b"x" * 32)
    assert err.value.status == 403
    with pytest.raises(ControlRefused) as err:
        await e.send("/v1/edges/register", e.heartbeat_msg(), signature="00" * 32)
    assert err.value.status == 403
    # replay: the same heartbeat twice
    msg = e.heartbeat_msg()
    await e.send("/v1/edges/a1/heartbeat", msg)
    with pytest.raises(ControlRefused) as err:
        await e.send("/v1/edges/a1/heartbeat", msg)
    assert err.value.status == 409
    # clock far off
    e.seq += 1
    old = Heartbeat(**{**msg.to_wire(), "seq": e.seq + 5, "ts": time.time() - 120, "fills": []})
    with pytest.raises(ControlRefused) as err:
        await e.send("/v1/edges/a1/heartbeat", old)
    assert err.value.status == 409
    # another edge's key cannot speak for a1
    b1 = edge(client, "b1", "isp-b")
    with pytest.raises(ControlRefused) as err:
        await e.send("/v1/edges/a1/heartbeat", e.heartbeat_msg(), key=b1.key)
    assert err.value.status == 403
    # malformed msgpack with a valid signature: 400; header and path must agree: 403
    junk = b"\xc1\xc1\xc1"
    resp = await client.post("/v1/edges/a1/heartbeat", data=junk, headers={
        EDGE_HEADER: "a1", SIGNATURE_HEADER: sign(e.key, junk), "Content-Type": CONTENT_TYPE})
    assert resp.status == 400
    body = msgpack.packb({"edge_id": "a1", "oops": 1})
    resp = await client.post("/v1/edges/a1/heartbeat", data=body, headers={
        EDGE_HEADER: "a1", SIGNATURE_HEADER: sign(e.key, body), "Content-Type": CONTENT_TYPE})
    assert resp.status == 400
    resp = await client.post("/v1/edges/a1/heartbeat", data=body, headers={
        EDGE_HEADER: "b1", SIGNATURE_HEADER: sign(b1.key, body), "Content-Type": CONTENT_TYPE})
    assert resp.status == 403  # another edge named than the path: not authenticated (issue 15)
    resp = await client.post("/v1/edges/a1/heartbeat", data=b"x" * (2 * 1024 * 1024), headers={
        EDGE_HEADER: "a1", SIGNATURE_HEADER: "00", "Content-Type": CONTENT_TYPE})
    assert resp.status == 413
    metrics = parse_text(await (await client.get("/metrics")).text())
    assert metrics['ocsim_control_bad_signatures_total{message="heartbeat"}'] == 2
    assert metrics['ocsim_control_bad_signatures_total{message="register"}'] == 1
    assert metrics['ocsim_control_stale_messages_total{message="heartbeat"}'] == 2
    # still healthy and steerable after all that
    await e.heartbeat()
    assert (await play(client, title="alpha", isp="isp-a"))[1]["candidates"][0]["edge"] == "a1"


async def test_admin_down_takes_an_edge_out_of_steering(client: Client) -> None:
    a1, a2 = edge(client, "a1", "isp-a"), edge(client, "a2", "isp-a")
    for e in (a1, a2):
        await e.register()
    resp = await client.post("/v1/edges/a1/admin", json={"down": True}, headers=bearer())
    assert resp.status == 200 and (await resp.json())["state"] == "admin_down"
    for title in ("alpha", "beta", "gamma", "delta"):
        assert [c["edge"] for c in (await play(client, title=title, isp="isp-a"))[1]["candidates"]] == ["a2"]
    fleet = await (await client.get("/v1/fleet", headers=bearer())).json()
    assert {e["id"]: e["state"] for e in fleet["edges"]} == {"a1": "admin_down", "a2": "up"}
    assert fleet["isps"] == {"isp-a": ["10.1.0.0/16"], "isp-b": ["10.2.0.0/16"]}
    keys = {"id", "isp", "url", "state", "req_rate", "byte_rate", "used_bytes", "capacity_bytes", "hit_ratio",
            "titles", "last_heartbeat_age_s"}
    assert keys <= set(fleet["edges"][0])
    resp = await client.post("/v1/edges/a1/admin", json={"down": False}, headers=bearer())
    assert (await resp.json())["state"] == "up"


# ------------------------------------------------------------------ jobs

async def test_job_survives_an_app_restart(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "jobs.db")
    client = await aiohttp_client(build_app(cfg))
    a1, a2 = edge(client, "a1", "isp-a"), edge(client, "a2", "isp-a")
    for e in (a1, a2):
        await e.register()
        await e.heartbeat()
    resp = await client.post("/v1/prepositions", json={"isp": "isp-a", "titles": ["alpha", "beta", "gamma"],
                                                       "renditions": [235]}, headers=bearer())
    assert resp.status == 202
    job_id = (await resp.json())["id"]
    job = await (await client.get(f"/v1/prepositions/{job_id}", headers=bearer())).json()
    assert job["state"] == "pending" and job["progress"] == 0
    # each title placed once (popularity-proportional replicas over 2 edges), 235 kbit/s only
    plan_titles = sorted(t for p in job["plans"] for t in p["titles"])
    assert set(plan_titles) == {"alpha", "beta", "gamma"}
    for e in (a1, a2):
        await e.heartbeat()  # receives its plan
    got = {pid: p for e in (a1, a2) for pid, p in e.plans.items()}
    assert sorted(got) == sorted(p["id"] for p in job["plans"])
    for p in got.values():
        assert p.paths[0].endswith("/master.m3u8") and all("/750/" not in x for x in p.paths)
        title = p.paths[0].split("/")[2]
        assert f"/content/{title}/235/index.m3u8" in p.paths
        assert f"/content/{title}/235/0.seg" in p.paths
    first = next(iter(a1.plans or a2.plans))
    owner = a1 if first in a1.plans else a2
    owner.set_progress(first, "running", 2)
    await owner.heartbeat()
    job = await (await client.get(f"/v1/prepositions/{job_id}", headers=bearer())).json()
    assert job["state"] == "running" and 0 < job["progress"] < 1
    await client.close()  # runs the final flush

    client = await aiohttp_client(build_app(cfg))
    listing = await (await client.get("/v1/prepositions", headers=bearer())).json()
    assert [j["id"] for j in listing["jobs"]] == [job_id] and listing["jobs"][0]["state"] == "running"
    for e in (a1, a2):
        e.post = aiohttp_poster(client, "")
        e.plans.clear()  # as if the edge had restarted too: the plans must come again
        e.progress.clear()
        await e.heartbeat()  # 404 -> registers again -> plans re-sent
    assert sorted(p for e in (a1, a2) for p in e.plans) == sorted(got)
    for e in (a1, a2):
        for pid in e.plans:
            e.set_progress(pid, "done", len(e.plans[pid].paths))
        await e.heartbeat()
    job = await (await client.get(f"/v1/prepositions/{job_id}", headers=bearer())).json()
    assert job["state"] == "done" and job["progress"] == 1
    assert all(p["state"] == "done" and p["done_objects"] == p["total_objects"] for p in job["plans"])
    metrics = parse_text(await (await client.get("/metrics")).text())
    assert metrics['ocsim_control_jobs{state="done"}'] == 1


async def test_job_with_no_room_fails_with_unplaced_titles(client: Client) -> None:
    e = edge(client, "a1", "isp-a", capacity_bytes=1000)
    await e.register()
    resp = await client.post("/v1/prepositions", json={"isp": "isp-a", "top": 2}, headers=bearer())
    assert resp.status == 202
    body = await resp.json()
    assert body["state"] == "failed" and body["error"] and body["shortfall"] == 2
    assert set(body["left_out"].values()) == {"no-room"} and body["unplaced"] == sorted(
        {k.split("/")[0] for k in body["left_out"]})


async def test_content_and_health_miss_counters(client: Client) -> None:
    a1, a2 = edge(client, "a1", "isp-a"), edge(client, "a2", "isp-a")
    for e in (a1, a2):
        await e.register()
        await e.heartbeat()

    async def misses() -> dict[str, float]:
        m = parse_text(await (await client.get("/metrics")).text())
        return {k: m.get(f'ocsim_control_steering_misses_total{{kind="{k}"}}', 0.0) for k in ("content", "health")}

    await play(client, title="alpha", isp="isp-a")
    assert await misses() == {"content": 1, "health": 0}  # nobody holds alpha yet
    a2.titles.add("alpha")
    await a2.heartbeat()
    _, body = await play(client, title="alpha", isp="isp-a")
    assert body["candidates"][0] == {**body["candidates"][0], "edge": "a2", "reason": "isp-holds-title"}
    assert await misses() == {"content": 1, "health": 0}
    await client.post("/v1/edges/a2/admin", json={"down": True}, headers=bearer())
    _, body = await play(client, title="alpha", isp="isp-a")
    assert [c["edge"] for c in body["candidates"]] == ["a1"]
    assert await misses() == {"content": 2, "health": 1}
    m = parse_text(await (await client.get("/metrics")).text())
    assert m['ocsim_control_edges{state="admin_down"}'] == 1 and m['ocsim_control_edges{state="up"}'] == 1


async def test_steer_to_origin_when_configured(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "o.db", origin_url="http://127.0.0.1:9", steer_to_origin=True, origin_wait_s=0.2)
    client = await aiohttp_client(build_app(cfg))  # the origin is unreachable: the stored catalog serves
    status, body = await play(client, title="alpha", isp="isp-a")
    assert status == 200
    assert [c["edge"] for c in body["candidates"]] == ["origin"]
    assert body["candidates"][0]["url"].startswith("http://127.0.0.1:9/t/")
    e = edge(client, "a1", "isp-a")
    await e.register()
    _, body = await play(client, title="alpha", isp="isp-a")
    assert [c["edge"] for c in body["candidates"]] == ["a1", "origin"]


async def test_made_up_isp_gets_the_fallback_and_no_metric_label(client: Client) -> None:
    e = edge(client, "b1", "isp-b")
    await e.register()
    status, body = await play(client, title="alpha", isp="isp-zz")
    assert status == 200 and body["isp"] is None and body["candidates"][0]["edge"] == "b1"
    assert "isp-zz" not in await (await client.get("/metrics")).text()
    health = await (await client.get("/healthz")).json()
    assert health["edges"] == 1 and health["titles"] == 4 and health["jobs_active"] == 0
