"""Near-real-time views: the SQL over the event store, as data.

Two kinds, both plain SQL over the tables of `pipeline.store` (one per event type):

- **series** (`SERIES`): a metric bucketed by time step and keyed by ISP or edge, what the
  read API's `GET /v1/series` and the dashboard draw;
- **named views** (`VIEWS`): tables a person reads (`ocsim query --view NAME`).

Rules of this module:
1. Pure: functions return (sql, params); nothing here opens a database. The clock is a
   parameter (`now`), so the aggregations are tested on hand-computed events.
2. Definitions (Netflix's, as DESIGN.md states them): offload = 1 - origin bytes / bytes
   to players; a content miss = the edge steering chose first did not hold the title; a
   health miss = an edge of the client's ISP held it but was ranked down for health or
   load; popularity of a file in an ISP = bytes streamed of it / its size, over a window.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from common.errors import BadRequest
from common.events import CACHE_OUTCOMES

MISS_CLASSES = tuple(c for c in CACHE_OUTCOMES if c not in ("hit", "none"))
_MISS_LIST = ", ".join(f"'{c}'" for c in MISS_CLASSES)

STEPS = {"1s": 1, "10s": 10, "1m": 60}
BY = ("isp", "edge")
DEFAULT_WINDOW_S = 300.0
MAX_WINDOW_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Metric:
    """One series: `value` is an aggregate over `table` rows matching `where`, per bucket and key."""

    name: str
    unit: str
    help: str
    table: str
    value: str
    where: str = "TRUE"
    per_second: bool = False  # divide the bucket's value by the step
    sql: str = ""             # a whole query instead (must yield t, key, value; uses {step} and {key_*})
    edge_column: str = "edge" # what `by=edge` groups on (steering: the first edge it offered)


_SESSION_END = "phase = 'end'"
_CONTENT = "status < 400 AND cache <> 'none'"

SERIES: dict[str, Metric] = {m.name: m for m in [
    Metric("sps", "1/s", "stream starts per second (player.session start)", "player_session", "count(*)",
           "phase = 'start'", per_second=True),
    Metric("plays", "1/s", "steering decisions per second", "steer_play", "count(*)", per_second=True,
           edge_column="candidates[1]"),
    Metric("bytes_to_players", "B/s", "body bytes the edges sent", "edge_request", "sum(bytes)", per_second=True),
    Metric("bytes_from_origin", "B/s", "bytes the edges filled from the origin", "edge_fill", "sum(bytes)",
           "source = 'origin'", per_second=True),
    Metric("requests", "1/s", "requests the edges answered", "edge_request", "count(*)", per_second=True),
    Metric("hit_ratio", "ratio", "hits / content requests", "edge_request",
           "avg(CASE WHEN cache = 'hit' THEN 1.0 ELSE 0.0 END)", _CONTENT),
    Metric("misses", "1/s", "misses of every class", "edge_request", "count(*)", f"cache IN ({_MISS_LIST})",
           per_second=True),
    *[Metric(f"misses.{c}", "1/s", f"{c} misses", "edge_request", "count(*)", f"cache = '{c}'", per_second=True)
      for c in MISS_CLASSES],
    Metric("ttfb_p50", "s", "time to first byte, median", "edge_request", "quantile_cont(ttfb_s, 0.5)", _CONTENT),
    Metric("ttfb_p99", "s", "time to first byte, 99th percentile", "edge_request", "quantile_cont(ttfb_s, 0.99)",
           _CONTENT),
    Metric("startup_s", "s", "mean start-up delay of sessions that ended", "player_session", "avg(startup_s)",
           _SESSION_END),
    Metric("rebuffer_ratio", "ratio", "rebuffer time / (play + rebuffer time) of sessions that ended",
           "player_session", "sum(rebuffer_s) / nullif(sum(played_s + rebuffer_s), 0)", _SESSION_END),
    Metric("bitrate_kbps", "kbit/s", "play-time weighted mean bitrate of sessions that ended", "player_session",
           "sum(avg_bitrate_kbps * played_s) / nullif(sum(played_s), 0)", _SESSION_END),
    Metric("offload", "ratio", "1 - origin bytes / bytes to players", "edge_request", "", sql="""
        WITH p AS (SELECT floor(ts / {step}) * {step} AS t, {key_r} AS key, sum(bytes) AS b
                   FROM edge_request WHERE ts >= $since GROUP BY 1, 2),
             o AS (SELECT floor(ts / {step}) * {step} AS t, {key_f} AS key, sum(bytes) AS b
                   FROM edge_fill WHERE ts >= $since AND source = 'origin' GROUP BY 1, 2)
        SELECT p.t AS t, p.key AS key, CASE WHEN p.b > 0 THEN 1.0 - coalesce(o.b, 0) / p.b END AS value
        FROM p LEFT JOIN o ON p.t = o.t AND p.key IS NOT DISTINCT FROM o.key ORDER BY 1, 2"""),
]}


def series_sql(metric: str, by: str, step: str, since: float) -> tuple[str, dict[str, object]]:
    """The query for one series: rows (t, key, value), ordered by t then key."""
    m = SERIES.get(metric)
    if m is None:
        raise BadRequest(f"unknown metric {metric[:40]!r}; known: {', '.join(SERIES)}")
    if by not in BY:
        raise BadRequest(f"by must be one of {', '.join(BY)}")
    if step not in STEPS:
        raise BadRequest(f"step must be one of {', '.join(STEPS)}")
    seconds = STEPS[step]
    if m.sql:
        sql = m.sql.format(step=seconds, key_r=by, key_f=by)
    else:
        value = f"({m.value}) / {seconds}.0" if m.per_second else m.value
        key = m.edge_column if by == "edge" else by
        sql = (f"SELECT floor(ts / {seconds}) * {seconds} AS t, {key} AS key, {value} AS value "
               f"FROM {m.table} WHERE ts >= $since AND ({m.where}) GROUP BY 1, 2 ORDER BY 1, 2")
    return sql, {"since": since}


@dataclass(frozen=True, slots=True)
class View:
    name: str
    help: str
    sql: str  # may use $since (now - window)


VIEWS: dict[str, View] = {v.name: v for v in [
    View("events", "events stored, by type", " UNION ALL ".join(
        f"SELECT '{t}' AS type, count(*) AS events FROM {t}" for t in (
            "edge_request", "edge_fill", "edge_evict", "steer_play", "player_session", "job_progress",
            "chaos_fault", "events_dropped"))),
    View("edges", "per edge: requests, bytes, hits, misses by class, hit ratio, TTFB", f"""
        SELECT isp, edge, count(*) AS requests, sum(bytes) AS bytes,
               count(*) FILTER (WHERE cache = 'hit') AS hits,
               count(*) FILTER (WHERE cache IN ({_MISS_LIST})) AS misses,
               {", ".join(f"count(*) FILTER (WHERE cache = '{c}') AS {c}" for c in MISS_CLASSES)},
               count(*) FILTER (WHERE cache = 'hit') / nullif(count(*) FILTER (WHERE {_CONTENT}), 0) AS hit_ratio,
               quantile_cont(ttfb_s, 0.5) FILTER (WHERE {_CONTENT}) AS ttfb_p50,
               quantile_cont(ttfb_s, 0.99) FILTER (WHERE {_CONTENT}) AS ttfb_p99
        FROM edge_request WHERE ts >= $since GROUP BY 1, 2 ORDER BY 1, 2"""),
    View("offload", "per ISP: bytes to players, bytes from origin and peers, offload", """
        WITH p AS (SELECT isp, sum(bytes) AS to_players FROM edge_request WHERE ts >= $since GROUP BY 1),
             f AS (SELECT isp, sum(bytes) FILTER (WHERE source = 'origin') AS from_origin,
                          sum(bytes) FILTER (WHERE source = 'peer') AS from_peers
                   FROM edge_fill WHERE ts >= $since GROUP BY 1)
        SELECT p.isp, p.to_players, coalesce(f.from_origin, 0) AS from_origin, coalesce(f.from_peers, 0) AS from_peers,
               CASE WHEN p.to_players > 0 THEN 1.0 - coalesce(f.from_origin, 0) / p.to_players END AS offload
        FROM p LEFT JOIN f ON p.isp = f.isp ORDER BY 1"""),
    View("misses", "misses by ISP, edge and class", f"""
        SELECT isp, edge, cache AS class, count(*) AS misses, sum(bytes) AS bytes
        FROM edge_request WHERE ts >= $since AND cache IN ({_MISS_LIST}) GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""),
    View("steering_misses", "plays by ISP: how many steering answered with a content or a health miss", """
        SELECT coalesce(isp, '') AS isp, count(*) AS plays,
               count(*) FILTER (WHERE content_miss) AS content_misses,
               count(*) FILTER (WHERE health_miss) AS health_misses
        FROM steer_play WHERE ts >= $since GROUP BY 1 ORDER BY 1"""),
    View("miss_causes", "edge misses joined to the steering decision of their session: content, health or edge",
         f"""
        SELECT r.isp,
               CASE WHEN s.play_id IS NULL THEN 'unjoined'
                    WHEN s.content_miss THEN 'content'
                    WHEN s.health_miss THEN 'health'
                    ELSE 'edge' END AS cause,
               count(*) AS misses, sum(r.bytes) AS bytes
        FROM edge_request r LEFT JOIN steer_play s ON s.play_id = r.session
        WHERE r.ts >= $since AND r.cache IN ({_MISS_LIST}) GROUP BY 1, 2 ORDER BY 1, 2"""),
    View("popularity", "per ISP and file: bytes streamed / file size over the window", """
        SELECT isp, path, title, sum(bytes) / max(object_bytes) AS popularity, sum(bytes) AS bytes,
               count(*) AS requests
        FROM edge_request
        WHERE ts >= $since AND object_bytes > 0 AND status IN (200, 206) AND title IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 1, popularity DESC, 2"""),
    View("file_bytes", "per ISP and file (a rendition of a title): bytes streamed over the window; "
         "divided by the file's size, its popularity (what pre-positioning reads)", """
        SELECT isp, title, rendition, sum(bytes) AS bytes, count(*) AS requests
        FROM edge_request
        WHERE ts >= $since AND status IN (200, 206) AND title IS NOT NULL AND rendition IS NOT NULL
        GROUP BY 1, 2, 3 ORDER BY 1, bytes DESC, 2, 3"""),
    View("title_popularity", "per ISP and title: the sum of its files' popularity over the window", """
        WITH f AS (SELECT isp, title, path, sum(bytes) / max(object_bytes) AS popularity
                   FROM edge_request
                   WHERE ts >= $since AND object_bytes > 0 AND status IN (200, 206) AND title IS NOT NULL
                   GROUP BY 1, 2, 3)
        SELECT isp, title, sum(popularity) AS popularity FROM f GROUP BY 1, 2 ORDER BY 1, popularity DESC, 2"""),
    View("sessions", "sessions that ended, with their QoE", """
        SELECT session, title, isp, edge, state, startup_s, rebuffer_count, rebuffer_s, avg_bitrate_kbps,
               switches, failovers, errors, bytes, segments, played_s, qoe_lin, verified, ts
        FROM player_session WHERE ts >= $since AND phase = 'end' ORDER BY ts, session"""),
    View("qoe", "per ISP: sessions, start-up delay, rebuffer ratio, bitrate, QoE", """
        SELECT coalesce(isp, '') AS isp, count(*) AS sessions, sum(bytes) AS bytes,
               avg(startup_s) AS startup_s, quantile_cont(startup_s, 0.9) AS startup_p90_s,
               sum(rebuffer_s) / nullif(sum(played_s + rebuffer_s), 0) AS rebuffer_ratio,
               sum(avg_bitrate_kbps * played_s) / nullif(sum(played_s), 0) AS bitrate_kbps,
               avg(qoe_lin) AS qoe_lin, sum(errors) AS errors
        FROM player_session WHERE ts >= $since AND phase = 'end' GROUP BY 1 ORDER BY 1"""),
    View("sps", "stream starts per second", """
        SELECT floor(ts) AS t, count(*) AS starts FROM player_session
        WHERE ts >= $since AND phase = 'start' GROUP BY 1 ORDER BY 1"""),
    View("jobs", "pre-positioning jobs: the last progress of each", """
        SELECT job, isp, arg_max(state, ts) AS state, max(progress) AS progress, max(done_objects) AS done_objects,
               max(total_objects) AS total_objects, max(done_bytes) AS done_bytes, max(ts) AS ts
        FROM job_progress WHERE ts >= $since GROUP BY 1, 2 ORDER BY ts"""),
    View("dropped", "events publishers dropped, by source", """
        SELECT src, sum(dropped) AS dropped, max(total) AS total, max(ts) AS last_ts
        FROM events_dropped WHERE ts >= $since GROUP BY 1 ORDER BY 1"""),
    View("ingest_latency", "event time to committed in the store, p50 / p99 / max (seconds)", """
        WITH l AS (SELECT ingested_at - ts AS d FROM edge_request WHERE ts >= $since
                   UNION ALL SELECT ingested_at - ts FROM player_session WHERE ts >= $since
                   UNION ALL SELECT ingested_at - ts FROM steer_play WHERE ts >= $since)
        SELECT count(*) AS events, quantile_cont(d, 0.5) AS p50_s, quantile_cont(d, 0.99) AS p99_s, max(d) AS max_s
        FROM l"""),
]}


def view_sql(name: str) -> str:
    v = VIEWS.get(name)
    if v is None:
        raise BadRequest(f"unknown view {name[:40]!r}; known: {', '.join(VIEWS)}")
    return v.sql


_RELATIVE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(s|m|h)\Z")


def parse_since(value: str | None, now: float, default_window: float = DEFAULT_WINDOW_S) -> float:
    """`since`: epoch seconds, or a window back from now (`90s`, `5m`, `1h`); default 5 minutes."""
    if value is None or value == "":
        return now - default_window
    m = _RELATIVE.match(value)
    if m:
        window = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]
        if window > MAX_WINDOW_S:
            raise BadRequest("since: window longer than 7 days")
        return now - window
    try:
        since = float(value)
    except ValueError:
        raise BadRequest("since must be epoch seconds or a window like 90s, 5m, 1h") from None
    if not 0 <= since < 1e11:
        raise BadRequest("since out of range")
    return since
