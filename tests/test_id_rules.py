"""The ISP and edge-id rules live in common.ids, with their error texts, and every reader
(the control API, the topology files, `ocsim up` topologies) gives the same answers."""
from __future__ import annotations

import pytest

from common.errors import BadRequest
from common.ids import check_edge_id, check_isp, is_edge_id, is_isp
from control.topology import TopologyError, parse_topology
from ocsim import topology as ocsim_topology


@pytest.mark.parametrize("name,ok", [("isp-a", True), ("a", True), ("0x", True), ("-a", False), ("A", False),
                                     ("a" * 32, True), ("a" * 33, False), ("", False), (None, False)])
def test_isp_rule(name: object, ok: bool) -> None:
    assert is_isp(name) is ok
    if ok:
        assert check_isp(name) == name
    else:
        with pytest.raises(BadRequest, match=r"^where must match \[a-z0-9\]"):
            check_isp(name, "where")


@pytest.mark.parametrize("edge_id,ok", [("a1", True), ("E.x_y-z", True), ("_a", False), ("a/b", False),
                                        ("a" * 64, True), ("a" * 65, False), (3, False)])
def test_edge_id_rule(edge_id: object, ok: bool) -> None:
    assert is_edge_id(edge_id) is ok
    if not ok:
        with pytest.raises(BadRequest, match="invalid edge id"):
            check_edge_id(edge_id)


def test_one_topology_error_for_both_readers() -> None:
    assert ocsim_topology.TopologyError is TopologyError
    with pytest.raises(TopologyError, match="ISP name must match"):
        parse_topology({"isps": {"Bad": {"prefixes": ["10.0.0.0/8"]}}})
    with pytest.raises(TopologyError, match="ISP name must match"):
        ocsim_topology.parse_topology({"isps": {"Bad": {"prefixes": ["10.0.0.0/8"]}}})


# -- cache keys ----------------------------------------------------------------------------

def test_a_content_key_carries_its_path_and_title_and_round_trips_through_text() -> None:
    from common.ids import CacheKey, parse_content_key

    key = parse_content_key("/content/t1/235/0.seg")
    assert (key.path, key.title, key.variant) == ("/content/t1/235/0.seg", "t1", "")
    assert key.text == "/content/t1/235/0.seg"  # the policy's string is the canonical path
    assert CacheKey.from_text(key.text) == key and CacheKey.from_text(key.text).title == "t1"
    assert CacheKey("/content/t1/235/0.seg") == key  # the title is derived, not identity
    assert hash(CacheKey("/content/t1/235/0.seg")) == hash(key)
    assert parse_content_key("/content/t1/master.m3u8").title == "t1"


def test_a_variant_is_part_of_identity_and_survives_text() -> None:
    from common.ids import CacheKey, parse_content_key

    base = parse_content_key("/content/t1/235/index.m3u8")
    gz = base.with_variant("accept-encoding=gzip")
    assert gz != base and gz.title == "t1" and gz.path == base.path
    again = CacheKey.from_text(gz.text)
    assert again == gz and again.variant == "accept-encoding=gzip" and again.title == "t1"


def test_a_path_outside_content_is_a_key_without_a_title() -> None:
    from common.ids import CacheKey

    key = CacheKey.from_text("/static/app.js")
    assert key.title is None and key.path == "/static/app.js" and key.text == "/static/app.js"
