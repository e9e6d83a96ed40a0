"""Toxics: what a fault proxy does to the bytes of one link, as a pure core.

Rules of this module:
1. No sockets, no clocks, no event loop. A toxic maps one chunk of bytes (and the link's
   own small state) to a list of *actions*; the proxy (chaos/proxy.py) executes them.
2. Randomness is passed in (a `random.Random` per link, seeded by the proxy), so a link's
   jitter and whether a toxic applies to it are replayable.
3. One table, `TOXICS`, names every kind; the scenario parser and the proxy both read it.
   Unknown kinds or fields are refused with the field named, before anything runs.

The kinds follow Toxiproxy's toxics (github.com/Shopify/toxiproxy, README "Toxics"):
latency (+ jitter), bandwidth, reset_peer (here `reset`), timeout with 0 (here `blackhole`),
slow_close, limit_data (here `truncate`); `probability` is Toxiproxy's *toxicity*: the
chance that the toxic applies to a given connection, drawn once when it first meets it.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from common.errors import BadRequest

Direction = Literal["downstream", "upstream"]  # downstream: target -> client (Toxiproxy)


# --- actions: what the proxy must do --------------------------------------------------------

@dataclass(frozen=True)
class Forward:
    data: bytes


@dataclass(frozen=True)
class Delay:
    seconds: float


@dataclass(frozen=True)
class Cut:
    """End the whole connection now: `reset` sends a TCP RST, else an orderly close."""
    reset: bool = False


Action = Forward | Delay | Cut


@dataclass
class LinkState:
    """The per-connection, per-direction memory toxics need (bytes seen, coin flips)."""
    rng: random.Random
    forwarded: dict[str, int] = field(default_factory=dict)
    applies: dict[str, bool] = field(default_factory=dict)


# --- the toxics -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Toxic:
    name: str
    direction: Direction = "downstream"
    probability: float = 1.0
    kind: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if self.direction not in ("downstream", "upstream"):
            raise BadRequest(f"toxic {self.name}: direction must be downstream or upstream")
        if not 0.0 <= self.probability <= 1.0:
            raise BadRequest(f"toxic {self.name}: probability must be in [0, 1]")

    def on_chunk(self, data: bytes, link: LinkState) -> list[Action]:
        return [Forward(data)]

    def on_close(self, link: LinkState) -> list[Action]:
        """Actions before an end of stream is passed on."""
        return []


def _positive(owner: str, name: str, value: float, *, allow_zero: bool = True) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise BadRequest(f"toxic {owner}: {name} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True)
class Latency(Toxic):
    """Every chunk waits latency_s +- jitter_s (uniform, never below 0)."""
    latency_s: float = 0.0
    jitter_s: float = 0.0
    kind: ClassVar[str] = "latency"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.name, "latency_s", self.latency_s)
        _positive(self.name, "jitter_s", self.jitter_s)

    def delay_for(self, rng: random.Random) -> float:
        return max(0.0, self.latency_s + rng.uniform(-self.jitter_s, self.jitter_s))

    def on_chunk(self, data: bytes, link: LinkState) -> list[Action]:
        return [Delay(self.delay_for(link.rng)), Forward(data)]


@dataclass(frozen=True)
class Bandwidth(Toxic):
    """At most rate_bytes_s: the chunk is sent in pieces of a tenth of a second each."""
    rate_bytes_s: int = 0
    kind: ClassVar[str] = "bandwidth"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.name, "rate_bytes_s", self.rate_bytes_s, allow_zero=False)

    def on_chunk(self, data: bytes, link: LinkState) -> list[Action]:
        piece = max(1, self.rate_bytes_s // 10)
        out: list[Action] = []
        for i in range(0, len(data), piece):
            part = data[i:i + piece]
            out += [Delay(len(part) / self.rate_bytes_s), Forward(part)]
        return out


@dataclass(frozen=True)
class Reset(Toxic):
    """The first chunk after after_bytes have passed resets the connection (TCP RST)."""
    after_bytes: int = 0
    kind: ClassVar[str] = "reset"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.name, "after_bytes", self.after_bytes)

    def on_chunk(self, data: bytes, link: LinkState) -> list[Action]:
        seen = link.forwarded.get(self.name, 0)
        room = self.after_bytes - seen
        if room <= 0:
            return [Cut(reset=True)]
        link.forwarded[self.name] = seen + min(room, len(data))
        if len(data) <= room:
            return [Forward(data)]
        return [Forward(data[:room]), Cut(reset=True)]


@dataclass(frozen=True)
class Blackhole(Toxic):
    """Accept and never answer: bytes are swallowed, the connection stays open."""
    kind: ClassVar[str] = "blackhole"

    def on_chunk(self, data: bytes, link: LinkState) -> list[Action]:
        return []


@dataclass(frozen=True)
class SlowClose(Toxic):
    """The end of the stream is passed on only delay_s after it came."""
    delay_s: float = 0.0
    kind: ClassVar[str] = "slow_close"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.name, "delay_s", self.delay_s)

    def on_close(self, link: LinkState) -> list[Action]:
        return [Delay(self.delay_s)]


@dataclass(frozen=True)
class Truncate(Toxic):
    """Pass `after_bytes` bytes, then close the connection in an orderly way."""
    after_bytes: int = 0
    kind: ClassVar[str] = "truncate"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self.name, "after_bytes", self.after_bytes)

    def on_chunk(self, data: bytes, link: LinkState) -> list[Action]:
        seen = link.forwarded.get(self.name, 0)
        room = self.after_bytes - seen
        if room <= 0:
            return [Cut()]
        link.forwarded[self.name] = seen + min(room, len(data))
        if len(data) < room:
            return [Forward(data)]
        return [Forward(data[:room]), Cut()]


TOXICS: dict[str, type[Toxic]] = {
    cls.kind: cls for cls in (Latency, Bandwidth, Reset, Blackhole, SlowClose, Truncate)
}


def toxic_fields(kind: str) -> list[str]:
    return [f.name for f in dataclasses.fields(TOXICS[kind]) if f.name != "name"]


def make_toxic(kind: str, name: str, params: dict[str, Any], *, where: str = "toxic") -> Toxic:
    """Build a toxic from plain data; unknown kinds and fields are named in the error."""
    if kind not in TOXICS:
        raise BadRequest(f"{where}.kind: unknown toxic {kind!r} (known: {', '.join(sorted(TOXICS))})")
    allowed = toxic_fields(kind)
    for key in params:
        if key not in allowed:
            raise BadRequest(f"{where}.{key}: unknown field for toxic {kind!r} (known: {', '.join(allowed)})")
    for f in dataclasses.fields(TOXICS[kind]):
        if f.name in params and f.type in ("float", "int"):
            value = params[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    f.type == "int" and not isinstance(value, int)):
                raise BadRequest(f"{where}.{f.name}: must be a{'n integer' if f.type == 'int' else ' number'}")
    try:
        return TOXICS[kind](name=name, **params)
    except BadRequest as exc:
        raise BadRequest(f"{where}: {exc.reason}") from None


def applies(toxic: Toxic, link: LinkState) -> bool:
    """Whether the toxic touches this link: one seeded coin per toxic and connection."""
    if toxic.name not in link.applies:
        link.applies[toxic.name] = toxic.probability >= 1.0 or link.rng.random() < toxic.probability
    return link.applies[toxic.name]


def run_chain(toxics: list[Toxic], data: bytes, link: LinkState) -> list[Action]:
    """Pass a chunk through the toxics in order: each expands the Forwards of the one before."""
    actions: list[Action] = [Forward(data)]
    for toxic in toxics:
        if not applies(toxic, link):
            continue
        expanded: list[Action] = []
        for action in actions:
            if isinstance(action, Forward):
                expanded += toxic.on_chunk(action.data, link)
            else:
                expanded.append(action)
            if expanded and isinstance(expanded[-1], Cut):
                break
        actions = expanded
    return actions


def close_chain(toxics: list[Toxic], link: LinkState) -> list[Action]:
    out: list[Action] = []
    for toxic in toxics:
        if applies(toxic, link):
            out += toxic.on_close(link)
    return out
