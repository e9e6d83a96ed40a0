"""Pre-position jobs and their fill plans: the bookkeeping, with no IO and no clock.

A job asks for titles on one ISP's edges. The placement planner decides which edge
gets which titles; each edge's share becomes one fill plan (a list of content paths:
the master playlist, the media playlists and every segment of the chosen renditions).
Very large shares are split into several plans so a plan always fits in one
`ControlReply` (see MAX_PATHS_PER_PLAN). The control plane hands a plan to its edge in
heartbeat replies until the edge reports it `done` or `failed`; a job's state follows
from its plans' states.

Rules of this module:

1. A plan's state changes only through PLAN_TRANSITIONS; terminal states are final.
2. A job's state and progress are computed from its plans, never stored separately
   (the store keeps a copy only for listing).
3. Time is passed in; nothing here sleeps or reads a clock.
"""
from __future__ import annotations

import enum
import functools
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.content import Title
from common.ids import INIT_SEGMENT, master_path
from common.wire import REPORTED_PLAN_STATES, FillPlan, FillPlanState, FillProgress
from control.placement import EdgeSpace, FilePlacement, split_file_key
from control.window import FillWindow, is_open

PENDING, RUNNING, DONE, FAILED = FillPlanState.PENDING, FillPlanState.RUNNING, FillPlanState.DONE, FillPlanState.FAILED
PLAN_STATES = tuple(FillPlanState)
TERMINAL = frozenset(s for s in FillPlanState if s.terminal)


class JobState(enum.StrEnum):
    """A job's state, summed up from its plans' (Job.state, Job.state_at):

    pending -> (waiting: outside its ISP's fill window) -> running -> done | partial | failed.
    `partial`: every plan done, but some asked-for files were left out (no room); the job
    says which and why. `failed`: a plan failed, or nothing at all could be placed."""

    PENDING = "pending"
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.PARTIAL, JobState.FAILED)


JOB_STATES = tuple(JobState)
MAX_PATHS_PER_PLAN = 8000  # ~300 KB of msgpack: several plans fit under wire.MAX_MESSAGE_BYTES

# (state, event) -> next state. Events: "delivered" (sent to the edge in a reply), the
# edge's reported states (common.wire.REPORTED_PLAN_STATES), and "timeout" (edge gone too long).
PLAN_TRANSITIONS: dict[tuple[FillPlanState, str], FillPlanState] = {
    (PENDING, "delivered"): RUNNING,
    (PENDING, RUNNING): RUNNING,
    (PENDING, DONE): DONE,
    (PENDING, FAILED): FAILED,
    (PENDING, "timeout"): FAILED,
    (RUNNING, "delivered"): RUNNING,
    (RUNNING, RUNNING): RUNNING,
    (RUNNING, DONE): DONE,
    (RUNNING, FAILED): FAILED,
    (RUNNING, "timeout"): FAILED,
}


def new_job_id() -> str:
    return "job-" + secrets.token_hex(5)


def title_paths(title: Title, renditions: Sequence[int] | None = None) -> list[str]:
    """Every content path of `title` for `renditions` (default all), playlists first."""
    chosen = [r for r in title.renditions if renditions is None or r in renditions]
    paths = [master_path(title.id)]
    paths += [f"/content/{title.id}/{r}/index.m3u8" for r in chosen]
    for r in chosen:
        paths += [f"/content/{title.id}/{r}/{i}.seg" for i in range(title.segment_count)]
    return paths


def title_bytes(title: Title, renditions: Sequence[int] | None = None) -> int:
    """Segment bytes of `title` for `renditions` (playlists are a rounding error)."""
    return sum(rendition_bytes(title, r) for r in title.renditions if renditions is None or r in renditions)


@functools.lru_cache(maxsize=8192)
def rendition_bytes(title: Title, rendition: int) -> int:
    # One hash per segment: ~10 ms for a long title's ladder, so remember it (titles are frozen).
    return title.rendition_bytes(rendition)


