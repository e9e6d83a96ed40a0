"""Verdict statistics: does the experiment cohort stay within bounds of the control cohort?

Rules of this module: pure functions of per-session values; no randomness is needed.

The test, per metric: a one-sided Mann-Whitney U test (normal approximation with the tie
correction of the variance and a continuity correction of 0.5; Mann & Whitney 1947, e.g.
Hollander & Wolfe, "Nonparametric Statistical Methods", ch. 4) of the experiment's values
against the control's values *moved by the allowed margin* (a non-inferiority test):

    bound(c) = c + tolerance * |c| + absolute        when higher is worse
    bound(c) = c - tolerance * |c| - absolute        when lower is worse

H0: the experiment is not worse than the bounds; H1: it is stochastically worse. The verdict
is FAIL when p < alpha (the data show the experiment worse than allowed), PASS otherwise, and
INCONCLUSIVE when a cohort has fewer than 2 sessions. A rank test needs no assumption of
normality and orders a session that never started (start-up time = inf) as the slowest.
Small cohorts have little power: with 4 sessions each the smallest p is 0.015.

A share (a metric that is 0 or 1 per session, `failed`) is judged by a one-sided test of two
proportions instead: against 0/1 values a margin moves nothing past a rank, so the rank test
would only ever fail a cohort with more than half its sessions failed. With Agresti & Caffo's
(2000) adjustment (one success and one failure added to each cohort: p~ = (x + 1) / (n + 2)),

    z = (p~e - p~c - margin) / sqrt(p~e (1 - p~e) / (ne + 2) + p~c (1 - p~c) / (nc + 2)),
    margin = tolerance * p~c + absolute,          p = P(Z > z).

Abort rules compare cohort means while the experiment runs (`abort_breach`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from chaos.metrics import is_binary, worse_of
from chaos.scenario import AbortRule, Hypothesis


class Outcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class MannWhitney:
    u: float        # U of the first sample: pairs where it is greater, ties counting 1/2
    z: float
    p_greater: float  # one-sided p of H1: the first sample is stochastically greater


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _midranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks (1-based, ties get the mean of their ranks) and the sizes of the tie groups."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


def mann_whitney_greater(x: Sequence[float], y: Sequence[float]) -> MannWhitney:
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need at least one value")
    ranks, ties = _midranks([*x, *y])
    u = sum(ranks[:n1]) - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    mean = n1 * n2 / 2.0
    tie_term = sum(t ** 3 - t for t in ties) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value tied: no evidence either way
        return MannWhitney(u, 0.0, 1.0)
    z = (u - mean - 0.5) / math.sqrt(var)
    return MannWhitney(u, z, normal_sf(z))


@dataclass(frozen=True)
class MetricVerdict:
    metric: str
    outcome: Outcome
    p: float | None
    control_median: float | None
    experiment_median: float | None
    n_control: int
    n_experiment: int
    test: str = "one-sided Mann-Whitney U vs control moved by the margin (normal approx.)"


def _median(v: Sequence[float]) -> float | None:
    if not v:
        return None
    s = sorted(v)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2.0


PROPORTIONS_TEST = "one-sided test of two proportions, Agresti-Caffo adjusted (normal approx.)"


def proportion_greater(x_e: int, n_e: int, x_c: int, n_c: int, margin: float) -> float:
    """One-sided p of H1: the experiment's share exceeds the control's by more than `margin`."""
    pe, pc = (x_e + 1) / (n_e + 2), (x_c + 1) / (n_c + 2)
    se = math.sqrt(pe * (1 - pe) / (n_e + 2) + pc * (1 - pc) / (n_c + 2))
    return normal_sf((pe - pc - margin) / se)


def judge(h: Hypothesis, control: Sequence[float], experiment: Sequence[float]) -> MetricVerdict:
    higher_worse = worse_of(h.metric) == "higher"
    medians = (_median(control), _median(experiment))
    if len(control) < 2 or len(experiment) < 2:
        return MetricVerdict(h.metric, Outcome.INCONCLUSIVE, None, *medians, len(control), len(experiment))
    if is_binary(h.metric):
        medians = (_mean(control), _mean(experiment))  # a share: its mean says more than a median
        x_c, x_e = sum(1 for c in control if c), sum(1 for e in experiment if e)
        pc = (x_c + 1) / (len(control) + 2)
        p = proportion_greater(x_e, len(experiment), x_c, len(control), h.tolerance * pc + h.absolute)
        return MetricVerdict(h.metric, Outcome.FAIL if p < h.alpha else Outcome.PASS, p, *medians,
                             len(control), len(experiment), PROPORTIONS_TEST)
    if higher_worse:
        bounds = [c + h.tolerance * abs(c) + h.absolute for c in control]
        mw = mann_whitney_greater(list(experiment), bounds)
    else:
        bounds = [c - h.tolerance * abs(c) - h.absolute for c in control]
        mw = mann_whitney_greater([-e for e in experiment], [-b for b in bounds])
    outcome = Outcome.FAIL if mw.p_greater < h.alpha else Outcome.PASS
    return MetricVerdict(h.metric, outcome, mw.p_greater, *medians, len(control), len(experiment))


def _mean(v: Sequence[float]) -> float:
    return sum(v) / len(v)


def abort_breach(rules: Sequence[AbortRule], control: dict[str, list[float]],
                 experiment: dict[str, list[float]]) -> str | None:
    """The first rule the experiment breaches (a reason to stop now), or None.
    `control` / `experiment` map a metric to the per-session values finished so far."""
    for rule in rules:
        c, e = control.get(rule.metric, []), experiment.get(rule.metric, [])
        if len(c) < rule.min_sessions or len(e) < rule.min_sessions:
            continue
        excess = _mean(e) - _mean(c)
        if worse_of(rule.metric) == "lower":
            excess = -excess
        if math.isnan(excess):  # both inf: no difference to judge
            continue
        if excess > rule.max_excess:
            return (f"abort: {rule.metric} of the experiment exceeds control by {excess:.3g} "
                    f"> {rule.max_excess:g} ({len(e)} vs {len(c)} sessions)")
    return None
