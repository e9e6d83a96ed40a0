"""Packaging one title: from a source to `OUT/{title}/` with playlists and a digest list.

The steps, each of which either completes or leaves nothing behind:

1. Check the request: a valid title id; OUT is absent, empty, or an ocsim media directory
   (only packaged titles in it); OUT/{title} is absent, or already this very package (then
   there is nothing to do), or replaced only with `force`.
2. The content key: SHA-256 over what determines the bytes (the input file's SHA-256 or the
   test source's parameters, the ladder, the encoder settings, the ffmpeg build).
3. Encode into a temporary directory inside OUT (`.{title}.tmp-*`), unless the cache holds
   the key, whose files are checked against their recorded digests before they are used.
4. Write the playlists from the measured segments, then `digests.json`.
5. Rename the temporary directory to OUT/{title}: one atomic step.

On any error the temporary directory is removed: a failed run leaves OUT as it was.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.content import SEGMENT_SECONDS, Title
from common.errors import BadRequest, Conflict
from common.ids import INIT_SEGMENT, check_title_id
from media.digests import DIGESTS_FILE, MASTER, DigestList, FileDigest, digest_file, read_digest_list, title_files
from media.encode import (AAC, FFMPEG_PLAYLIST, TEST_SOURCE_FPS, X264, FileSource, Source, SourceInfo, TestSource,
                          encoder_args, ffmpeg_version, find_font, probe, run_encoder)
from media.ladder import Rung, fit_to_source
from media.mp4 import describe_init
from media.playlists import RenditionFacts, master_playlist, media_playlist, segment_durations

log = logging.getLogger("ocsim.media")

CACHE_RECORD = "cache.json"
MAX_TEST_SOURCE_S = 3600.0
_TMP_MARK = ".tmp-"


@dataclass(frozen=True, slots=True)
class PackageRequest:
    source: Source
    title: str
    out_root: Path
    ladder: tuple[Rung, ...]
    cache_dir: Path | None = None   # None: no cache
    force: bool = False


@dataclass(frozen=True, slots=True)
class PackageResult:
    title_dir: Path
    digests: DigestList
    encoded: bool                  # False: served from the cache or already there
    dropped: tuple[Rung, ...] = ()
    notes: tuple[str, ...] = field(default=())


def default_cache_dir() -> Path:
    env = os.environ.get("OCSIM_MEDIA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ocsim" / "media"


def check_out_root(out_root: Path, title: str) -> None:
    """OUT must be absent, empty, or hold only packaged titles (and our own temporaries)."""
    if out_root.exists() and not out_root.is_dir():
        raise BadRequest(f"{out_root}: exists and is not a directory")
    if not out_root.exists():
        return
    for entry in sorted(out_root.iterdir()):
        if entry.name.startswith(".") and _TMP_MARK in entry.name:
            continue  # another run's temporary (or a crashed one's): never ours to judge
        if entry.is_dir() and (entry / DIGESTS_FILE).is_file():
            continue
        raise Conflict(f"{out_root} holds other content ({entry.name!r} is not a packaged title): "
                       "give --out an empty directory or an ocsim media directory")


def content_key(source: Source, source_sha256: str | None, rungs: tuple[Rung, ...], ffmpeg: str) -> str:
    what: dict[str, Any] = {"layout": "ocsim-media/1", "rungs": [r.label for r in rungs], "x264": list(X264),
                            "aac": list(AAC), "segment_s": SEGMENT_SECONDS, "ffmpeg": ffmpeg}
    if isinstance(source, TestSource):
        what["source"] = {"test": source.title, "duration_s": source.duration_s, "fps": TEST_SOURCE_FPS}
    else:
        what["source"] = {"sha256": source_sha256}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def _measure(work: Path, rung: Rung) -> RenditionFacts:
    rdir = work / str(rung.kbps)
    durations = segment_durations((rdir / FFMPEG_PLAYLIST).read_text())
    (rdir / FFMPEG_PLAYLIST).unlink()
    sizes = []
    for i in range(len(durations)):
        seg = rdir / f"{i}.seg"
        if not seg.is_file():
            raise BadRequest(f"the encoder listed {seg.name} of rendition {rung.kbps} but did not write it")
        sizes.append(seg.stat().st_size)
    init = describe_init((rdir / INIT_SEGMENT).read_bytes())
    return RenditionFacts(rung.kbps, init.width, init.height, init.video_codec, durations, tuple(sizes))


def _write_playlists(work: Path, renditions: tuple[RenditionFacts, ...]) -> None:
    for r in renditions:
        (work / str(r.kbps) / "index.m3u8").write_text(media_playlist(r))
    (work / MASTER).write_text(master_playlist(renditions))


def _digest_all(work: Path, renditions: tuple[RenditionFacts, ...]) -> dict[str, FileDigest]:
    return {name: digest_file(work / name) for name in title_files(renditions)}


def _from_cache(entry: Path, work: Path) -> tuple[RenditionFacts, ...] | None:
    """Copy a cache entry into `work` if it is whole and every file matches its digest."""
    try:
        record = json.loads((entry / CACHE_RECORD).read_text())
        renditions = tuple(RenditionFacts.from_json(r) for r in record["renditions"])
        want = {name: FileDigest(d["length"], d["sha256"]) for name, d in record["files"].items()}
        for name in title_files(renditions):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(entry / name, work / name)
        if _digest_all(work, renditions) != want:
            raise ValueError("a cached file does not match its digest")
        return renditions
    except (OSError, ValueError, KeyError, TypeError, BadRequest) as exc:
        log.warning("media cache entry %s unusable (%s); encoding again", entry.name, exc)
        shutil.rmtree(entry, ignore_errors=True)
        for child in work.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        return None


def _to_cache(cache_dir: Path, key: str, work: Path, renditions: tuple[RenditionFacts, ...],
              files: dict[str, FileDigest]) -> None:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}{_TMP_MARK}", dir=cache_dir))
        try:
            for name in title_files(renditions):
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(work / name, tmp / name)
            record = {"renditions": [r.to_json() for r in renditions],
                      "files": {n: d.to_json() for n, d in files.items()}}
            (tmp / CACHE_RECORD).write_text(json.dumps(record))
            os.rename(tmp, cache_dir / key)  # fails if a concurrent run got there first: fine
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        log.warning("could not store the package in the media cache %s: %s", cache_dir, exc)


def package(req: PackageRequest, exe: str, on_progress: Callable[[float, float], None],
            say: Callable[[str], None]) -> PackageResult:
    """Package one title (see the module docstring). on_progress(done_s, total_s) while encoding."""
    title = check_title_id(req.title)
    check_out_root(req.out_root, title)
    target = req.out_root / title
    if isinstance(req.source, TestSource):
        if not 0 < req.source.duration_s <= MAX_TEST_SOURCE_S:
            raise BadRequest(f"test source duration must be in (0, {MAX_TEST_SOURCE_S:g}] s")
        info = SourceInfo(req.source.duration_s, None, None, True)
        source_sha: str | None = None
        source_desc: dict[str, Any] = {"kind": "test-source", "duration_s": req.source.duration_s}
    else:
        info = probe(exe, req.source.path)
        source_sha = digest_file(req.source.path).sha256
        source_desc = {"kind": "file", "name": req.source.path.name, "sha256": source_sha}
    rungs, dropped = fit_to_source(req.ladder, info.height)
    notes = tuple(f"rung {r.label} dropped: taller than the {info.height}p source" for r in dropped)
    key = content_key(req.source, source_sha, rungs, ffmpeg_version(exe))

    if target.exists():
        try:
            have = read_digest_list(target)
        except BadRequest:
            have = None
        if have is not None and have.content_key == key and have.title == title:
            say(f"{target}: already packaged from this content (key {key[:12]}); nothing to do")
            return PackageResult(target, have, False, dropped, notes)
        if not req.force:
            raise Conflict(f"{target} already holds title {title} packaged from other content; "
                           "--force replaces it")

    req.out_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{title}{_TMP_MARK}", dir=req.out_root))
    try:
        renditions = None
        entry = req.cache_dir / key if req.cache_dir is not None else None
        if entry is not None and (entry / CACHE_RECORD).is_file():
            renditions = _from_cache(entry, work)
            if renditions is not None:
                say(f"cache hit {key[:12]}: not re-encoding")
        encoded = renditions is None
        if renditions is None:
            for r in rungs:
                (work / str(r.kbps)).mkdir()
            font = find_font() if isinstance(req.source, TestSource) else None
            say(f"encoding {len(rungs)} renditions ({', '.join(r.label for r in rungs)}) "
                f"of {info.duration_s:.1f} s")
            run_encoder(encoder_args(exe, req.source, info, rungs, work, font), info.duration_s,
                        lambda done: on_progress(done, info.duration_s))
            renditions = tuple(_measure(work, r) for r in rungs)
        _write_playlists(work, renditions)  # a cache entry's too: playlists follow this code, not the cache
        files = _digest_all(work, renditions)
        if encoded and req.cache_dir is not None:
            _to_cache(req.cache_dir, key, work, renditions, files)
        digests = DigestList(title, renditions, files, source_desc, key)
        expected = Title(title, digests.duration_s, tuple(r.kbps for r in renditions)).segment_count
        for facts in renditions:
            if len(facts.durations) != expected:  # the catalog derives segment names from the duration
                raise BadRequest(f"rendition {facts.kbps} has {len(facts.durations)} segments, but a "
                                 f"{digests.duration_s} s title has {expected} of {SEGMENT_SECONDS:g} s")
        (work / DIGESTS_FILE).write_text(digests.dumps())
        _install(work, target)
        return PackageResult(target, digests, encoded, dropped, notes)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _install(work: Path, target: Path) -> None:
    """Rename `work` to `target`; an existing target is moved aside first and removed after."""
    if not target.exists():
        os.rename(work, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old{_TMP_MARK}", dir=target.parent))
    os.rename(target, old / target.name)
    try:
        os.rename(work, target)
    except OSError:
        os.rename(old / target.name, target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)

