"""The msgpack messages between edges and the control plane, and how they are signed.

Every message body is a msgpack map. It travels with two headers:

    X-Ocsim-Edge:      the edge id
    X-Ocsim-Signature: hex HMAC-SHA256(edge_key, body)

Each edge has its own key, derived by the control plane from its fleet secret
(`edge_key(fleet_secret, edge_id)`), so the control plane stores no per-edge secrets
and one leaked edge key speaks for one edge only. Replies from the control plane are
signed with the same edge key, so an edge can trust the fill plans it gets. Messages
carry `ts` (and heartbeats a `seq`) so a receiver can refuse stale or replayed ones.

Decoding is strict: unknown fields, missing fields and wrong types raise BadMessage, and
the decoded map passes `common.http_input.check_decoded` (depth, finite floats, 64-bit
integers, valid strings) first, so a `ts` of NaN or infinity never reaches a freshness check.
A heartbeat names the registration it belongs to (`registration_ts`, the `ts` of the
edge's accepted Register), so one captured before a re-registration is refused after it.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

import msgpack

from common.auth import printable_ascii
from common.errors import BadRequest, Forbidden
from common.http_input import check_decoded

EDGE_HEADER = "X-Ocsim-Edge"
SIGNATURE_HEADER = "X-Ocsim-Signature"
CONTENT_TYPE = "application/msgpack"
MAX_MESSAGE_BYTES = 1024 * 1024
EDGE_STATES = ("up", "draining")


class FillPlanState(enum.StrEnum):
    """A fill plan's state, the same words on both sides of the wire.

    Control keeps a plan `pending` until a reply has carried it to its edge; the edge
    runs it (`running`) and reports `done` or `failed` in its heartbeats' `FillProgress`.
    Control's transitions are `control.jobs.PLAN_TRANSITIONS`; the edge only ever moves
    `running` to a terminal state."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """Final: no transition leaves it."""
        return self in (FillPlanState.DONE, FillPlanState.FAILED)


# What an edge may put in `FillProgress.state`; anything else is ignored by control.
REPORTED_PLAN_STATES = frozenset({FillPlanState.RUNNING, FillPlanState.DONE, FillPlanState.FAILED})


class BadMessage(BadRequest):
    """A message that does not decode or does not have the right shape (400)."""


class BadSignature(Forbidden):
    """A message whose signature does not verify (403)."""


def edge_key(fleet_secret: bytes, edge_id: str) -> bytes:
    return hmac.new(fleet_secret, b"ocsim-edge-key/1\n" + edge_id.encode(), hashlib.sha256).digest()


def sign(key: bytes, body: bytes) -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(key: bytes, body: bytes, signature: str | None) -> None:
    if not signature:
        raise BadSignature("missing signature")
    if not printable_ascii(signature):
        raise BadMessage("malformed signature header")
    if not hmac.compare_digest(sign(key, body).encode(), signature.strip().encode()):
        raise BadSignature("bad signature")


M = TypeVar("M", bound="Message")


class Message:
    """Base of the wire messages: dataclass <-> msgpack map, strictly checked."""

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]

    def pack(self) -> bytes:
        return msgpack.packb(self.to_wire(), use_bin_type=True)  # type: ignore[no-any-return]

    def seal(self, key: bytes) -> tuple[bytes, str]:
        body = self.pack()
        return body, sign(key, body)

    @classmethod
    def from_wire(cls: type[M], obj: Any) -> M:
        if not isinstance(obj, dict):
            raise BadMessage(f"{cls.__name__}: expected a map")
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(obj) - set(fields)
        if unknown:
            raise BadMessage(f"{cls.__name__}: unknown fields {sorted(map(str, unknown))[:5]}")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            if name not in obj:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise BadMessage(f"{cls.__name__}: missing field {name}")
                continue
            values[name] = _check(f"{cls.__name__}.{name}", hints[name], obj[name])
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise BadMessage(f"{cls.__name__}: {exc}") from None

    @classmethod
    def unpack(cls: type[M], body: bytes) -> M:
        if len(body) > MAX_MESSAGE_BYTES:
            raise BadMessage("message too large")
        try:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
        except Exception:  # msgpack raises a zoo of exception types on garbage
            raise BadMessage("malformed msgpack") from None
        try:
            check_decoded(obj, "message")  # the same strict layer as JSON bodies
        except BadRequest as exc:
            raise BadMessage(exc.reason) from None
        return cls.from_wire(obj)

    @classmethod
    def unseal(cls: type[M], key: bytes, body: bytes, signature: str | None) -> M:
        verify_signature(key, body, signature)
        return cls.unpack(body)


def _check(where: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for alt in typing.get_args(hint):
            try:
                return _check(where, alt, value)
            except BadMessage:
                continue
        raise BadMessage(f"{where}: wrong type")
    if hint is type(None):
        if value is None:
            return None
        raise BadMessage(f"{where}: expected nil")
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise BadMessage(f"{where}: expected a finite number")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise BadMessage(f"{where}: expected an integer")
    if hint in (str, bool, bytes):
        if type(value) is hint:
            return value
        raise BadMessage(f"{where}: expected {hint.__name__}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise BadMessage(f"{where}: expected a list")
        return [_check(where, item, v) for v in value]
    if origin is dict:
        kt, vt = typing.get_args(hint)
        if not isinstance(value, dict):
            raise BadMessage(f"{where}: expected a map")
        return {_check(where, kt, k): _check(where, vt, v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Message):
        return hint.from_wire(value)
    raise BadMessage(f"{where}: unsupported type")  # pragma: no cover - a schema bug


@dataclass(frozen=True, slots=True)
class Register(Message):
    """Edge -> control: `POST /v1/edges/register`."""

    edge_id: str
    isp: str
    url: str
    capacity_bytes: int
    ts: float
    policy: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class FillPlan(Message):
    """Control -> edge: fetch these content paths in the background and pin them."""

    plan_id: str
    job_id: str
    edge_id: str
    paths: list[str]
    bandwidth_bps: int
    issued_at: float
    pin: bool = True
    sources: list[str] = field(default_factory=list)  # peer edge URLs to try before the upstream


@dataclass(frozen=True, slots=True)
class FillProgress(Message):
    """Edge -> control, inside heartbeats: how far one fill plan has got."""

    plan_id: str
    state: str  # a REPORTED_PLAN_STATES value (a str on the wire, so an unknown word is ignored, not refused)
    done_objects: int
    total_objects: int
    done_bytes: int
    failed_objects: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Edge -> control every second: `POST /v1/edges/{id}/heartbeat`."""

    edge_id: str
    isp: str
    url: str
    seq: int
    ts: float
    state: str  # one of EDGE_STATES
    capacity_bytes: int
    used_bytes: int
    objects: int
    req_rate: float
    byte_rate: float
    hit_ratio: float
    titles: list[str] = field(default_factory=list)  # titles this edge holds objects of
    fills: list[FillProgress] = field(default_factory=list)
    registration_ts: float = 0.0  # the `ts` of this edge's accepted Register; control refuses any other

    def __post_init__(self) -> None:
        if self.state not in EDGE_STATES:
            raise ValueError(f"state must be one of {EDGE_STATES}")


@dataclass(frozen=True, slots=True)
class ControlReply(Message):
    """Control -> edge, the answer to register and heartbeat (signed with the edge key)."""

    ts: float
    heartbeat_interval_s: float = 1.0
    token_keys: str = ""  # Keyring.format() of the keys edges must accept; "" = unchanged
    fill_plans: list[FillPlan] = field(default_factory=list)
