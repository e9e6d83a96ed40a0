"""Process faults on a real child service: a paused origin stops answering and answers again
after SIGCONT; a killed one refuses; a restarted one answers on the same URL."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.process import ProcessFaultDriver
from ocsim.procs import ServiceProcess


def answers(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url + "/v1/catalog", timeout=timeout) as resp:
            return resp.status == 200 and isinstance(json.loads(resp.read()), (dict, list))
    except (OSError, urllib.error.URLError):
        return False


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[ProcessFaultDriver]:
    origin = ServiceProcess("origin", ["origin", "--port", "0", "--admin-token", "t",
                                       "--state-dir", str(tmp_path)], log_dir=tmp_path).start()
    d = ProcessFaultDriver({"origin": origin})
    try:
        yield d
    finally:
        d.release_all()
        for proc in d.services.values():
            proc.stop()


def test_paused_process_stops_answering_and_answers_after_sigcont(driver: ProcessFaultDriver) -> None:
    url = driver.services["origin"].url
    assert answers(url)
    driver.begin("pause", "origin")
    assert not answers(url, timeout=0.5)  # accepted by the kernel, never answered
    assert driver.services["origin"].alive()
    driver.end("pause", "origin")
    assert answers(url, timeout=5.0)
    assert driver.log == [("pause", "origin"), ("resume", "origin")]


def test_killed_process_refuses_then_restarts_on_the_same_url(driver: ProcessFaultDriver) -> None:
    url = driver.services["origin"].url
    first_pid = driver.services["origin"].pid
    driver.begin("kill", "origin")
    assert not driver.services["origin"].alive()
    assert not answers(url, timeout=0.5)
    driver.end("kill", "origin")
    assert driver.services["origin"].url == url
    assert driver.services["origin"].pid != first_pid
    assert answers(url, timeout=5.0)


def test_restart_is_one_move_and_release_all_resumes_what_is_left(driver: ProcessFaultDriver) -> None:
    url = driver.services["origin"].url
    driver.begin("restart", "origin")
    assert answers(url, timeout=5.0)
    driver.begin("pause", "origin")
    driver.release_all()  # as on abort: nothing left paused
    assert not driver.paused and answers(url, timeout=5.0)
