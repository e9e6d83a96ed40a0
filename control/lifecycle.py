"""The control plane's lifecycle: load state at startup (SQLite, then the origin's catalog,
retried while the origin starts), flush play counts and job progress in the background,
and flush once more and close the store at shutdown.

Rules of this module: every background task is strongly referenced from
`ControlState.background` and cancelled at cleanup; a failed flush puts its work back so
the next one retries it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from common.content import Catalog, default_catalog
from common.errors import OcsimError, UpstreamError
from common.logs import event
from control.health import DOWN_AFTER_MISSED
from control.state import STATE, ControlState
from control.store import AsyncStore, Store

log = logging.getLogger("ocsim.control")


async def flush(st: ControlState) -> None:
    """Write play counts and job progress changed since the last flush."""
    async with st.flush_lock:
        deltas, st.play_deltas = st.play_deltas, {}
        plans, jobs = st.jobs.take_dirty()
        try:
            if deltas:
                await st.db().call(st.db().store.add_plays, deltas)
            if plans or jobs:
                await st.db().call(st.db().store.save_progress, plans, jobs)
        except Exception:
            # Put the work back so the next flush retries it.
            for k, n in deltas.items():
                st.play_deltas[k] = st.play_deltas.get(k, 0) + n
            for p in plans:
                st.jobs.mark_dirty(p, time.time())
            raise


async def _flusher(st: ControlState) -> None:
    interval = st.config.flush_interval_s
    while True:
        await asyncio.sleep(interval)
        now = time.time()

        def alive(edge_id: str) -> bool:  # not yet `down` by the health table's rule
            rec = st.fleet.edges.get(edge_id)
            missed = rec.health.missed_at(now) if rec is not None else None
            return missed is not None and missed < DOWN_AFTER_MISSED

        for p in st.jobs.sweep(now, st.config.plan_timeout_s, alive):
            event(log, "fill plan timed out", level=logging.WARNING, plan=p.plan_id, edge=p.edge_id)
        try:
            await flush(st)
        except Exception:
            log.exception("flush failed; will retry")


async def fetch_origin_catalog(url: str, wait_s: float) -> Catalog:
    """GET {origin}/v1/catalog, retrying until `wait_s` has passed (the origin may start with us)."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    last = ""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            try:
                async with session.get(url.rstrip("/") + "/v1/catalog") as resp:
                    if resp.status == 200:
                        return Catalog.from_json(await resp.json(content_type=None))
                    last = f"status {resp.status}"
            except OcsimError as exc:
                raise UpstreamError(f"origin catalog: {exc.reason}") from None
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise UpstreamError(f"origin catalog from {url}: {last}")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)


async def _load(st: ControlState) -> None:
    cfg = st.config
    store = AsyncStore(await asyncio.get_running_loop().run_in_executor(None, Store, cfg.db_path))
    st.store = store
    s = store.store
    if cfg.catalog is not None:
        await store.call(s.merge_catalog, list(cfg.catalog.titles.values()))
    if cfg.origin_url:
        try:
            fetched = await fetch_origin_catalog(cfg.origin_url, cfg.origin_wait_s)
        except UpstreamError as exc:
            catalog, _ = await store.call(s.load_catalog)
            if not len(catalog):
                raise
            event(log, "origin catalog unavailable; using the stored catalog", level=logging.WARNING,
                  error=exc.reason, titles=len(catalog))
        else:
            await store.call(s.merge_catalog, list(fetched.titles.values()))
    catalog, retired = await store.call(s.load_catalog)
    if not len(catalog) and not retired and cfg.catalog is None and not cfg.origin_url:
        await store.call(s.merge_catalog, list(default_catalog().titles.values()))
        catalog, retired = await store.call(s.load_catalog)
    st.catalog = catalog
    st.plays = await store.call(s.load_plays)
    st.fleet.admin_down.update(await store.call(s.load_admin))
    now = time.time()
    for job in await store.call(s.load_jobs, now):
        st.jobs.add(job)
    resumed = sum(1 for j in st.jobs.jobs.values() if not j.state.terminal)
    event(log, "control state loaded", titles=len(catalog), retired=len(retired), jobs=len(st.jobs.jobs),
          resumed_jobs=resumed, db=str(cfg.db_path))


async def lifecycle(app: web.Application) -> AsyncIterator[None]:
    st = app[STATE]
    await _load(st)
    task = asyncio.create_task(_flusher(st), name="control-flusher")
    st.background.add(task)
    task.add_done_callback(st.background.discard)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await flush(st)
        except Exception:
            log.exception("final flush failed")
        if st.store is not None:
            await asyncio.get_running_loop().run_in_executor(None, st.store.close)
            st.store = None

