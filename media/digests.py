"""The digest list of a packaged title: byte length and SHA-256 of every file it serves.

`digests.json` sits beside the title's files. It is the title's record: what was packaged
(renditions with measured segment durations and sizes, the source's hash) and, for every
file, its length and SHA-256. The origin checks every file against it at start and refuses
a title that does not match; players check what the CDN handed them against it, so a
corrupt byte anywhere between origin and screen is caught.

The names it may list are exactly the ones a packaged title has (`master.m3u8`, and per
rendition `index.m3u8`, `init.mp4`, `0.seg` ...), each a valid content path below the
title, so a crafted list can never make the origin read another file.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import BadRequest
from common.ids import INIT_SEGMENT, check_title_id
from media.playlists import RenditionFacts

FORMAT = "ocsim-media/1"
DIGESTS_FILE = "digests.json"
MASTER = "master.m3u8"
_READ = 1 << 20
_SHA256_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class FileDigest:
    length: int
    sha256: str  # hex

    def to_json(self) -> dict[str, Any]:
        return {"length": self.length, "sha256": self.sha256}


def digest_bytes(data: bytes) -> FileDigest:
    return FileDigest(len(data), hashlib.sha256(data).hexdigest())


def digest_file(path: Path) -> FileDigest:
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(_READ):
            h.update(chunk)
            n += len(chunk)
    return FileDigest(n, h.hexdigest())


def title_files(renditions: Iterable[RenditionFacts]) -> list[str]:
    """Every file name of a packaged title, relative to its directory, in serving order."""
    names = [MASTER]
    for r in sorted(renditions, key=lambda r: r.kbps):
        names += [f"{r.kbps}/index.m3u8", f"{r.kbps}/{INIT_SEGMENT}"]
        names += [f"{r.kbps}/{i}.seg" for i in range(len(r.durations))]
    return names


@dataclass(frozen=True, slots=True)
class DigestList:
    title: str
    renditions: tuple[RenditionFacts, ...]
    files: Mapping[str, FileDigest]
    source: Mapping[str, Any]     # {"kind": "file" | "test-source", ...}; informational
    content_key: str              # the packaging cache key (media.package)

    @property
    def duration_s(self) -> float:
        return round(min(r.duration_s for r in self.renditions), 3)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "title": self.title, "duration_s": self.duration_s,
                "content_key": self.content_key, "source": dict(self.source),
                "renditions": [r.to_json() for r in self.renditions],
                "files": {name: self.files[name].to_json() for name in title_files(self.renditions)}}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"

    @classmethod
    def from_json(cls, obj: Any) -> DigestList:
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise BadRequest(f"not an ocsim digest list (format must be {FORMAT!r})")
        title = check_title_id(obj.get("title"))
        raw = obj.get("renditions")
        if not isinstance(raw, list) or not raw:
            raise BadRequest("renditions must be a non-empty list")
        renditions = tuple(sorted((RenditionFacts.from_json(r) for r in raw), key=lambda r: r.kbps))
        if len({r.kbps for r in renditions}) != len(renditions):
            raise BadRequest("rendition bitrates must be distinct")
        files_obj = obj.get("files")
        if not isinstance(files_obj, dict):
            raise BadRequest("files must be an object")
        expected = title_files(renditions)
        if set(files_obj) != set(expected):
            missing = sorted(set(expected) - set(files_obj))[:3]
            extra = sorted(set(files_obj) - set(expected))[:3]
            raise BadRequest(f"files do not match the renditions (missing {missing}, unexpected {extra})")
        files: dict[str, FileDigest] = {}
        for name in expected:
            entry = files_obj[name]
            if not isinstance(entry, dict):
                raise BadRequest(f"{name}: must be {{length, sha256}}")
            length, sha = entry.get("length"), entry.get("sha256")
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise BadRequest(f"{name}: length must be a byte count")
            if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _SHA256_HEX:
                raise BadRequest(f"{name}: sha256 must be 64 lower-case hex digits")
            files[name] = FileDigest(length, sha)
        source = obj.get("source", {})
        key = obj.get("content_key", "")
        if not isinstance(source, dict) or not isinstance(key, str):
            raise BadRequest("source must be an object and content_key a string")
        return cls(title, renditions, files, source, key)

    @classmethod
    def loads(cls, text: str) -> DigestList:
        try:
            return cls.from_json(json.loads(text))
        except ValueError as exc:
            raise BadRequest(f"digest list is not JSON: {exc}") from None


def read_digest_list(title_dir: Path) -> DigestList:
    path = title_dir / DIGESTS_FILE
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadRequest(f"{path}: {exc.strerror or exc}") from None
    try:
        return DigestList.loads(text)
    except BadRequest as exc:
        raise BadRequest(f"{path}: {exc.reason}") from None


def mismatches(title_dir: Path, digests: DigestList, limit: int = 5) -> list[str]:
    """What on disk does not match the list (missing file, wrong length, wrong SHA-256); [] = all good."""
    problems: list[str] = []
    for name, want in digests.files.items():
        path = title_dir / name
        try:
            if path.is_symlink() or not path.is_file():
                problems.append(f"{name}: missing")
                continue
            if path.stat().st_size != want.length:
                problems.append(f"{name}: {path.stat().st_size} bytes, the list says {want.length}")
                continue
            got = digest_file(path)
        except OSError as exc:
            problems.append(f"{name}: {exc.strerror or exc}")
            continue
        if got.sha256 != want.sha256:
            problems.append(f"{name}: SHA-256 {got.sha256[:12]}... does not match the list's {want.sha256[:12]}...")
        if len(problems) >= limit:
            break
    return problems
