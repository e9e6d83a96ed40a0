"""Batch frames: many events of one type from one source in one msgpack map.

Version 3, the column frame (what publishers send):

    {"frame": 3, "type": str, "v": int, "src": str, "n": int,
     "id": {"base": str, "first": int} | [str, ...],
     "ts": column,                           # the n events' times
     "cols": {name: column, ...},            # payload fields, one column each
     "groups": [[[name, ...], table, refs], ...]}   # fields a table row gives together

A column is one of: an array of n values; `{"same": value}` (every event has it);
`{"f64": bytes}` (n little-endian IEEE doubles); `{"like": name}` (the same values as the
column `name` of `cols`, which is not itself a `like`). A group names consecutive fields
(the edge sends path, title, rendition and segment so): `table` is an array of entries
`[key, value, ...]` (a key, then one value per name) and `refs` a column of n keys, so a
path that is requested 500 times in a frame is sent once. `cols` and `groups` together name
every payload field of `type` version `v`, each once. Each of the n events still carries
the whole envelope of DESIGN "Events": its own id and time (`id[i]`, `ts[i]`) and the
frame's type, schema version and source. An id run `{"base": b, "first": k}` names the ids
`f"{b}-{k + i:x}"` (what `common.events.IdSource` makes), so a publisher sends its ids
without formatting one string per event; a list names them one by one.

This is the publishers' format because it is cheap to make: the hot path appends its
values to one flat list, a take slices that list into columns (C speed), and each column
is packed whole: times as raw doubles, repeated values once, paths by reference.

Version 2 frames (`{"frame": 2, ..., "fields", "const", "rows"}`: a row of values per
event, `pack_batch`) and version 1 frames (an array of packed event maps,
`common.events.pack_frame`) are still read.

Rules of this module:
1. No IO, no clock. Packing trusts its caller (the sink, values in SPECS order); decoding
   trusts nothing: `decode_frame_batches` never raises, and an event that is not one we
   accept is counted by one of `REJECT_REASONS` and left out, its frame-mates kept.
2. Checks are per column first (C-speed set/min/max over the column); only a column that
   fails is walked value by value, to find which events to leave out.
"""
from __future__ import annotations

import math
import operator
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from common.events import (
    CHOICES, MAX_EVENT_BYTES, MAX_FRAME_BYTES, MAX_FRAME_EVENTS, MAX_TS, SPECS, SUPPORTED_VERSIONS, BadEvent,
    Event, EventRow, Kind, PAYLOADS, _check, _unpack_event, decode_row,
)

FRAME_V2: Final = 2
FRAME_V3: Final = 3
MAX_ID_LEN: Final = 128
_FRAME_KEYS: Final = frozenset({"frame", "type", "v", "src", "n", "id", "fields", "const", "rows"})
_FRAME_V3_KEYS: Final = frozenset({"frame", "type", "v", "src", "n", "id", "ts", "cols", "groups"})
_BIG_ENDIAN: Final = sys.byteorder == "big"
_first: Final = operator.itemgetter(0)
_INT64: Final = (-(2 ** 63), 2 ** 63 - 1)
_NAMES: Final[dict[str, tuple[str, ...]]] = {t: tuple(sp.name for sp in specs) for t, specs in SPECS.items()}
_KIND_TYPES: Final[dict[Kind, frozenset[type]]] = {
    Kind.STR: frozenset({str}), Kind.INT: frozenset({int}), Kind.FLOAT: frozenset({float, int}),
    Kind.BOOL: frozenset({bool}), Kind.STRS: frozenset({list})}
_NONE: Final = frozenset({type(None)})
_PACKER = msgpack.Packer(use_bin_type=True, autoreset=True)  # one per process: the sink's one task packs


@dataclass(slots=True)
class ColumnBatch:
    """Decoded events of one type and version, as columns (what the store inserts)."""

    etype: str
    v: int
    ids: list[str]
    ts: Sequence[float | int]
    src: list[str]
    cols: list[Sequence[Any]]  # one sequence per payload field, in SPECS order

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class Batches:
    batches: list[ColumnBatch]
    rejected: dict[str, int]

    @property
    def events(self) -> int:
        return sum(len(b) for b in self.batches)


