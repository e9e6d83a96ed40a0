"""Issue 15: the demo report's charts read right: histograms count sessions on the y axis
and name their x axis, bins have round edges and say their range, time ticks are round,
the origin's uplink cap is drawn, and the bytes table says why its two totals differ."""
from __future__ import annotations

import re
import xml.dom.minidom

from ocsim.report import BYTES_NOTE, histogram, histogram_bins, line_chart


def _texts(svg: str, cls: str) -> list[str]:
    return re.findall(rf'class="{cls}"[^>]*>([^<]*)<', svg)


def test_histogram_axes_units_and_bin_ranges() -> None:
    svg = histogram([0.12, 0.31, 0.33, 0.9, 1.4], xlabel="start-up delay, media s")
    xml.dom.minidom.parseString(svg)
    labels = _texts(svg, "label")
    assert "sessions" in labels  # the count, not "sessions (s)"
    assert not any("sessions (" in t for t in labels)
    assert any("start-up delay, media s" in t for t in labels)  # an x-axis title
    ticks = [t for t in _texts(svg, "tick") if "–" in t]
    assert ticks[0] == "0–0.2" and ticks[-1] == "1.4–1.6", ticks  # round edges, each bin its range


def test_histogram_bins_are_round_and_hold_every_value() -> None:
    values = [235.0, 750.0, 1750.0, 3000.0, 5800.0, 5800.0]
    start, width, counts = histogram_bins(values, 8)
    assert (start, width) == (0.0, 1000.0) and sum(counts) == len(values) and counts[-1] == 2
    assert histogram_bins([3.0, 3.0], 8) == (3.0, 1.0, [2])


def test_line_chart_ticks_are_round_and_limits_are_drawn() -> None:
    svg = line_chart({"to players": [(1.0, 10.0), (17.3, 230.0), (69.6, 120.0)]}, xlabel="seconds", ylabel="Mbit/s",
                     limits=[(400.0, "origin uplink cap 400 Mbit/s")])
    xml.dom.minidom.parseString(svg[:svg.index("</svg>") + 6])
    xticks = [t for t in _texts(svg, "tick")][-5:]
    assert xticks == ["0", "25", "50", "75", "100"], xticks
    assert "origin uplink cap 400 Mbit/s" in svg


def test_bytes_note_explains_players_versus_edges() -> None:
    assert "To players" in BYTES_NOTE and "Served by edges" in BYTES_NOTE and "peer" in BYTES_NOTE
