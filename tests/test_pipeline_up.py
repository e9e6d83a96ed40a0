"""`ocsim up --events`: a local nats-server and the collector beside the topology; players
play; the pipeline's views show their sessions, bytes and misses, and its counts equal the
services' own counters exactly."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from common.eventsink import BufferedSink
from common.metrics import parse_text
from pipeline.publisher import NatsTransport
from player.driver import play_session
from tests.test_up import Up, start_up  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body[:1] in (b"{", b"[") else body.decode()


def _sql(pipeline: str, sql: str) -> list[list[Any]]:
    return list(_get(pipeline + "/v1/query?sql=" + urllib.parse.quote(sql))["rows"])


def _post(url: str, body: dict[str, Any], token: str) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _metrics(url: str) -> dict[str, float]:
    return parse_text(_get(url + "/metrics"))


def _sum(metrics: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


@pytest.mark.timeout(150)
def test_up_with_events_views_match_the_services_counters(start_up: Callable[..., Up]) -> None:  # noqa: F811
    up = start_up("--events")
    state = up.wait_state(60)
    assert state["events"].startswith("nats://127.0.0.1:") and state["pipeline"]
    pipeline, control = state["pipeline"], state["control"]
    plays = [("t0", "isp-a"), ("t1", "isp-a"), ("t0", "isp-a"), ("t2", "isp-b"), ("t0", "isp-b"), ("t1", "isp-a")]

    async def crowd(wave: list[tuple[str, str]]) -> list[Any]:
        sink = BufferedSink("player-test", NatsTransport(state["events"]))
        await sink.start()
        try:
            return list(await asyncio.gather(*[
                play_session(control, title, isp=isp, speed=40.0, verify=True, events=sink)
                for title, isp in wave]))
        finally:
            await sink.close(timeout=20)

    reports = asyncio.run(crowd(plays))
    assert all(r.ok and r.verified for r in reports), [r.error for r in reports]
    # a second wave with one edge of isp-a taken out of steering: its plays are health misses
    down = sorted(e["id"] for e in state["edges"] if e["isp"] == "isp-a")[0]
    _post(control + f"/v1/edges/{down}/admin", {"down": True}, state["operator_token"])
    second = [("t0", "isp-a"), ("t2", "isp-a")]
    reports += asyncio.run(crowd(second))
    assert all(r.ok and r.verified for r in reports), [r.error for r in reports]
    plays = plays + second

    edges = {e["id"]: e["url"] for e in state["edges"]}

    def settled() -> bool:
        """Every edge's counters equal what the store holds for it (events arrive within a second or two)."""
        for edge, url in edges.items():
            m = _metrics(url)
            (hits, misses), = _sql(pipeline, f"SELECT count(*) FILTER (WHERE cache = 'hit'), "
                                             f"count(*) FILTER (WHERE cache IN ('cold','evicted','coalesced','peer',"
                                             f"'stale')) FROM edge_request WHERE edge = '{edge}'")
            if (hits, misses) != (_sum(m, "ocsim_edge_hits_total"), _sum(m, "ocsim_edge_misses_total")):
                return False
        return len(_sql(pipeline, "SELECT 1 FROM player_session WHERE phase = 'end'")) == len(plays)

    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, "the pipeline never matched the edges' counters"
        time.sleep(0.2)  # polling a condition with a deadline

    # per edge, per class: misses, hits, bytes served, fills by source and result
    for edge, url in edges.items():
        m = _metrics(url)
        for klass in ("cold", "evicted", "coalesced", "peer", "stale"):
            (n,), = _sql(pipeline, f"SELECT count(*) FROM edge_request WHERE edge = '{edge}' AND cache = '{klass}'")
            assert n == m.get(f'ocsim_edge_misses_total{{class="{klass}"}}', 0.0), (edge, klass)
        (sent, requests), = _sql(pipeline, f"SELECT coalesce(sum(bytes), 0), count(*) FROM edge_request "
                                           f"WHERE edge = '{edge}'")
        content = {k: v for k, v in m.items() if 'route="/{tail}"' in k}
        assert sent == sum(v for k, v in content.items() if k.startswith("ocsim_http_response_bytes_total")), edge
        assert requests == sum(v for k, v in content.items() if k.startswith("ocsim_http_requests_total")), edge
        for (source, outcome, n) in _sql(pipeline, f"SELECT source, outcome, count(*) FROM edge_fill "
                                                   f"WHERE edge = '{edge}' GROUP BY 1, 2"):
            assert n == m[f'ocsim_edge_fills_total{{source="{source}",result="{outcome}"}}'], (edge, source, outcome)
    # steering: one steer.play per play the control plane answered
    (steered,), = _sql(pipeline, "SELECT count(*) FROM steer_play")
    assert steered == _sum(_metrics(control), "ocsim_control_plays_total") == len(plays)
    # sessions: the views show each one with the bytes its player reported
    sessions = _get(pipeline + "/v1/views/sessions?since=1h")
    cols = sessions["columns"]
    rows = [dict(zip(cols, r)) for r in sessions["rows"]]
    assert len(rows) == len(plays)
    assert sorted(r["bytes"] for r in rows) == sorted(r.qoe.bytes for r in reports if r.qoe)
    assert all(r["verified"] is True and r["startup_s"] is not None for r in rows)
    # every segment request carried its session, so the edge's bytes join to the sessions
    (joined,), = _sql(pipeline, "SELECT count(*) FROM edge_request r JOIN steer_play s ON s.play_id = r.session")
    (with_session,), = _sql(pipeline, "SELECT count(*) FROM edge_request WHERE session IS NOT NULL")
    assert joined == with_session > 0
    # misses and offload per ISP are there for both ISPs
    offload = _get(pipeline + "/v1/views/offload?since=1h")
    assert {r[0] for r in offload["rows"]} == {"isp-a", "isp-b"}
    series = _get(pipeline + "/v1/series?metric=sps&by=isp&step=10s&since=1h")
    assert sum(v for pts in series["series"].values() for _, v in pts) * 10 == pytest.approx(len(plays))
    qoe = _get(pipeline + "/v1/views/qoe?since=1h")
    assert sum(r[1] for r in qoe["rows"]) == len(plays)
    assert {r[0]: r[1] for r in qoe["rows"]} == {"isp-a": 6, "isp-b": 2}  # sessions per ISP
    # content vs health misses: steering's flags, stored per play, equal the control plane's counters
    cm = _metrics(control)
    steer = _get(pipeline + "/v1/views/steering_misses?since=1h")
    by_isp = {r[0]: dict(zip(steer["columns"], r)) for r in steer["rows"]}
    assert sum(r["plays"] for r in by_isp.values()) == len(plays)
    for kind in ("content", "health"):
        assert sum(r[f"{kind}_misses"] for r in by_isp.values()) == \
            cm.get(f'ocsim_control_steering_misses_total{{kind="{kind}"}}', 0.0), kind
    assert by_isp["isp-a"]["health_misses"] == len(second) and by_isp["isp-b"]["health_misses"] == 0
    assert by_isp["isp-a"]["content_misses"] + by_isp["isp-b"]["content_misses"] >= 1  # the first plays: cold
    # ... and joined with the edges' requests, every miss gets a cause, and the causes add up
    causes = _get(pipeline + "/v1/views/miss_causes?since=1h")
    total = {(r[0], r[1]): r[2] for r in causes["rows"]}
    (misses,), = _sql(pipeline, "SELECT count(*) FROM edge_request WHERE cache IN "
                                "('cold','evicted','coalesced','peer','stale')")
    assert sum(total.values()) == misses and {c for _, c in total} <= {"content", "health", "edge", "unjoined"}
    assert sum(n for (_, c), n in total.items() if c == "content") >= 1
    # a miss of a play steering flagged as a health miss (and not a content miss) is a health miss
    (health_only,), = _sql(pipeline, "SELECT count(*) FROM edge_request r JOIN steer_play s ON s.play_id = r.session "
                                     "WHERE s.health_miss AND NOT s.content_miss "
                                     "AND r.cache IN ('cold','evicted','coalesced','peer','stale')")
    assert health_only == sum(n for (_, c), n in total.items() if c == "health")
