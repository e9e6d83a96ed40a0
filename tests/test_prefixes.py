"""Unit and property tests of the longest-prefix-match table (control/prefixes.py)."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.prefixes import PrefixTable


def table(*pairs: tuple[str, str]) -> PrefixTable:
    t = PrefixTable()
    for prefix, isp in pairs:
        t.add(prefix, isp)
    return t


def test_ipv4_longest_prefix_wins_over_overlapping_shorter_ones() -> None:
    t = table(("10.0.0.0/8", "big"), ("10.1.0.0/16", "mid"), ("10.1.2.0/24", "small"), ("10.1.2.3/32", "host"))
    assert t.lookup("10.1.2.3") == "host"
    assert t.lookup("10.1.2.4") == "small"
    assert t.lookup("10.1.3.4") == "mid"
    assert t.lookup("10.200.0.1") == "big"
    assert t.lookup("11.0.0.1") is None


def test_order_of_announcement_does_not_matter() -> None:
    a = table(("10.1.2.0/24", "small"), ("10.0.0.0/8", "big"))
    b = table(("10.0.0.0/8", "big"), ("10.1.2.0/24", "small"))
    for ip in ("10.1.2.9", "10.9.9.9"):
        assert a.lookup(ip) == b.lookup(ip)


def test_default_route_catches_everything_of_its_family_only() -> None:
    t = table(("0.0.0.0/0", "any4"), ("192.168.0.0/16", "home"))
    assert t.lookup("8.8.8.8") == "any4"
    assert t.lookup("192.168.1.1") == "home"
    assert t.lookup("2001:db8::1") is None


def test_ipv6_longest_prefix_and_families_are_separate() -> None:
    t = table(("2001:db8::/32", "v6-big"), ("2001:db8:1::/48", "v6-small"), ("fd00:1::/32", "isp-a"),
              ("10.0.0.0/8", "v4"))
    assert t.lookup("2001:db8:1::5") == "v6-small"
    assert t.lookup("2001:db8:2::5") == "v6-big"
    assert t.lookup("fd00:1:ffff::1") == "isp-a"
    assert t.lookup("2001:db9::1") is None
    assert t.lookup("::a00:1") is None  # the IPv4-compatible form is not an IPv4 address


def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4() -> None:
    t = table(("10.1.0.0/16", "isp-a"))
    assert t.lookup("::ffff:10.1.2.3") == "isp-a"
    assert t.lookup("::ffff:10.2.2.3") is None


@pytest.mark.parametrize("bad", ["", "not-an-ip", "10.1.2", "10.1.2.256", "1.2.3.4/24", ":::1", "10.1.2.3 ",
                                 "2001:db8::/32", None, 167838211, b"10.1.2.3"])
def test_lookup_of_anything_not_an_address_is_none(bad: object) -> None:
    t = table(("0.0.0.0/0", "any4"), ("::/0", "any6"))
    assert t.lookup(bad) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["10.1.2.3/16", "10.0.0.0/33", "garbage", "", "10.0.0.0/-1", "2001:db8::1/32",
                                 "fe80::/10%eth0"])
def test_bad_prefixes_are_refused(bad: str) -> None:
    t = PrefixTable()
    with pytest.raises(ValueError):
        t.add(bad, "isp-a")
    assert len(t) == 0 and t.isps() == {}


@pytest.mark.parametrize("bad", ["", "ISP-A", "-a", "a" * 33, "a b", "a_b", None, 3])
def test_bad_isp_names_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        PrefixTable().add("10.0.0.0/8", bad)  # type: ignore[arg-type]


def test_non_string_prefix_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        PrefixTable().add(ipaddress.ip_network("10.0.0.0/8"), "a")  # type: ignore[arg-type]


def test_same_prefix_same_isp_is_idempotent_another_isp_is_refused() -> None:
    t = table(("10.0.0.0/8", "a"))
    t.add("10.0.0.0/8", "a")
    assert t.isps() == {"a": ["10.0.0.0/8"]} and len(t) == 1
    with pytest.raises(ValueError, match="already announced"):
        t.add("10.0.0.0/8", "b")
    assert t.lookup("10.1.1.1") == "a"


def test_isps_lists_normalized_prefixes_per_isp_and_is_a_copy() -> None:
    t = table(("10.1.0.0/16", "a"), ("2001:DB8::/32", "a"), ("10.2.0.0/16", "b"))
    got = t.isps()
    assert got == {"a": ["10.1.0.0/16", "2001:db8::/32"], "b": ["10.2.0.0/16"]}
    got["a"].append("x")
    assert t.isps()["a"] == ["10.1.0.0/16", "2001:db8::/32"]
    assert "10.1.0.0/16" in t and "2001:db8:0::/32" in t and "10.3.0.0/16" not in t and 5 not in t


# ------------------------------------------------------------------ property: matches a brute force

def _brute(prefixes: dict[str, str], ip: str) -> str | None:
    addr = ipaddress.ip_address(ip)
    best: tuple[int, str] | None = None
    for p, isp in prefixes.items():
        net = ipaddress.ip_network(p)
        if net.version == addr.version and addr in net and (best is None or net.prefixlen > best[0]):
            best = (net.prefixlen, isp)
    return None if best is None else best[1]


@st.composite
def v4_prefix(draw: st.DrawFn) -> str:
    # a small address space so prefixes overlap and lookups hit them often
    length = draw(st.integers(0, 32))
    value = draw(st.integers(0, 2**32 - 1)) & 0xFF0F00FF | 0x0A000000 if length >= 8 else draw(st.integers(0, 2**32 - 1))
    return str(ipaddress.ip_network((value >> (32 - length) << (32 - length), length)))


@st.composite
def v6_prefix(draw: st.DrawFn) -> str:
    length = draw(st.integers(0, 128))
    value = (0x20010DB8 << 96) | draw(st.integers(0, 2**20)) << 80 | draw(st.integers(0, 2**80 - 1))
    if length < 32:
        value = draw(st.integers(0, 2**128 - 1))
    return str(ipaddress.ip_network((value >> (128 - length) << (128 - length), length)))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.one_of(v4_prefix(), v6_prefix()), st.sampled_from(["a", "b", "c"]), max_size=25),
       st.lists(st.one_of(st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v & 0xFF0F00FF | 0x0A000000))),
                          st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
                          st.integers(0, 2**100).map(lambda v: str(ipaddress.IPv6Address((0x20010DB8 << 96) | v)))),
                max_size=25))
def test_lookup_agrees_with_brute_force(prefixes: dict[str, str], ips: list[str]) -> None:
    t = PrefixTable()
    for p, isp in prefixes.items():
        t.add(p, isp)
    for p in prefixes:  # every network address is inside its own prefix
        ips.append(str(ipaddress.ip_network(p).network_address))
    for ip in ips:
        assert t.lookup(ip) == _brute(prefixes, ip), ip
