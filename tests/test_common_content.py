"""The content model: ids, sizes, synthetic bytes, playlists, ranges, tokens, sizes, config."""
from __future__ import annotations

import time

import m3u8
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.conditional import none_match, range_applies
from common.config import ConfigError, load_config
from common.content import DEFAULT_LADDER, SEGMENT_SECONDS, Catalog, Title, default_catalog
from common.errors import BadRequest, NotFound
from common.hls import master_playlist, media_playlist
from common.ids import ContentKind, SegmentId, parse_content_path
from common.ranges import RangeKind, parse_range
from common.segbytes import HEADER_LEN, SegmentSpec, parse_header, verify
from common.sizes import parse_size
from common.tokens import Keyring, TokenVerdict, split_token_path

CAT = default_catalog()
TITLE = CAT.get("title-001")


def test_default_catalog_shape() -> None:
    assert len(CAT) == 200
    for t in CAT.titles.values():
        assert 300 <= t.duration_s <= 5400
        assert t.renditions == DEFAULT_LADDER
    pops = [t.popularity for t in CAT.by_popularity()]
    assert pops == sorted(pops, reverse=True) and pops[0] > 10 * pops[-1]
    assert Catalog.from_json(CAT.to_json()).to_json() == CAT.to_json()


@pytest.mark.parametrize("kbps", DEFAULT_LADDER)
def test_segment_sizes_follow_bitrate_with_small_variation(kbps: int) -> None:
    nominal = kbps * 1000 / 8 * SEGMENT_SECONDS
    sizes = [TITLE.segment(kbps, i).length for i in range(50)]
    assert all(0.89 * nominal <= s <= 1.11 * nominal for s in sizes)
    assert len(set(sizes)) > 40  # VBR: sizes vary
    assert sizes == [TITLE.segment(kbps, i).length for i in range(50)]  # deterministic


def test_last_segment_is_shorter() -> None:
    t = Title("short", 10.0)
    assert t.segment_count == 3 and t.segment_duration(2) == pytest.approx(2.0)
    assert t.segment(5800, 2).length < t.segment(5800, 0).length


def test_unknown_segment_and_rendition() -> None:
    with pytest.raises(NotFound):
        TITLE.segment(5800, TITLE.segment_count)
    with pytest.raises(NotFound):
        TITLE.segment(1234, 0)


