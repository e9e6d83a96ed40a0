"""Identifiers and content paths, validated: one home for every id rule and its error text.

An ISP name is `[a-z0-9][a-z0-9-]{0,31}` (topology, prefixes, steering, URL tokens); an
edge id is letters, digits, `.`, `_` or `-`, at most 64, starting with a letter or digit
(registration, the fleet, `ocsim up` topologies). A title id is `[a-z0-9][a-z0-9-]{0,63}`; a rendition is named by its bitrate in kbit/s;
segments are numbered from 0. Content paths are the same at the origin and every edge:

    /content/{title}/master.m3u8
    /content/{title}/{rendition}/index.m3u8
    /content/{title}/{rendition}/{n}.seg
    /content/{title}/{rendition}/init.mp4     (packaged media only: the fMP4 init segment)

`parse_content_path` is the only way a path becomes a `ContentRef`; anything it does not
accept (`..`, encoded slashes, NUL, leading zeros, overlong) is rejected before any
lookup, so nothing derived from a raw path ever reaches a file system.

A `CacheKey` is what the edge caches an object under, from the request through fill and
store: the canonical path, its title when it is a content path, and a variant suffix (for a
Vary selection). It becomes a string only in `CacheKey.text` (the eviction policy, the
sidecar on disk) and comes back with `CacheKey.from_text`.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import TypeGuard

from common.errors import BadRequest

TITLE_RULE = "[a-z0-9][a-z0-9-]{0,63}"
TITLE_RE = re.compile(TITLE_RULE + r"\Z")
ISP_RULE = "[a-z0-9][a-z0-9-]{0,31}"
ISP_RE = re.compile(ISP_RULE + r"\Z")  # ISP names: topology, prefixes, steering, tokens
EDGE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
EDGE_ID_RULE = "letters, digits, '.', '_' or '-' (at most 64)"
_RENDITION_RE = re.compile(r"[1-9][0-9]{0,5}\Z")
_INDEX_RE = re.compile(r"(?:0|[1-9][0-9]{0,6})\Z")
MAX_PATH_LEN = 256
INIT_SEGMENT = "init.mp4"


def is_title_id(value: object) -> bool:
    return isinstance(value, str) and TITLE_RE.match(value) is not None


def check_title_id(value: object) -> str:
    if not is_title_id(value):
        raise BadRequest(f"invalid title id {str(value)[:80]!r}")
    assert isinstance(value, str)
    return value


def is_isp(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and ISP_RE.match(value) is not None


def isp_rule_text(name: str = "isp") -> str:
    """The error text for a bad ISP name in field `name`."""
    return f"{name} must match {ISP_RULE}"


def check_isp(value: object, name: str = "isp") -> str:
    """`value` if it is a valid ISP name, else BadRequest naming the field and the rule."""
    if not is_isp(value):
        raise BadRequest(isp_rule_text(name))
    return value


def is_edge_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and EDGE_ID_RE.match(value) is not None


def check_edge_id(value: object) -> str:
    """`value` if it is a valid edge id, else BadRequest."""
    if not is_edge_id(value):
        raise BadRequest("invalid edge id")
    return value


@dataclass(frozen=True, slots=True, order=True)
class SegmentId:
    title: str
    rendition: int  # kbit/s
    index: int

    @property
    def path(self) -> str:
        return f"/content/{self.title}/{self.rendition}/{self.index}.seg"

    def __str__(self) -> str:
        return f"{self.title}/{self.rendition}/{self.index}"


class ContentKind(enum.Enum):
    MASTER = "master"
    MEDIA = "media"
    SEGMENT = "segment"
    INIT = "init"  # the fMP4 initialization segment of a packaged rendition (EXT-X-MAP)


@dataclass(frozen=True, slots=True)
class ContentRef:
    kind: ContentKind
    title: str
    rendition: int | None = None
    index: int | None = None

    @property
    def path(self) -> str:
        if self.kind is ContentKind.MASTER:
            return master_path(self.title)
        if self.kind is ContentKind.MEDIA:
            return f"/content/{self.title}/{self.rendition}/index.m3u8"
        if self.kind is ContentKind.INIT:
            return f"/content/{self.title}/{self.rendition}/{INIT_SEGMENT}"
        return f"/content/{self.title}/{self.rendition}/{self.index}.seg"

    @property
    def segment(self) -> SegmentId:
        if self.kind is not ContentKind.SEGMENT:
            raise ValueError("not a segment")
        assert self.rendition is not None and self.index is not None
        return SegmentId(self.title, self.rendition, self.index)


def master_path(title: str) -> str:
    return f"/content/{title}/master.m3u8"


def content_prefix(title: str) -> str:
    """The path prefix a URL token is bound to."""
    return f"/content/{title}/"


def parse_content_path(path: str) -> ContentRef:
    """Parse a decoded, query-free path. Raises BadRequest for anything malformed."""
    if len(path) > MAX_PATH_LEN:
        raise BadRequest("path too long")
    if "\x00" in path or "\\" in path or "%" in path:
        raise BadRequest("malformed path")
    parts = path.split("/")
    # ['', 'content', title, ...]
    if len(parts) < 4 or parts[0] != "" or parts[1] != "content":
        raise BadRequest("not a content path")
    title = parts[2]
    if not TITLE_RE.match(title):
        raise BadRequest("invalid title id")
    if len(parts) == 4:
        if parts[3] == "master.m3u8":
            return ContentRef(ContentKind.MASTER, title)
        raise BadRequest("not a content path")
    if len(parts) != 5 or not _RENDITION_RE.match(parts[3]):
        raise BadRequest("invalid rendition")
    rendition = int(parts[3])
    leaf = parts[4]
    if leaf == "index.m3u8":
        return ContentRef(ContentKind.MEDIA, title, rendition)
    if leaf == INIT_SEGMENT:
        return ContentRef(ContentKind.INIT, title, rendition)
    if leaf.endswith(".seg") and _INDEX_RE.match(leaf[:-4]):
        return ContentRef(ContentKind.SEGMENT, title, rendition, int(leaf[:-4]))
    raise BadRequest("invalid segment name")


# -- cache keys --------------------------------------------------------------------------
#
# What the edge caches an object under, from the request through fill and store. Identity is
# the canonical path (no token, no query) plus a variant suffix (empty for the one stored
# response of a path; a Vary selection names a variant). `title` is derived from the path once,
# at construction by `cache_key`/`CacheKey.from_text`, and is not part of identity, so a bare
# `CacheKey(path)` is a valid lookup key. The key becomes a string in exactly one place,
# `text`, for what takes strings: the eviction policy and the on-disk sidecar.

KEY_VARIANT_SEP = "\x00"  # never in a path (parse_content_path rejects NUL)


@dataclass(frozen=True, slots=True)
class CacheKey:
    path: str
    variant: str = ""
    title: str | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        """The key as one string (policy, sidecar); `from_text` inverts it."""
        return self.path + KEY_VARIANT_SEP + self.variant if self.variant else self.path

    @classmethod
    def from_text(cls, text: str) -> CacheKey:
        path, _, variant = text.partition(KEY_VARIANT_SEP)
        return cls(path, variant, _title_of_path(path))

    def with_variant(self, variant: str) -> CacheKey:
        return CacheKey(self.path, variant, self.title)

    def __str__(self) -> str:
        return self.path if not self.variant else f"{self.path} [{self.variant}]"


def content_key(ref: ContentRef) -> CacheKey:
    """The cache key of a parsed content path."""
    return CacheKey(ref.path, "", ref.title)


def parse_content_key(path: str) -> CacheKey:
    """`parse_content_path` as a cache key. Raises BadRequest for anything malformed."""
    return content_key(parse_content_path(path))


def _title_of_path(path: str) -> str | None:
    try:
        return parse_content_path(path).title
    except BadRequest:
        return None
