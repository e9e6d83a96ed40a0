"""Small topologies for tests that start `ocsim up`: short titles, one ISP of two edges."""
from __future__ import annotations

SHORT_CATALOG = {"titles": [
    {"id": "short-a", "duration_s": 30, "popularity": 1.0},
    {"id": "short-b", "duration_s": 40, "popularity": 0.5},
    {"id": "short-c", "duration_s": 24, "popularity": 0.25},
]}

ONE_ISP_TWO_EDGES = """\
[origin]
port = 0
catalog = "catalog.json"
latency_ms = 0.0
total_bandwidth = "0"

[control]
port = 0

[edge]
capacity = "1GiB"

[isps.isp-a]
prefixes = ["10.1.0.0/16"]
edges = 2
"""
