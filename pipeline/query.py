"""Read-only queries over the event store: what the read API and `ocsim query` run.

Two ways in, both unable to write:
- `open_readonly(paths)`: DuckDB files opened `read_only=True` (the collector stopped, or a
  copy); several stores (collectors sharing one stream) are attached side by side and each
  event table is a view over the UNION ALL of theirs, so every view works unchanged.
- `check_readonly(sql)`: for the collector's own read API, which must share the writer's
  database. The engine's parser decides: exactly one SELECT statement, and its syntax tree
  (`json_serialize_sql`) may name only plain tables and the harmless table functions, so a
  query can neither write, nor attach, nor read files outside the store.
Bad SQL becomes `BadQuery` (400) carrying the engine's own message.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from common.errors import BadRequest
from pipeline.store import TABLES

MAX_ROWS = 10_000
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
_DENIED_FUNCTION = re.compile(r"(read_|glob|getenv|parquet_|sniff_|query_table|query\Z)", re.IGNORECASE)
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class BadQuery(BadRequest):
    """A query the engine refused, or one that is not a plain read (400)."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "truncated": self.truncated}


def _walk(node: Any) -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            fn = (node.get("function") or {}).get("function_name", "")
            if fn not in ALLOWED_TABLE_FUNCTIONS:
                problems.append(f"table function {fn!r} is not allowed")
        elif kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if not _PLAIN_NAME.match(name):
                problems.append(f"table {name!r} is not a table of the store")
        if node.get("class") == "FUNCTION" and _DENIED_FUNCTION.match(str(node.get("function_name", ""))):
            problems.append(f"function {node.get('function_name')!r} is not allowed")
        for v in node.values():
            problems.extend(_walk(v))
    elif isinstance(node, list):
        for v in node:
            problems.extend(_walk(v))
    return problems


def check_readonly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise BadQuery unless `sql` is exactly one plain SELECT over the store."""
    if len(sql) > 20_000:
        raise BadQuery("query longer than 20000 characters")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadQuery(_message(exc)) from None
    if len(statements) != 1:
        raise BadQuery(f"exactly one statement, please (got {len(statements)})")
    if statements[0].type != duckdb.StatementType.SELECT:
        raise BadQuery(f"read-only: {statements[0].type.name} statements are not allowed, only SELECT")
    row = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    tree = json.loads(row[0]) if row else {}
    if tree.get("error"):
        raise BadQuery(str(tree.get("error_message", "unparsable query")))
    problems = _walk(tree.get("statements", []))
    if problems:
        raise BadQuery("read-only: " + "; ".join(sorted(set(problems))[:3]))


def _message(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__


def run(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object] | None = None,
        max_rows: int = MAX_ROWS) -> QueryResult:
    try:
        cur = con.execute(sql, params) if params else con.execute(sql)
        columns = [d[0] for d in (cur.description or [])]
        rows = cur.fetchmany(max_rows + 1)
    except duckdb.Error as exc:
        raise BadQuery(_message(exc)) from None
    truncated = len(rows) > max_rows
    return QueryResult(columns, [[_jsonable(v) for v in r] for r in rows[:max_rows]], truncated)


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return v if v == v and v not in (float("inf"), float("-inf")) else None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def open_readonly(paths: Sequence[str | Path]) -> duckdb.DuckDBPyConnection:
    """One store opened read-only, or several attached read-only behind union views."""
    if not paths:
        raise ValueError("no store given")
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no event store at {p}")
    if len(paths) == 1:
        return duckdb.connect(str(paths[0]), read_only=True)
    con = duckdb.connect(":memory:")
    for i, p in enumerate(paths):
        con.execute(f"ATTACH ? AS s{i} (READ_ONLY)", [str(p)])
    for table in TABLES.values():
        con.execute(f"CREATE VIEW {table} AS " + " UNION ALL ".join(
            f"SELECT * FROM s{i}.main.{table}" for i in range(len(paths))))
    return con
