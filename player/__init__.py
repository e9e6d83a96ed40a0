"""The ABR player: a pure decision core and an asyncio driver.

    player.abr       which bitrate next, which edge next (pure, stdlib only)
    player.session   one viewing as a state machine over a passed-in clock; QoE (pure)
    player.driver    the asyncio/aiohttp driver: `play_session(...) -> PlayReport`
    player.cli       `ocsim play`

`play_session`, `PlayReport` and `Timeouts` are re-exported lazily, so importing
`player.abr` or `player.session` (Locust, the simulator) never pulls in aiohttp.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from player.driver import PlayReport, Timeouts, play_session

__all__ = ["PlayReport", "Timeouts", "play_session"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from player import driver
        return getattr(driver, name)
    raise AttributeError(f"module 'player' has no attribute {name!r}")
