"""Link emulation for the origin: distance, a thin pipe, and a broken one.

A pure core: `LinkSettings` is the operator's knob set; `Pacer` is a token bucket
that says how long to wait before sending n more bytes (time passed in). The origin
applies one Pacer per response (the per-response cap) and one shared Pacer (the
total cap); a chunk waits for whichever is later.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from common.errors import BadRequest

DOWN_MODES = ("off", "503", "refuse")
_RATE_RE = re.compile(r"\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*([kKmMgGtT]?)(\S*)\s*\Z")
_RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
# The unit after the prefix says bits or bytes, and the case of the b matters, as it does
# everywhere else: Mbit, Mbps, Mb/s are megabits; MB/s, MBps, Mbyte/s are megabytes (x 8).
# A bare "MB" or "B" is a size, not a rate, and is refused rather than guessed.
_BITS = ("", "bit", "bits", "bps", "b/s", "bit/s", "bits/s")
_BYTES = ("B/s", "Bps", "byte/s", "bytes/s")
RATE_HELP = "bits/s, or 500kbit, 200Mbit, 1Gbit (bits), or 25MB/s (bytes per second)"


MAX_RATE_BPS = 10**15  # 1 Pbit/s: more than any link we emulate, and far from float overflow


def parse_rate(text: str | int | float) -> int:
    """'200Mbit', '1Gbit', '500kbps', '25MB/s' (bytes: x 8), '1e6' or a number -> bits per
    second (0 = unlimited), at most MAX_RATE_BPS. Ambiguous or unknown units, NaN, negative,
    infinite or absurd rates are a ValueError naming the text (never an OverflowError)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text) if isinstance(text, float) else text
    else:
        m = _RATE_RE.match(str(text)[:64])
        if not m:
            raise ValueError(f"not a rate: {str(text)[:40]!r} (use {RATE_HELP})")
        number, prefix, unit = float(m.group(1)), m.group(2).lower(), m.group(3)
        if unit in _BITS or unit.lower() in ("bit", "bits", "bit/s", "bits/s"):
            factor = 1
        elif unit in _BYTES:
            factor = 8
        elif unit in ("B", "byte", "bytes"):
            raise ValueError(f"{str(text)[:40]!r} is a size, not a rate: write {m.group(1)}{m.group(2)}B/s for "
                             f"bytes per second or {m.group(1)}{m.group(2)}bit for bits per second")
        else:
            raise ValueError(f"not a rate: {str(text)[:40]!r} ({unit[:20]!r} is not a rate unit; use {RATE_HELP})")
        value = number * _RATE_UNITS[prefix] * factor
    if value != value or not 0 <= value <= MAX_RATE_BPS:  # NaN, negative, infinite or absurd
        raise ValueError(f"a rate must be in [0, {MAX_RATE_BPS}] bit/s")
    return int(value)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    latency_ms: float = 0.0          # added before the response headers (time to first byte)
    bandwidth_bps: int = 0           # per-response cap, bits/s; 0 = none
    total_bandwidth_bps: int = 0     # cap shared by all responses, bits/s; 0 = none
    error_rate: float = 0.0          # share of content requests answered 503
    down: str = "off"                # off | 503 | refuse (connection reset, no response)

    def __post_init__(self) -> None:
        if not 0 <= self.latency_ms <= 60_000:
            raise BadRequest("latency_ms must be in [0, 60000]")
        if self.bandwidth_bps < 0 or self.total_bandwidth_bps < 0:
            raise BadRequest("bandwidth must be >= 0")
        if not 0.0 <= self.error_rate <= 1.0:
            raise BadRequest("error_rate must be in [0, 1]")
        if self.down not in DOWN_MODES:
            raise BadRequest(f"down must be one of {', '.join(DOWN_MODES)}")

    def to_json(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "bandwidth_bps": self.bandwidth_bps,
                "total_bandwidth_bps": self.total_bandwidth_bps, "error_rate": self.error_rate,
                "down": self.down}

    def updated(self, patch: Any) -> LinkSettings:
        """A partial update from JSON; BadRequest names the bad field and changes nothing."""
        if not isinstance(patch, dict):
            raise BadRequest("expected a JSON object")
        unknown = set(patch) - set(self.to_json())
        if unknown:
            raise BadRequest(f"unknown link fields: {sorted(unknown)}")
        values: dict[str, Any] = {}
        for key, value in patch.items():
            if key == "down":
                if not isinstance(value, str):
                    raise BadRequest("down must be a string")
                values[key] = value
            elif key in ("bandwidth_bps", "total_bandwidth_bps"):
                try:
                    values[key] = parse_rate(value)
                except ValueError as exc:
                    raise BadRequest(f"{key}: {exc}") from None
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise BadRequest(f"{key} must be a number")
                values[key] = float(value)
        return replace(self, **values)


class Pacer:
    """Token bucket in bits; `delay(n, now)` reserves n bytes and says how long to wait.

    The bucket holds at most `burst_s` worth of tokens so an idle link cannot save up
    an unbounded burst."""

    def __init__(self, rate_bps: int, burst_s: float = 0.05) -> None:
        self.rate = rate_bps
        self.burst = rate_bps * burst_s
        self.tokens = self.burst
        self.last: float | None = None

    def delay(self, nbytes: int, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        if self.last is None:
            self.last = now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= nbytes * 8
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate
