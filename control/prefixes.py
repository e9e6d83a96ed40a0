"""Client address -> ISP, by longest prefix match over the prefixes each ISP announces.

DESIGN.md (Steering): "The client's ISP comes from the prefixes each ISP announces
(longest prefix match)". This is the route-selection rule of RFC 1812 section 5.2.4.3
(the most specific matching route wins), applied to IPv4 and IPv6 alike.

Rules:

1. A prefix is a CIDR string validated by `ipaddress.ip_network(strict=True)`: host bits
   set ("10.1.2.3/16"), garbage, or a non-str raise ValueError. An ISP name follows the
   token grammar `[a-z0-9][a-z0-9-]{0,31}` (the same names `common.tokens` signs).
2. One prefix belongs to one ISP: announcing it again for the same ISP is a no-op, for
   another ISP a ValueError (a CDN must not guess which announcement is right).
3. `lookup` never raises: anything that is not an IP address answers None (the caller
   then gives the fallback ranking, never a 500). An IPv4-mapped IPv6 address
   (`::ffff:10.1.2.3`, what a dual-stack socket reports) is looked up as its IPv4 address.

Speed: one dict per (address family, prefix length), keyed by the network's integer
shifted right by the host bits; a lookup probes the lengths that exist, longest first,
so it costs at most one dict probe per distinct length (a handful in practice).

Pure: no IO, no clocks.
"""
from __future__ import annotations

import ipaddress

from common.ids import ISP_RULE, is_isp

__all__ = ["PrefixTable"]

_BITS = {4: 32, 6: 128}


class PrefixTable:
    """ISP prefixes with longest-prefix-match lookup (IPv4 and IPv6)."""

    __slots__ = ("_tables", "_lengths", "_owner", "_by_isp")

    def __init__(self) -> None:
        # family -> prefix length -> (network int >> host bits) -> isp
        self._tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        # family -> the prefix lengths present, longest first (the probe order)
        self._lengths: dict[int, tuple[int, ...]] = {4: (), 6: ()}
        self._owner: dict[str, str] = {}  # normalized prefix -> isp
        self._by_isp: dict[str, list[str]] = {}

    def add(self, prefix: str, isp: str) -> None:
        """Announce `prefix` (CIDR, IPv4 or IPv6) for `isp`. ValueError on bad input."""
        if not is_isp(isp):
            raise ValueError(f"invalid ISP name {isp!r}: must match {ISP_RULE}")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a CIDR string, not {type(prefix).__name__}")
        net = ipaddress.ip_network(prefix.strip(), strict=True)  # raises ValueError
        text = str(net)
        owner = self._owner.get(text)
        if owner is not None:
            if owner == isp:
                return
            raise ValueError(f"prefix {text} is already announced by ISP {owner!r}")
        fam = net.version
        host_bits = _BITS[fam] - net.prefixlen
        table = self._tables[fam].setdefault(net.prefixlen, {})
        table[int(net.network_address) >> host_bits] = isp
        self._lengths[fam] = tuple(sorted(self._tables[fam], reverse=True))
        self._owner[text] = isp
        self._by_isp.setdefault(isp, []).append(text)

    def lookup(self, ip: str) -> str | None:
        """The ISP of the most specific prefix containing `ip`, or None (also for non-IPs)."""
        if not isinstance(ip, str):
            return None  # ip_address() would take ints and packed bytes
        try:
            addr = ipaddress.ip_address(ip)
        except (ValueError, TypeError):
            return None
        if addr.version == 6:
            mapped = addr.ipv4_mapped
            if mapped is not None:
                addr = mapped
        fam = addr.version
        value = int(addr)
        bits = _BITS[fam]
        tables = self._tables[fam]
        for length in self._lengths[fam]:
            isp = tables[length].get(value >> (bits - length))
            if isp is not None:
                return isp
        return None

    def isps(self) -> dict[str, list[str]]:
        """ISP -> its prefixes (normalized, in the order announced); a fresh copy."""
        return {isp: list(prefixes) for isp, prefixes in self._by_isp.items()}

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, prefix: object) -> bool:
        if not isinstance(prefix, str):
            return False
        try:
            return str(ipaddress.ip_network(prefix.strip(), strict=True)) in self._owner
        except ValueError:
            return False
