"""The player's pure modules, and everything Locust's gevent process imports, never pull in aiohttp.

Each check runs in a fresh interpreter (this process has aiohttp loaded already,
and Locust monkey-patches on import), imports the modules and fails if
`aiohttp` is in `sys.modules` afterwards. A control check shows the detector
can fail: importing `player.driver` does load aiohttp.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PURE_PLAYER_MODULES = (
    "player",
    "player.abr",
    "player.session",
    "player.errors",
    "player.playlists",
    "player.play_answer",
    "player.verify",
    "player.report",
)


def _loads_aiohttp(modules: tuple[str, ...]) -> bool:
    """Whether importing `modules` in a fresh interpreter loads aiohttp."""
    code = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print('aiohttp' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCSIM_")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = out.stdout.strip().splitlines()[-1]
    assert answer in ("True", "False"), out.stdout[-500:]
    return answer == "True"


def test_pure_player_modules_do_not_import_aiohttp() -> None:
    assert not _loads_aiohttp(PURE_PLAYER_MODULES)


def test_the_driver_does_import_aiohttp() -> None:
    """The detector is live: the IO module is where aiohttp comes in."""
    assert _loads_aiohttp(("player.driver",))


def test_locustfile_does_not_import_aiohttp() -> None:
    pytest.importorskip("locust")  # located only; Locust is imported in the subprocess
    assert not _loads_aiohttp(("loadtests.shapes", "loadtests.locustfile"))
