"""report.html of a chaos run (chaos/report.py): pure, from the report dict."""
from __future__ import annotations

from chaos.report import render_html


def _report(outcome: str = "fail", aborted: str | None = "abort: failed of the experiment exceeds control") -> dict:
    sessions = [{"cohort": c, "started_at_s": float(i), "startup_s": 1.0 + i / 10, "state": "ended", "errors": 0}
                for c in ("control", "experiment") for i in range(5)]
    samples = [{"t": float(t), "cohort": c, "sessions": t, "failed": t if c == "experiment" else 0, "sps": 2.0}
               for t in range(5) for c in ("control", "experiment")]
    return {"scenario": "edge-<killed>", "description": "d", "seed": 1, "duration_s": 5, "outcome": outcome,
            "aborted": aborted, "experiment_failover": False, "metrics_source": "players",
            "verdicts": [{"metric": "failed", "outcome": "fail", "p": 0.001, "test": "two proportions",
                          "control_median": 0.0, "experiment_median": 0.6, "n_control": 5, "n_experiment": 5}],
            "timeline": [{"t": 1.0, "move": "begin", "kind": "kill", "target": "edge:a", "made_as": "kill a"},
                         {"t": 2.0, "move": "corrupted", "target": "edge:a", "count": 3},
                         {"t": 3.0, "move": "abort", "reason": "abort: ..."}],
            "samples": samples, "sessions": sessions, "wall_s": 9.0,
            "fault_effects": {"a": {"disk_full": True, "writes_refused": 7}}}


def test_the_html_report_has_the_verdict_charts_timeline_and_effects_escaped() -> None:
    page = render_html(_report())
    assert page.startswith("<!doctype html>") and "FAIL" in page
    assert "edge-&lt;killed&gt;" in page and "<killed>" not in page
    assert page.count("<svg") == 4 and "kill begin" in page and ">abort<" in page
    assert "failover OFF" in page and "writes_refused" in page and "two proportions" in page


def test_a_passing_run_without_samples_still_renders() -> None:
    r = _report("pass", None)
    r["samples"], r["sessions"], r["timeline"], r["fault_effects"] = [], [], [], {}
    page = render_html(r)
    assert "PASS" in page and "Aborted" not in page
