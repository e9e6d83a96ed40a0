"""`ocsim package`: package a video file (or a generated test source) as an HLS title.

    ocsim package movie.mp4 --title my-movie --out media/
    ocsim package --test-source --duration 60 --title test-card --out media/
    ocsim origin --media media/          # serves them beside the synthetic catalog

Exit codes: 0 packaged (or already packaged), 2 bad input (unreadable file, bad title id,
an out dir with other content), 1 the encoder failed.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import OcsimError, PeerError
from media.encode import FileSource, Source, TestSource, find_ffmpeg
from media.ladder import default_ladder, parse_ladder
from media.package import PackageRequest, default_cache_dir, package

BAR = 30


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ocsim package", description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("input", nargs="?", help="a video file ffmpeg can read")
    p.add_argument("--test-source", action="store_true",
                   help="a generated test pattern and tone, with title, rendition and time burned in")
    p.add_argument("--duration", type=float, default=60.0, help="test source length in seconds (default 60)")
    p.add_argument("--title", required=True, help="title id: [a-z0-9][a-z0-9-]{0,63}")
    p.add_argument("--out", required=True, help="media directory; the title lands in OUT/TITLE/")
    p.add_argument("--ladder", help="KBPS[:WxH],... (default: the design's 235,750,1750,3000,5800 ladder)")
    p.add_argument("--cache-dir", help="packaging cache (default $OCSIM_MEDIA_CACHE or ~/.cache/ocsim/media)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor fill the cache")
    p.add_argument("--force", action="store_true", help="replace OUT/TITLE if it holds other content")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


class ProgressBar:
    """A one-line bar on a terminal; a line per 10% elsewhere (logs, CI)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.last_decile = -1

    def __call__(self, done: float, total: float) -> None:
        if self.quiet or total <= 0:
            return
        frac = min(1.0, done / total)
        speed = done / max(1e-6, time.monotonic() - self.t0)
        text = (f"[{'#' * round(frac * BAR):<{BAR}}] {frac:4.0%} {done:6.1f}/{total:.1f} s "
                f"({speed:.1f}x real time)")
        if self.tty:
            print("\r" + text, end="\n" if frac >= 1 else "", file=sys.stderr, flush=True)
        elif int(frac * 10) > self.last_decile:
            self.last_decile = int(frac * 10)
            print(text, file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if bool(args.input) == bool(args.test_source):
        parser.error("give either INPUT or --test-source")
    source: Source = TestSource(args.title, args.duration) if args.test_source else FileSource(Path(args.input))
    try:
        ladder = parse_ladder(args.ladder) if args.ladder else default_ladder()
        cache = None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir()
        req = PackageRequest(source, args.title, Path(args.out), ladder, cache, args.force)
        say = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
        t0 = time.monotonic()
        result = package(req, find_ffmpeg(), ProgressBar(args.quiet), say)
    except PeerError as exc:
        print(f"ocsim package: {exc.reason}", file=sys.stderr)
        return 2
    except OcsimError as exc:
        print(f"ocsim package: {exc.reason}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(note, file=sys.stderr)
    d = result.digests
    size = sum(f.length for f in d.files.values())
    rungs = ", ".join(f"{r.kbps}k {r.width}x{r.height} {r.average_bps / 1000:.0f} kbit/s avg" for r in d.renditions)
    print(f"{result.title_dir}: {d.title}, {d.duration_s:.1f} s, {len(d.files)} files, {size / 1e6:.1f} MB "
          f"({rungs}) in {time.monotonic() - t0:.1f} s" + ("" if result.encoded else " (not re-encoded)"))
    return 0
