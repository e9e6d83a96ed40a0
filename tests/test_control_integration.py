"""The control plane as a real process on a loopback port, with simulated edges that speak
the real signed wire protocol: registration, liveness, steering by ISP, signature
refusals, a job that survives a kill -9 of the control plane, and the operator CLI."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.metrics import parse_text
from ocsim.procs import ServiceProcess
from test_control_support import FLEET_SECRET, OPERATOR_TOKEN, TOKEN_KEY, TOPOLOGY, ControlRefused, Heartbeater, \
    SimEdge, aiohttp_poster, bearer, eventually

CATALOG: dict[str, list[dict[str, Any]]] = {"titles": [{"id": f"t{i}", "duration_s": 16.0 + 4 * i, "renditions": [235, 750],
                       "popularity": 1.0 / (i + 1)} for i in range(8)]}
HB = 1.0  # the control plane's heartbeat interval (its default)


@pytest.fixture
def control_args(tmp_path: Path) -> list[str]:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    return ["control", "--host", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "state"),
            "--topology", str(tmp_path / "topology.toml"), "--catalog", str(tmp_path / "catalog.json"),
            "--operator-token", OPERATOR_TOKEN, "--fleet-secret", FLEET_SECRET.hex(), "--token-key", TOKEN_KEY,
            "--heartbeat-interval", str(HB), "--no-access-log"]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def candidates(session: aiohttp.ClientSession, url: str, title: str, **who: str) -> list[str]:
    async with session.post(url + "/v1/play", json={"title": title, **who}) as resp:
        assert resp.status == 200, await resp.text()
        return [c["edge"] for c in (await resp.json())["candidates"]]


async def test_steering_follows_heartbeats(start_service: Callable[..., ServiceProcess], control_args: list[str],
                                           session: aiohttp.ClientSession) -> None:
    control = start_service("control", *control_args)
    post = aiohttp_poster(session, control.url)
    edges = [SimEdge(post, "a1", "isp-a"), SimEdge(post, "a2", "isp-a"), SimEdge(post, "b1", "isp-b")]
    for e in edges:
        await e.register()
    beats = [Heartbeater(e, HB / 2).start() for e in edges]
    try:
        titles = [str(t["id"]) for t in CATALOG["titles"]]
        for t in titles:
            got = await candidates(session, control.url, t, client_ip="10.1.200.7")
            assert set(got[:2]) == {"a1", "a2"} and got[2] == "b1"
            got = await candidates(session, control.url, t, client_ip="10.2.0.1")
            assert got[0] == "b1" and set(got[1:]) == {"a1", "a2"}

        # a bad signature is refused and counted
        with pytest.raises(ControlRefused) as err:
            await edges[0].send("/v1/edges/a1/heartbeat", edges[0].heartbeat_msg(), key=b"k" * 32)
        assert err.value.status == 403
        async with session.get(control.url + "/metrics") as resp:
            metrics = parse_text(await resp.text())
        assert metrics['ocsim_control_bad_signatures_total{message="heartbeat"}'] == 1

        # a1 goes silent: within 3 s + one heartbeat interval it is offered to nobody
        await beats[0].stop()
        stopped = time.monotonic()

        async def a1_gone() -> bool:
            for t in titles:
                if "a1" in await candidates(session, control.url, t, client_ip="10.1.0.5"):
                    return False
            return True

        await eventually(a1_gone, timeout=3 * HB + HB + 1.0)
        elapsed = time.monotonic() - stopped
        assert elapsed <= 3 * HB + HB + 0.25, elapsed
        async with session.get(control.url + "/v1/fleet", headers=bearer()) as resp:
            fleet = await resp.json()
        assert {e["id"]: e["state"] for e in fleet["edges"]} == {"a1": "down", "a2": "up", "b1": "up"}
        # ... and back when it heartbeats again
        beats[0] = Heartbeater(edges[0], HB / 2).start()

        async def a1_back() -> bool:
            for t in titles:
                if "a1" in await candidates(session, control.url, t, isp="isp-a"):
                    return True
            return False

        await eventually(a1_back, timeout=3.0)
    finally:
        for b in beats:
            await b.stop()


async def test_job_resumes_after_control_is_killed(start_service: Callable[..., ServiceProcess],
                                                   control_args: list[str],
                                                   session: aiohttp.ClientSession) -> None:
    control = start_service("control", *control_args)
    post = aiohttp_poster(session, control.url)
    edges = [SimEdge(post, "a1", "isp-a"), SimEdge(post, "a2", "isp-a")]
    for e in edges:
        await e.register()
        await e.heartbeat()
    async with session.post(control.url + "/v1/prepositions", json={"isp": "isp-a", "top": 8},
                            headers=bearer()) as resp:
        assert resp.status == 202, await resp.text()
        job_id = (await resp.json())["id"]
    for e in edges:
        await e.heartbeat()
    plans = {pid: e for e in edges for pid in e.plans}
    assert plans
    first = sorted(plans)[0]
    plans[first].set_progress(first, "running", 1)
    await plans[first].heartbeat()

    async def job(url: str) -> dict[str, Any]:
        async with session.get(f"{url}/v1/prepositions/{job_id}", headers=bearer()) as resp:
            assert resp.status == 200
            return dict(await resp.json())

    assert (await job(control.url))["state"] == "running"
    control.kill()  # no graceful shutdown, no final flush

    control = start_service("control2", *control_args)
    post = aiohttp_poster(session, control.url)
    for e in edges:
        e.post = post
        e.auto_fill = True
    assert (await job(control.url))["state"] in ("pending", "running")
    beats = [Heartbeater(e, 0.1).start() for e in edges]
    try:
        async def done() -> dict[str, Any] | None:
            j = await job(control.url)
            return j if j["state"] == "done" else None

        final = await eventually(done, timeout=10)
        assert final["progress"] == 1.0
        assert sorted(p["id"] for p in final["plans"]) == sorted(plans)
        assert all(p["done_objects"] == p["total_objects"] for p in final["plans"])
        assert sorted(set(final["titles"])) == ["t0", "t1", "t2", "t3"]
    finally:
        for b in beats:
            await b.stop()
    # a final state is on disk before the edge hears it was received: kill -9 right after
    # the last acknowledgement, and the job is still done
    assert all(not e.progress for e in edges)
    control.kill()
    control = start_service("control3", *control_args)
    assert (await job(control.url))["state"] == "done"


def test_bad_topology_is_refused_naming_the_field(tmp_path: Path, control_args: list[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[isps.isp-a]\nprefixes = ["10.1.0.0/16", "10.300.0.0/16"]\n')
    args = list(control_args)
    args[args.index("--topology") + 1] = str(bad)
    proc = subprocess.run([sys.executable, "-m", "ocsim", *args], capture_output=True, timeout=30)
    assert proc.returncode == 2
    assert b"isps.isp-a.prefixes[1]" in proc.stderr


async def test_preposition_cli_waits_with_a_progress_bar(start_service: Callable[..., ServiceProcess],
                                                        control_args: list[str], tmp_path: Path,
                                                        session: aiohttp.ClientSession) -> None:
    control = start_service("control", *control_args)
    post = aiohttp_poster(session, control.url)
    e = SimEdge(post, "b1", "isp-b", auto_fill=True)
    await e.register()
    await e.heartbeat()
    beat = Heartbeater(e, 0.2).start()
    state_file = tmp_path / "up.json"
    state_file.write_text(json.dumps({"control": control.url, "operator_token": OPERATOR_TOKEN}))
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ocsim", "preposition", "--state-file", str(state_file), "--isp", "isp-b",
            "--titles", "t1,t2", "--wait", "--interval", "0.1", "--timeout", "20",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await beat.stop()
    assert proc.returncode == 0, err.decode()
    assert "done" in out.decode()
    lines = err.decode().splitlines()
    assert any("[" + "#" * 30 + "] 100.0%  done" in line for line in lines), lines
    # wrong token: a clear error, exit 3
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ocsim", "preposition", "--control", control.url, "--token", "nope", "--isp",
        "isp-b", "--top", "1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(bad.communicate(), 30)
    assert bad.returncode == 3 and b"403 wrong operator token" in err
