"""The fault proxies a chaos `Stack` puts on an edge's own links (edge -> origin, edge -> peer,
edge -> control, and player -> edge in front of it), end to end: the edges really go through
them, a toxic on one has the effect a test sees on the edge's fills, and `edge = ID` picks
the proxies of one edge.

A real copy of a small topology (origin, control, one ISP of two edges) on loopback; no fixed
sleeps, every time measured."""
from __future__ import annotations

import json
import re
import time
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from chaos.proxy import FaultProxy
from chaos.stack import LinkProxies, Stack
from chaos.toxics import Latency, Truncate
from common.tokens import token_url
from ocsim.topology import DEFAULT_TOPOLOGY, parse_topology
from tests.topologies import ONE_ISP_TWO_EDGES, SHORT_CATALOG

E1, E2 = "isp-a-1", "isp-a-2"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    (tmp_path / "catalog.json").write_text(json.dumps(SHORT_CATALOG))
    topo = parse_topology(tomllib.loads(ONE_ISP_TWO_EDGES), base_dir=tmp_path, where="test topology")
    topo = topo.with_ephemeral_ports().with_extra_args("--no-access-log")
    s = Stack("experiment", topo, tmp_path / "stack", seed=5)
    try:
        await s.start()
        yield s
    finally:
        await s.stop()


def _url(stack: Stack, edge_id: str, path: str) -> str:
    assert stack.sup is not None
    title = path.split("/")[2]
    token = stack.sup.secrets.keyring.sign(title, int(time.time()) + 300, "isp-a")
    return token_url(stack.edge(edge_id)["url"], token, path)


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, str, int, int, float]:
    """(status, X-Cache, Content-Length, bytes received, seconds); a body cut short by the
    edge counts what arrived."""
    t0 = time.monotonic()
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=20)) as r:
        got = 0
        try:
            async for chunk in r.content.iter_any():
                got += len(chunk)
        except aiohttp.ClientPayloadError:
            pass
        return r.status, r.headers.get("X-Cache", ""), int(r.headers.get("Content-Length", -1)), got, \
            time.monotonic() - t0


async def _fills(http: aiohttp.ClientSession, stack: Stack, edge_id: str, source: str, result: str) -> float:
    async with http.get(stack.edge(edge_id)["url"] + "/metrics") as r:
        text = await r.text()
    pattern = rf'^ocsim_edge_fills_total\{{(?=[^}}]*source="{source}")(?=[^}}]*result="{result}")[^}}]*\}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_latency_on_one_edges_origin_link_delays_its_origin_fills_only(stack: Stack) -> None:
    links = stack.links
    assert len(links.select("edge-origin")) == 2 and len(links.select("edge-peer")) == 2
    assert len(links.select("edge-control")) == 2 and len(links.select("player-edge")) == 2
    mine = links.select("edge-origin", {E1})
    assert mine == [links.of("edge-origin", E1)]
    async with aiohttp.ClientSession() as http:
        status, cache, length, got, base = await _get(http, _url(stack, E1, "/content/short-a/235/0.seg"))
        assert (status, cache, got) == (200, "MISS", length)
        assert mine[0].accepted >= 1  # the fill went through the proxy: the edge's --upstream is it
        mine[0].add_toxic(Latency("lag", latency_s=0.5))
        status, cache, length, got, slow = await _get(http, _url(stack, E1, "/content/short-a/235/1.seg"))
        assert (status, cache, got) == (200, "MISS", length)
        assert slow - base >= 0.45, (base, slow)  # every chunk of the origin's answer waited 0.5 s
        assert links.of("edge-origin", E2).toxics("downstream") == []
        status, cache, length, got, other = await _get(http, _url(stack, E2, "/content/short-a/235/2.seg"))
        assert (status, cache, got) == (200, "MISS", length)
        assert other < slow, (other, slow)  # the other edge's origin link is not slowed
        mine[0].clear()


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_truncation_on_the_peer_link_cuts_a_peer_fill(stack: Stack) -> None:
    path = "/content/short-b/235/3.seg"
    links = stack.links
    ask = links.of("edge-peer", E1, E2)  # E1's asks to E2
    assert set(links.select("edge-peer", {E1})) == {ask, links.of("edge-peer", E2, E1)}
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # until E2 holds it (whatever its admission policy makes of a first miss)
            status, cache, _, _, _ = await _get(http, _url(stack, E2, path))
            assert status == 200
            if cache == "HIT":
                break
        assert cache == "HIT"
        before = await _fills(http, stack, E1, "peer", "failed")
        accepted = ask.accepted
        ask.add_toxic(Truncate("cut", after_bytes=3000))
        status, _, length, got, _ = await _get(http, _url(stack, E1, path))
        assert ask.accepted > accepted  # E1 asked its peer through the proxy
        assert status != 200 or got < length, (status, got, length)  # the player did not get it whole
        assert await _fills(http, stack, E1, "peer", "failed") == before + 1
        ask.remove_toxic("cut")
        stored = await _fills(http, stack, E1, "peer", "stored")
        status, cache, length, got, _ = await _get(http, _url(stack, E1, path))
        assert (status, cache, got) == (200, "MISS", length)  # whole again, from the peer
        assert await _fills(http, stack, E1, "peer", "stored") == stored + 1


