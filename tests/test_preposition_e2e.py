"""Pre-positioning end to end under `ocsim up`: fill the edges by playing, then place N
files into the full caches; steering sends viewers to where the files are, they are
pinned there, and the fills evicted only unpinned objects. Then popularity shifts and a
refresh makes the pinned set follow."""
from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from control.steering import hrw_order
from tests.test_up import Up, http_json, wait_for

# 2 renditions x 4 segments of 4 s: a 750 kbit/s file is ~1.5 MB, a 235 one ~0.5 MB. A title's
# value is its plays observed in the ISP plus its catalog popularity, split equally over a
# 2-rung ladder: hot-a's files are worth ~50 each, hot-b's ~30, the fillers' ~1.
CATALOG = {"titles": [{"id": f"fill-{i}", "duration_s": 16.0, "renditions": [235, 750], "popularity": 0.01}
                      for i in range(8)]
           + [{"id": "hot-a", "duration_s": 16.0, "renditions": [235, 750], "popularity": 100.0},
              {"id": "hot-b", "duration_s": 16.0, "renditions": [235, 750], "popularity": 60.0},
              {"id": "cold", "duration_s": 16.0, "renditions": [235, 750], "popularity": 0.02}]}
TOPOLOGY = """
[origin]
port = 0
catalog = "catalog.json"
latency_ms = 0
total_bandwidth = "0"
args = ["--no-access-log"]

[control]
port = 0

[edge]
capacity = "6MiB"
policy = "lru"
args = ["--no-access-log"]

[isps.isp-a]
prefixes = ["10.1.0.0/16"]
edges = 2
timezone = "America/New_York"
"""


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    run = Up(tmp_path, topology=TOPOLOGY)
    (tmp_path / "catalog.json").write_text(json.dumps(CATALOG))
    try:
        yield run
    finally:
        run.close()


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        resp.read()
        return resp.status, resp.headers.get("X-Cache", "")


def play(control: str, title: str) -> list[dict[str, str]]:
    status, answer = http_json(f"{control}/v1/play", method="POST", body={"title": title, "isp": "isp-a"})
    assert status == 200, (title, status)
    return answer["candidates"]  # type: ignore[no-any-return]


def segment(url: str, rendition: int, n: int) -> str:
    return url.replace("master.m3u8", f"{rendition}/{n}.seg")


