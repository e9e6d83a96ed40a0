"""The content model: titles, the bitrate ladder, segment sizes, and the catalog.

Segments last SEGMENT_SECONDS (the last one of a title may be shorter). A segment's
size is bitrate x duration / 8 with a deterministic +/-VBR_SPREAD variation from a hash
of its id (VBR), never smaller than the synthetic header. The catalog is what
`GET /v1/catalog` serves: `{"titles": [{"id", "duration_s", "renditions", "popularity", "media"}]}`,
where `media` says what the bytes are: "synthetic" (common.segbytes) or "packaged" (real
H.264/AAC fMP4 made by `ocsim package`, served from files and checked by a digest list).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.errors import BadRequest, NotFound
from common.ids import SegmentId, check_title_id
from common.segbytes import HEADER_LEN, SegmentSpec

DEFAULT_LADDER: tuple[int, ...] = (235, 750, 1750, 3000, 5800)
SEGMENT_SECONDS = 4.0
VBR_SPREAD = 0.10
MAX_DURATION_S = 6 * 3600
MAX_RENDITION_KBPS = 100_000
MEDIA_KINDS = ("synthetic", "packaged")


def _vbr_factor(seg: SegmentId) -> float:
    h = int.from_bytes(hashlib.blake2b(f"vbr:{seg}".encode(), digest_size=8).digest(), "big")
    return 1.0 + VBR_SPREAD * (2.0 * h / 2**64 - 1.0)


def segment_length(seg: SegmentId, duration_s: float = SEGMENT_SECONDS) -> int:
    """Bytes of a segment lasting `duration_s`: bitrate x duration / 8 with the
    deterministic VBR variation of its id. The one size rule: the origin, the players and
    the offline simulator's synthetic traces all use it."""
    base = seg.rendition * 1000 / 8 * duration_s
    return max(HEADER_LEN + 1, round(base * _vbr_factor(seg)))


@dataclass(frozen=True, slots=True)
class Title:
    id: str
    duration_s: float
    renditions: tuple[int, ...] = DEFAULT_LADDER
    popularity: float = 1.0
    media: str = "synthetic"  # one of MEDIA_KINDS

    def __post_init__(self) -> None:
        check_title_id(self.id)
        if not (isinstance(self.duration_s, (int, float)) and 0 < self.duration_s <= MAX_DURATION_S):
            raise BadRequest(f"title {self.id}: duration_s must be in (0, {MAX_DURATION_S}]")
        if not self.renditions or len(set(self.renditions)) != len(self.renditions):
            raise BadRequest(f"title {self.id}: renditions must be non-empty and distinct")
        for r in self.renditions:
            if not (isinstance(r, int) and 0 < r <= MAX_RENDITION_KBPS):
                raise BadRequest(f"title {self.id}: rendition {r!r} is not a bitrate in kbit/s")
        if not (isinstance(self.popularity, (int, float)) and self.popularity >= 0):
            raise BadRequest(f"title {self.id}: popularity must be >= 0")
        if self.media not in MEDIA_KINDS:
            raise BadRequest(f"title {self.id}: media must be one of {', '.join(MEDIA_KINDS)}")

    @property
    def segment_count(self) -> int:
        return max(1, math.ceil(self.duration_s / SEGMENT_SECONDS - 1e-9))

    def segment_duration(self, index: int) -> float:
        if index < self.segment_count - 1:
            return SEGMENT_SECONDS
        return self.duration_s - SEGMENT_SECONDS * (self.segment_count - 1)

    def has_segment(self, rendition: int, index: int) -> bool:
        return rendition in self.renditions and 0 <= index < self.segment_count

    def segment(self, rendition: int, index: int) -> SegmentSpec:
        """The spec (id + length) of one segment; NotFound if the title has no such segment."""
        if rendition not in self.renditions:
            raise NotFound(f"title {self.id} has no rendition {rendition}")
        if not 0 <= index < self.segment_count:
            raise NotFound(f"title {self.id} has no segment {index}")
        seg = SegmentId(self.id, rendition, index)
        return SegmentSpec(seg, segment_length(seg, self.segment_duration(index)))

    def segments(self, rendition: int) -> Iterator[SegmentSpec]:
        for i in range(self.segment_count):
            yield self.segment(rendition, i)

    def rendition_bytes(self, rendition: int) -> int:
        return sum(s.length for s in self.segments(rendition))

    def total_bytes(self) -> int:
        return sum(self.rendition_bytes(r) for r in self.renditions)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "duration_s": self.duration_s,
            "renditions": list(self.renditions),
            "popularity": self.popularity,
            "media": self.media,
        }

    @classmethod
    def from_json(cls, obj: Any) -> Title:
        if not isinstance(obj, dict):
            raise BadRequest("a title must be an object")
        unknown = set(obj) - {"id", "duration_s", "renditions", "popularity", "media"}
        if unknown:
            raise BadRequest(f"unknown title fields: {sorted(unknown)}")
        if "id" not in obj or "duration_s" not in obj:
            raise BadRequest("a title needs id and duration_s")
        renditions = obj.get("renditions", list(DEFAULT_LADDER))
        if not isinstance(renditions, list) or isinstance(obj["duration_s"], bool):
            raise BadRequest("renditions must be a list of kbit/s")
        return cls(
            id=obj["id"],
            duration_s=obj["duration_s"],
            renditions=tuple(sorted(renditions)),
            popularity=obj.get("popularity", 1.0),
            media=obj.get("media", "synthetic"),
        )


