"""The cohort split: viewers into a control and an experiment cohort of equal size.

Rules of this module: pure and deterministic. A viewer's place depends only on its id and the
seed (the order of the sha256 of `seed:id`), never on the order the ids come in; the sorted
list is dealt alternately to control and experiment, so the cohorts are equal in size; with an
odd count the last viewer in that order is left out and said so.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from common.errors import BadRequest


@dataclass(frozen=True)
class Cohorts:
    control: tuple[str, ...]
    experiment: tuple[str, ...]
    left_out: tuple[str, ...] = ()

    def cohort_of(self, viewer: str) -> str | None:
        if viewer in self.control:
            return "control"
        if viewer in self.experiment:
            return "experiment"
        return None


def _rank(seed: int, viewer: str) -> bytes:
    return hashlib.sha256(f"{seed}:{viewer}".encode()).digest()


def split_cohorts(viewers: Iterable[str], seed: int) -> Cohorts:
    ids = list(viewers)
    if len(set(ids)) != len(ids):
        raise BadRequest("viewer ids must be unique")
    order = sorted(ids, key=lambda v: (_rank(seed, v), v))
    paired = order[: len(order) // 2 * 2]
    return Cohorts(tuple(paired[0::2]), tuple(paired[1::2]), tuple(order[len(paired):]))
