"""SIZE arguments: bytes, or a number with KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB."""
from __future__ import annotations

import re

_UNITS = {
    "": 1, "B": 1,
    "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*\Z")


def parse_size(text: str | int) -> int:
    """Parse '10GiB', '500MB', '1.5GB' or '12345' into bytes; ValueError names the problem."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"size must not be negative: {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r} (use bytes or KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    unit = m.group(2).upper()
    if unit not in _UNITS:
        raise ValueError(f"unknown size unit {m.group(2)!r} in {text!r}")
    return int(float(m.group(1)) * _UNITS[unit])


def format_size(n: float) -> str:
    """Human form with binary units, e.g. 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