def id_of(base: str, n: int) -> str:
    """The n-th id of a run (the same string `IdSource(base).next()` returns the n-th time)."""
    return f"{base}-{n:x}"


def pack_batch(etype: str, version: int, src: str, id_base: str, first_id: int, fields: Sequence[str | Sequence[str]],
               const: dict[str, Any], rows: Sequence[Sequence[Any]]) -> bytes:
    """A version 2 (row) frame for `len(rows)` events whose ids are the run `id_base`,
    `first_id`, ... Each row is `(ts, *values of fields)`; `const` holds the other fields.
    Publishers send version 3 now; this writes what older ones sent (tests of the reader)."""
    return _PACKER.pack({"frame": FRAME_V2, "type": etype, "v": version, "src": src, "n": len(rows),  # type: ignore[no-any-return]
                         "id": {"base": id_base, "first": first_id}, "fields": fields, "const": const,
                         "rows": rows})


def pack_columns(etype: str, version: int, src: str, n: int, ids: dict[str, Any] | Sequence[str], ts: Any,
                 cols: dict[str, Any], groups: Sequence[Sequence[Any]] = ()) -> bytes:
    """One column frame (version 3) of `n` events: `ids` an id run `{"base", "first"}` or the
    ids listed, `ts` and each of `cols` a column (`f64_column`, `plain_column`, `{"like":
    name}`), each of `groups` `[names, table, refs]` (`ref_group`). Trusted: the sink's own
    values."""
    return _PACKER.pack({"frame": FRAME_V3, "type": etype, "v": version, "src": src, "n": n,  # type: ignore[no-any-return]
                         "id": ids, "ts": ts, "cols": cols, "groups": groups})


def f64_column(values: Sequence[Any]) -> Any:
    """Numbers as `{"f64": n little-endian doubles}`; a column with a None in it (an optional
    field) as `plain_column`."""
    try:
        a = array("d", values)
    except TypeError:
        return plain_column(values)
    if _BIG_ENDIAN:
        a.byteswap()
    return {"f64": a.tobytes()}


def plain_column(values: Sequence[Any]) -> Any:
    """`{"same": v}` when every value equals the first (one C-speed count), else the values."""
    if values and values.count(values[0]) == len(values):
        return {"same": values[0]}
    return values


def ref_group(values: Sequence[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], Any]:
    """A group's values, one keyed tuple per event (`(key, *values)`, the same key for the same
    values: `common.eventsink.ref`), as the table of the distinct tuples and the column of
    their keys; at C speed, so a path requested 500 times in a frame is sent once."""
    keys = list(map(_first, values))
    return list(dict(zip(keys, values)).values()), plain_column(keys)


# -- decoding ---------------------------------------------------------------------------------


def _add(rejected: dict[str, int], reason: str, n: int = 1) -> None:
    if n:
        rejected[reason] = rejected.get(reason, 0) + n


def decode_frame_batches(frame: bytes) -> Batches:
    """A frame of either version -> its good events as column batches, the rest counted."""
    out = Batches([], {})
    if len(frame) > MAX_FRAME_BYTES:
        _add(out.rejected, "oversized")
        return out
    try:
        obj = msgpack.unpackb(frame, raw=False, use_list=True, strict_map_key=True,
                              max_array_len=MAX_FRAME_EVENTS, max_bin_len=MAX_FRAME_BYTES)
    except Exception:  # msgpack raises a zoo of exception types on garbage
        _add(out.rejected, "malformed")
        return out
    if type(obj) is dict:
        if obj.get("frame") == FRAME_V3:
            _decode_v3(obj, out)
        else:
            _decode_v2(obj, out)
    elif type(obj) is list and all(type(b) is bytes for b in obj):
        _decode_v1(obj, out)
    else:
        _add(out.rejected, "malformed")
    return out


def _decode_v1(bodies: list[bytes], out: Batches) -> None:
    rows: list[EventRow] = []
    for body in bodies:
        try:
            rows.append(decode_row(_unpack_event(body)))
        except BadEvent as exc:
            _add(out.rejected, exc.reason)
    out.batches.extend(batches_of_rows(rows))


