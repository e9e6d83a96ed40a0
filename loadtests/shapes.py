"""Crowd shapes for the viewer user, chosen by `OCSIM_SHAPE=steady|evening|flash`.

Each takes N, the crowd, from Locust's `-u` (else `OCSIM_USERS`, default 10), T,
its time scale in seconds, from `OCSIM_CROWD_S` (default 10), and runs until
Locust's `--run-time` (else `OCSIM_SHAPE_TIME`, default 60 s) is over:

``steady``   ramp evenly to N viewers within T seconds, then hold N.
``evening``  the evening ramp: grow linearly from 0 to N over T seconds (a new
             step every second), then hold N; "how many viewers until it breaks".
             ``ramp`` is the same shape's older name.
``flash``    a flash crowd: N viewers arrive within T seconds (N / T a second),
             and every one of them starts the same new title (the locustfile reads
             `FlashShape.flash`; the title is `OCSIM_FLASH_TITLE`, default the least
             popular title of the catalog: the one no edge is likely to hold).

The arithmetic is `loadtests.crowds.crowd_target` (pure, tested); this module imports Locust, so only
the locustfile (never the pytest process) may import the classes.
"""
from __future__ import annotations

import os

from locust import LoadTestShape

from loadtests.crowds import crowd_target

__all__ = ["EveningShape", "FlashShape", "SHAPES", "SteadyShape", "shape_class"]


class _CrowdShape(LoadTestShape):
    abstract = True
    use_common_options = True
    flash = False
    name = ""

    def _opt(self, name: str, env: str, default: float) -> float:
        opts = getattr(getattr(self.runner, "environment", None), "parsed_options", None)
        value = getattr(opts, name, None) if opts is not None else None
        if value:
            return float(value)
        return float(os.environ.get(env, default))

    def tick(self) -> tuple[int, float] | None:
        t = float(self.get_run_time())  # type: ignore[no-untyped-call]
        if t >= max(1.0, self._opt("run_time", "OCSIM_SHAPE_TIME", 60)):
            return None
        users = max(1, int(self._opt("num_users", "OCSIM_USERS", 10)))
        return crowd_target(self.name, t, users, float(os.environ.get("OCSIM_CROWD_S") or 10))


class SteadyShape(_CrowdShape):
    abstract = False
    name = "steady"


class EveningShape(_CrowdShape):
    abstract = False
    name = "evening"


class FlashShape(_CrowdShape):
    abstract = False
    flash = True
    name = "flash"


SHAPES: dict[str, type[_CrowdShape]] = {"steady": SteadyShape, "evening": EveningShape, "ramp": EveningShape,
                                        "flash": FlashShape}


def shape_class(name: str) -> type[_CrowdShape]:
    try:
        return SHAPES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"OCSIM_SHAPE={name!r}: choose one of {', '.join(SHAPES)}") from None