def test_link_proxies_select_by_link_and_by_an_edge_at_either_end() -> None:
    links = LinkProxies()
    made = {key: links.add(key[0], key[1:], FaultProxy("127.0.0.1", 1)) for key in [
        ("player-edge", "a"), ("player-edge", "b"), ("edge-origin", "a"), ("edge-origin", "b"),
        ("edge-peer", "a", "b"), ("edge-peer", "b", "a"), ("edge-peer", "b", "c")]}
    assert links.select("player-edge", {"a"}) == [made["player-edge", "a"]]
    assert links.select("edge-origin") == [made["edge-origin", "a"], made["edge-origin", "b"]]
    assert links.select("edge-peer", {"a"}) == [made["edge-peer", "a", "b"], made["edge-peer", "b", "a"]]
    assert links.select("edge-peer", {"c"}) == [made["edge-peer", "b", "c"]]
    assert links.select("edge-control") == [] and len(links.all()) == 7
    assert links.of("edge-peer", "b", "a") is made["edge-peer", "b", "a"]
    with pytest.raises(ValueError, match="unknown link"):
        links.add("edge-cdn", ("a",), FaultProxy("127.0.0.1", 1))


async def test_the_runner_puts_a_toxic_on_one_edges_proxies_and_a_partition_on_one_isps() -> None:
    from types import SimpleNamespace

    from chaos.runner import Experiment
    from chaos.scenario import parse_scenario, timeline

    edges = [{"id": "isp-a-1", "isp": "isp-a"}, {"id": "isp-a-2", "isp": "isp-a"}, {"id": "isp-b-1", "isp": "isp-b"}]
    stacks = {}
    for cohort in ("control", "experiment"):
        links = LinkProxies()
        for e in edges:
            for link in ("player-edge", "edge-control", "edge-origin"):
                links.add(link, (e["id"],), FaultProxy("127.0.0.1", 1))
        links.add("edge-peer", ("isp-a-1", "isp-a-2"), FaultProxy("127.0.0.1", 1))
        links.add("edge-peer", ("isp-a-2", "isp-a-1"), FaultProxy("127.0.0.1", 1))
        st = Stack(cohort, DEFAULT_TOPOLOGY, Path("/nonexistent"), 1)  # never started
        st.sup = SimpleNamespace(links=links, pipeline_url="")  # type: ignore[assignment]
        st.state = {"edges": edges}
        stacks[cohort] = st
    scenario = parse_scenario("""
name = "t"
duration_s = 30
[cohorts]
viewers = 4
[[steady_state]]
metric = "failed"
[[fault]]
kind = "latency"
target = "link:edge-origin"
edge = "isp-a-2"
at_s = 1
duration_s = 5
latency_s = 0.1
[[fault]]
kind = "partition"
target = "isp:isp-a"
at_s = 1
duration_s = 5
[[fault]]
kind = "reset"
target = "link:edge-peer"
at_s = 1
duration_s = 5
""")
    exp = Experiment(scenario, stacks, ["x"], speed=20.0, max_segments=1)
    exp._http = object()  # type: ignore[assignment]  # no fault here sends a request
    plan = sorted(timeline(scenario), key=lambda tf: tf.fault.index)
    made = [await exp.make(tf, True) for tf in plan]
    assert made[0] == "latency on link:edge-origin at isp-a-2 (1 proxy)" and made[2].endswith("(2 proxies)")
    x = stacks["experiment"].links

    def toxic_names(link: str, *ends: str) -> list[str]:
        p = x.of(link, *ends)
        return [t.name for t in p.toxics("downstream") + p.toxics("upstream")]

    assert toxic_names("edge-origin", "isp-a-2") == ["fault-0-latency"]
    assert toxic_names("edge-origin", "isp-a-1") == toxic_names("edge-origin", "isp-b-1") == []
    assert toxic_names("edge-control", "isp-a-1") == toxic_names("edge-control", "isp-a-2") == ["fault-1-partition"]
    assert toxic_names("edge-control", "isp-b-1") == []
    assert toxic_names("edge-peer", "isp-a-1", "isp-a-2") == ["fault-2-reset"]
    assert all(p.toxics("downstream") == p.toxics("upstream") == [] for p in stacks["control"].links.all())
    await exp.make(plan[1], False)
    assert toxic_names("edge-control", "isp-a-1") == []
    exp._http = None
    await exp.undo_all()
    assert all(p.toxics("downstream") == p.toxics("upstream") == [] for p in x.all())