@settings(max_examples=200, deadline=None)
@given(idx=st.integers(0, 100), kbps=st.sampled_from(DEFAULT_LADDER), data=st.data())
def test_any_range_is_produced_alone_and_verifies(idx: int, kbps: int, data: st.DataObject) -> None:
    spec = TITLE.segment(kbps, idx)
    start = data.draw(st.integers(0, spec.length - 1))
    end = data.draw(st.integers(start, min(spec.length, start + 300_000)))
    piece = spec.read(start, end - start)
    assert len(piece) == end - start
    assert verify(spec, start, piece)
    whole_prefix = spec.read(0, min(spec.length, end))
    assert whole_prefix[start:end] == piece
    if piece:
        flipped = bytearray(piece)
        flipped[len(flipped) // 2] ^= 0x01
        assert not verify(spec, start, bytes(flipped))
        assert not verify(spec, start + 1, piece) or len(set(piece)) == 1


def test_header_names_segment_and_length() -> None:
    spec = TITLE.segment(750, 7)
    head = spec.read(0, HEADER_LEN)
    assert parse_header(head) == ("title-001/750/7", spec.length)
    other = TITLE.segment(750, 8)
    assert not verify(spec, 0, other.read(0, 4096))  # misrouted object detected
    assert not verify(spec, spec.length - 10, spec.read(spec.length - 10, 10) + b"x")  # overlong
    assert parse_header(b"garbage" * 40) is None


def test_segment_spec_rejects_tiny_length() -> None:
    with pytest.raises(ValueError):
        SegmentSpec(SegmentId("a", 1, 0), HEADER_LEN - 1)


def test_playlists_parse_with_m3u8() -> None:
    master = m3u8.loads(master_playlist(TITLE))
    assert master.is_variant
    assert [p.stream_info.average_bandwidth for p in master.playlists] == [k * 1000 for k in DEFAULT_LADDER]
    media = m3u8.loads(media_playlist(TITLE, 1750))
    assert media.is_endlist and media.playlist_type == "vod"
    assert len(media.segments) == TITLE.segment_count
    assert sum(s.duration for s in media.segments) == pytest.approx(TITLE.duration_s)
    assert media.segments[0].uri == "0.seg"


@pytest.mark.parametrize("path,kind", [
    ("/content/a/master.m3u8", ContentKind.MASTER),
    ("/content/a-1/235/index.m3u8", ContentKind.MEDIA),
    ("/content/a/5800/0.seg", ContentKind.SEGMENT),
    ("/content/a/5800/1234567.seg", ContentKind.SEGMENT),
])
def test_content_paths_parse(path: str, kind: ContentKind) -> None:
    ref = parse_content_path(path)
    assert ref.kind is kind and ref.path == path


@pytest.mark.parametrize("path", [
    "/content/../etc/passwd", "/content/a/../master.m3u8", "/content/A/master.m3u8",
    "/content/-a/master.m3u8", "/content/a/05800/0.seg", "/content/a/5800/01.seg",
    "/content/a/5800/0.seg/x", "/content/a%2fb/master.m3u8", "/content/a/master.m3u8\x00",
    "/content/" + "a" * 65 + "/master.m3u8", "/content/a/" + "9" * 300 + ".seg", "/other/a/master.m3u8",
    "/content/a/5800/x.seg", "/content/a", "content/a/master.m3u8", "/content/a\\b/master.m3u8",
])
def test_bad_content_paths_rejected(path: str) -> None:
    with pytest.raises(BadRequest):
        parse_content_path(path)


@pytest.mark.parametrize("header,length,expect", [
    (None, 100, (RangeKind.FULL, 0, 100)),
    ("bytes=0-9", 100, (RangeKind.PARTIAL, 0, 10)),
    ("bytes=90-", 100, (RangeKind.PARTIAL, 90, 100)),
    ("bytes=-10", 100, (RangeKind.PARTIAL, 90, 100)),
    ("bytes=-1000", 100, (RangeKind.PARTIAL, 0, 100)),
    ("bytes=50-1000", 100, (RangeKind.PARTIAL, 50, 100)),
    ("bytes=100-", 100, (RangeKind.UNSATISFIABLE, 0, 0)),
    ("bytes=-0", 100, (RangeKind.UNSATISFIABLE, 0, 0)),
    ("bytes=9-3", 100, (RangeKind.FULL, 0, 100)),       # invalid: ignored
    ("items=0-9", 100, (RangeKind.FULL, 0, 100)),       # unknown unit: ignored
    ("bytes=0-1,5-6", 100, (RangeKind.FULL, 0, 100)),   # multiple: we may ignore
    ("bytes=abc", 100, (RangeKind.FULL, 0, 100)),
    ("bytes=-", 100, (RangeKind.FULL, 0, 100)),
    ("BYTES = 1 - 2", 100, (RangeKind.PARTIAL, 1, 3)),
])
def test_range_parsing(header: str | None, length: int, expect: tuple[RangeKind, int, int]) -> None:
    r = parse_range(header, length)
    assert (r.kind, r.start, r.end) == expect


def test_conditionals() -> None:
    etag = '"abc"'
    assert none_match('"abc"', etag) and none_match('W/"abc"', etag) and none_match("*", etag)
    assert none_match('"x", "abc"', etag) and not none_match('"x"', etag) and not none_match(None, etag)
    assert range_applies(None, etag) and range_applies('"abc"', etag)
    assert not range_applies('"x"', etag) and not range_applies('W/"abc"', etag)


def test_tokens() -> None:
    ring = Keyring.generate("k1")
    now = time.time()
    tok = ring.sign("title-001", int(now) + 60, "isp-a")
    assert ring.check(tok, "/content/title-001/master.m3u8", now) is TokenVerdict.OK
    assert ring.check(tok, "/content/title-001/5800/3.seg", now) is TokenVerdict.OK
    assert ring.check(tok, "/content/title-002/master.m3u8", now) is TokenVerdict.BAD_SIGNATURE
    assert ring.check(tok, "/content/title-001/master.m3u8", now + 120) is TokenVerdict.EXPIRED
    assert ring.check(None, "/content/title-001/master.m3u8", now) is TokenVerdict.MISSING
    assert ring.check("nonsense", "/content/title-001/master.m3u8", now) is TokenVerdict.MALFORMED
    tampered = tok.replace(".isp-a.", ".isp-b.")
    assert ring.check(tampered, "/content/title-001/master.m3u8", now) is TokenVerdict.BAD_SIGNATURE
    later = tok.replace(f".{int(now) + 60}.", f".{int(now) + 9999}.")
    assert ring.check(later, "/content/title-001/master.m3u8", now) is TokenVerdict.BAD_SIGNATURE
    other = Keyring.generate("k2")
    assert other.check(tok, "/content/title-001/master.m3u8", now) is TokenVerdict.UNKNOWN_KEY
    assert Keyring.parse(ring.format()).check(tok, "/content/title-001/master.m3u8", now) is TokenVerdict.OK
    assert split_token_path(f"/t/{tok}/content/title-001/master.m3u8") == (tok, "/content/title-001/master.m3u8")
    assert split_token_path("/content/x/master.m3u8") == (None, "/content/x/master.m3u8")


@pytest.mark.parametrize("text,value", [("123", 123), ("1KB", 1000), ("1KiB", 1024), ("2MiB", 2 * 1024**2),
                                        ("1.5GB", 1_500_000_000), ("1TiB", 1024**4), ("10 mb", 10**7)])
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1XB", "-1", "1.2.3GB"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_config_file_then_env(tmp_path: object) -> None:
    from pathlib import Path
    p = Path(str(tmp_path)) / "c.toml"
    p.write_text('[edge]\ncapacity = "1GiB"\nport = 9000\n')
    assert load_config("edge", p, env={}) == {"capacity": "1GiB", "port": 9000}
    assert load_config("edge", p, env={"OCSIM_EDGE_PORT": "9100"})["port"] == 9100
    p.write_text("[edge\n")
    with pytest.raises(ConfigError):
        load_config("edge", p, env={})
