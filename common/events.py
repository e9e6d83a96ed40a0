"""The pipeline's events as contracts: one msgpack envelope, typed payloads, strict decoding.

An event is its envelope and its payload:

    {"id": str, "type": str, "v": int, "ts": float, "src": str, <payload fields>...}

`id` is unique per event (the collector stores each id once), `type` names the payload
class, `v` its schema version, `ts` seconds since the epoch when it happened, `src` the
service id that emitted it. Events travel in *frames*, one NATS message each. Publishers
send column frames (`common.eventbatch`, frame version 3): the events of one type and source
in one msgpack map, the envelope fields shared by the frame (type, v, src) given once, each
event's id and ts given per event, the payloads as columns (version 2, still read, held
them as rows). A version 1 frame is a msgpack array of events packed one by one as the map
above (each element `bin`; `pack_frame`, `encode`); collectors read all three, and check
and skip each event on its own either way.

Rules of this module:
1. No IO, no clock, no randomness: ids and times are given by the caller (`IdSource`
   takes its prefix; the sink owns the clock).
2. One table, many readers: `PAYLOADS` maps a type to its dataclass; the field kinds
   derived from each dataclass drive decoding here and the store's column types in
   `pipeline/`. A new field or type is a new dataclass field or class, nothing else.
3. Decoding is strict and never raises anything but `BadEvent`, whose `reason` is one of
   `REJECT_REASONS`, so a collector can count what it skipped and why.
"""
from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Final, get_type_hints

import msgpack

from common.errors import BadRequest

MAX_EVENT_BYTES: Final = 8 * 1024          # one packed event
MAX_FRAME_BYTES: Final = 900 * 1024         # under NATS's default 1 MiB max_payload
MAX_FRAME_EVENTS: Final = 4096
MAX_TS: Final = 1e11                        # seconds; year 5138, so any real clock fits
ENVELOPE_FIELDS: Final = ("id", "type", "v", "ts", "src")

REJECT_REASONS: Final = ("malformed", "oversized", "unknown_type", "unknown_version", "bad_field")

# What the edge did for a request: a hit, or the class of miss (DESIGN: edge misses are
# cold, evicted or coalesced; a fill from a peer and a stale serve are their own classes),
# or "none" for answers that never reached the cache (403, 404, 416 ...).
CACHE_OUTCOMES: Final = ("hit", "cold", "evicted", "coalesced", "peer", "stale", "forwarded", "none")
FILL_SOURCES: Final = ("origin", "peer")
FILL_OUTCOMES: Final = ("stored", "uncached", "passed", "failed")
SESSION_PHASES: Final = ("start", "progress", "end")
FAULT_PHASES: Final = ("start", "end")


class BadEvent(BadRequest):
    """An event or frame that is not one we accept; `reason` is one of REJECT_REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in REJECT_REASONS, reason
        super().__init__(reason)
        self.detail = detail


class Kind(enum.Enum):
    """The value kinds a payload field can have; each maps to a check and a SQL type."""

    STR = "VARCHAR"
    INT = "BIGINT"
    FLOAT = "DOUBLE"
    BOOL = "BOOLEAN"
    STRS = "VARCHAR[]"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: Kind
    optional: bool


class Payload:
    """Base of the payload dataclasses. TYPE names the event; VERSION is its schema version."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class EdgeRequest(Payload):
    """One request an edge answered (content paths; /healthz and /metrics are not events)."""

    TYPE: ClassVar[str] = "edge.request"
    edge: str
    isp: str
    path: str
    title: str | None        # None when the path is not a content path
    rendition: int | None    # kbit/s; None for the master playlist
    segment: int | None      # None for playlists
    status: int
    bytes: int               # body bytes sent
    object_bytes: int | None # the whole object's size when known (popularity = bytes / this)
    cache: str               # one of CACHE_OUTCOMES
    ttfb_s: float
    duration_s: float
    session: str | None      # X-Ocsim-Session when the client sent one

    def __post_init__(self) -> None:
        if self.cache not in CACHE_OUTCOMES:
            raise ValueError(f"cache must be one of {CACHE_OUTCOMES}")


