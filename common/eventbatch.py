"""Batch frames: many events of one type from one source in one msgpack map.

    {"frame": 2, "type": str, "v": int, "src": str, "n": int,
     "id": {"base": str, "first": int} | [str, ...],
     "fields": [name | [name, ...], ...],   # what each row holds after its time
     "const": {name: value, ...},           # fields with one value for every event of the frame
     "rows": [[ts, value, ...], ...]}       # n rows: the event's time, then its `fields`

`fields` and `const` together name every payload field of `type` version `v`, each once. An
entry of `fields` that is a list of names is a group: the row holds an array of those fields'
values there (the edge keeps one such tuple per path: path, title, rendition, segment).
Each of the n events still carries the whole envelope of DESIGN "Events": its own id and
time (`id[i]`, `rows[i][0]`) and the frame's type, schema version and source. An id run
`{"base": b, "first": k}` names the ids `f"{b}-{k + i:x}"` (what `common.events.IdSource`
makes), so a publisher sends its ids without formatting one string per event; a list names
them one by one. This is the publishers' wire format: the hot path appends one flat tuple
per event, and one `msgpack` call packs the list of them; the collector turns rows into
the columns the store wants with one `zip`. Version 1 frames (an array of packed event
maps, `common.events.pack_frame`) are still read.

Rules of this module:
1. No IO, no clock. Packing trusts its caller (the sink, values in SPECS order); decoding
   trusts nothing: `decode_frame_batches` never raises, and an event that is not one we
   accept is counted by one of `REJECT_REASONS` and left out, its frame-mates kept.
2. Checks are per column first (C-speed set/min/max over the column); only a column that
   fails is walked value by value, to find which events to leave out.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from common.events import (
    CHOICES, MAX_EVENT_BYTES, MAX_FRAME_BYTES, MAX_FRAME_EVENTS, MAX_TS, SPECS, SUPPORTED_VERSIONS, BadEvent,
    Event, EventRow, Kind, PAYLOADS, _check, _unpack_event, decode_row,
)

FRAME_V2: Final = 2
MAX_ID_LEN: Final = 128
_FRAME_KEYS: Final = frozenset({"frame", "type", "v", "src", "n", "id", "fields", "const", "rows"})
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
    """One batch frame for `len(rows)` events whose ids are the run `id_base`, `first_id`, ...
    Each row is `(ts, *values of fields)`; `const` holds the other fields (trusted: the sink's)."""
    return _PACKER.pack({"frame": FRAME_V2, "type": etype, "v": version, "src": src, "n": len(rows),  # type: ignore[no-any-return]
                         "id": {"base": id_base, "first": first_id}, "fields": fields, "const": const,
                         "rows": rows})


def pack_batch_ids(etype: str, version: int, src: str, ids: Sequence[str], rows: Sequence[Sequence[Any]]) -> bytes:
    """A batch frame with the ids listed one by one; rows are `(ts, *every field in SPECS order)`."""
    return _PACKER.pack({"frame": FRAME_V2, "type": etype, "v": version, "src": src, "n": len(rows),  # type: ignore[no-any-return]
                         "id": list(ids), "fields": _NAMES[etype], "const": {}, "rows": rows})


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
    n = obj.get("n")
    if type(n) is not int or not 0 <= n <= MAX_FRAME_EVENTS:
        _add(out.rejected, "malformed")
        return
    if obj.get("frame") != FRAME_V2 or obj.keys() != _FRAME_KEYS:
        _add(out.rejected, "malformed", max(n, 1))
        return
    etype, v, src = obj["type"], obj["v"], obj["src"]
    if type(etype) is not str or type(v) is not int or type(src) is not str:
        _add(out.rejected, "malformed", n)
        return
    specs = SPECS.get(etype)
    if specs is None:
        _add(out.rejected, "unknown_type", n)
        return
    if v not in SUPPORTED_VERSIONS[etype]:
        _add(out.rejected, "unknown_version", n)
        return
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
    if n == 0:
        return
    bad: dict[int, str] = {}  # event index -> why it is left out (the first reason found)
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
