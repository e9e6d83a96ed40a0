"""Parsing of SIZE arguments: bytes, KB/MB/GB/TB (powers of 1000), KiB..TiB (1024), or N%."""

from __future__ import annotations

import re

__all__ = ["parse_size"]

_UNITS = {
    "": 1, "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*|%)\s*$")


def parse_size(text: str, percent_of: int | None = None) -> int:
    """Bytes from ``"123"``, ``"5MB"``, ``"1.5GiB"`` or, given ``percent_of``, ``"5%"``."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if percent_of is None:
            raise ValueError(f"{text!r}: a percentage needs a reference size")
        return int(number / 100.0 * percent_of)
    if unit not in _UNITS:
        raise ValueError(f"{text!r}: unknown unit {match.group(2)!r} (use KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return int(number * _UNITS[unit])
