"""ffmpeg at the rim: finding it, probing an input, the encoder command, running it with progress.

One ffmpeg process encodes the whole ladder: the picture is decoded once and split, each
branch scaled to its rung and encoded with libx264 (capped VBR, 4:2:0) and AAC, and cut by
the HLS muxer into fMP4 segments of SEGMENT_SECONDS. Keyframes are forced at every
multiple of SEGMENT_SECONDS of presentation time and scene-cut keyframes are off, so every
rendition's segment n starts at the same instant (aligned keyframes: a player can switch
rungs at any segment boundary). `encoder_args` is a pure function of its inputs, so the
command is testable and part of the packaging cache key.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.content import SEGMENT_SECONDS
from common.errors import BadRequest, OurError
from common.ids import INIT_SEGMENT
from media.ladder import Rung

FFMPEG_PLAYLIST = "ffmpeg.m3u8"   # the muxer's own playlist; read for durations, then removed
TEST_SOURCE_FPS = 25
_FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
                    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                    "/usr/share/fonts/dejavu/DejaVuSans.ttf")
# What every rendition is encoded with; part of the cache key, so changing it re-encodes.
X264 = ("-preset", "veryfast", "-profile:v", "high", "-pix_fmt", "yuv420p", "-sc_threshold", "0",
        "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT_SECONDS:g})")
AAC = ("-c:a", "aac", "-ac", "2", "-ar", "48000")
TIME_TEXT = "%{pts\\:hms}"     # drawtext expands it to the presentation time, h:mm:ss.mmm
_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d\d):(\d\d(?:\.\d+)?)")
_VIDEO_RE = re.compile(r"Stream #\S+.*?: Video: .*?(\d{2,5})x(\d{2,5})")


class EncoderFailed(OurError):
    """ffmpeg ran and failed on input it had accepted."""


@dataclass(frozen=True, slots=True)
class FileSource:
    path: Path


@dataclass(frozen=True, slots=True)
class TestSource:
    """A moving test pattern and a beeping tone, with title, rendition and time burned in."""

    title: str
    duration_s: float


Source = FileSource | TestSource


@dataclass(frozen=True, slots=True)
class SourceInfo:
    duration_s: float
    width: int | None
    height: int | None
    has_audio: bool


def find_ffmpeg() -> str:
    """$OCSIM_FFMPEG, else the static build of PyPI's imageio-ffmpeg, else ffmpeg on PATH."""
    env = os.environ.get("OCSIM_FFMPEG")
    if env:
        return env
    try:
        import imageio_ffmpeg
        exe: str = imageio_ffmpeg.get_ffmpeg_exe()
        return exe
    except (ImportError, RuntimeError):
        pass
    found = shutil.which("ffmpeg")
    if found:
        return found
    raise BadRequest("no ffmpeg found: `pip install imageio-ffmpeg` (or apt-get install ffmpeg, or set OCSIM_FFMPEG)")


def ffmpeg_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        raise BadRequest(f"cannot run ffmpeg {exe}: {exc.strerror or exc}") from None
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def find_font() -> str | None:
    for path in _FONT_CANDIDATES:
        if Path(path).is_file():
            return path
    fc = shutil.which("fc-match")
    if fc:
        out = subprocess.run([fc, "-f", "%{file}", "sans:bold"], capture_output=True, text=True, timeout=30, check=False)
        if out.returncode == 0 and out.stdout.endswith((".ttf", ".otf")) and Path(out.stdout).is_file():
            return out.stdout
    return None


def parse_probe(stderr: str) -> SourceInfo | None:
    """What `ffmpeg -i FILE` says about FILE; None if it shows no video stream."""
    video = _VIDEO_RE.search(stderr)
    if video is None:
        return None
    d = _DURATION_RE.search(stderr)
    duration = int(d.group(1)) * 3600 + int(d.group(2)) * 60 + float(d.group(3)) if d else 0.0
    has_audio = re.search(r"Stream #\S+.*?: Audio: ", stderr) is not None
    return SourceInfo(duration, int(video.group(1)), int(video.group(2)), has_audio)