def edge_stats(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for e in state["edges"]:
        status, body = http_json(f"{e['url']}/admin/stats", state["edge_operator_token"])
        assert status == 200
        out[e["id"]] = body
    return out


def run_job(state: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    control, token = state["control"], state["operator_token"]
    status, created = http_json(f"{control}/v1/prepositions", token, "POST", body)
    assert status == 202, (status, created)

    def final() -> dict[str, Any] | None:
        _, job = http_json(f"{control}/v1/prepositions/{created['id']}", token)
        return job if job and job["state"] in ("done", "partial", "failed") else None
    job: dict[str, Any] = wait_for(final, 60, "the job to end")
    return job


def pinned_where_steering_sends(state: dict[str, Any], job: dict[str, Any]) -> None:
    """Every placed file is on the edge steering ranks first for its title, served as a HIT."""
    for key, edges in job["placed"].items():
        title, rendition = key.rsplit("/", 1)
        first = play(state["control"], title)[0]
        assert first["edge"] in edges, (key, first["edge"], edges)
        for n in range(4):
            assert get(segment(first["url"], int(rendition), n)) == (200, "HIT"), (key, n)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_preposition_files_into_full_caches_then_refresh_follows_popularity(up: Up) -> None:
    state = up.wait_state()
    control, token = state["control"], state["operator_token"]
    wait_for(lambda: all(e["state"] == "up" for e in http_json(f"{control}/v1/fleet", token)[1]["edges"]),
             30, "both edges up")
    # Play the filler titles from both edges until both caches are full (LRU evicting).
    for title in [t["id"] for t in CATALOG["titles"] if str(t["id"]).startswith("fill-")]:
        for cand in play(control, title)[:2]:
            for r in (235, 750):
                for n in range(4):
                    assert get(segment(cand["url"], r, n))[0] == 200
    before = edge_stats(state)
    for s in before.values():
        assert s["used_bytes"] > 0.8 * s["capacity_bytes"] and s["evictions"] > 0, s
    # An operator pin on each edge: an object the pre-position fills must not evict.
    kept: dict[str, str] = {}
    for e in state["edges"]:
        cand = next(c for c in play(control, "fill-7") if c["edge"] == e["id"])
        assert get(segment(cand["url"], 235, 0))[0] == 200
        status, _ = http_json(f"{e['url']}/admin/pin", state["edge_operator_token"], "POST",
                              {"path": "/content/fill-7/235/0.seg"})
        assert status == 200
        kept[e["id"]] = segment(cand["url"], 235, 0)
    wait_for(lambda: all(e.get("pinned_bytes", 0) > 0 for e in http_json(f"{control}/v1/fleet", token)[1]["edges"]),
             10, "heartbeats to carry the pinned bytes")

    # Pre-position the 3 most valuable files into the full caches (no fill window: at once).
    job = run_job(state, {"isp": "isp-a", "top": 3})
    assert job["state"] == "done", job
    assert sorted(job["placed"]) == ["hot-a/235", "hot-a/750", "hot-b/235"], job["placed"]
    # replicas in proportion to value: round(v / vmax * 2 edges): hot-a's files on both, hot-b's on one
    assert [len(job["placed"][k]) for k in ("hot-a/235", "hot-a/750", "hot-b/235")] == [2, 2, 1]
    assert job["left_out"] == {} and all(p["state"] == "done" for p in job["plans"])
    pinned_where_steering_sends(state, job)
    after = edge_stats(state)
    for eid, s in after.items():
        paths = sum(p["total_objects"] for p in job["plans"] if p["edge"] == eid)
        assert s["pinned"] == 1 + paths, (eid, s["pinned"], paths)  # the operator's pin and the plan's objects
        assert s["evictions"] > before[eid]["evictions"]  # the fills made room by evicting...
        assert get(kept[eid]) == (200, "HIT")  # ...unpinned objects only
        assert s["used_bytes"] <= s["capacity_bytes"]

    # Popularity shifts: 70 plays make "cold" (~35 a file) worth more than hot-b (~30); a refresh
    # for the top 3 swaps hot-b's file out for cold's most valuable one.
    # Steering bounds each edge's load, so 70 quick plays of one title would push it off its
    # first edge; each is matched by a play, from outside any ISP (counted for no ISP's
    # popularity), of a filler title whose first edge is the other one, to keep loads level.
    ids = [e["id"] for e in state["edges"]]
    cold_first = hrw_order("cold", ids)[0]
    balance = next(t["id"] for t in CATALOG["titles"] if str(t["id"]).startswith("fill-")
                   and hrw_order(str(t["id"]), ids)[0] != cold_first)
    for _ in range(70):
        play(control, "cold")
        status, _ = http_json(f"{control}/v1/play", method="POST", body={"title": balance,
                                                                          "client_ip": "198.51.100.7"})
        assert status == 200
    refreshed = run_job(state, {"isp": "isp-a", "top": 3, "refresh": True})
    assert refreshed["state"] == "done", refreshed
    assert sorted(refreshed["placed"]) == ["cold/235", "hot-a/235", "hot-a/750"], refreshed["placed"]
    unpinned = {p["edge"]: p.get("unpinned", []) for p in refreshed["plans"]}
    assert sorted(f for fs in unpinned.values() for f in fs) == ["hot-b/235"], refreshed["plans"]
    pinned_where_steering_sends(state, refreshed)
    final = edge_stats(state)
    for eid, s in final.items():
        filled = sum(p["total_objects"] for p in refreshed["plans"] if p["edge"] == eid)
        # a file is its media playlist and 4 segments: unpinned before the fill, filled and pinned
        assert s["pinned"] == after[eid]["pinned"] - 5 * len(unpinned.get(eid, [])) + filled, (eid, s)
        assert get(kept[eid]) == (200, "HIT")
