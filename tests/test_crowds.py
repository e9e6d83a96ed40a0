"""The crowd viewer's pure parts: the QoE table, the crowd shapes, the segment head check,
and its edge connection against a real loopback server (keep-alive, reused buffer,
a sampled full check, an idle connection the server closed, a short body)."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.ids import SegmentId
from common.segbytes import HEADER_LEN, SegmentSpec
from loadtests.crowds import crowd_target
from loadtests.edge_http import EdgeConnections, EdgeProtocolError
from loadtests.qoe import QoeTable, SessionRecord, read_qoe_csv
from player.verify import check_segment_head


def rec(startup: float | None, stalled: float, watched: float, kbps: float = 1000.0, segs: int = 10,
        failed: bool = False, flash: bool = False) -> SessionRecord:
    return SessionRecord(startup, stalled, watched, kbps, segs, failed, flash)


def test_qoe_table_figures_by_hand(tmp_path: Path) -> None:
    t = QoeTable()
    t.add_finished(rec(0.5, 1.0, 100.0, kbps=2000, segs=10))
    t.add_finished(rec(None, 0.0, 0.0, segs=0, failed=True))
    t.merge_wire("w1", {"finished": [rec(1.5, 0.0, 50.0, kbps=500, segs=30, flash=True).to_wire()],
                        "live": [rec(0.25, 0.0, 50.0, kbps=1000, segs=10).to_wire()]})
    # a newer snapshot from w1 replaces its old live records; finished ones accumulate
    t.merge_wire("w1", {"finished": [], "live": [rec(0.25, 0.5, 100.0, kbps=1000, segs=20).to_wire()]})
    s = t.summary()
    assert (s.sessions, s.finished, s.failed, s.playing, s.flash) == (4, 2, 1, 1, 1)
    assert s.watched_s == 250.0 and s.stalled_s == 1.5
    assert s.rebuffer_ratio == pytest.approx(1.5 / 250.0)
    assert (s.startup_p50_s, s.startup_p90_s) == (0.5, 1.5)   # nearest rank of 0.25, 0.5, 1.5
    assert s.avg_bitrate_kbps == pytest.approx((2000 * 10 + 500 * 30 + 1000 * 20) / 60, abs=0.1)
    (tmp_path / "q.csv").write_text(t.to_csv())
    back = read_qoe_csv(tmp_path / "q.csv")
    assert back["sessions"] == 4 and back["failed"] == 1 and back["startup_p90_s"] == 1.5
    assert "rebuffer ratio  0.600 %" in t.format_table()


def test_empty_qoe_table() -> None:
    s = QoeTable().summary()
    assert s.sessions == 0 and s.rebuffer_ratio == 0.0 and s.startup_p50_s is None


@pytest.mark.parametrize(("shape", "t", "want"), [
    ("flash", 0.0, (1000, 100.0)),      # N=1000 arrive within T=10 s
    ("steady", 0.0, (1000, 100.0)),
    ("evening", 0.0, (100, 100.0)),     # one tenth in the first of T=10 s
    ("evening", 4.5, (500, 100.0)),
    ("evening", 9.9, (1000, 100.0)),
    ("evening", 30.0, (1000, 100.0)),   # then hold
])
def test_crowd_shapes(shape: str, t: float, want: tuple[int, float]) -> None:
    assert crowd_target(shape, t, 1000, 10.0) == want


SEG = SegmentId("t1", 800, 3)
SPEC = SegmentSpec(SEG, 300_000)
BODY = SPEC.read(0, SPEC.length)


def test_segment_head_check() -> None:
    assert check_segment_head("t1", 800, 3, BODY[:HEADER_LEN], len(BODY)) is None
    assert "misrouted" in (check_segment_head("t1", 800, 4, BODY[:HEADER_LEN], len(BODY)) or "")
    assert "truncated" in (check_segment_head("t1", 800, 3, BODY[:HEADER_LEN], len(BODY) - 1) or "")
    assert check_segment_head("t1", 800, 3, b"x" * HEADER_LEN, len(BODY)) == "no segment header"


class _Server:
    """A loopback HTTP/1.1 server: keep-alive answers from a script of responses."""

    def __init__(self, answers: list[bytes], close_after: int | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answers = answers
        self.close_after = close_after
        self.accepts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.answers:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepts += 1
            with conn:
                served = 0
                buf = b""
                while self.answers and (self.close_after is None or served < self.close_after):
                    while b"\r\n\r\n" not in buf:
                        data = conn.recv(65536)
                        if not data:
                            break
                        buf += data
                    if b"\r\n\r\n" not in buf:
                        break
                    buf = buf.split(b"\r\n\r\n", 1)[1]
                    conn.sendall(self.answers.pop(0))
                    served += 1


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@pytest.fixture
def edges() -> Iterator[EdgeConnections]:
    e = EdgeConnections(timeout_s=5.0, connect_timeout_s=2.0)
    yield e
    e.close()


@pytest.mark.timeout(20)
def test_one_keepalive_connection_reads_segments_and_playlists(edges: EdgeConnections) -> None:
    srv = _Server([ok(BODY), ok(b"#EXTM3U\n"), ok(BODY)])
    url = f"http://127.0.0.1:{srv.port}/content/t1/800/3.seg"
    conn, target = edges.for_url(url)
    assert target == "/content/t1/800/3.seg"
    seen: list[tuple[int, bool]] = []

    def full_check(offset: int, length: int, chunk: memoryview) -> None:
        seen.append((offset, SegmentSpec(SEG, length).verify(offset, chunk)))

    a = conn.get(target, keep_head=HEADER_LEN, on_chunk=full_check)
    assert (a.status, a.length, a.body) == (200, len(BODY), None) and a.head == BODY[:HEADER_LEN]
    assert seen and all(good for _, good in seen) and seen[0][0] == 0
    assert conn.get("/m.m3u8", keep_body=True).body == b"#EXTM3U\n"
    again, _ = edges.for_url(url)
    assert again is conn and conn.get(target, keep_head=HEADER_LEN).length == len(BODY)
    assert conn.connects == 1 and srv.accepts == 1  # one connection per viewer per edge


@pytest.mark.timeout(20)
def test_reopens_once_when_the_edge_closed_the_idle_connection(edges: EdgeConnections) -> None:
    srv = _Server([ok(b"one"), ok(b"two")], close_after=1)
    conn, _ = edges.for_url(f"http://127.0.0.1:{srv.port}/")
    assert conn.get("/a", keep_body=True).body == b"one"
    assert conn.get("/b", keep_body=True).body == b"two"
    assert conn.connects == 2


@pytest.mark.timeout(20)
def test_short_body_and_chunked_answers_are_protocol_errors(edges: EdgeConnections) -> None:
    srv = _Server([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"], close_after=1)
    conn, _ = edges.for_url(f"http://127.0.0.1:{srv.port}/")
    with pytest.raises(EdgeProtocolError, match="body cut"):
        conn.get("/x")
    srv2 = _Server([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"])
    conn2, _ = edges.for_url(f"http://127.0.0.1:{srv2.port}/")
    with pytest.raises(EdgeProtocolError, match="chunked"):
        conn2.get("/y")
    with pytest.raises(EdgeProtocolError, match="plain http"):
        edges.for_url("https://127.0.0.1/x")


def test_pure_parts_import_neither_locust_nor_gevent() -> None:
    import subprocess
    import sys
    code = ("import sys, loadtests.qoe, loadtests.crowds, loadtests.edge_http\n"
            "print(sorted(m for m in ('locust', 'gevent', 'aiohttp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
