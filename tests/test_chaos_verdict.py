"""The pure cores of an experiment: the cohort split, the Mann-Whitney statistics on
hand-computed samples, the verdict (which can pass and can fail) and the abort rule."""
from __future__ import annotations

import math
import random

import pytest

from chaos.cohorts import split_cohorts
from chaos.metrics import METRICS, values
from chaos.scenario import AbortRule, Hypothesis
from chaos.verdict import Outcome, abort_breach, judge, mann_whitney_greater, normal_sf
from common.errors import BadRequest

VIEWERS = [f"viewer-{i}" for i in range(20)]


# --- cohorts ---------------------------------------------------------------------------------

def test_split_is_equal_disjoint_and_complete() -> None:
    c = split_cohorts(VIEWERS, seed=1)
    assert len(c.control) == len(c.experiment) == 10 and not c.left_out
    assert set(c.control).isdisjoint(c.experiment)
    assert set(c.control) | set(c.experiment) == set(VIEWERS)


def test_split_depends_on_ids_and_seed_only() -> None:
    shuffled = list(VIEWERS)
    random.Random(4).shuffle(shuffled)
    assert split_cohorts(shuffled, seed=1) == split_cohorts(VIEWERS, seed=1)
    assert split_cohorts(VIEWERS, seed=2) != split_cohorts(VIEWERS, seed=1)


def test_an_odd_viewer_is_left_out_and_named() -> None:
    c = split_cohorts(VIEWERS[:7], seed=3)
    assert len(c.control) == len(c.experiment) == 3 and len(c.left_out) == 1
    assert c.cohort_of(c.left_out[0]) is None and c.cohort_of(c.control[0]) == "control"
    with pytest.raises(BadRequest, match="unique"):
        split_cohorts(["a", "a"], seed=0)


# --- Mann-Whitney on hand-computed samples ----------------------------------------------------

def test_mann_whitney_without_ties() -> None:
    # x all above y: U = 9; mean 4.5; var = 3*3/12 * 7 = 5.25; z = (9 - 4.5 - 0.5)/sqrt(5.25)
    mw = mann_whitney_greater([4, 5, 6], [1, 2, 3])
    assert mw.u == 9
    assert mw.z == pytest.approx(4 / math.sqrt(5.25))
    assert mw.p_greater == pytest.approx(0.040428, abs=1e-6)


def test_mann_whitney_with_ties() -> None:
    # pooled 1,1,1,2,2,2: midranks 2 and 5; R_x = 2+2+5 = 9, U = 9 - 6 = 3 (by pairs: 1 win, 4 ties)
    # var = 9/12 * (7 - (24+24)/30) = 4.05; z = (3 - 4.5 - 0.5)/sqrt(4.05)
    mw = mann_whitney_greater([1, 1, 2], [1, 2, 2])
    assert mw.u == 3
    assert mw.z == pytest.approx(-2 / math.sqrt(4.05))
    assert mw.p_greater == pytest.approx(normal_sf(-2 / math.sqrt(4.05)))
    assert mw.p_greater == pytest.approx(0.83984, abs=1e-5)


def test_mann_whitney_all_tied_gives_no_evidence() -> None:
    assert mann_whitney_greater([0, 0, 0], [0, 0]).p_greater == 1.0


def test_normal_sf_known_values() -> None:
    assert normal_sf(0) == pytest.approx(0.5)
    assert normal_sf(1.959964) == pytest.approx(0.025, abs=1e-6)


# --- verdicts ---------------------------------------------------------------------------------

CONTROL_STARTUP = [1.0, 1.1, 0.9, 1.0, 1.2, 1.0]


def test_verdict_passes_when_the_experiment_is_within_tolerance() -> None:
    h = Hypothesis("startup_s", tolerance=0.10)
    v = judge(h, CONTROL_STARTUP, [c * 1.05 for c in CONTROL_STARTUP])
    assert v.outcome is Outcome.PASS and v.p is not None and v.p > 0.05


def test_verdict_fails_when_the_experiment_is_clearly_worse() -> None:
    # every experiment value exceeds every bound (c * 1.1): U = 36, mean 18; ties: three bounds
    # of 1.1 and two 3.0s, so var = 36/12 * (13 - (24 + 6)/132) and z = 17.5/sqrt(var)
    h = Hypothesis("startup_s", tolerance=0.10)
    v = judge(h, CONTROL_STARTUP, [3.0, 3.2, 2.9, 3.1, 3.0, 3.3])
    assert v.outcome is Outcome.FAIL
    assert v.p == pytest.approx(normal_sf(17.5 / math.sqrt(3 * (13 - 30 / 132))))
    assert v.p == pytest.approx(0.00235, abs=1e-5)
    assert v.control_median == pytest.approx(1.0) and v.experiment_median == pytest.approx(3.05)