@dataclass(slots=True)
class Catalog:
    """Titles by id, in popularity order for listing."""

    titles: dict[str, Title] = field(default_factory=dict)

    @classmethod
    def of(cls, titles: Iterable[Title]) -> Catalog:
        cat = cls()
        for t in titles:
            if t.id in cat.titles:
                raise BadRequest(f"duplicate title id {t.id}")
            cat.titles[t.id] = t
        return cat

    def get(self, title_id: str) -> Title:
        try:
            return self.titles[title_id]
        except KeyError:
            raise NotFound(f"unknown title {title_id[:80]}") from None

    def __contains__(self, title_id: object) -> bool:
        return title_id in self.titles

    def __len__(self) -> int:
        return len(self.titles)

    def by_popularity(self) -> list[Title]:
        return sorted(self.titles.values(), key=lambda t: (-t.popularity, t.id))

    def to_json(self) -> dict[str, Any]:
        return {"titles": [t.to_json() for t in self.by_popularity()]}

    @classmethod
    def from_json(cls, obj: Any) -> Catalog:
        if not isinstance(obj, dict) or not isinstance(obj.get("titles"), list):
            raise BadRequest('a catalog is {"titles": [...]}')
        return cls.of(Title.from_json(t) for t in obj["titles"])


def default_catalog(n_titles: int = 200, alpha: float = 0.8, seed: int = 7) -> Catalog:
    """The built-in catalog: n titles of 5 to 90 minutes, Zipf(alpha) popularity by rank."""
    rng = random.Random(seed)
    weights = [1.0 / (rank ** alpha) for rank in range(1, n_titles + 1)]
    total = sum(weights)
    titles = []
    for rank, w in enumerate(weights, start=1):
        minutes = rng.randint(5, 90)
        titles.append(Title(f"title-{rank:03d}", float(minutes * 60), DEFAULT_LADDER, round(w / total, 6)))
    return Catalog.of(titles)


def load_catalog(path: str | Path) -> Catalog:
    """A catalog from a JSON or TOML file (same shape as GET /v1/catalog)."""
    p = Path(path)
    text = p.read_text()
    try:
        obj = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise BadRequest(f"catalog {p}: {exc}") from None
    return Catalog.from_json(obj)