def batches_of_rows(rows: Sequence[EventRow]) -> list[ColumnBatch]:
    """Decoded rows (`common.events.decode_row`) -> column batches, one per (type, version)."""
    groups: dict[tuple[str, int], list[EventRow]] = {}
    for row in rows:
        groups.setdefault((row[0], row[4]), []).append(row)
    out = []
    for (etype, v), group in groups.items():
        _, ids, ts, src, _, values = zip(*group)
        cols: list[Sequence[Any]] = [list(c) for c in zip(*values)] if values[0] else [[] for _ in SPECS[etype]]
        out.append(ColumnBatch(etype, v, list(ids), list(ts), list(src), cols))
    return out


def _decode_v2(obj: dict[str, Any], out: Batches) -> None:
    header = _header(obj, _FRAME_KEYS, FRAME_V2, out)
    if header is None:
        return
    n, etype, v, src = header
    ids = _ids_of(obj["id"], n)
    fields, const, rows = obj["fields"], obj["const"], obj["rows"]
    if (ids is None or type(fields) is not list or type(const) is not dict or type(rows) is not list
            or len(rows) != n):
        _add(out.rejected, "malformed", n)
        return
    names = _NAMES[etype]
    flat = [f for entry in fields for f in (entry if type(entry) is list else (entry,))]
    if (not all(type(f) is str for f in flat) or len(set(flat)) != len(flat)
            or set(flat) & const.keys() or set(flat) | const.keys() != set(names)):
        _add(out.rejected, "bad_field", n)
        return
    width = len(fields) + 1
    if n and (set(map(type, rows)) != {list} or set(map(len, rows)) != {width}):
        _add(out.rejected, "malformed", n)
        return
    transposed: list[Sequence[Any]] = list(zip(*rows)) if n else [() for _ in range(width)]
    ts: Sequence[Any] = transposed[0]
    by_name: dict[str, Sequence[Any]] = {}
    for entry, col in zip(fields, transposed[1:]):
        if type(entry) is not list:
            by_name[entry] = col
            continue
        if n and (set(map(type, col)) != {list} or set(map(len, col)) != {len(entry)}):
            _add(out.rejected, "malformed", n)
            return
        by_name.update(zip(entry, zip(*col) if n else [() for _ in entry]))
    columns = [by_name[name] if name in by_name else [const[name]] * n for name in names]
    _finish(etype, v, src, ids, ts, columns, {}, out)


def _header(obj: dict[str, Any], keys: frozenset[str], version: int,
            out: Batches) -> tuple[int, str, int, str] | None:
    """A v2/v3 frame's event count, type, version and source if its header names a type and
    version we take, else None (its events counted under the reason)."""
    n = obj.get("n")
    if type(n) is not int or not 0 <= n <= MAX_FRAME_EVENTS:
        _add(out.rejected, "malformed")
        return None
    if obj.get("frame") != version or obj.keys() != keys:
        _add(out.rejected, "malformed", max(n, 1))
        return None
    etype, v, src = obj["type"], obj["v"], obj["src"]
    if type(etype) is not str or type(v) is not int or type(src) is not str:
        _add(out.rejected, "malformed", n)
        return None
    if etype not in SPECS:
        _add(out.rejected, "unknown_type", n)
        return None
    if v not in SUPPORTED_VERSIONS[etype]:
        _add(out.rejected, "unknown_version", n)
        return None
    return n, etype, v, src


def _column(raw: Any, n: int) -> list[Any] | None:
    """A v3 column as n values, or None if it is not one (a `like` is resolved by the caller)."""
    if type(raw) is list:
        return raw if len(raw) == n else None
    if type(raw) is not dict or len(raw) != 1:
        return None
    if "same" in raw:
        return [raw["same"]] * n
    packed = raw.get("f64")
    if type(packed) is bytes and len(packed) == 8 * n:
        a = array("d")
        a.frombytes(packed)
        if _BIG_ENDIAN:
            a.byteswap()
        return a.tolist()
    return None