@dataclass(frozen=True, slots=True)
class EdgeFill(Payload):
    TYPE: ClassVar[str] = "edge.fill"
    edge: str
    isp: str
    path: str
    title: str | None
    source: str              # one of FILL_SOURCES
    bytes: int
    duration_s: float
    outcome: str             # one of FILL_OUTCOMES

    def __post_init__(self) -> None:
        if self.source not in FILL_SOURCES:
            raise ValueError(f"source must be one of {FILL_SOURCES}")
        if self.outcome not in FILL_OUTCOMES:
            raise ValueError(f"outcome must be one of {FILL_OUTCOMES}")


@dataclass(frozen=True, slots=True)
class EdgeEvict(Payload):
    TYPE: ClassVar[str] = "edge.evict"
    edge: str
    isp: str
    path: str
    title: str | None
    bytes: int
    reason: str              # e.g. "capacity", "purge"


@dataclass(frozen=True, slots=True)
class SteerPlay(Payload):
    """One steering decision; `play_id` is what the player then sends as X-Ocsim-Session."""

    TYPE: ClassVar[str] = "steer.play"
    play_id: str
    title: str
    isp: str | None          # the client's ISP; None when its network is unknown
    candidates: tuple[str, ...]  # edge ids, ranked best first
    first_holds: bool | None     # does the first candidate report holding the title
    content_miss: bool           # the first edge offered did not hold the title
    health_miss: bool            # an edge of the client's ISP was passed over for health


@dataclass(frozen=True, slots=True)
class PlayerSession(Payload):
    """A player's session: one `start`, a `progress` every few segments, one `end`.

    The QoE fields are those of `ocsim play --json`, cumulative so far."""

    TYPE: ClassVar[str] = "player.session"
    session: str             # the play id (X-Ocsim-Session)
    phase: str               # one of SESSION_PHASES
    title: str
    isp: str | None
    edge: str | None         # the edge currently served from
    state: str
    startup_s: float | None
    rebuffer_count: int
    rebuffer_s: float
    avg_bitrate_kbps: float
    switches: int
    failovers: int
    errors: int
    bytes: int
    segments: int
    played_s: float
    qoe_lin: float
    verified: bool | None

    def __post_init__(self) -> None:
        if self.phase not in SESSION_PHASES:
            raise ValueError(f"phase must be one of {SESSION_PHASES}")


@dataclass(frozen=True, slots=True)
class JobProgress(Payload):
    TYPE: ClassVar[str] = "job.progress"
    job: str
    isp: str
    state: str               # pending | running | done | failed
    progress: float          # 0..1
    done_objects: int
    total_objects: int
    done_bytes: int


@dataclass(frozen=True, slots=True)
class ChaosFault(Payload):
    TYPE: ClassVar[str] = "chaos.fault"
    experiment: str
    fault: str               # the fault's kind
    target: str
    phase: str               # one of FAULT_PHASES
    detail: str

    def __post_init__(self) -> None:
        if self.phase not in FAULT_PHASES:
            raise ValueError(f"phase must be one of {FAULT_PHASES}")


@dataclass(frozen=True, slots=True)
class EventsDropped(Payload):
    """A publisher's periodic note of what it could not send (buffer full, NATS down)."""

    TYPE: ClassVar[str] = "events.dropped"
    dropped: int             # since the previous events.dropped of this source
    total: int               # since the source started
    buffered: int            # events waiting in its buffer now


PAYLOAD_CLASSES: Final[tuple[type[Payload], ...]] = (
    EdgeRequest, EdgeFill, EdgeEvict, SteerPlay, PlayerSession, JobProgress, ChaosFault, EventsDropped)
