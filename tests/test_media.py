"""`ocsim package` and the origin's packaged titles: real H.264/AAC fMP4 made by ffmpeg.

A short, tiny test-source clip is packaged once per session (6 s, 2 rungs at 160x90 and
320x180) so the suite stays fast; the real ladder is for the demo. Skipped with the reason
where ffmpeg (or, for the decoding checks, ffprobe) cannot be had.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest
from aiohttp.test_utils import TestClient, TestServer

from common.content import Catalog
from common.errors import BadRequest, Conflict
from media.digests import DIGESTS_FILE, mismatches, read_digest_list, title_files
from media.encode import FileSource, find_ffmpeg
from media.encode import TestSource as GeneratedSource
from media.ladder import parse_ladder
from media.package import PackageRequest, PackageResult, package
from origin.app import build_app
from origin.link import LinkSettings
from origin.media import load_media_library
from tests.conftest import StartService

LADDER = parse_ladder("235:160x90,750:320x180")
DURATION = 6.0  # segments of 4 s and 2 s


def _ffmpeg() -> str:
    try:
        return find_ffmpeg()
    except BadRequest as exc:
        pytest.skip(f"no ffmpeg to package with: {exc.reason}")


def _package(out: Path, cache: Path | None, title: str = "clip") -> PackageResult:
    req = PackageRequest(GeneratedSource(title, DURATION), title, out, LADDER, cache)
    return package(req, _ffmpeg(), lambda done, total: None, lambda msg: None)


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PackageResult]:
    root = tmp_path_factory.mktemp("media")
    out, cache = root / "out", root / "cache"
    return out, cache, _package(out, cache)


def test_playlists_parse_and_announce_the_ladder(packaged: tuple[Path, Path, PackageResult]) -> None:
    out, _, result = packaged
    title_dir = out / "clip"
    master = m3u8.load(str(title_dir / "master.m3u8"))
    assert master.is_variant
    variants = sorted(master.playlists, key=lambda p: p.stream_info.bandwidth)
    assert [p.uri for p in variants] == ["235/index.m3u8", "750/index.m3u8"]
    assert [p.stream_info.resolution for p in variants] == [(160, 90), (320, 180)]
    for p, facts in zip(variants, result.digests.renditions, strict=True):
        assert p.stream_info.codecs.startswith("avc1.64") and p.stream_info.codecs.endswith(",mp4a.40.2")
        assert p.stream_info.bandwidth == facts.peak_bps > 0
        media = m3u8.load(str(title_dir / p.uri))
        assert media.is_endlist and media.target_duration == 4
        assert media.segment_map[0].uri == "init.mp4"
        assert [s.uri for s in media.segments] == ["0.seg", "1.seg"]
        assert [s.duration for s in media.segments] == pytest.approx([4.0, 2.0], abs=0.05)


def test_segments_decode_as_h264_aac_of_the_right_size_and_length(packaged: tuple[Path, Path, PackageResult],
                                                                  tmp_path: Path) -> None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        pytest.skip("ffprobe not installed (Debian: apt-get install -y ffmpeg)")
    out, _, _ = packaged
    for rung, (w, h) in ((235, (160, 90)), (750, (320, 180))):
        rdir = out / "clip" / str(rung)
        for index, want_s in ((0, 4.0), (1, 2.0)):
            joined = tmp_path / f"{rung}-{index}.mp4"
            joined.write_bytes((rdir / "init.mp4").read_bytes() + (rdir / f"{index}.seg").read_bytes())
            probe = json.loads(subprocess.run(
                [ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", str(joined)],
                capture_output=True, text=True, check=True, timeout=60).stdout)
            streams = {s["codec_type"]: s for s in probe["streams"]}
            assert streams["video"]["codec_name"] == "h264"
            assert (streams["video"]["width"], streams["video"]["height"]) == (w, h)
            assert streams["audio"]["codec_name"] == "aac" and streams["audio"]["profile"] == "LC"
            frames = subprocess.run(  # count decoded frames: 25 fps x segment length; first is a keyframe
                [ffprobe, "-v", "error", "-select_streams", "v", "-show_entries", "frame=key_frame",
                 "-of", "csv=p=0", str(joined)], capture_output=True, text=True, check=True, timeout=60).stdout.split()
            assert len(frames) == round(want_s * 25)
            assert frames[0].rstrip(",") == "1", "a segment must start on a keyframe (aligned across rungs)"


def test_digest_list_matches_and_covers_every_file(packaged: tuple[Path, Path, PackageResult]) -> None:
    out, _, result = packaged
    digests = read_digest_list(out / "clip")
    assert digests == result.digests
    assert set(digests.files) == set(title_files(digests.renditions))
    assert mismatches(out / "clip", digests) == []
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary left behind"


def test_repackaging_comes_from_the_cache(packaged: tuple[Path, Path, PackageResult], tmp_path: Path) -> None:
    out, cache, first = packaged
    again = _package(out, cache)
    assert not again.encoded and again.digests == first.digests  # already there: nothing to do
    elsewhere = _package(tmp_path / "other", cache)
    assert not elsewhere.encoded
    assert elsewhere.digests.files == first.digests.files


def test_bad_input_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    exe = _ffmpeg()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    out = tmp_path / "out"
    with pytest.raises(BadRequest, match="cannot read a video stream"):
        package(PackageRequest(FileSource(junk), "junk", out, LADDER), exe, lambda d, t: None, lambda m: None)
    assert not out.exists() or not list(out.iterdir())
    with pytest.raises(BadRequest, match="invalid title id"):
        package(PackageRequest(GeneratedSource("x", 1), "Bad_Title", out, LADDER), exe, lambda d, t: None, lambda m: None)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(Conflict, match="holds other content"):
        package(PackageRequest(GeneratedSource("x", 1), "x", busy, LADDER), exe, lambda d, t: None, lambda m: None)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


async def test_origin_serves_packaged_files_byte_for_byte(packaged: tuple[Path, Path, PackageResult]) -> None:
    out, _, result = packaged
    app = build_app(Catalog(), LinkSettings(), "admin-token", media=load_media_library(out))
    async with TestClient(TestServer(app)) as client:
        catalog = await (await client.get("/v1/catalog")).json()
        assert catalog["titles"] == [{"id": "clip", "duration_s": result.digests.duration_s,
                                      "renditions": [235, 750], "popularity": 1.0, "media": "packaged"}]
        for name in title_files(result.digests.renditions):
            resp = await client.get(f"/content/clip/{name}")
            assert resp.status == 200, name
            assert await resp.read() == (out / "clip" / name).read_bytes(), name
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
            assert "Content-Range" in resp.headers["Access-Control-Expose-Headers"]
        seg = (out / "clip" / "750" / "0.seg").read_bytes()
        part = await client.get("/content/clip/750/0.seg", headers={"Range": "bytes=100-1099"})
        assert part.status == 206 and await part.read() == seg[100:1100]
        assert part.headers["Content-Range"] == f"bytes 100-1099/{len(seg)}"
        etag = part.headers["ETag"]
        again = await client.get("/content/clip/750/0.seg", headers={"If-None-Match": etag})
        assert again.status == 304
        pre = await client.options("/content/clip/750/0.seg", headers={
            "Origin": "http://player.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range"})
        assert pre.status == 204 and "Range" in pre.headers["Access-Control-Allow-Headers"]
        assert (await client.get("/content/clip/750/9.seg")).status == 404
        assert (await client.get("/content/clip/999/index.m3u8")).status == 404
        digests = await (await client.get("/v1/digests/clip")).json()
        assert digests == result.digests.to_json()


def test_origin_refuses_a_title_whose_files_do_not_match(packaged: tuple[Path, Path, PackageResult],
                                                         tmp_path: Path) -> None:
    out, _, _ = packaged
    media = tmp_path / "media"
    shutil.copytree(out / "clip", media / "clip")
    shutil.copytree(out / "clip", media / "bent")
    seg = media / "bent" / "235" / "1.seg"
    data = bytearray(seg.read_bytes())
    data[500] ^= 0xFF
    seg.write_bytes(bytes(data))
    # "bent" also carries clip's digest list: refused for that alone; fix the name, keep the flipped byte
    dl = json.loads((media / "bent" / DIGESTS_FILE).read_text())
    dl["title"] = "bent"
    (media / "bent" / DIGESTS_FILE).write_text(json.dumps(dl))
    lib = load_media_library(media)
    assert set(lib.titles) == {"clip"}
    assert "235/1.seg: SHA-256" in lib.refused["bent"]


async def test_edge_serves_packaged_files_byte_for_byte(packaged: tuple[Path, Path, PackageResult],
                                                        start_service: StartService, admin_token: str,
                                                        tmp_path: Path) -> None:
    """Through an edge: every file once as a fill (MISS) and once as a hit (HIT, the fast lane
    for the small ones), both exactly the packaged bytes, both with the CORS a web player needs."""
    out, _, result = packaged
    origin = start_service("origin", "origin", "--host", "127.0.0.1", "--port", "0", "--admin-token", admin_token,
                           "--media", str(out), "--media-only", "--no-access-log")
    edge = start_service("edge", "edge", "--host", "127.0.0.1", "--port", "0", "--id", "edge-m", "--isp", "isp-a",
                         "--upstream", origin.url, "--cache-dir", str(tmp_path / "cache"), "--capacity", "50MB",
                         "--operator-token", "op-" + admin_token, "--no-access-log")
    names = title_files(result.digests.renditions)
    cors = {"Origin": "http://watch.example"}
    async with aiohttp.ClientSession() as s:
        for want_cache in ("MISS", "HIT"):
            for name in names:
                async with s.get(f"{edge.url}/content/clip/{name}", headers=cors) as r:
                    assert r.status == 200, (name, r.status)
                    assert r.headers["X-Cache"] == want_cache, name
                    assert await r.read() == (out / "clip" / name).read_bytes(), (want_cache, name)
                    assert r.headers["Access-Control-Allow-Origin"] == "*", (want_cache, name)
                    assert "X-Cache" in r.headers["Access-Control-Expose-Headers"]
        seg = (out / "clip" / "750" / "1.seg").read_bytes()
        async with s.get(f"{edge.url}/content/clip/750/1.seg", headers={**cors, "Range": "bytes=10-209"}) as r:
            assert r.status == 206 and await r.read() == seg[10:210]
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with s.options(f"{edge.url}/content/clip/750/1.seg", headers={
                **cors, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range,x-ocsim-session"}) as r:
            assert r.status == 204
            allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
            assert {"range", "x-ocsim-session"} <= allowed
            assert "GET" in r.headers["Access-Control-Allow-Methods"]
        async with s.get(f"{edge.url}/content/clip/750/9.seg", headers=cors) as r:  # errors are readable too
            assert r.status == 502 or r.status == 404
            assert r.headers["Access-Control-Allow-Origin"] == "*"


def test_the_control_store_keeps_a_titles_media_across_restarts(tmp_path: Path) -> None:
    from common.content import Title
    from control.store import Store
    store = Store(tmp_path / "c.db")
    store.merge_catalog([Title("clip", 6.0, (235, 750), 1.0, media="packaged"), Title("synth", 60.0, (235,), 0.5)])
    store.put_title(Title("added", 8.0, (235,), 0.1, media="packaged"))
    store.close()
    again = Store(tmp_path / "c.db")
    catalog, _ = again.load_catalog()
    assert {t: catalog.titles[t].media for t in catalog.titles} == {
        "clip": "packaged", "synth": "synthetic", "added": "packaged"}
    again.close()


def media_topology(media: Path) -> str:
    """A small `ocsim up` topology whose origin serves only the packaged titles under `media`."""
    return f"""
