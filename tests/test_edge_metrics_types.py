"""Issue 15: `ocsim_edge_evictions` counts, so it is a counter (`_total`), read at scrape time."""
from __future__ import annotations

from common.metrics import Registry, parse_text
from edge.metrics import EdgeMetrics, Gauges


def test_evictions_is_a_counter_read_at_scrape_time() -> None:
    evicted = [0]
    reg = Registry()
    EdgeMetrics(reg, Gauges(used=lambda: 0.0, capacity=lambda: 1.0, objects=lambda: 0.0, pinned=lambda: 0.0,
                            inflight=lambda: 0.0, evictions=lambda: float(evicted[0])))
    text = reg.render()
    assert "# TYPE ocsim_edge_evictions_total counter" in text
    assert "ocsim_edge_evictions " not in text and "TYPE ocsim_edge_evictions gauge" not in text
    evicted[0] = 7
    assert parse_text(reg.render())["ocsim_edge_evictions_total"] == 7.0
