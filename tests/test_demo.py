"""`ocsim demo`, shortened: a real topology, pre-positioning, a small crowd, an edge killed
half-way, and a report with the promised keys and no failed session. Plus the report's
pure parts (percentiles, offload, self-contained HTML)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.dom.minidom
from pathlib import Path

import pytest

from ocsim.report import build_report, percentile, render_html, render_text


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0


def _session(title: str, isp: str, edge: str, nbytes: int, *, ok: bool = True, failovers: int = 0) -> dict[str, object]:
    return {"title": title, "isp": isp, "state": "ended" if ok else "failed", "errors": 0 if ok else 1,
            "error": None if ok else "no edge left", "startup_s": 1.0, "rebuffer_count": 0, "rebuffer_s": 0.0,
            "avg_bitrate_kbps": 1750.0, "switches": 2, "qoe_lin": 30.0, "failovers": failovers, "resteers": 0,
            "failed_requests": failovers, "bytes": nbytes, "playlist_bytes": 0, "bytes_per_edge": {edge: nbytes},
            "edges": [edge], "wall_s": 1.0}


def test_report_arithmetic_and_html_is_self_contained() -> None:
    sessions = [_session("a", "isp-a", "e1", 600), _session("b", "isp-b", "e2", 400, failovers=1),
                _session("c", "isp-b", "e2", 0, ok=False)]
    edges = {
        "e1": {"isp": "isp-a", "killed": True,
               "before": {"hits": 10, "misses": {"cold": 5, "evicted": 0, "coalesced": 0, "peer": 0, "origin": 5},
                          "fills_by_source": {"peer": 0, "origin": 5},
                          "bytes_from_cache": 100, "bytes_filled": 100},
               # 10 misses: 9 cold, 1 filled from a peer (a miss class of its own)
               "after": {"hits": 40, "misses": {"cold": 14, "evicted": 0, "coalesced": 0, "peer": 1, "origin": 14},
                         "fills_by_source": {"peer": 1, "origin": 14},
                         "bytes_from_cache": 500, "bytes_filled": 200}},
        "e2": {"isp": "isp-b", "killed": False, "before": None,
               "after": {"hits": 0, "misses": {"cold": 4, "evicted": 1, "coalesced": 0}, "bytes_filled": 400}},
    }
    r = build_report(sessions=sessions, edges=edges, origin_before={"bytes": 1000}, origin_after={"bytes": 1250},
                     settings={"viewers": 3, "duration_s": 10, "speed": 20}, failure={"edge": "e1", "at_s": 5.0},
                     timeline=[{"t": 0, "player_bytes": 0, "origin_bytes": 0, "edge_bytes": {}, "active": 1},
                               {"t": 1, "player_bytes": 1000, "origin_bytes": 250, "edge_bytes": {"e1": 600},
                                "active": 2}])
    assert r["offload"] == 0.75  # 250 from origin for 1000 to players
    assert r["sessions"] == 3 and r["sessions_failed"] == 1 and r["failovers"] == 1
    assert r["edges"]["e1"]["hit_ratio"] == 0.75 and r["edges"]["e1"]["killed"]  # 30 hits, 10 misses
    assert r["edges"]["e1"]["byte_hit_ratio"] == round(400 / 500, 4)
    assert r["edges"]["e2"]["hit_ratio"] == 0.0 and r["miss_classes"] == {"cold": 13, "evicted": 1, "coalesced": 0,
                                                                                "peer": 1, "stale": 0}
    assert r["fill_sources"] == {"peer": 1, "origin": 9}
    json.dumps(r)
    assert "origin offload" in render_text(r)
    page = render_html(r)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external assets
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        xml.dom.minidom.parseString(svg)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_short_demo_writes_a_report_with_no_failed_session(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ocsim", "demo", "--duration", "12", "--viewers", "6", "--top", "2",
         "--report-dir", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    for key in ("offload", "sessions", "sessions_failed", "failovers", "edges", "qoe", "miss_classes"):
        assert key in report, key
    assert report["sessions"] >= 6 and report["sessions_failed"] == 0
    assert 0.0 <= report["offload"] <= 1.0
    assert set(report["edges"]) == {"isp-a-1", "isp-a-2", "isp-b-1", "isp-b-2"}
    assert all(0.0 <= e["hit_ratio"] <= 1.0 for e in report["edges"].values())
    assert report["killed_edge"] and report["edges"][report["killed_edge"]["edge"]]["killed"]
    assert all(j["state"] == "done" for j in report["preposition"])
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert "origin offload" in done.stdout
