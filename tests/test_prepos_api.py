"""Pre-position jobs through the control plane's API: the budget of a full cache, bad
input naming its field, a job that can place nothing saying why, the fill window."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from test_control_api import Client, bearer, client, edge  # noqa: F401  (client is a fixture)


async def post_job(client: Client, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/prepositions", json=body, headers=bearer())
    return resp.status, await resp.json()


async def test_a_full_cache_with_nothing_pinned_takes_a_job(client: Client) -> None:
    e = edge(client, "a1", "isp-a", capacity_bytes=10**9, used_bytes=10**9)  # full: the steady state
    await e.register()
    await e.heartbeat()
    status, job = await post_job(client, {"isp": "isp-a", "titles": ["alpha"]})
    assert status == 202 and job["state"] == "pending", job
    assert sorted(job["placed"]) == ["alpha/235", "alpha/750"] and job["left_out"] == {}


async def test_all_space_pinned_places_nothing_and_says_why(client: Client) -> None:
    e = edge(client, "a1", "isp-a", capacity_bytes=10**9, used_bytes=10**9, pinned_bytes=10**9)
    await e.register()
    await e.heartbeat()
    status, job = await post_job(client, {"isp": "isp-a", "top": 2})
    assert status == 202 and job["state"] == "failed" and "pinned" in job["error"], job
    assert set(job["left_out"].values()) == {"all-space-pinned"} and job["shortfall"] == 2


@pytest.mark.parametrize("body, status, field", [
    ({"isp": "isp-a", "top": -1}, 400, "top"),
    ({"isp": "isp-a", "top": 10**9}, 400, "top"),
    ({"isp": "isp-a", "titles": ["nope"]}, 404, "titles[0]"),
    ({"isp": "isp-a", "titles": ["alpha"], "renditions": [99]}, 409, "renditions"),  # valid, not in the catalog
    ({"isp": "isp-z", "top": 1}, 404, "isp"),
    ({"isp": "isp-a", "top": 1, "refresh": "yes"}, 400, "refresh"),
    ({"isp": "isp-a", "top": 1, "window": "25:00-03:00"}, 400, "window"),
    ({"isp": "isp-a", "top": 1, "window": "02:00-14:00", "timezone": "Mars/Base"}, 400, "timezone"),
    ({"isp": "isp-a"}, 400, "titles or top"),
    ({"isp": "isp-a", "top": 0}, 400, "top"),
    ({"isp": "isp-a", "top": True}, 400, "top"),
    ({"isp": "isp-a", "top": 2.5}, 400, "top"),
    ({"isp": "isp-a", "top": "3"}, 400, "top"),
    ({"isp": "isp-a", "top": None}, 400, "top"),
    ({"isp": "isp-a", "titles": []}, 400, "titles"),
    ({"isp": "isp-a", "titles": ["Bad Id"]}, 400, "titles[0]"),
    ({"isp": "isp-a", "titles": ["alpha"], "top": 1}, 400, "titles, top"),
    ({"isp": "isp-a", "titles": ["alpha"], "renditions": [235, 99]}, 409, "renditions"),  # 99: alpha has no such
    ({"isp": "isp-a", "top": 1, "renditions": [235, 99]}, 409, "renditions"),  # ... nor does any title
    ({"isp": "isp-a", "top": 1, "renditions": []}, 400, "renditions"),
    ({"isp": "isp-a", "top": 1, "renditions": [-235]}, 400, "renditions"),
    ({"isp": "Bad ISP", "top": 1}, 400, "isp"),
    ({"top": 1}, 400, "isp"),
    ({"isp": "isp-a", "top": 1, "bandwidth_bps": -1}, 400, "bandwidth_bps"),
    ({"isp": "isp-a", "top": 1, "replicas": 0}, 400, "replicas"),
    ({"isp": "isp-a", "top": 1, "window": "02:00"}, 400, "window"),
    ({"isp": "isp-a", "top": 1, "window": "02:00-14:60"}, 400, "window"),
    ({"isp": "isp-a", "top": 1, "window": 200}, 400, "window"),
    ({"isp": "isp-a", "top": 1, "timezone": "UTC"}, 400, "window"),
    ({"isp": "isp-a", "top": 1, "now": "yes"}, 400, "now"),
    ({"isp": "isp-a", "top": 1, "bogus": 1}, 400, "bogus"),
])
async def test_bad_job_requests_name_the_field(client: Client, body: dict[str, Any], status: int,
                                               field: str) -> None:
    e = edge(client, "a1", "isp-a")
    await e.register()
    got, answer = await post_job(client, body)
    assert got == status and field in answer["error"], (got, answer)


async def test_no_edge_up_is_a_409_that_says_so(client: Client) -> None:
    got, answer = await post_job(client, {"isp": "isp-a", "top": 1})
    assert got == 409 and "no healthy edge" in answer["error"]


async def test_a_job_outside_its_window_waits_and_now_does_not(client: Client) -> None:
    e = edge(client, "a1", "isp-a")
    await e.register()
    hour = datetime.now(timezone.utc).hour
    closed = f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"  # opens in an hour or more, UTC
    status, job = await post_job(client, {"isp": "isp-a", "titles": ["gamma"], "window": closed,
                                          "timezone": "UTC"})
    assert status == 202 and job["state"] == "waiting" and closed in job["waiting_for"], job
    reply = await e.heartbeat()
    assert reply.fill_plans == []  # nothing goes out before the window opens
    status, now_job = await post_job(client, {"isp": "isp-a", "titles": ["beta"], "window": closed,
                                              "timezone": "UTC", "now": True})
    assert status == 202 and now_job["state"] == "pending"
    reply = await e.heartbeat()
    assert [p.job_id for p in reply.fill_plans] == [now_job["id"]]
    assert reply.fill_plans[0].paths[0] == "/content/beta/master.m3u8"