def test_verdict_on_a_lower_is_worse_metric() -> None:
    h = Hypothesis("avg_bitrate_kbps", tolerance=0.05)
    control = [3000.0, 3100.0, 2900.0, 3050.0]
    assert judge(h, control, [2990.0, 3080.0, 2950.0, 3000.0]).outcome is Outcome.PASS
    assert judge(h, control, [1000.0, 900.0, 1100.0, 950.0]).outcome is Outcome.FAIL


def test_failed_sessions_and_never_started_sessions() -> None:
    ok = {"state": "ended", "errors": 0, "startup_s": 0.8, "played_s": 10.0, "rebuffer_s": 0.0}
    dead = {"state": "failed", "errors": 1, "startup_s": None, "played_s": 0.0, "rebuffer_s": 0.0}
    control = [ok] * 4
    assert values("failed", [ok, dead]) == [0.0, 1.0]
    assert values("startup_s", [dead]) == [math.inf]
    assert judge(Hypothesis("failed", absolute=0.25), values("failed", control),
                 values("failed", [dead] * 4)).outcome is Outcome.FAIL
    assert judge(Hypothesis("startup_s", tolerance=0.5), values("startup_s", control),
                 values("startup_s", [dead] * 4)).outcome is Outcome.FAIL
    assert judge(Hypothesis("failed", absolute=0.25), values("failed", control),
                 values("failed", [ok, ok, ok, dead])).outcome is Outcome.PASS


def test_too_few_sessions_is_inconclusive() -> None:
    assert judge(Hypothesis("failed"), [0.0], [1.0, 1.0]).outcome is Outcome.INCONCLUSIVE


def test_every_metric_says_which_way_is_worse() -> None:
    assert {m.worse for m in METRICS.values()} <= {"higher", "lower"}


# --- abort ------------------------------------------------------------------------------------

def test_abort_breach_waits_for_enough_sessions_then_names_the_rule() -> None:
    rules = [AbortRule("failed", max_excess=0.5, min_sessions=2)]
    assert abort_breach(rules, {"failed": [0.0]}, {"failed": [1.0]}) is None  # too early
    assert abort_breach(rules, {"failed": [0.0, 0.0]}, {"failed": [1.0, 0.0]}) is None  # 0.5 not > 0.5
    reason = abort_breach(rules, {"failed": [0.0, 0.0]}, {"failed": [1.0, 1.0]})
    assert reason is not None and "failed" in reason and "exceeds control by 1" in reason


def test_a_share_is_judged_as_proportions_so_a_margin_means_what_it_says() -> None:
    from chaos.verdict import PROPORTIONS_TEST, proportion_greater
    ctl = [0.0] * 200
    h = Hypothesis("failed", absolute=0.05)
    # 11 % failed against 0 %, 5 points allowed: clearly worse (the rank test said p = 1 here)
    v = judge(h, ctl, [1.0] * 22 + [0.0] * 178)
    assert v.outcome is Outcome.FAIL and v.test == PROPORTIONS_TEST and v.experiment_median == pytest.approx(0.11)
    # 2 % failed: within the 5 points
    assert judge(h, ctl, [1.0] * 4 + [0.0] * 196).outcome is Outcome.PASS
    # hand computation: x_e=2 of 8, x_c=0 of 8 -> p~e = 0.3, p~c = 0.1
    z = (0.3 - 0.1 - 0.05) / math.sqrt(0.3 * 0.7 / 10 + 0.1 * 0.9 / 10)
    assert proportion_greater(2, 8, 0, 8, 0.05) == pytest.approx(normal_sf(z))


def test_the_share_of_sessions_that_rebuffer_is_seen_where_a_median_ratio_is_not() -> None:
    # origin-slow at 400 ms real (8 s of player time per miss): about 64 % of the experiment's
    # sessions stalled against 1 % of the control's, most of them briefly
    ctl = [{"state": "ended", "played_s": 32.0, "rebuffer_s": 0.4 if i == 0 else 0.0} for i in range(120)]
    exp = [{"state": "ended", "played_s": 32.0, "rebuffer_s": (0.8 if i % 4 else 12.0) if i < 77 else 0.0}
           for i in range(120)]
    ratio = judge(Hypothesis("rebuffer_ratio", absolute=0.05), values("rebuffer_ratio", ctl), values("rebuffer_ratio", exp))
    assert ratio.outcome is Outcome.PASS  # the median session hardly stalled
    share = judge(Hypothesis("rebuffered", absolute=0.05), values("rebuffered", ctl), values("rebuffered", exp))
    assert share.outcome is Outcome.FAIL and share.p is not None and share.p < 1e-6
    a_few = [dict(r, rebuffer_s=0.5 if i < 3 else 0.0) for i, r in enumerate(ctl)]
    same = judge(Hypothesis("rebuffered", absolute=0.05), values("rebuffered", ctl), values("rebuffered", a_few))
    assert same.outcome is Outcome.PASS
