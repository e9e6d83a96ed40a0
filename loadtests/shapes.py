"""Load shapes for the viewer user, chosen by `OCSIM_SHAPE=steady|ramp|flash`.

All three take their size from Locust's common options (`-u` users, `-r` spawn
rate, `--run-time`), falling back to `OCSIM_USERS`, `OCSIM_SPAWN_RATE` and
`OCSIM_SHAPE_TIME` (seconds) when those are not given:

``steady``  ramp to N users at R/s, hold until the run time is over.
``ramp``    grow linearly from 0 to N over the run time, in 10 steps; for
            "how many viewers until it breaks" runs.
``flash``   a flash crowd: all N users arrive in one tick, and every one of them
            starts the same new title (the locustfile reads `FlashShape.flash`;
            the title is `OCSIM_FLASH_TITLE`, default the least popular title of
            the catalog: the one no edge is likely to hold).

This module imports Locust, so only the locustfile (never the pytest process)
may import it.
"""
from __future__ import annotations

import math
import os

from locust import LoadTestShape

__all__ = ["FlashShape", "RampShape", "SHAPES", "SteadyShape", "shape_class"]


class _OptionsShape(LoadTestShape):
    abstract = True
    use_common_options = True
    flash = False

    def _opt(self, name: str, env: str, default: float) -> float:
        opts = getattr(getattr(self.runner, "environment", None), "parsed_options", None)
        value = getattr(opts, name, None) if opts is not None else None
        if value:
            return float(value)
        return float(os.environ.get(env, default))

    def elapsed(self) -> float:
        return float(self.get_run_time())  # type: ignore[no-untyped-call]

    @property
    def users(self) -> int:
        return max(1, int(self._opt("num_users", "OCSIM_USERS", 10)))

    @property
    def spawn_rate(self) -> float:
        return max(0.1, self._opt("spawn_rate", "OCSIM_SPAWN_RATE", 10))

    @property
    def run_time(self) -> float:
        return max(1.0, self._opt("run_time", "OCSIM_SHAPE_TIME", 60))


class SteadyShape(_OptionsShape):
    abstract = False

    def tick(self) -> tuple[int, float] | None:
        if self.elapsed() >= self.run_time:
            return None
        return self.users, self.spawn_rate


class RampShape(_OptionsShape):
    abstract = False
    steps = 10

    def tick(self) -> tuple[int, float] | None:
        t = self.elapsed()
        if t >= self.run_time:
            return None
        step = min(self.steps, 1 + math.floor(t / (self.run_time / self.steps)))
        users = max(1, round(self.users * step / self.steps))
        return users, max(self.spawn_rate, users / 2)


class FlashShape(_OptionsShape):
    abstract = False
    flash = True

    def tick(self) -> tuple[int, float] | None:
        if self.elapsed() >= self.run_time:
            return None
        return self.users, float(self.users)  # everyone in the first second


SHAPES: dict[str, type[_OptionsShape]] = {"steady": SteadyShape, "ramp": RampShape, "flash": FlashShape}


def shape_class(name: str) -> type[_OptionsShape]:
    try:
        return SHAPES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"OCSIM_SHAPE={name!r}: choose one of {', '.join(SHAPES)}") from None