def _decode_v3(obj: dict[str, Any], out: Batches) -> None:
    header = _header(obj, _FRAME_V3_KEYS, FRAME_V3, out)
    if header is None:
        return
    n, etype, v, src = header
    ids, ts = _ids_of(obj["id"], n), _column(obj["ts"], n)
    cols, groups = obj["cols"], obj["groups"]
    if ids is None or ts is None or type(cols) is not dict or type(groups) is not list:
        _add(out.rejected, "malformed", n)
        return
    names = _NAMES[etype]
    group_names: list[list[str]] = []
    for g in groups:
        if type(g) is not list or len(g) != 3 or type(g[0]) is not list or not g[0] or type(g[1]) is not list:
            _add(out.rejected, "malformed", n)
            return
        group_names.append(g[0])
    flat = [*cols, *(f for g in group_names for f in g)]
    if (not all(type(f) is str for f in flat) or len(set(flat)) != len(flat) or set(flat) != set(names)):
        _add(out.rejected, "bad_field", n)
        return
    by_name: dict[str, Sequence[Any]] = {}
    likes: dict[str, Any] = {}
    for name, raw in cols.items():
        if type(raw) is dict and len(raw) == 1 and "like" in raw:
            likes[name] = raw["like"]
            continue
        col = _column(raw, n)
        if col is None:
            _add(out.rejected, "malformed", n)
            return
        by_name[name] = col
    for name, other in likes.items():
        if type(other) is not str or other not in by_name or other in likes:
            _add(out.rejected, "malformed", n)
            return
        by_name[name] = by_name[other]
    bad: dict[int, str] = {}  # event index -> why it is left out (the first reason found)
    for (gnames, table, raw_refs) in groups:
        refs = _column(raw_refs, n)
        width = len(gnames) + 1
        if refs is None or not all(type(e) is list and len(e) == width for e in table):
            _add(out.rejected, "malformed", n)
            return
        lookup: dict[Any, tuple[Any, ...]] = {}
        for e in table:
            if type(e[0]) is not int or e[0] in lookup:
                _add(out.rejected, "malformed", n)
                return
            lookup[e[0]] = tuple(e[1:])
        missing = (None,) * len(gnames)
        values: list[tuple[Any, ...]] = []
        for i, r in enumerate(refs):
            got = lookup.get(r) if type(r) is int else None
            if got is None:
                bad.setdefault(i, "malformed")
                got = missing
            values.append(got)
        by_name.update(zip(gnames, zip(*values) if n else [() for _ in gnames]))
    columns = [by_name[name] for name in names]
    _finish(etype, v, src, ids, ts, columns, bad, out)


def _finish(etype: str, v: int, src: str, ids: list[str], ts: Sequence[Any], columns: list[Sequence[Any]],
            bad: dict[int, str], out: Batches) -> None:
    """Check a decoded frame's envelope and columns; keep its good events, count the rest."""
    n = len(ids)
    if n == 0:
        return
    specs = SPECS[etype]
    _check_envelope(ids, ts, bad)
    for spec, col in zip(specs, columns):
        _check_column(etype, spec.name, spec.kind, spec.optional, col, bad)
    _check_sizes(specs, columns, bad)
    if bad:
        for reason in bad.values():
            _add(out.rejected, reason)
        keep = [i for i in range(n) if i not in bad]
        if not keep:
            return
        ids = [ids[i] for i in keep]
        ts = [ts[i] for i in keep]
        columns = [[c[i] for i in keep] for c in columns]
    out.batches.append(ColumnBatch(etype, v, ids, ts, [src] * len(ids), columns))


def _ids_of(raw: Any, n: int) -> list[str] | None:
    """The frame's ids as a list (a run expanded), or None if `raw` is neither form."""
    if type(raw) is dict:
        base, first = raw.get("base"), raw.get("first")
        if (raw.keys() != {"base", "first"} or type(base) is not str or not 0 < len(base) <= MAX_ID_LEN - 17
                or type(first) is not int or not 0 <= first < 2 ** 64 - n):
            return None
        return [f"{base}-{k:x}" for k in range(first, first + n)]
    if type(raw) is list and len(raw) == n:
        return raw
    return None


