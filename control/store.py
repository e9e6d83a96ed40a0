"""The control plane's durable state in one SQLite file: catalog, popularity, jobs, plans.

SQLite in WAL mode, one connection, used from one dedicated thread: `Store` methods are
plain synchronous calls, and the service calls them through `AsyncStore`, which runs
each in a single-thread executor so the event loop never waits on the disk (a WAL commit
with fsync is ~0.1-5 ms, too long to do inline at play rates). Writes that the API
promises are durable (a new job, a catalog change) are awaited before the answer;
progress and play counts are batched by the service and flushed about once a second.

What is deliberately not stored: edge registrations and heartbeats. After a restart,
edges get 404 on their next heartbeat and register again within a second, and plans
are re-sent from the `plans` table.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from common.content import Catalog, Title
from common.wire import FillPlanState
from control.jobs import Job, PlanRecord
from control.window import FillWindow

SCHEMA = """
CREATE TABLE IF NOT EXISTS titles (
    id TEXT PRIMARY KEY,
    duration_s REAL NOT NULL,
    renditions TEXT NOT NULL,
    popularity REAL NOT NULL,
    media TEXT NOT NULL DEFAULT 'synthetic',
    retired INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS plays (
    isp TEXT NOT NULL,
    title TEXT NOT NULL,
    plays INTEGER NOT NULL,
    PRIMARY KEY (isp, title)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    isp TEXT NOT NULL,
    titles TEXT NOT NULL,
    renditions TEXT,
    bandwidth_bps INTEGER NOT NULL,
    unplaced TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    edge_id TEXT NOT NULL,
    titles TEXT NOT NULL,
    paths TEXT NOT NULL,
    bandwidth_bps INTEGER NOT NULL,
    issued_at REAL NOT NULL,
    state TEXT NOT NULL,
    done_objects INTEGER NOT NULL,
    done_bytes INTEGER NOT NULL,
    failed_objects INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS plans_by_job ON plans(job_id);
CREATE TABLE IF NOT EXISTS edge_admin (
    edge_id TEXT PRIMARY KEY,
    down INTEGER NOT NULL
);
"""

T = TypeVar("T")


class Store:
    """Synchronous access to the SQLite file; use it from one thread at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: created on the caller's thread, then used only on the
        # AsyncStore's single worker thread (never concurrently).
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        for table in ("jobs", "plans"):  # added for file placement; older files lack it
            cols = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if "detail" not in cols:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN detail TEXT NOT NULL DEFAULT '{{}}'")
        if "media" not in {row[1] for row in self.db.execute("PRAGMA table_info(titles)")}:  # older files
            self.db.execute("ALTER TABLE titles ADD COLUMN media TEXT NOT NULL DEFAULT 'synthetic'")

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return out

    # -- catalog -----------------------------------------------------------------
    def load_catalog(self) -> tuple[Catalog, set[str]]:
        """The active titles, and the ids an operator retired."""
        active, retired = [], set()
        for tid, dur, rends, pop, media, ret in self.db.execute(
                "SELECT id, duration_s, renditions, popularity, media, retired FROM titles"):
            if ret:
                retired.add(tid)
            else:
                active.append(Title(tid, dur, tuple(json.loads(rends)), pop, media=media))
        return Catalog.of(active), retired

    def merge_catalog(self, titles: Iterable[Title]) -> None:
        """Upsert titles from the origin; a title the operator retired stays retired."""
        now = time.time()

        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO titles (id, duration_s, renditions, popularity, media, retired, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT(id) DO UPDATE SET duration_s=excluded.duration_s, "
                "renditions=excluded.renditions, popularity=excluded.popularity, media=excluded.media, "
                "updated_at=excluded.updated_at",
                [(t.id, t.duration_s, json.dumps(list(t.renditions)), t.popularity, t.media, now) for t in titles])
        self._tx(run)

    def put_title(self, title: Title) -> None:
        """Add (or re-activate) one title."""
        self.db.execute(
            "INSERT INTO titles (id, duration_s, renditions, popularity, media, retired, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT(id) DO UPDATE SET duration_s=excluded.duration_s, "
            "renditions=excluded.renditions, popularity=excluded.popularity, media=excluded.media, retired=0, "
            "updated_at=excluded.updated_at",
            (title.id, title.duration_s, json.dumps(list(title.renditions)), title.popularity, title.media,
             time.time()))

    def retire_title(self, title_id: str) -> None:
        self.db.execute("UPDATE titles SET retired=1, updated_at=? WHERE id=?", (time.time(), title_id))

    # -- popularity --------------------------------------------------------------
    def load_plays(self) -> dict[tuple[str, str], int]:
        return {(isp, t): n for isp, t, n in self.db.execute("SELECT isp, title, plays FROM plays")}

    def add_plays(self, deltas: Mapping[tuple[str, str], int]) -> None:
        if not deltas:
            return

        def run(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO plays (isp, title, plays) VALUES (?, ?, ?) "
                           "ON CONFLICT(isp, title) DO UPDATE SET plays = plays + excluded.plays",
                           [(isp, t, n) for (isp, t), n in deltas.items()])
        self._tx(run)

    # -- edges -------------------------------------------------------------------
    def load_admin(self) -> dict[str, bool]:
        return {e: bool(d) for e, d in self.db.execute("SELECT edge_id, down FROM edge_admin")}

    def set_admin(self, edge_id: str, down: bool) -> None:
        self.db.execute("INSERT INTO edge_admin (edge_id, down) VALUES (?, ?) "
                        "ON CONFLICT(edge_id) DO UPDATE SET down=excluded.down", (edge_id, int(down)))

    # -- jobs --------------------------------------------------------------------
    def insert_job(self, job: Job) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO jobs (id, isp, titles, renditions, bandwidth_bps, unplaced, error, state, created_at, "
                "updated_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.isp, json.dumps(list(job.titles)),
                 json.dumps(list(job.renditions)) if job.renditions is not None else None,
                 job.bandwidth_bps, json.dumps(list(job.unplaced)), job.error, job.state,
                 job.created_at, job.updated_at, json.dumps(_job_detail(job))))
            db.executemany(
                "INSERT INTO plans (plan_id, job_id, edge_id, titles, paths, bandwidth_bps, issued_at, state, "
                "done_objects, done_bytes, failed_objects, total_bytes, error, detail) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(p.plan_id, p.job_id, p.edge_id, json.dumps(list(p.titles)), json.dumps(list(p.paths)),
                  p.bandwidth_bps, p.issued_at, p.state, p.done_objects, p.done_bytes, p.failed_objects,
                  p.total_bytes, p.error, json.dumps(_plan_detail(p))) for p in job.plans])
        self._tx(run)

    def save_progress(self, plans: Iterable[PlanRecord], jobs: Iterable[Job]) -> None:
        plan_rows = [(p.state, p.done_objects, p.done_bytes, p.failed_objects, p.error, p.plan_id) for p in plans]
        job_rows = [(j.state, j.updated_at, j.id) for j in jobs]
        if not plan_rows and not job_rows:
            return

        def run(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE plans SET state=?, done_objects=?, done_bytes=?, failed_objects=?, error=? "
                           "WHERE plan_id=?", plan_rows)
            db.executemany("UPDATE jobs SET state=?, updated_at=? WHERE id=?", job_rows)
        self._tx(run)

    def load_jobs(self, now: float) -> list[Job]:
        """Every job with its plans; plans' timeout clocks start at `now`."""
        plans: dict[str, list[PlanRecord]] = {}
        for row in self.db.execute(
                "SELECT plan_id, job_id, edge_id, titles, paths, bandwidth_bps, issued_at, state, done_objects, "
                "done_bytes, failed_objects, total_bytes, error, detail FROM plans ORDER BY rowid"):
            (pid, jid, eid, titles, paths, bw, issued, state, dobj, dbytes, fobj, tbytes, err, detail) = row
            d = json.loads(detail)
            plans.setdefault(jid, []).append(PlanRecord(
                pid, jid, eid, tuple(json.loads(titles)), tuple(json.loads(paths)), bw, issued, FillPlanState(state),
                dobj, dbytes, fobj, tbytes, now, err, tuple(d.get("files", ())), tuple(d.get("file_sizes", ())),
                tuple(d.get("unpin_files", ())), tuple(d.get("unpin_paths", ())), tuple(d.get("sources", ()))))
        jobs = []
        for row in self.db.execute(
                "SELECT id, isp, titles, renditions, bandwidth_bps, unplaced, error, created_at, updated_at, detail "
                "FROM jobs ORDER BY created_at"):
            jid, isp, titles, rends, bw, unplaced, err, created, updated, detail = row
            d = json.loads(detail)
            w = d.get("window")
            jobs.append(Job(jid, isp, tuple(json.loads(titles)),
                            tuple(json.loads(rends)) if rends is not None else None, bw, created,
                            plans.get(jid, []), tuple(json.loads(unplaced)), err, updated,
                            {k: tuple(v) for k, v in d.get("placed", {}).items()}, dict(d.get("left_out", {})),
                            FillWindow(w[0], w[1], w[2]) if w else None, bool(d.get("refresh", False)),
                            str(d.get("popularity", "")), str(d.get("popularity_note", ""))))
        return jobs


def _job_detail(job: Job) -> dict[str, Any]:
    w = job.window
    return {"placed": {k: list(v) for k, v in job.placed.items()}, "left_out": job.left_out,
            "window": [w.start_min, w.end_min, w.tz] if w is not None else None, "refresh": job.refresh,
            "popularity": job.popularity, "popularity_note": job.popularity_note}


def _plan_detail(p: PlanRecord) -> dict[str, Any]:
    return {"files": list(p.files), "file_sizes": list(p.file_sizes), "unpin_files": list(p.unpin_files),
            "unpin_paths": list(p.unpin_paths), "sources": list(p.sources)}


class AsyncStore:
    """Runs Store calls on one worker thread, so SQLite never blocks the event loop."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="control-db")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.submit(self.store.close).result()
        self._pool.shutdown(wait=True)
