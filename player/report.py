"""What a played session tells its caller: `PlayerEvent`s along the way, a `PlayReport` at the end.

Rules of this module:

1. Pure (stdlib and `player.session` only): reports can be built, read and
   serialised without aiohttp.
2. `PlayReport.errors` counts *unrecovered* errors (0 or 1: the session could
   not go on). Failed requests the player recovered from are the session's own
   `errors`, reported as `failed_requests` (split into failovers and retries).
3. `to_dict` has the same keys whether or not the session reached its first
   playlist, so a crowd's reports can be tabulated without special cases.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from player.session import QoEReport

__all__ = ["PlayReport", "PlayerEvent"]


@dataclass(frozen=True)
class PlayerEvent:
    """What the driver just did; handed to the optional `on_event` hook."""

    kind: str                    # "steer" | "segment" | "failure" | "resteer" | "end"
    edge: str | None = None
    index: int | None = None
    bitrate_kbps: int | None = None
    nbytes: int = 0
    reason: str | None = None
    isp: str | None = None       # "steer": the ISP the control plane answered for (None: unknown network)


@dataclass(frozen=True)
class PlayReport:
    """One session's QoE (from the pure session) plus what only the driver knows."""

    title: str
    isp: str | None
    qoe: QoEReport | None        # None: the session never got to its first playlist
    startup_failures: Mapping[str, Any] | None  # failover counts when qoe is None
    errors: int                  # unrecovered errors (0 or 1): the session could not go on
    error: str | None
    error_kind: str | None
    verify: bool
    verified_segments: int
    edges: tuple[str, ...]       # edges that served bytes, in order of first use
    playlist_bytes: int
    speed: float
    wall_s: float
    media: str | None = None     # what --verify checked: "synthetic" (ids) | "packaged" (digest list); None: no verify
    verified_files: int = 0      # packaged: playlists and init segments verified beside the segments
    init_bytes: int = 0          # fMP4 init segments (#EXT-X-MAP) fetched

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.qoe is not None and self.qoe.state == "ended"

    @property
    def verified(self) -> bool:
        """Every downloaded segment was verified, and the session played to the end."""
        return (self.verify and self.ok and self.qoe is not None
                and self.verified_segments == self.qoe.segments > 0)

    def to_dict(self) -> dict[str, Any]:
        if self.qoe is not None:
            d = self.qoe.to_dict()
        else:
            d = {"state": "failed", "startup_s": None, "rebuffer_count": 0, "rebuffer_s": 0.0,
                 "avg_bitrate_kbps": 0.0, "switches": 0, "failovers": 0, "retries": 0, "resteers": 0,
                 "errors": 0, "error_reasons": {}, "bytes": 0, "bytes_per_edge": {}, "segments": 0,
                 "n_segments": 0, "played_s": 0.0, "qoe_lin": 0.0, "abr": None, "slow_moves": 0}
            d.update(self.startup_failures or {})
        # The session counts every failed request; the report's `errors` are the unrecovered ones.
        d["failed_requests"] = d.pop("errors")
        d["failure_reasons"] = d.pop("error_reasons")
        d.update(
            title=self.title, isp=self.isp, errors=self.errors, error=self.error,
            error_kind=self.error_kind, verify=self.verify, verified=self.verified,
            verified_segments=self.verified_segments, edges=list(self.edges),
            playlist_bytes=self.playlist_bytes, speed=self.speed, wall_s=round(self.wall_s, 3),
            media=self.media, verified_files=self.verified_files, init_bytes=self.init_bytes,
        )
        return d
