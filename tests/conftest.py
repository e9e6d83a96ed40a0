"""Shared fixtures: real ocsim services as child processes on ephemeral loopback ports."""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ocsim.procs import ServiceProcess

StartService = Callable[..., ServiceProcess]


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[StartService]:
    """Start `ocsim <args>` and wait for its listening line; everything is stopped at teardown."""
    started: list[ServiceProcess] = []

    def start(name: str, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> ServiceProcess:
        proc = ServiceProcess(name, list(args), log_dir=tmp_path / "logs", env=env)
        started.append(proc)
        return proc.start(timeout)

    yield start
    for proc in reversed(started):
        proc.stop(timeout=10)


@pytest.fixture
def admin_token() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def origin(start_service: StartService, admin_token: str) -> ServiceProcess:
    """A default origin: built-in catalog, no link emulation."""
    return start_service("origin", "origin", "--host", "127.0.0.1", "--port", "0",
                         "--admin-token", admin_token, "--seed", "1")
