"""The runner's own event pipeline: where both cohorts' players publish `player.session`.

One nats-server -js and one collector (`ocsim pipeline`), started by the runner beside the
two copies of the topology; the players of each cohort publish through a sink whose `src`
names the cohort (`chaos-control`, `chaos-experiment`), and the runner reads each cohort's
rows from the one collector (`POST /v1/query ... AND src = ...`, chaos/piped.py).

Why one pipeline outside the copies, and not one in each: it is the observer, not part of
the system under test. No fault of the library touches it (faults are made in the
experiment's copy), as Netflix's ChAP reads both groups from the same telemetry. And why
only the players publish to it: the services' own events (every edge request, every
steering decision) are what the runner does not read, and on 2 cores they cost the copies
sessions (README "Chaos": the cost of the pipeline, measured both ways).

Blocking calls (processes, health polls): the runner calls `start` and `stop` in a thread.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ocsim.procs import ServiceProcess
from ocsim.up import http_json

if TYPE_CHECKING:
    from pipeline.natsserver import NatsServer

START_TIMEOUT_S = 30.0
COHORT_SRC = "chaos-{cohort}"  # the `src` of a cohort's player events


def cohort_src(cohort: str) -> str:
    return COHORT_SRC.format(cohort=cohort)


class ObserverPipeline:
    """`start()`; `events_url` (NATS) and `pipeline_url` (the read API); `stop()` always."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.nats: NatsServer | None = None
        self.collector: ServiceProcess | None = None
        self.events_url = ""
        self.pipeline_url = ""

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ObserverPipeline:
        from pipeline.natsserver import NatsServer

        self.state_dir.mkdir(parents=True, exist_ok=True)
        nats = NatsServer(self.state_dir / "nats", log_path=self.state_dir / "logs" / "nats.log").start()
        self.nats = nats
        self.events_url = nats.url
        self.collector = ServiceProcess("observer-pipeline", [
            "pipeline", "--host", "127.0.0.1", "--port", "0", "--events", self.events_url,
            "--db", str(self.state_dir / "events.duckdb"), "--roll-interval", "3600", "--no-access-log",
            # not the collector's default 19: the runner decides aborts from what it reads, and
            # at nice 19 on a busy machine (load 11) it fell seconds behind: 5 reads in a 12 s
            # run instead of 21, half the sessions' ends missing after the 10 s drain. It
            # ingests only the players' player.session events, a few a second
            "--nice", "0"],
            log_dir=self.state_dir / "logs").start(timeout_s)
        self.pipeline_url = self.collector.url
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = http_json(f"{self.pipeline_url}/healthz")
            if status == 200 and isinstance(body, dict) and body.get("bound"):
                return self
            time.sleep(0.05)  # polling the collector's health with a deadline
        raise RuntimeError(f"the observer's collector did not bind to {self.events_url}; "
                           f"see {self.state_dir / 'logs'}")

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop(timeout=10)
            self.collector = None
        if self.nats is not None:
            self.nats.stop()
            self.nats = None
