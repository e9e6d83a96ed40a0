"""Packaged titles at the origin: a media directory made by `ocsim package`, served from files.

At start `load_media_library` reads every `DIR/{title}/digests.json` and checks every file
of the title against it (length and SHA-256). A title whose files do not match, whose list
is malformed or names another title is refused: it is left out of the catalog and the
reason is reported, so the origin never serves bytes its own digest list contradicts.
Only the names the digest list holds are servable (media.digests checks them), looked up
by canonical content path, so a request can never reach another file.

Bodies are read in `CHUNK` pieces with `os.pread` in the default executor: the event loop
never waits on the disk.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.content import Catalog, Title
from common.errors import BadRequest, NotFound
from common.ids import ContentRef
from media.digests import DIGESTS_FILE, DigestList, mismatches, read_digest_list

log = logging.getLogger("ocsim.origin.media")

_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".mp4": "video/mp4", ".seg": "video/mp4"}


@dataclass(frozen=True, slots=True)
class MediaFile:
    path: Path
    length: int
    etag: str          # strong, from the SHA-256: the same bytes have the same tag everywhere
    content_type: str

    def chunks(self, chunk: int) -> Callable[[int, int], AsyncIterator[bytes]]:
        """A reader of [start, end) in pieces of `chunk` bytes, each read off the event loop."""
        async def read(start: int, end: int) -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            fd = await loop.run_in_executor(None, os.open, str(self.path), os.O_RDONLY)
            try:
                pos = start
                while pos < end:
                    piece = await loop.run_in_executor(None, os.pread, fd, min(chunk, end - pos), pos)
                    if not piece:
                        raise OSError(f"{self.path} is shorter than its digest list says")
                    pos += len(piece)
                    yield piece
            finally:
                os.close(fd)
        return read


@dataclass(slots=True)
class MediaLibrary:
    root: Path
    titles: dict[str, Title] = field(default_factory=dict)
    digests: dict[str, DigestList] = field(default_factory=dict)
    files: dict[str, MediaFile] = field(default_factory=dict)   # canonical content path -> file
    refused: dict[str, str] = field(default_factory=dict)       # directory name -> why

    def file(self, ref: ContentRef) -> MediaFile:
        try:
            return self.files[ref.path]
        except KeyError:
            raise NotFound(f"title {ref.title} has no {ref.path.rsplit('/', 2)[-2:]!r}") from None

    def digest_list(self, title: str) -> DigestList:
        try:
            return self.digests[title]
        except KeyError:
            raise NotFound(f"no packaged title {title[:80]}") from None


def _admit(lib: MediaLibrary, title_dir: Path, verify: bool) -> None:
    digests = read_digest_list(title_dir)
    if digests.title != title_dir.name:
        raise BadRequest(f"its digest list is for title {digests.title!r}")
    if verify:
        problems = mismatches(title_dir, digests)
        if problems:
            raise BadRequest("files do not match the digest list: " + "; ".join(problems))
    lib.titles[digests.title] = Title(digests.title, digests.duration_s, tuple(r.kbps for r in digests.renditions),
                                      popularity=1.0, media="packaged")
    lib.digests[digests.title] = digests
    for name, d in digests.files.items():
        path = title_dir / name
        lib.files[f"/content/{digests.title}/{name}"] = MediaFile(path, d.length, f'"{d.sha256[:32]}"',
                                                                  _TYPES[path.suffix])


def load_media_library(root: str | Path, verify: bool = True) -> MediaLibrary:
    """Every packaged title under `root`; BadRequest if `root` is not a directory."""
    lib = MediaLibrary(Path(root))
    if not lib.root.is_dir():
        raise BadRequest(f"media directory {lib.root}: no such directory")
    for entry in sorted(lib.root.iterdir()):
        if entry.name.startswith("."):
            continue  # packaging temporaries
        if not (entry / DIGESTS_FILE).is_file():
            log.info("media: %s is not a packaged title (no %s); ignored", entry, DIGESTS_FILE)
            continue
        try:
            _admit(lib, entry, verify)
        except BadRequest as exc:
            lib.refused[entry.name] = exc.reason
            log.error("media: refusing title %s: %s", entry.name, exc.reason)
    return lib


def catalog_with_media(catalog: Catalog, lib: MediaLibrary) -> Catalog:
    """The synthetic catalog and the packaged titles together; an id in both is an error
    (unless it is the packaged title itself: merging twice changes nothing)."""
    clash = sorted(t for t in set(catalog.titles) & set(lib.titles) if catalog.titles[t] != lib.titles[t])
    if clash:
        raise BadRequest(f"title {clash[0]} is both in the catalog and in the media directory {lib.root}")
    return Catalog.of([*catalog.titles.values(), *(t for t in lib.titles.values() if t.id not in catalog)])
