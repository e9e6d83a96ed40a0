"""Conditional requests, RFC 9110 section 13, as pure functions over an entity tag.

Our entity tags are strong (`"..."`). If-Match uses the strong comparison (13.1.1),
If-None-Match the weak one (13.1.2);
If-Range uses the strong one (13.1.5) and only applies to a Range request.
"""
from __future__ import annotations


def _tags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def _opaque(tag: str) -> str:
    return tag[2:] if tag.startswith("W/") else tag


def none_match(if_none_match: str | None, etag: str) -> bool:
    """True when the request's If-None-Match matches: answer 304 to GET/HEAD (13.1.2)."""
    if if_none_match is None:
        return False
    tags = _tags(if_none_match)
    if tags == ["*"]:
        return True
    return any(_opaque(t) == _opaque(etag) for t in tags)


def range_applies(if_range: str | None, etag: str, last_modified: str | None = None) -> bool:
    """True when a Range should be honoured given If-Range (13.1.5): absent, or a strong match."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag  # strong comparison; a weak tag never matches
    if value.startswith("W/"):
        return False
    return last_modified is not None and value == last_modified


def match(if_match: str | None, etag: str) -> bool:
    """True when the request's If-Match allows the method (13.1.1): absent, `*`, or a
    strong match of one of its tags (a weak tag never matches)."""
    if if_match is None:
        return True
    tags = _tags(if_match)
    if tags == ["*"]:
        return True
    return any(t == etag and not t.startswith("W/") for t in tags)