@dataclass(slots=True)
class PlanRecord:
    plan_id: str
    job_id: str
    edge_id: str
    titles: tuple[str, ...]
    paths: tuple[str, ...]
    bandwidth_bps: int
    issued_at: float
    state: FillPlanState = PENDING
    done_objects: int = 0
    done_bytes: int = 0
    failed_objects: int = 0
    total_bytes: int = 0
    last_seen: float = 0.0  # when the edge last showed signs of life (for the timeout)
    error: str = ""
    files: tuple[str, ...] = ()  # file keys ("title/rendition") this plan fills
    file_sizes: tuple[int, ...] = ()  # their bytes, in the same order
    unpin_files: tuple[str, ...] = ()  # file keys the edge unpins before filling (a refresh)
    unpin_paths: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()  # peer edge URLs to fill from before the origin (tier fill)

    @property
    def total_objects(self) -> int:
        return len(self.paths)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def fill_plan(self) -> FillPlan:
        return FillPlan(plan_id=self.plan_id, job_id=self.job_id, edge_id=self.edge_id,
                        paths=list(self.paths), bandwidth_bps=self.bandwidth_bps,
                        issued_at=self.issued_at, pin=True, sources=list(self.sources),
                        unpin=list(self.unpin_paths))

    def apply(self, event: str) -> bool:
        """Apply one event; True if the state changed."""
        nxt = PLAN_TRANSITIONS.get((self.state, event))
        if nxt is None or nxt == self.state:
            return False
        self.state = nxt
        if nxt is DONE:
            self.done_objects = self.total_objects
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.plan_id, "edge": self.edge_id, "state": self.state,
            "titles": list(self.titles),
            "done_objects": self.done_objects, "total_objects": self.total_objects,
            "done_bytes": self.done_bytes, "total_bytes": self.total_bytes,
            "failed_objects": self.failed_objects,
        }
        if self.files:
            out["files"] = list(self.files)
        if self.unpin_files:
            out["unpinned"] = list(self.unpin_files)
        if self.sources:
            out["sources"] = list(self.sources)
        if self.error:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class Job:
    id: str
    isp: str
    titles: tuple[str, ...]
    renditions: tuple[int, ...] | None
    bandwidth_bps: int
    created_at: float
    plans: list[PlanRecord] = field(default_factory=list)
    unplaced: tuple[str, ...] = ()
    error: str = ""
    updated_at: float = 0.0
    placed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # file key -> edges (file jobs)
    left_out: dict[str, str] = field(default_factory=dict)  # file key -> why it was not placed
    window: FillWindow | None = None  # plans go out only while it is open (None: at once)
    refresh: bool = False
    popularity: str = ""  # what the files were valued by: "pipeline" or "catalog" (control.popularity)
    popularity_note: str = ""  # why the catalog, when a pipeline is configured

    @property
    def state(self) -> JobState:
        if not self.plans:  # nothing to fill: every file already placed, or none fitted
            return JobState.FAILED if (self.unplaced or self.left_out) else JobState.DONE
        states = {p.state for p in self.plans}
        if states <= TERMINAL:
            if FAILED in states:
                return JobState.FAILED
            return JobState.PARTIAL if (self.left_out or self.unplaced) else JobState.DONE
        if states == {PENDING}:
            return JobState.PENDING
        return JobState.RUNNING

    def deliverable(self, now: float) -> bool:
        """May its plans go out to the edges now (rule: jobs outside the window wait)?"""
        return self.window is None or is_open(self.window, now)

    def state_at(self, now: float) -> JobState:
        state = self.state
        if state is JobState.PENDING and not self.deliverable(now):
            return JobState.WAITING
        return state

    @property
    def progress(self) -> float:
        total = sum(p.total_objects for p in self.plans)
        if not total:
            return 1.0 if self.state in (JobState.DONE, JobState.PARTIAL) else 0.0
        done = sum(p.total_objects if p.state is DONE else min(p.done_objects, p.total_objects)
                   for p in self.plans)
        return round(done / total, 4)

    def to_json(self, with_plans: bool = True, now: float | None = None) -> dict[str, Any]:
        state = self.state if now is None else self.state_at(now)
        out: dict[str, Any] = {
            "id": self.id, "state": state, "progress": self.progress, "isp": self.isp,
            "titles": list(self.titles),
            "renditions": list(self.renditions) if self.renditions is not None else None,
            "bandwidth_bps": self.bandwidth_bps, "unplaced": list(self.unplaced),
            "created_at": self.created_at, "updated_at": self.updated_at,
        }
        if self.placed or self.left_out:
            out["placed"] = {k: list(v) for k, v in self.placed.items()}
            out["left_out"] = dict(self.left_out)
            out["shortfall"] = len(self.left_out)
        if self.refresh:
            out["refresh"] = True
        if self.popularity:
            out["popularity"] = self.popularity
        if self.popularity_note:
            out["popularity_note"] = self.popularity_note
        if self.window is not None:
            out["window"] = str(self.window)
        if state is JobState.WAITING:
            out["waiting_for"] = f"fill window {self.window}"
        if self.error:
            out["error"] = self.error
        if with_plans:
            out["plans"] = [p.to_json() for p in self.plans]
        return out