[origin]
port = 0
media = {json.dumps(str(media))}
media_only = true
latency_ms = 0
total_bandwidth = "0"
args = ["--no-access-log"]

[control]
port = 0

[edge]
capacity = "64MiB"
policy = "lru"
args = ["--no-access-log"]

[isps.isp-a]
prefixes = ["10.1.0.0/16"]
edges = 2

[isps.isp-b]
prefixes = ["10.2.0.0/16"]
edges = 1
"""


def test_media_digests_check_every_file_by_name(packaged: tuple[Path, Path, PackageResult]) -> None:
    from player.verify import MediaDigests
    out, _, result = packaged
    digests = MediaDigests.from_json(result.digests.to_json())
    for name in title_files(result.digests.renditions):
        body = (out / "clip" / name).read_bytes()
        url = f"http://127.0.0.1:1/t/kid.1.isp.sig/content/clip/{name}?x=1"
        assert digests.check(url, body) is None, name
        assert "SHA-256" in (digests.check(url, body[:-1] + bytes([body[-1] ^ 1])) or "")
        assert "bytes" in (digests.check(url, body + b"x") or "")
    assert "not in the digest list" in (digests.check("http://e/content/clip/750/99.seg", b"") or "")
    assert "not in the digest list" in (digests.check("http://e/content/other/master.m3u8", b"") or "")
    with pytest.raises(ValueError, match="format"):
        MediaDigests.from_json({"title": "clip", "files": {}})


def _play(control: str, title: str) -> tuple[int, dict[str, Any]]:
    got = subprocess.run([sys.executable, "-m", "ocsim", "play", title, "--control", control, "--isp", "isp-a",
                          "--verify", "--json", "--speed", "8"], capture_output=True, text=True, timeout=60)
    return got.returncode, json.loads(got.stdout)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_play_verify_checks_real_media_end_to_end(tmp_path: Path) -> None:
    """`ocsim play --verify` through `ocsim up` with packaged media: every playlist, init segment
    and segment checked against the origin's digest list; bytes corrupted at the origin after it
    started (same length, so only the digest can tell) are caught on every edge."""
    from tests.test_up import Up
    media = tmp_path / "media"
    for title in ("clip", "bent"):
        req = PackageRequest(GeneratedSource(title, 12.0), title, media, LADDER, tmp_path / "cache")
        package(req, _ffmpeg(), lambda done, total: None, lambda msg: None)
    up = Up(tmp_path, "--ephemeral-ports", topology=media_topology(media))
    try:
        state = up.wait_state(60.0)
        for seg in media.glob("bent/*/1.seg"):
            data = bytearray(seg.read_bytes())
            data[len(data) // 2] ^= 0x40
            seg.write_bytes(bytes(data))
        code, report = _play(state["control"], "clip")
        assert code == 0, report
        assert report["media"] == "packaged" and report["verified"] is True
        assert report["verified_segments"] == report["segments"] == 3
        assert report["verified_files"] >= 3 and report["init_bytes"] > 0  # master, a media playlist, an init
        assert report["bytes"] > 0 and report["errors"] == 0
        code, report = _play(state["control"], "bent")
        assert code != 0 and report["verified"] is False
        assert report["failure_reasons"].get("corrupt", 0) >= 2, report  # both edges of isp-a, at least
    finally:
        up.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_runs_on_real_media_and_verifies_every_byte(packaged: tuple[Path, Path, PackageResult],
                                                         tmp_path: Path) -> None:
    out, _, _ = packaged
    done = subprocess.run(
        [sys.executable, "-m", "ocsim", "demo", "--media", "real", "--media-dir", str(out), "--duration", "8",
         "--viewers", "4", "--top", "1", "--verify", "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["settings"]["media"] == "real" and report["settings"]["titles"] == 1
    assert report["sessions"] >= 4 and report["sessions_failed"] == 0
    assert {s["title"] for s in report["session_list"]} == {"clip"}
    assert report["verified"] == {"sessions": report["sessions"], "asked": report["sessions"], "media": ["packaged"]}
    assert all(j["state"] == "done" for j in report["preposition"])
    assert "verified every byte in" in done.stdout


def test_the_player_reads_a_packaged_ladder_as_its_measured_bitrates(packaged: tuple[Path, Path, PackageResult]) -> None:
    """The ABR's ladder is what the master announces from the real segment sizes (AVERAGE-BANDWIDTH),
    and each rendition's playlist names its init segment."""
    from player.abr import make_abr
    from player.playlists import parse_master, parse_media
    out, _, result = packaged
    base = "http://edge/t/tok/content/clip/"
    master = parse_master((out / "clip" / "master.m3u8").read_text(), base + "master.m3u8")
    measured = [r.average_bps // 1000 for r in result.digests.renditions]
    assert list(master.ladder_kbps) == measured
    assert make_abr("throughput", master.ladder_kbps).ladder_kbps == tuple(measured)
    for kbps, facts in zip(master.ladder_kbps, result.digests.renditions, strict=True):
        url = master.renditions[kbps]
        assert url == f"{base}{facts.kbps}/index.m3u8"
        media = parse_media((out / "clip" / str(facts.kbps) / "index.m3u8").read_text(), url)
        assert media.init_url == f"{base}{facts.kbps}/init.mp4"
        assert media.durations == pytest.approx(facts.durations)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_locust_viewers_play_real_media_and_check_it(tmp_path: Path) -> None:
    """Locust's viewers on packaged titles: init segments fetched, every file's length and (with
    OCSIM_VERIFY=1) SHA-256 checked against the digest list; no failure, QoE counted."""
    pytest.importorskip("locust")
    from tests.test_locust import assert_qoe, run_locust
    from tests.test_up import Up
    media = tmp_path / "media"
    package(PackageRequest(GeneratedSource("clip", 12.0), "clip", media, LADDER, tmp_path / "cache"),
            _ffmpeg(), lambda done, total: None, lambda msg: None)
    up = Up(tmp_path, "--ephemeral-ports", topology=media_topology(media))
    try:
        up.wait_state(60.0)
        out = tmp_path / "locust"
        out.mkdir()
        rows, qoe = run_locust(up.state_file, out, users=3, seconds=10)
        for key, row in rows.items():
            assert int(row["Failure Count"]) == 0, (key, row)
        assert int(rows[("GET", "init")]["Request Count"]) > 0
        assert int(rows[("GET", "digests")]["Request Count"]) == 1  # once per process
        assert int(rows[("GET", "segment")]["Request Count"]) > 0
        assert_qoe(qoe, viewers=3)
    finally:
        up.close()


def test_packaged_playlists_announce_each_segments_real_bit_rate(packaged: tuple[Path, Path, PackageResult]) -> None:
    from player.playlists import parse_media
    out, _, result = packaged
    for facts in result.digests.renditions:
        text = (out / "clip" / str(facts.kbps) / "index.m3u8").read_text()
        media = parse_media(text, "http://e/content/clip/x/index.m3u8")
        want = tuple(max(1, round(8 * n / d / 1000)) for n, d in zip(facts.sizes, facts.durations, strict=True))
        assert media.bitrates_kbps == want
        assert [s.bitrate for s in m3u8.loads(text).segments] == list(want)  # a real parser reads them too
