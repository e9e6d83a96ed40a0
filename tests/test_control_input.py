"""Issue 15: the control plane's catalog/play/popularity/job inputs that used to crash
(500) or be stored as non-numbers are refused with a 400 naming the field, and nothing is
stored; and the strict helpers of `common.http_input` they are built on."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from multidict import MultiDict

from common.errors import BadRequest
from common.http_input import int_field, int_list_field, number_field, query_int
from test_control_api import Client, MakeClient, make_config
from control.app import build_app
from test_control_support import bearer


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    c: Client = await aiohttp_client(build_app(make_config(tmp_path / "control.db")))
    return c


BAD_TITLES: list[tuple[str, str]] = [
    ('{"id": "t1", "duration_s": 10, "renditions": [{}]}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "renditions": [[1]]}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "renditions": [true, 750]}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "renditions": [true]}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "renditions": [1, "a"]}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "renditions": [750, 750]}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "renditions": null}', "renditions"),
    ('{"id": "t1", "duration_s": 10, "popularity": 10000000000000000000}', "popularity"),
    ('{"id": "t1", "duration_s": 10, "popularity": 1e400}', "popularity"),
    ('{"id": "t1", "duration_s": 10, "popularity": -0.0}', "popularity"),
    ('{"id": "t1", "duration_s": 10, "popularity": true}', "popularity"),
    ('{"id": "t1", "duration_s": 10, "popularity": null}', "popularity"),
    ('{"id": "t1", "duration_s": 1e400}', "duration_s"),
    ('{"id": "t1", "duration_s": true}', "duration_s"),
    ('{"id": "t1", "duration_s": -0.0}', "duration_s"),
    ('{"id": "t1", "duration_s": 0}', "duration_s"),
    ('{"id": "t1"}', "duration_s"),
    ('{"id": "T1", "duration_s": 10}', "id"),
    ('{"id": 5, "duration_s": 10}', "id"),
    ('{"id": "t1", "duration_s": 10, "x": 1}', "unknown field"),
]


@pytest.mark.parametrize("raw,field", BAD_TITLES)
async def test_bad_title_is_a_400_naming_the_field(client: Client, raw: str, field: str) -> None:
    resp = await client.post("/v1/titles", data=raw, headers={**bearer(), "Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert field in (await resp.json())["error"]
    resp = await client.get("/v1/titles/t1")
    assert resp.status == 404
    catalog = await (await client.get("/v1/catalog")).text()
    json.loads(catalog, parse_constant=lambda c: pytest.fail(f"catalog holds {c}"))


async def test_good_title_round_trips_with_integer_renditions(client: Client) -> None:
    resp = await client.post("/v1/titles", json={"id": "t1", "duration_s": 10, "renditions": [750, 235],
                                                 "popularity": 0}, headers=bearer())
    assert resp.status == 201, await resp.text()
    got = await (await client.get("/v1/titles/t1")).json()
    assert got["renditions"] == [235, 750] and got["popularity"] == 0


@pytest.mark.parametrize("limit", ["1_000", "+5", " 5", "05", "-1", "0", "1001", "1e3", "5.0", "99999999999999999999"])
async def test_popularity_limit_is_parsed_strictly(client: Client, limit: str) -> None:
    resp = await client.get("/v1/popularity", params={"limit": limit}, headers=bearer())
    assert resp.status == 400
    assert "limit" in (await resp.json())["error"]


async def test_popularity_limit_in_range_is_taken(client: Client) -> None:
    resp = await client.get("/v1/popularity", params={"limit": "1000"}, headers=bearer())
    assert resp.status == 200


@pytest.mark.parametrize("body,field", [
    ({"isp": "isp-a", "top": None}, "top"),
    ({"isp": "isp-a", "top": True}, "top"),
    ({"isp": "isp-a", "top": 1.5}, "top"),
    ({"isp": "isp-a", "titles": None}, "titles"),
])
async def test_bad_job_request_is_a_400_naming_the_field(client: Client, body: dict[str, Any], field: str) -> None:
    resp = await client.post("/v1/prepositions", json=body, headers=bearer())
    assert resp.status == 400, await resp.text()
    assert field in (await resp.json())["error"]


# ---------------------------------------------------------------- the helpers

def test_number_field_refuses_non_finite_bools_negative_zero_and_huge_ints() -> None:
    for value in (math.inf, -math.inf, math.nan, True, False, -0.0, 10**19, "1", [1]):
        with pytest.raises(BadRequest, match="x must be"):
            number_field({"x": value}, "x", 0, 1e12)
    assert number_field({"x": 0}, "x", 0, 1) == 0.0
    assert number_field({}, "x", 0, 1) is None
    with pytest.raises(BadRequest):
        number_field({"x": 0}, "x", 0, 1, above_lo=True)


def test_int_helpers_refuse_bools_and_out_of_range() -> None:
    with pytest.raises(BadRequest):
        int_field({"x": True}, "x", 0, 10)
    with pytest.raises(BadRequest):
        int_field({"x": 11}, "x", 0, 10)
    for value in ([True], [1, "a"], [{}], [[1]], [], [0], [1, 1]):
        with pytest.raises(BadRequest, match="x"):
            int_list_field({"x": value}, "x", 1, 10)
    assert int_list_field({"x": [3, 1]}, "x", 1, 10) == [3, 1]


def test_query_int_is_strict() -> None:
    q = MultiDict({"n": "1_000"})
    with pytest.raises(BadRequest, match="n must be"):
        query_int(q, "n", 1, 1, 10**6)
    assert query_int(MultiDict({"n": "1000"}), "n", 1, 1, 10**6) == 1000
    assert query_int(MultiDict(), "n", 7, 1, 10) == 7


# ---------------------------------------------------------------- the document says what is accepted

async def test_openapi_names_id_patterns_ranges_oneofs_link_and_a_playable_example(client: Client) -> None:
    doc = await (await client.get("/openapi.json")).json()
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    for path in ("/v1/titles/{id}", "/v1/edges/{id}/admin", "/v1/edges/{id}/heartbeat", "/v1/prepositions/{id}"):
        assert "pattern" in paths[path]["parameters"][0]["schema"], path
    edge_header = paths["/v1/edges/register"]["post"]["parameters"][0]
    assert edge_header["name"] == "X-Ocsim-Edge" and "pattern" in edge_header["schema"]
    assert "pattern" in schemas["PlayRequest"]["properties"]["title"]
    assert "pattern" in schemas["JobRequest"]["properties"]["titles"]["items"]
    limit = paths["/v1/popularity"]["get"]["parameters"][1]["schema"]
    assert (limit["minimum"], limit["maximum"]) == (1, 1000)
    job = schemas["JobRequest"]["properties"]
    assert job["replicas"]["maximum"] == 64 and job["bandwidth_bps"]["maximum"] == 10**12
    assert schemas["Title"]["properties"]["duration_s"]["maximum"] == 6 * 3600
    assert schemas["Title"]["properties"]["renditions"]["items"]["maximum"] == 100_000
    assert len(schemas["JobRequest"]["oneOf"]) == 2 and len(schemas["PlayRequest"]["oneOf"]) == 3
    created = paths["/v1/prepositions"]["post"]["responses"]["202"]
    assert created["links"]["GetJob"]["operationId"] == "get_job"
    ids = {op["operationId"] for item in paths.values() for m, op in item.items() if m != "parameters"}
    assert "get_job" in ids
    # the example play names a title of the built-in catalog, so a generated play can succeed
    from common.content import default_catalog
    assert schemas["PlayRequest"]["example"]["title"] in default_catalog()