def build_plans(job_id: str, assignments: Mapping[str, Sequence[str]], titles: Mapping[str, Title],
                renditions: Sequence[int] | None, bandwidth_bps: int, now: float,
                max_paths: int = MAX_PATHS_PER_PLAN) -> list[PlanRecord]:
    """One plan per edge (more when an edge's share exceeds `max_paths`), in edge order."""
    plans: list[PlanRecord] = []
    for edge_id in sorted(assignments):
        chunk_paths: list[str] = []
        chunk_titles: list[str] = []
        chunk_bytes = 0

        def flush() -> None:
            nonlocal chunk_paths, chunk_titles, chunk_bytes
            if chunk_paths:
                plans.append(PlanRecord(f"{job_id}-{len(plans) + 1}", job_id, edge_id, tuple(chunk_titles),
                                        tuple(chunk_paths), bandwidth_bps, now, total_bytes=chunk_bytes,
                                        last_seen=now))
            chunk_paths, chunk_titles, chunk_bytes = [], [], 0

        for tid in assignments[edge_id]:
            title = titles[tid]
            paths = title_paths(title, renditions)
            if chunk_paths and len(chunk_paths) + len(paths) > max_paths:
                flush()
            for start in range(0, len(paths), max_paths):
                part = paths[start:start + max_paths]
                if chunk_paths and len(chunk_paths) + len(part) > max_paths:
                    flush()
                chunk_paths += part
                if tid not in chunk_titles:
                    chunk_titles.append(tid)
            chunk_bytes += title_bytes(title, renditions)
        flush()
    return plans


def file_paths(title: Title, rendition: int) -> list[str]:
    """A file's content paths: its media playlist, its init segment (packaged media), then every segment."""
    head = [f"/content/{title.id}/{rendition}/index.m3u8"]
    if title.media == "packaged":
        head.append(f"/content/{title.id}/{rendition}/{INIT_SEGMENT}")
    return head + [f"/content/{title.id}/{rendition}/{i}.seg" for i in range(title.segment_count)]


def build_file_plans(job_id: str, placement: FilePlacement, titles: Mapping[str, Title], bandwidth_bps: int,
                     now: float, sources: Mapping[str, Sequence[str]] | None = None,
                     max_paths: int = MAX_PATHS_PER_PLAN) -> list[PlanRecord]:
    """Fill plans of a file placement: per edge (sorted), its unpins and its files, most
    valuable first, in plans of at most `max_paths` paths (a file is never split unless it
    alone exceeds that). A title's master playlist goes with its first file on the edge.
    `sources`: edge id -> peer URLs its plans fill from before the origin."""
    plans: list[PlanRecord] = []
    for edge_id in sorted(set(placement.fills) | set(placement.unpins)):
        keys = placement.fills.get(edge_id, ())
        unpins = placement.unpins.get(edge_id, ())
        if not keys and not unpins:
            continue
        unpin_paths: list[str] = []
        for key in unpins:
            tid, rend = split_file_key(key)
            if tid in titles:
                unpin_paths += file_paths(titles[tid], rend)
        chunks: list[tuple[list[str], list[str], list[int]]] = [([], [], [])]
        masters: set[str] = set()
        for key in keys:
            tid, rend = split_file_key(key)
            title = titles[tid]
            paths = file_paths(title, rend)
            if tid not in masters:
                masters.add(tid)
                paths.insert(0, master_path(tid))
            if chunks[-1][0] and len(chunks[-1][0]) + len(paths) > max_paths:
                chunks.append(([], [], []))
            chunks[-1][0].extend(paths)
            chunks[-1][1].append(key)
            chunks[-1][2].append(rendition_bytes(title, rend))
        for i, (paths, files, sizes) in enumerate(chunks):
            plans.append(PlanRecord(
                f"{job_id}-{len(plans) + 1}", job_id, edge_id,
                tuple(dict.fromkeys(split_file_key(f)[0] for f in files)), tuple(paths), bandwidth_bps, now,
                total_bytes=sum(sizes), last_seen=now, files=tuple(files), file_sizes=tuple(sizes),
                unpin_files=unpins if i == 0 else (), unpin_paths=tuple(unpin_paths) if i == 0 else (),
                sources=tuple((sources or {}).get(edge_id, ()))))
    return plans


