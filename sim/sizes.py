"""Parsing of SIZE arguments: bytes, KB/MB/GB/TB (powers of 1000), KiB..TiB (1024), or N%."""

from __future__ import annotations

from common.sizes import parse_size as common_parse_size

__all__ = ["parse_size"]


def parse_size(text: str, percent_of: int | None = None) -> int:
    """Bytes from ``"123"``, ``"5MB"``, ``"1.5GiB"`` (common.sizes) or, given ``percent_of``, ``"5%"``."""
    stripped = text.strip()
    if stripped.endswith("%"):
        if percent_of is None:
            raise ValueError(f"{text!r}: a percentage needs a reference size")
        try:
            share = float(stripped[:-1])
        except ValueError:
            raise ValueError(f"not a size: {text!r}") from None
        if share < 0:
            raise ValueError(f"not a size: {text!r}")
        return int(share / 100.0 * percent_of)
    return common_parse_size(text)