PAYLOADS: Final[dict[str, type[Payload]]] = {cls.TYPE: cls for cls in PAYLOAD_CLASSES}
SUPPORTED_VERSIONS: Final[dict[str, frozenset[int]]] = {cls.TYPE: frozenset({cls.VERSION}) for cls in PAYLOAD_CLASSES}


def _spec_of(name: str, hint: Any) -> FieldSpec:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        assert len(args) == 1, f"{name}: only X | None unions are supported"
        hint, optional = args[0], True
    if typing.get_origin(hint) is tuple:
        assert typing.get_args(hint) == (str, ...), f"{name}: only tuple[str, ...]"
        return FieldSpec(name, Kind.STRS, optional)
    kinds = {str: Kind.STR, int: Kind.INT, float: Kind.FLOAT, bool: Kind.BOOL}
    return FieldSpec(name, kinds[hint], optional)


def field_specs(cls: type[Payload]) -> tuple[FieldSpec, ...]:
    hints = get_type_hints(cls)
    return tuple(_spec_of(f.name, hints[f.name]) for f in dataclasses.fields(cls))  # type: ignore[arg-type]


SPECS: Final[dict[str, tuple[FieldSpec, ...]]] = {t: field_specs(cls) for t, cls in PAYLOADS.items()}


@dataclass(frozen=True, slots=True)
class Event:
    """An envelope and its payload."""

    id: str
    ts: float
    src: str
    payload: Payload

    @property
    def type(self) -> str:
        return self.payload.TYPE

    @property
    def v(self) -> int:
        return self.payload.VERSION


class IdSource:
    """Event ids: a per-process random prefix (given) and a counter, so unique and cheap."""

    __slots__ = ("prefix", "_n")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = 0

    def next(self) -> str:
        self._n += 1
        return f"{self.prefix}-{self._n:x}"

    @property
    def upcoming(self) -> int:
        """The counter of the id `next()` gives next (a batch frame's id run starts there)."""
        return self._n + 1

    def skip(self, n: int) -> None:
        """Use up the next `n` ids (a batch frame named them as a run)."""
        self._n += n


_FIELD_NAMES: dict[str, tuple[str, ...]] = {t: (*ENVELOPE_FIELDS, *(sp.name for sp in specs)) for t, specs in SPECS.items()}
_LIST_FIELDS: dict[str, tuple[int, ...]] = {
    t: tuple(i for i, sp in enumerate(specs) if sp.kind is Kind.STRS) for t, specs in SPECS.items()}


def values_of(payload: Payload) -> tuple[Any, ...]:
    """A payload's field values in SPECS order (what `encode_values` takes)."""
    return tuple(getattr(payload, sp.name) for sp in SPECS[payload.TYPE])


def encode_values(etype: str, version: int, eid: str, ts: float, src: str, values: tuple[Any, ...]) -> bytes:
    """The packed event for field values given in SPECS order: the publisher's fast path,
    byte for byte what `encode` makes of the same event (no dataclass on the way)."""
    lists = _LIST_FIELDS[etype]
    if lists:
        vals = list(values)
        for i in lists:
            if vals[i] is not None:
                vals[i] = list(vals[i])
        values = tuple(vals)
    return _PACKER.pack(dict(zip(_FIELD_NAMES[etype], (eid, etype, version, ts, src, *values))))  # type: ignore[no-any-return]


# One reusable packer (a fresh one per event costs more than the packing): encode_values runs
# only on the publisher's one background task, never from two threads at once.
_PACKER = msgpack.Packer(use_bin_type=True, autoreset=True)


