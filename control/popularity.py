"""Where a pre-position job's file values come from: the event pipeline, else the catalog.

Issue 12's value of a file (a rendition of a title) in an ISP is "bytes streamed divided
by the file's size over a window, from the event pipeline when there is one, from the
catalog's popularity otherwise". So:

1. With a pipeline (`--pipeline URL`, which `ocsim up --events` passes), a job reads the
   collector's `file_bytes` view (`GET /v1/views/file_bytes?since=<window>s`), keeps the
   rows of its ISP, and divides each file's bytes by the file's size (`measured`). The
   value is then `control.placement.forecast_values(measured, prior)`, the prior being the
   catalog's popularity split over renditions (`file_values`), and only the catalog's: the
   plays of rule 2 are counted since start-up, so as a prior they would bring back every
   past day with as much weight as the window (`valuation`).
2. Without one, or when it does not answer within PIPELINE_TIMEOUT_S, or has measured
   nothing in that ISP over the window, the value is the catalog's (plus the plays the
   control plane counted in that ISP): `file_values(prior_by_title, ...)`.

The job records which one it used (`Job.popularity`: "pipeline" or "catalog", with the
reason for a fallback), so an operator can see what a placement was based on. Only the
fetch is IO; the rest are plain functions over rows.

Known bias: `edge.request` events do not say who asked, so bytes an edge served to a peer
filling from it (tier fill, `FillPlan.sources`) count as streamed in the ISP too.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from common.content import Title
from control.jobs import rendition_bytes
from control.placement import file_key, file_values, forecast_values

log = logging.getLogger("ocsim.control")

PIPELINE_TIMEOUT_S = 5.0
VIEW = "file_bytes"
PIPELINE, CATALOG = "pipeline", "catalog"


@dataclass(frozen=True, slots=True)
class FileBytes:
    """One row of the pipeline's `file_bytes` view."""

    isp: str
    title: str
    rendition: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Valuation:
    values: dict[str, float]  # file key -> value
    source: str               # PIPELINE or CATALOG
    note: str = ""            # why the catalog, when a pipeline is configured


def rows_of(answer: Any) -> list[FileBytes]:
    """The rows of a `file_bytes` answer (`{"columns", "rows"}`); malformed rows are skipped."""
    if not isinstance(answer, dict):
        raise ValueError("the pipeline's answer is not a JSON object")
    columns, rows = answer.get("columns"), answer.get("rows")
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise ValueError("the pipeline's answer has no columns and rows")
    try:
        at = {name: columns.index(name) for name in ("isp", "title", "rendition", "bytes")}
    except ValueError:
        raise ValueError(f"the pipeline's {VIEW} view lacks a column (has {columns})") from None
    out = []
    for r in rows:
        if not isinstance(r, list) or len(r) < len(columns):
            continue
        isp, title, rendition, size = (r[at[c]] for c in ("isp", "title", "rendition", "bytes"))
        if isinstance(isp, str) and isinstance(title, str) and isinstance(rendition, int) \
                and isinstance(size, (int, float)) and size >= 0:
            out.append(FileBytes(isp, title, rendition, int(size)))
    return out


def measured_values(rows: Sequence[FileBytes], isp: str, catalog: Mapping[str, Title]) -> dict[str, float]:
    """File key -> bytes streamed in `isp` / the file's size, for files the catalog has."""
    out: dict[str, float] = {}
    for row in rows:
        title = catalog.get(row.title)
        if row.isp != isp or title is None or row.rendition not in title.renditions:
            continue
        size = rendition_bytes(title, row.rendition)
        if size > 0:
            key = file_key(row.title, row.rendition)
            out[key] = out.get(key, 0.0) + row.bytes / size
    return out


def valuation(prior_by_title: Mapping[str, float], ladders: Mapping[str, Sequence[int]],
              measured: Mapping[str, float] | None, note: str = "", *,
              fallback_by_title: Mapping[str, float] | None = None) -> Valuation:
    """The values a job places by: measured (rule 1) when there is anything measured,
    with `prior_by_title` (the catalog's popularity) as the forecast's prior; else
    `fallback_by_title` (rule 2: the catalog plus the plays the control plane counted),
    or `prior_by_title` when there is no fallback.

    The fallback is never the forecast's prior: plays are counted since the control plane
    started, so as a prior they would carry every past day into tonight's values with as
    much weight as the window's measurement (a release that was hot two days ago would
    keep its pins), which is what the popularity window is there to prevent."""
    if measured:
        forecast = forecast_values(measured, file_values(prior_by_title, ladders))
        if any(v > 0 for v in forecast.values()):
            return Valuation(forecast, PIPELINE)
    fallback = file_values(prior_by_title if fallback_by_title is None else fallback_by_title, ladders)
    return Valuation(fallback, CATALOG, note or ("" if measured is None else "the pipeline measured nothing here"))


async def fetch_file_bytes(pipeline_url: str, window_s: float) -> list[FileBytes]:
    """The collector's `file_bytes` view over the last `window_s` seconds (raises on failure)."""
    url = f"{pipeline_url.rstrip('/')}/v1/views/{VIEW}"
    timeout = aiohttp.ClientTimeout(total=PIPELINE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        async with http.get(url, params={"since": f"{int(window_s)}s"}) as resp:
            if resp.status != 200:
                raise ValueError(f"the pipeline answered {resp.status} for {VIEW}")
            return rows_of(await resp.json())


async def measured_from_pipeline(pipeline_url: str, window_s: float, isp: str,
                                 catalog: Mapping[str, Title]) -> tuple[dict[str, float] | None, str]:
    """(measured values, "") from the pipeline, or (None, why not) when it cannot say."""
    try:
        rows = await fetch_file_bytes(pipeline_url, window_s)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        why = f"the pipeline at {pipeline_url} did not answer: {str(exc) or type(exc).__name__}"
        log.warning("popularity from the catalog", extra={"fields": {"reason": why}})
        return None, why
    return measured_values(rows, isp, catalog), ""
