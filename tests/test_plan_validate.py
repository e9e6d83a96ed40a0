"""`ocsim plan --validate` end to end, small: the chosen topology as real processes on loopback
(`ocsim up --events`), pre-positioned, played by the day's sessions; the simulator's
prediction and the live measurement must agree within 3 points of offload."""
from __future__ import annotations

from pathlib import Path

import pytest

from plan.inputs import parse_plan
from plan.search import search
from plan.validate import ValidateOptions, validate
from plan.workload import Scale, make_day

PLAN = {
    # 2 edges in the ISP (the NIC minimum), so steering, peers and replicas all take part
    "audience": {"isps": {"isp-a": 2000}, "daily_amplitude": 0.5, "peak_hour": 20.0, "mean_watch_minutes": 10.0},
    "catalog": {"titles": 60, "mean_duration_minutes": 20.0, "popularity_alpha": 0.9, "new_releases_per_day": 2},
    "ladder": {"kbps": [235, 750, 1750], "share": [0.3, 0.4, 0.3]},
    "targets": {"offload": 0.3, "startup_p90_s": 10.0, "rebuffer_ratio": 1.0, "origin_egress_cap": "100Gbit"},
    "edge": {"nic": "1Gbit", "max_utilization": 0.9, "policies": ["s3tinylfu"], "fill_windows": ["02:00-14:00"],
             "preposition_share": 0.5, "extra_edges": 0, "options": [{"disk": "6GB", "cost": 1.0}]},
    "sim": {"titles": 30, "requests": 4000, "time_factor": 10.0, "seed": 5},
}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_predicted_and_measured_offload_agree(tmp_path: Path) -> None:
    p = parse_plan(PLAN)
    result = search(p, make_day(p, Scale(p.sim.titles, p.sim.requests, p.sim.time_factor, p.sim.warmup)))
    assert result.best is not None, result.shortfalls
    assert result.best.choice.edges == (("isp-a", 2),)
    lines: list[str] = []
    got = validate(p, result.best, ValidateOptions(titles=10, requests=500, time_factor=20.0, seconds=10.0,
                                                   settle_s=60.0), tmp_path, lines.append)
    pred, meas = got["predicted"], got["measured"]
    assert meas["errors"] == 0, lines
    assert meas["requests"] == pred["requests"] and meas["bytes"] == pred["bytes"], lines  # the same sessions
    assert 0.0 < pred["offload"] < 1.0  # neither all pinned nor nothing: the policy and steering matter
    assert abs(meas["offload"] - pred["offload"]) <= 0.03, lines
    assert got["agree_within_3_points"]