def encode(event: Event) -> bytes:
    body: dict[str, Any] = {"id": event.id, "type": event.type, "v": event.v, "ts": event.ts, "src": event.src}
    for spec in SPECS[event.type]:
        value = getattr(event.payload, spec.name)
        body[spec.name] = list(value) if spec.kind is Kind.STRS and value is not None else value
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def _check(spec: FieldSpec, value: Any) -> Any:
    if value is None:
        if spec.optional:
            return None
    elif spec.kind is Kind.STR:
        if type(value) is str:
            return value
    elif spec.kind is Kind.INT:
        if type(value) is int:
            return value
    elif spec.kind is Kind.FLOAT:
        if type(value) is float or type(value) is int:
            return float(value)
    elif spec.kind is Kind.BOOL:
        if type(value) is bool:
            return value
    elif spec.kind is Kind.STRS:
        if type(value) is list and all(type(v) is str for v in value):
            return tuple(value)
    raise BadEvent("bad_field", f"{spec.name}: expected {spec.kind.name.lower()}"
                   f"{' or nil' if spec.optional else ''}")


# Fields whose value is one of a fixed set (the dataclasses check the same on construction).
CHOICES: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("edge.request", "cache"): CACHE_OUTCOMES, ("edge.fill", "source"): FILL_SOURCES,
    ("edge.fill", "outcome"): FILL_OUTCOMES, ("player.session", "phase"): SESSION_PHASES,
    ("chaos.fault", "phase"): FAULT_PHASES,
}
_CHOICE_INDEX: dict[str, tuple[tuple[int, str, tuple[str, ...]], ...]] = {
    t: tuple((i, sp.name, CHOICES[(t, sp.name)]) for i, sp in enumerate(specs) if (t, sp.name) in CHOICES)
    for t, specs in SPECS.items()}

# A decoded event without its dataclass: what the collector stores.
EventRow = tuple[str, str, float, str, int, tuple[Any, ...]]  # (type, id, ts, src, v, values in SPECS order)


_KIND_TYPES: dict[Kind, tuple[type, ...]] = {
    Kind.STR: (str,), Kind.INT: (int,), Kind.FLOAT: (float, int), Kind.BOOL: (bool,), Kind.STRS: (list,)}
# per type: (field names, allowed value types per field, float field indexes, list field indexes)
_FAST: dict[str, tuple[tuple[str, ...], tuple[frozenset[type], ...], tuple[int, ...], tuple[int, ...]]] = {
    t: (tuple(sp.name for sp in specs),
        tuple(frozenset(_KIND_TYPES[sp.kind] + ((type(None),) if sp.optional else ())) for sp in specs),
        tuple(i for i, sp in enumerate(specs) if sp.kind is Kind.FLOAT),
        tuple(i for i, sp in enumerate(specs) if sp.kind is Kind.STRS))
    for t, specs in SPECS.items()}


def _check_all(specs: tuple[FieldSpec, ...], raw: list[Any]) -> None:
    for spec, value in zip(specs, raw):
        _check(spec, value)


def decode_row(obj: Any) -> EventRow:
    """An unpacked msgpack map -> EventRow, strictly checked (BadEvent otherwise)."""
    if type(obj) is not dict:
        raise BadEvent("malformed", "an event is a map")
    etype = obj.get("type")
    if type(etype) is not str:
        raise BadEvent("malformed", "type missing or not a string")
    specs = SPECS.get(etype)
    if specs is None:
        raise BadEvent("unknown_type", etype[:64])
    v = obj.get("v")
    if type(v) is not int:
        raise BadEvent("malformed", "v missing or not an integer")
    if v not in SUPPORTED_VERSIONS[etype]:
        raise BadEvent("unknown_version", f"{etype} v{v}")
    eid, ts, src = obj.get("id"), obj.get("ts"), obj.get("src")
    if type(eid) is not str or not 0 < len(eid) <= 128:
        raise BadEvent("malformed", "id missing or not a short string")
    if (type(ts) is not float and type(ts) is not int) or not 0 <= ts < MAX_TS:
        raise BadEvent("malformed", "ts missing, not a number or out of range")
    if type(src) is not str:
        raise BadEvent("malformed", "src missing or not a string")
    if len(obj) != len(specs) + len(ENVELOPE_FIELDS):
        known = set(ENVELOPE_FIELDS).union(sp.name for sp in specs)
        unknown = sorted(str(k) for k in obj if k not in known)
        raise BadEvent("bad_field", f"unknown fields {unknown[:5]}" if unknown else "missing fields")
    names, allowed_types, floats, lists = _FAST[etype]
    try:
        raw = [obj[name] for name in names]
    except KeyError as exc:
        raise BadEvent("bad_field", f"missing field {exc.args[0]}") from None
    for value, allowed_t in zip(raw, allowed_types):
        if type(value) not in allowed_t:
            _check_all(specs, raw)  # raises with the field's name
    for i in floats:
        if type(raw[i]) is int:
            raw[i] = float(raw[i])
    for i in lists:
        if raw[i] is not None:
            raw[i] = _check(specs[i], raw[i])
    values = tuple(raw)
    for i, name, allowed in _CHOICE_INDEX[etype]:
        if values[i] not in allowed:
            raise BadEvent("bad_field", f"{name} must be one of {allowed}")
    return etype, eid, float(ts), src, v, values


