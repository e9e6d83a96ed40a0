"""The event store: DuckDB tables, one per event type, written in committed batches.

Each type's table is named after it (`edge.request` -> `edge_request`) and has the
envelope (`id` PRIMARY KEY, `ts`, `src`, `v`), `ingested_at` (when the collector committed
it) and one column per payload field, typed from `common.events.SPECS`. A batch is one
transaction: its rows go in with `INSERT OR IGNORE`, so an id the store already holds (a
redelivery after a crash) is skipped, and the hours it touched are marked in
`parquet_dirty` in the same transaction. `roll_parquet` writes each dirty hour of each
table to `parquet/<table>/hour=YYYY-MM-DDTHH.parquet` (DuckDB's own COPY; written to a
temporary name, then renamed) once the hour is over, and every dirty hour at shutdown.

Rules of this module:
1. Blocking: every method does disk and CPU work; callers run them in one writer thread.
   Readers use `reader()` (a cursor of the same database) from other threads.
2. The schema is derived from the payload dataclasses; nothing here names a payload field
   except through SPECS.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from common.eventbatch import ColumnBatch, batches_of_rows
from common.events import PAYLOADS, SPECS, Event, EventRow, Kind, row_of

ROLL_GRACE_S = 60.0  # an hour is rolled this long after it ends (late events)


_ARROW: dict[Kind, pa.DataType] = {Kind.STR: pa.string(), Kind.INT: pa.int64(), Kind.FLOAT: pa.float64(),
                                   Kind.BOOL: pa.bool_(), Kind.STRS: pa.list_(pa.string())}


def table_of(event_type: str) -> str:
    return event_type.replace(".", "_")


TABLES = {etype: table_of(etype) for etype in PAYLOADS}


def _column_sql(etype: str) -> list[str]:
    cols = ["id VARCHAR PRIMARY KEY", "ts DOUBLE NOT NULL", "src VARCHAR NOT NULL", "v INTEGER NOT NULL",
            "ingested_at DOUBLE NOT NULL"]
    for spec in SPECS[etype]:
        cols.append(f'"{spec.name}" {spec.kind.value}{"" if spec.optional else " NOT NULL"}')
    return cols


def columns_of(etype: str) -> list[str]:
    return ["id", "ts", "src", "v", "ingested_at", *(s.name for s in SPECS[etype])]


@dataclass(frozen=True, slots=True)
class CommitResult:
    offered: int    # events in the batch (an id twice in it counts twice; stored counts it once)
    stored: int     # rows actually new
    seconds: float


class EventStore:
    def __init__(self, path: str | Path, *, parquet_dir: str | Path | None = None, read_only: bool = False) -> None:
        self.path = str(path)
        self.read_only = read_only
        self.parquet_dir = Path(parquet_dir) if parquet_dir else Path(self.path).with_suffix("").parent / "parquet"
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(self.path, read_only=read_only)
        self._lock = threading.Lock()  # the writer connection is used by one thread at a time
        if not read_only:
            self._create()

    def _create(self) -> None:
        for etype, table in TABLES.items():
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(_column_sql(etype))})")
        self.con.execute("CREATE TABLE IF NOT EXISTS parquet_dirty (tbl VARCHAR, hour BIGINT, PRIMARY KEY (tbl, hour))")

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A connection for one reading thread (a cursor onto the same database)."""
        return self.con.cursor()

    def commit(self, events: list[Event], now: float | None = None) -> CommitResult:
        """Store a batch in one transaction; ids already stored are skipped."""
        return self.commit_rows([row_of(e) for e in events], now)

    def commit_rows(self, rows: list[EventRow], now: float | None = None) -> CommitResult:
        """`commit` for decoded rows (`common.events.decode_row`)."""
        return self.commit_batches(batches_of_rows(rows), now)

    def commit_batches(self, batches: list[ColumnBatch], now: float | None = None) -> CommitResult:
        """`commit` for column batches (the collector's path): one Arrow table per type, one
        `INSERT OR IGNORE` each (the id is the primary key: a stored id is skipped, and so is
        the second of two equal ids in one batch), all in one transaction."""
        t0 = time.perf_counter()
        ingested = time.time() if now is None else now
        by_type: dict[str, list[ColumnBatch]] = {}
        for batch in batches:
            if len(batch):
                by_type.setdefault(batch.etype, []).append(batch)
        offered = sum(len(b) for bs in by_type.values() for b in bs)
        stored = 0
        with self._lock:
            con = self.con
            con.execute("BEGIN TRANSACTION")
            try:
                for etype, group in by_type.items():
                    stored += self._insert(con, etype, group, ingested)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return CommitResult(offered, stored, time.perf_counter() - t0)

    def _insert(self, con: duckdb.DuckDBPyConnection, etype: str, group: list[ColumnBatch], ingested: float) -> int:
        table = TABLES[etype]
        first = group[0]
        ids: list[str]
        ts: Any
        cols: list[Any]
        if len(group) == 1:
            ids, ts, src, cols = first.ids, first.ts, first.src, first.cols
            vs = [first.v] * len(first)
        else:
            ids, ts, src, vs = [], [], [], []
            cols = [[] for _ in first.cols]
            for b in group:
                ids += b.ids
                ts += b.ts
                src += b.src
                vs += [b.v] * len(b)
                for into, col in zip(cols, b.cols):
                    into += col
        n = len(ids)
        arrays = [pa.array(ids, pa.string()), pa.array(ts, pa.float64()), pa.array(src, pa.string()),
                  pa.array(vs, pa.int32()), pa.repeat(pa.scalar(ingested, pa.float64()), n)]
        arrays += [pa.array(col, _ARROW[spec.kind]) for spec, col in zip(SPECS[etype], cols)]
        view = f"batch_{table}"
        con.register(view, pa.Table.from_arrays(arrays, names=columns_of(etype)))
        try:
            before = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            cols_sql = ", ".join(f'"{c}"' for c in columns_of(etype))
            con.execute(f"INSERT OR IGNORE INTO {table} ({cols_sql}) SELECT {cols_sql} FROM {view}")
            after = con.execute(f"SELECT count(*) FROM {table}").fetchone()
            con.execute(f"INSERT OR IGNORE INTO parquet_dirty SELECT DISTINCT '{table}', "
                        f"CAST(floor(ts / 3600) AS BIGINT) FROM {view}")
        finally:
            con.unregister(view)
        assert before is not None and after is not None
        return int(after[0]) - int(before[0])

    def count(self, etype: str | None = None) -> int:
        with self._lock:
            tables = [TABLES[etype]] if etype else list(TABLES.values())
            total = 0
            for t in tables:
                row = self.con.execute(f"SELECT count(*) FROM {t}").fetchone()
                total += int(row[0]) if row else 0
            return total

    def roll_parquet(self, now: float, *, final: bool = False) -> list[Path]:
        """Write each dirty hour that is over (every dirty hour if `final`) to Parquet."""
        written: list[Path] = []
        with self._lock:
            dirty = self.con.execute("SELECT tbl, hour FROM parquet_dirty ORDER BY hour, tbl").fetchall()
            for table, hour in dirty:
                if not final and (hour + 1) * 3600 + ROLL_GRACE_S > now:
                    continue
                if table not in TABLES.values() or not isinstance(hour, int):
                    continue
                out = self.parquet_dir / table / f"hour={time.strftime('%Y-%m-%dT%H', time.gmtime(hour * 3600))}.parquet"
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + f".tmp{os.getpid()}")
                lo, hi = hour * 3600, (hour + 1) * 3600
                self.con.execute(f"COPY (SELECT * FROM {table} WHERE ts >= {lo} AND ts < {hi} ORDER BY ts, id) "
                                 f"TO '{_sql_path(tmp)}' (FORMAT parquet)")
                os.replace(tmp, out)
                self.con.execute("DELETE FROM parquet_dirty WHERE tbl = ? AND hour = ?", [table, hour])
                written.append(out)
        return written

    def checkpoint(self) -> None:
        with self._lock:
            self.con.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self.con.close()


_SAFE_PATH = re.compile(r"[A-Za-z0-9_./:=+-]+\Z")


def _sql_path(path: Path) -> str:
    s = str(path)
    if not _SAFE_PATH.match(s):  # paths are ours (state dir), but never splice a quote into SQL
        raise ValueError(f"unsupported characters in path {s!r}")
    return s