def _check_envelope(ids: Sequence[Any], ts: Sequence[Any], bad: dict[int, str]) -> None:
    if not (set(map(type, ids)) <= {str} and 0 < min(map(len, ids)) and max(map(len, ids)) <= MAX_ID_LEN):
        for i, x in enumerate(ids):
            if type(x) is not str or not 0 < len(x) <= MAX_ID_LEN:
                bad.setdefault(i, "malformed")
    if not (set(map(type, ts)) <= {float, int} and 0 <= min(ts) and max(ts) < MAX_TS
            and not math.isnan(math.fsum(ts))):  # min and max step over a NaN; a sum does not
        for i, t in enumerate(ts):
            if (type(t) is not float and type(t) is not int) or not 0 <= t < MAX_TS:  # NaN fails too
                bad.setdefault(i, "malformed")


def _check_column(etype: str, name: str, kind: Kind, optional: bool, col: Sequence[Any],
                  bad: dict[int, str]) -> None:
    allowed = _KIND_TYPES[kind] | _NONE if optional else _KIND_TYPES[kind]
    present = set(map(type, col))
    ok = present <= allowed
    if ok and kind is Kind.INT:
        ints = [x for x in col if x is not None] if type(None) in present else col
        ok = not ints or (_INT64[0] <= min(ints) and max(ints) <= _INT64[1])
    elif ok and kind is Kind.FLOAT and int in present:  # a whole number is a number, within reason
        ints = [x for x in col if type(x) is int]
        ok = _INT64[0] <= min(ints) and max(ints) <= _INT64[1]
    elif ok and kind is Kind.STRS:
        ok = all(x is None or all(type(s) is str for s in x) for x in col)
    choices = CHOICES.get((etype, name))
    if ok and choices is not None:
        ok = set(col) <= set(choices)
    if ok:
        return
    from common.events import FieldSpec  # only on the slow path
    spec = FieldSpec(name, kind, optional)
    for i, x in enumerate(col):
        if i in bad:
            continue
        try:
            _check(spec, x)
            if type(x) is int and not _INT64[0] <= x <= _INT64[1]:
                raise BadEvent("bad_field", f"{name}: out of range")
            if choices is not None and x not in choices:
                raise BadEvent("bad_field", f"{name} must be one of {choices}")
        except BadEvent:
            bad[i] = "bad_field"


def _check_sizes(specs: Sequence[Any], columns: Sequence[Sequence[Any]], bad: dict[int, str]) -> None:
    """An event whose strings add up past MAX_EVENT_BYTES is oversized (as a v1 event would be)."""
    str_cols = [c for sp, c in zip(specs, columns) if sp.kind is Kind.STR]
    list_cols = [c for sp, c in zip(specs, columns) if sp.kind is Kind.STRS]
    try:  # an upper bound of every event's size, at C speed (a column with a bad value: TypeError)
        bound = sum(max(map(len, filter(None, c)), default=0) for c in str_cols)
        for c in list_cols:
            bound += max((sum(map(len, x)) + 2 * len(x) for x in c if x), default=0)
    except TypeError:
        bound = MAX_EVENT_BYTES
    if bound <= MAX_EVENT_BYTES - 512:  # 512: the envelope and the numbers, generously
        return
    n = len(columns[0]) if columns else 0
    for i in range(n):
        if i in bad:
            continue
        size = sum(len(c[i]) for c in str_cols if type(c[i]) is str)
        size += sum(sum(len(s) for s in c[i] if type(s) is str) + 2 * len(c[i]) for c in list_cols
                    if type(c[i]) is list)
        if size > MAX_EVENT_BYTES - 512:
            bad[i] = "oversized"


def events_of(batch: ColumnBatch) -> list[Event]:
    """A batch as Events (tests and small readers; the collector stores columns)."""
    cls = PAYLOADS[batch.etype]
    specs = SPECS[batch.etype]
    out = []
    rows = zip(*batch.cols) if batch.cols else iter([() for _ in batch.ids])
    for eid, ts, src, values in zip(batch.ids, batch.ts, batch.src, rows):
        vals = tuple(tuple(x) if sp.kind is Kind.STRS and x is not None else
                     float(x) if sp.kind is Kind.FLOAT and type(x) is int else x
                     for sp, x in zip(specs, values))
        out.append(Event(eid, float(ts), src, cls(*vals)))
    return out
