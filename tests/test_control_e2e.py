"""End to end with real processes: origin, control plane and two edges of one ISP.

A pre-position job runs to done on the real edges; the titles are then played through
the edge with the signed play URLs and the origin sees no request for them. Then one
edge is killed with SIGKILL and stops being offered within 3 s + one heartbeat.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.wire import edge_key
from ocsim.procs import ServiceProcess
from test_control_support import FLEET_SECRET, OPERATOR_TOKEN, TOKEN_KEY, TOPOLOGY, bearer, eventually

pytest.importorskip("edge.cli")
pytestmark = pytest.mark.slow

HB = 1.0


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        yield s


async def get_json(session: aiohttp.ClientSession, url: str, **kw: Any) -> Any:
    async with session.get(url, **kw) as resp:
        assert resp.status == 200, (url, resp.status, await resp.text())
        return await resp.json()


async def test_preposition_then_play_from_edges_only(start_service: Callable[..., ServiceProcess],
                                                      origin: ServiceProcess, admin_token: str, tmp_path: Path,
                                                      session: aiohttp.ClientSession) -> None:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    control = start_service(
        "control", "control", "--host", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "control"),
        "--topology", str(tmp_path / "topology.toml"), "--origin", origin.url, "--operator-token", OPERATOR_TOKEN,
        "--fleet-secret", FLEET_SECRET.hex(), "--token-key", TOKEN_KEY, "--heartbeat-interval", str(HB),
        "--no-access-log")
    edges = {}
    for eid in ("a1", "a2"):
        edges[eid] = start_service(
            eid, "edge", "--host", "127.0.0.1", "--port", "0", "--id", eid, "--isp", "isp-a",
            "--upstream", origin.url, "--cache-dir", str(tmp_path / eid / "cache"), "--capacity", "2GiB",
            "--control", control.url, "--edge-key", edge_key(FLEET_SECRET, eid).hex(), "--token-key", TOKEN_KEY,
            "--heartbeat-interval", str(HB), "--no-access-log")

    async def fleet_up() -> bool:
        fleet = await get_json(session, control.url + "/v1/fleet", headers=bearer())
        return sorted(e["id"] for e in fleet["edges"] if e["state"] == "up") == ["a1", "a2"]

    await eventually(fleet_up, timeout=15)

    # the two shortest titles of the origin's catalog, lowest rendition: a quick job
    catalog = await get_json(session, control.url + "/v1/catalog")
    assert catalog == await get_json(session, origin.url + "/v1/catalog")
    titles = [t["id"] for t in sorted(catalog["titles"], key=lambda t: (t["duration_s"], t["id"]))[:2]]
    async with session.post(control.url + "/v1/prepositions", headers=bearer(),
                            json={"isp": "isp-a", "titles": titles, "renditions": [235],
                                  "bandwidth_bps": 0}) as resp:
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["id"]

    async def job_done() -> dict[str, Any] | None:
        job = await get_json(session, f"{control.url}/v1/prepositions/{job_id}", headers=bearer())
        assert job["state"] != "failed", job
        return job if job["state"] == "done" else None

    job = await eventually(job_done, timeout=30, interval=0.2)
    assert job["progress"] == 1.0 and job["unplaced"] == []

    # edges report what they hold in their next heartbeat: wait until steering can prefer them
    async def holders_known() -> bool:
        for t in titles:
            async with session.post(control.url + "/v1/play", json={"title": t, "isp": "isp-a"}) as resp:
                if (await resp.json())["candidates"][0]["reason"] != "isp-holds-title":
                    return False
        return True

    await eventually(holders_known, timeout=5)

    async with session.post(f"{origin.url}/admin/stats/reset", headers=bearer(admin_token)) as resp:
        assert resp.status in (200, 204)
    for t in titles:
        async with session.post(control.url + "/v1/play", json={"title": t, "client_ip": "10.1.3.4"}) as resp:
            answer = await resp.json()
        assert answer["isp"] == "isp-a"
        url = answer["candidates"][0]["url"]
        base = url.rsplit("/", 1)[0]
        async with session.get(url) as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
            assert "235/index.m3u8" in await resp.text()
        async with session.get(base + "/235/index.m3u8") as resp:
            assert resp.status == 200 and resp.headers["X-Cache"] == "HIT"
            segments = [line for line in (await resp.text()).splitlines() if line and not line.startswith("#")]
        assert segments
        for seg in segments:
            async with session.get(f"{base}/235/{seg}") as resp:
                assert resp.status == 200 and resp.headers["X-Cache"] == "HIT", seg
                await resp.read()
    stats = await get_json(session, origin.url + "/admin/stats", headers=bearer(admin_token))
    assert not any(stats["by_title"].get(t) for t in titles), stats["by_title"]

    # kill -9 the edge that is first for the first title: offered to nobody within 3 s + 1 heartbeat
    async with session.post(control.url + "/v1/play", json={"title": titles[0], "isp": "isp-a"}) as resp:
        victim = (await resp.json())["candidates"][0]["edge"]
    edges[victim].kill()
    killed = time.monotonic()

    async def victim_gone() -> bool:
        for t in [x["id"] for x in catalog["titles"][:10]]:
            async with session.post(control.url + "/v1/play", json={"title": t, "isp": "isp-a"}) as resp:
                if victim in [c["edge"] for c in (await resp.json())["candidates"]]:
                    return False
        return True

    await eventually(victim_gone, timeout=3 * HB + HB + 1.0)
    assert time.monotonic() - killed <= 3 * HB + HB + 0.25
    async with session.post(control.url + "/v1/play", json={"title": titles[0], "isp": "isp-a"}) as resp:
        survivors = [c["edge"] for c in (await resp.json())["candidates"]]
    assert survivors == [next(e for e in edges if e != victim)]
    print(json.dumps({"job": job_id, "titles": titles, "victim": victim}))