class JobBook:
    """All known jobs, indexed by plan and by edge; remembers what changed since the last save."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.plans: dict[str, PlanRecord] = {}
        self._dirty_plans: set[str] = set()
        self._dirty_jobs: set[str] = set()

    def add(self, job: Job) -> None:
        self.jobs[job.id] = job
        for p in job.plans:
            self.plans[p.plan_id] = p

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def listing(self) -> list[Job]:
        return sorted(self.jobs.values(), key=lambda j: (-j.created_at, j.id))

    def outstanding(self, edge_id: str, now: float | None = None) -> list[PlanRecord]:
        """Plans the edge must (still) be told about, oldest first; with `now`, only those
        of jobs whose fill window is open (a plan already running is resent regardless)."""
        out = []
        for p in self.plans.values():
            if p.edge_id != edge_id or p.terminal:
                continue
            job = self.jobs.get(p.job_id)
            if now is not None and p.state is PENDING and job is not None and not job.deliverable(now):
                continue
            out.append(p)
        return out

    def mark_dirty(self, plan: PlanRecord, now: float) -> None:
        self._dirty_plans.add(plan.plan_id)
        self._dirty_jobs.add(plan.job_id)
        job = self.jobs.get(plan.job_id)
        if job is not None:
            job.updated_at = now

    def delivered(self, plan: PlanRecord, now: float) -> None:
        if plan.apply("delivered"):
            self.mark_dirty(plan, now)

    def report(self, edge_id: str, fills: Iterable[FillProgress], now: float) -> list[PlanRecord]:
        """Apply an edge's progress reports; reports about other edges' plans are ignored."""
        changed: list[PlanRecord] = []
        for fp in fills:
            plan = self.plans.get(fp.plan_id)
            if plan is None or plan.edge_id != edge_id or plan.terminal:
                continue
            moved = plan.apply(fp.state) if fp.state in REPORTED_PLAN_STATES else False
            counts = (max(0, min(fp.done_objects, plan.total_objects)), max(0, fp.done_bytes),
                      max(0, fp.failed_objects))
            if plan.state is DONE:
                counts = (plan.total_objects, counts[1], counts[2])
            if moved or counts != (plan.done_objects, plan.done_bytes, plan.failed_objects):
                plan.done_objects, plan.done_bytes, plan.failed_objects = counts
                if plan.state is FAILED and not plan.error:
                    plan.error = "edge reported failure"
                self.mark_dirty(plan, now)
                changed.append(plan)
        return changed

    def seen(self, edge_id: str, now: float) -> None:
        """The edge is alive: its plans' timeout clocks restart."""
        for p in self.plans.values():
            if p.edge_id == edge_id and not p.terminal:
                p.last_seen = now

    def sweep(self, now: float, timeout_s: float, alive: Callable[[str], bool]) -> list[PlanRecord]:
        """Fail plans whose edge has not been alive for `timeout_s`."""
        failed: list[PlanRecord] = []
        for p in self.plans.values():
            if p.terminal:
                continue
            if alive(p.edge_id):
                p.last_seen = now
            elif now - p.last_seen > timeout_s:
                p.apply("timeout")
                p.error = f"edge {p.edge_id} unavailable for {timeout_s:g}s"
                self.mark_dirty(p, now)
                failed.append(p)
        return failed

    def space_for(self, edge_id: str, free_bytes: int, reported_titles: frozenset[str]) -> EdgeSpace:
        """What the placement planner may use on an edge: its free bytes less what plans in
        flight will still write, and as held, the titles placed by finished plans that the
        edge still reports plus those in flight (so two jobs never book the same space or
        fill the same title twice). A heartbeat's titles alone are no placement: they also
        list titles of which the edge caches a few segments."""
        pending_bytes, pending_titles = 0, set[str]()
        for p in self.plans.values():
            if p.edge_id == edge_id and not p.terminal:
                pending_bytes += max(0, p.total_bytes - p.done_bytes)
                pending_titles.update(p.titles)
        held = (self.placed_titles(edge_id) & reported_titles) | pending_titles
        return EdgeSpace(edge_id, max(0, free_bytes - pending_bytes), frozenset(held))

    def in_flight_bytes(self, edge_id: str) -> int:
        """Bytes plans not yet finished on the edge will still write (rule F1's in_flight)."""
        return sum(max(0, p.total_bytes - p.done_bytes) for p in self.plans.values()
                   if p.edge_id == edge_id and not p.terminal)

    def placed_files(self, edge_id: str) -> dict[str, int]:
        """File key -> bytes, of the files placed on the edge: filled by its done plans, or
        booked by plans in flight, less what later plans unpinned, in issue order."""
        held: dict[str, int] = {}
        for p in sorted((p for p in self.plans.values() if p.edge_id == edge_id),
                        key=lambda p: (p.issued_at, p.plan_id)):
            if p.state is FAILED:
                continue
            for f in p.unpin_files:
                held.pop(f, None)
            for f, size in zip(p.files, p.file_sizes):
                held[f] = size
        return held

    def placed_titles(self, edge_id: str) -> frozenset[str]:
        """Titles whose plans on this edge are done."""
        return frozenset(t for p in self.plans.values() if p.edge_id == edge_id and p.state is DONE
                         for t in p.titles)

    def take_dirty(self) -> tuple[list[PlanRecord], list[Job]]:
        plans = [self.plans[i] for i in sorted(self._dirty_plans) if i in self.plans]
        jobs = [self.jobs[i] for i in sorted(self._dirty_jobs) if i in self.jobs]
        self._dirty_plans.clear()
        self._dirty_jobs.clear()
        return plans, jobs

    def counts_by_state(self) -> dict[JobState, int]:
        out = {s: 0 for s in JOB_STATES}
        for j in self.jobs.values():
            out[j.state] += 1
        return out
