"""How many viewers a crowd shape wants at each moment (pure; see loadtests/shapes.py).

Rules of this module: stdlib only, time passed in, so pytest checks the shapes
without importing Locust.
"""
from __future__ import annotations

import math

__all__ = ["CROWD_SHAPES", "crowd_target"]

CROWD_SHAPES = ("steady", "evening", "flash")


def crowd_target(shape: str, elapsed_s: float, users: int, crowd_s: float) -> tuple[int, float]:
    """(viewers wanted now, spawn rate per second) of `shape` at `elapsed_s`."""
    crowd_s = max(crowd_s, 0.001)
    if shape == "flash":
        return users, users / crowd_s
    if shape == "steady":
        return users, max(1.0, users / crowd_s)
    # evening: linear growth, one step a second
    step_users = users if elapsed_s >= crowd_s else max(1, math.ceil(users * (math.floor(elapsed_s) + 1) / crowd_s))
    return min(users, step_users), max(1.0, users / crowd_s)
