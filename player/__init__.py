"""The ABR player: pure decision cores and parsers, and one asyncio driver at the rim.

Pure (stdlib and `common` only; Locust's gevent process and the simulator import these):

    player.abr          which bitrate next, which edge next
    player.session      one viewing as a state machine over a passed-in clock; QoE
    player.errors       the player's exceptions (under common.errors.UpstreamError)
    player.playlists    HLS master and media playlists: parse_master, parse_media
    player.play_answer  the `POST /v1/play` answer: Candidate, parse_play_answer
    player.verify       an edge's answer judged: failure_reason_for_status, verify_segment
    player.report       PlayerEvent (along the way), PlayReport (at the end)

IO (aiohttp):

    player.driver       the asyncio driver: `play_session(...) -> PlayReport`
    player.cli          `ocsim play`

`play_session`, `PlayReport` and `Timeouts` are re-exported lazily, so importing
`player` or any pure module above never pulls in aiohttp
(tests/test_player_purity.py checks it).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from player.driver import Timeouts, play_session
    from player.report import PlayReport

__all__ = ["PlayReport", "Timeouts", "play_session"]

_HOMES = {"PlayReport": "player.report", "Timeouts": "player.driver", "play_session": "player.driver"}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'player' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
