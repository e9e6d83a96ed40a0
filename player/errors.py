"""The player's errors: what the control plane or an edge did that the player cannot use.

    OcsimError (common.errors)
    +-- OurError
        +-- UpstreamError           502: the upstream answered badly or refused
            +-- PlayerError         root of the player's errors; `kind` names it for reports
                +-- SteeringError   the play answer is unusable (`parse_play_answer`)
                |   +-- UnknownTitle        404 on play
                |   +-- ControlUnavailable  unreachable, timed out, or 5xx
                +-- PlaylistError   a playlist that is not the HLS we expect

Rules of this module:

1. Every player error hangs under `common.errors.UpstreamError`: from the player's
   side, each of them is its upstream (control plane or edge) answering badly.
2. `kind` is a short machine-readable name that ends up in `PlayReport.error_kind`;
   the message (`reason`, `str(exc)`) is for people.
3. Pure (stdlib and `common` only): Locust imports this module.
"""
from __future__ import annotations

from common.errors import UpstreamError

__all__ = ["ControlUnavailable", "PlayerError", "PlaylistError", "SteeringError", "UnknownTitle"]


class PlayerError(UpstreamError):
    """Root of the player's errors; `kind` is a short machine-readable name."""

    kind = "player"


class SteeringError(PlayerError):
    """The control plane answered, but not with candidates we can use."""

    kind = "steering"


class UnknownTitle(SteeringError):
    """The control plane does not know the title (404 on play)."""

    kind = "unknown_title"


class ControlUnavailable(SteeringError):
    """The control plane could not be reached, timed out, or answered 5xx."""

    kind = "control_unavailable"


class PlaylistError(PlayerError):
    """A playlist that does not parse as the HLS we expect (the peer's fault)."""

    kind = "manifest"