def probe(exe: str, path: Path) -> SourceInfo:
    """Duration, picture size and audio of an input; BadRequest if ffmpeg cannot read it."""
    if not path.is_file():
        raise BadRequest(f"{path}: no such file")
    try:
        out = subprocess.run([exe, "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True,
                             errors="replace", timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadRequest(f"cannot probe {path}: {exc}") from None
    info = parse_probe(out.stderr)
    if info is None:
        last = [ln for ln in out.stderr.strip().splitlines() if ln.strip()][-1:] or ["no video stream"]
        raise BadRequest(f"ffmpeg cannot read a video stream from {path}: {last[0].strip()[:200]}")
    if info.duration_s <= 0:
        raise BadRequest(f"{path}: ffmpeg reports no duration (a stream, or an image?)")
    return info


def _drawtext(font: str, size: int, text: str, x: str, y: str) -> str:
    return (f"drawtext=fontfile={font}:fontsize={size}:fontcolor=white:box=1:boxcolor=black@0.6:"
            f"boxborderw={max(2, size // 6)}:x={x}:y={y}:text='{text}'")


def encoder_args(exe: str, source: Source, info: SourceInfo, rungs: Sequence[Rung], out_dir: Path,
                 font: str | None = None) -> list[str]:
    """The ffmpeg command that writes rung r into out_dir/{r.kbps}/ (init.mp4, 0.seg, ...)."""
    args = [exe, "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-nostats", "-progress", "pipe:1"]
    branches: list[str] = []
    if isinstance(source, TestSource):
        if font is None:
            raise BadRequest("the test source burns text into the picture and needs a TrueType font "
                             "(apt-get install fonts-dejavu-core)")
        top = max(rungs, key=lambda r: r.height)
        args += ["-f", "lavfi", "-i", f"testsrc2=size={top.width}x{top.height}:rate={TEST_SOURCE_FPS}"
                                      f":duration={source.duration_s:g}",
                 "-f", "lavfi", "-i", f"sine=frequency=440:beep_factor=4:sample_rate=48000:duration={source.duration_s:g}"]
        audio = "1:a"
        for i, r in enumerate(rungs):
            small, big = max(8, r.height // 14), max(12, r.height // 5)
            label = f"{source.title}  {r.kbps} kbit/s  {r.width}x{r.height}"
            branches.append(f"[s{i}]scale={r.width}:{r.height},"
                            f"{_drawtext(font, small, label, '8', '8')},"
                            f"{_drawtext(font, big, TIME_TEXT, '(w-text_w)/2', '(h-text_h)/2')}[v{i}]")
    else:
        args += ["-i", str(source.path)]
        audio = "0:a:0"
        if not info.has_audio:  # H.264/AAC is the contract: a silent track for a silent input
            args += ["-f", "lavfi", "-i", "anullsrc=channel_layout=stereo:sample_rate=48000", "-shortest"]
            audio = "1:a"
        branches = [f"[s{i}]scale=-2:{r.height}[v{i}]" for i, r in enumerate(rungs)]
    split = f"[0:v:0]split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs)))
    args += ["-filter_complex", ";".join([split, *branches])]
    for i, r in enumerate(rungs):
        rdir = out_dir / str(r.kbps)
        v = r.video_kbps
        args += ["-map", f"[v{i}]", "-map", audio, "-c:v", "libx264", *X264,
                 "-b:v", f"{v}k", "-maxrate", f"{round(v * 1.1)}k", "-bufsize", f"{2 * v}k",
                 *AAC, "-b:a", f"{r.audio_kbps}k",
                 "-f", "hls", "-hls_time", f"{SEGMENT_SECONDS:g}", "-hls_playlist_type", "vod",
                 "-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", INIT_SEGMENT,
                 "-hls_segment_filename", str(rdir / "%d.seg"), "-start_number", "0",
                 str(rdir / FFMPEG_PLAYLIST)]
    return args


def run_encoder(args: Sequence[str], duration_s: float, on_progress: Callable[[float], None]) -> None:
    """Run ffmpeg, calling on_progress(seconds of output written) as it goes."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, text=True)
        except OSError as exc:
            raise EncoderFailed(f"cannot run ffmpeg: {exc.strerror or exc}") from None
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.lstrip("-").isdigit():
                    on_progress(min(duration_s, max(0, int(value)) / 1e6))
        finally:
            code = proc.wait()
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            raise EncoderFailed(f"ffmpeg exited with {code}: {' | '.join(tail)[:500]}")
    on_progress(duration_s)