def decode_map(obj: Any) -> Event:
    """An unpacked msgpack map -> Event, strictly checked."""
    etype, eid, ts, src, _, values = decode_row(obj)
    try:
        payload = PAYLOADS[etype](*values)
    except (TypeError, ValueError) as exc:  # pragma: no cover - decode_row checks what construction does
        raise BadEvent("bad_field", str(exc)) from None
    return Event(eid, ts, src, payload)


def row_of(event: Event) -> EventRow:
    return event.type, event.id, event.ts, event.src, event.v, values_of(event.payload)


def decode(body: bytes) -> Event:
    """One packed event -> Event; BadEvent with a counted reason otherwise."""
    if len(body) > MAX_EVENT_BYTES:
        raise BadEvent("oversized", f"{len(body)} bytes")
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception:  # msgpack raises a zoo of exception types on garbage
        raise BadEvent("malformed", "not msgpack") from None
    return decode_map(obj)


def pack_frame(events: list[bytes]) -> bytes:
    """Packed events -> one frame (a msgpack array of bin)."""
    return msgpack.packb(events, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_frame(frame: bytes) -> list[bytes]:
    """A frame -> its packed events; a bad frame is rejected whole (its events are unreadable)."""
    if len(frame) > MAX_FRAME_BYTES:
        raise BadEvent("oversized", f"frame of {len(frame)} bytes")
    try:
        items = msgpack.unpackb(frame, raw=False, use_list=True, max_array_len=MAX_FRAME_EVENTS,
                                max_bin_len=MAX_FRAME_BYTES)
    except Exception:
        raise BadEvent("malformed", "frame is not a msgpack array of events") from None
    if type(items) is not list or not all(type(b) is bytes for b in items):
        raise BadEvent("malformed", "frame is not a msgpack array of bin")
    return items


def _unpack_event(body: bytes) -> Any:
    if len(body) > MAX_EVENT_BYTES:
        raise BadEvent("oversized", f"{len(body)} bytes")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True)
    except Exception:
        raise BadEvent("malformed", "not msgpack") from None


@dataclass(slots=True)
class FrameResult:
    """What decoding one frame gave: the good events and a count of the rest by reason."""

    events: list[Event]
    rejected: dict[str, int]


def decode_frame(frame: bytes) -> FrameResult:
    """A frame of any version (a column or row frame, `common.eventbatch`, or an array of
    packed events) -> its good events as Events, and a count of the rest by reason."""
    from common.eventbatch import decode_frame_batches, events_of  # that module builds on this one

    got = decode_frame_batches(frame)
    return FrameResult([e for b in got.batches for e in events_of(b)], got.rejected)


def subject_of(event_type: str, prefix: str = "ocsim.events") -> str:
    return f"{prefix}.{event_type}"
