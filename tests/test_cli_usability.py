"""Issue 15, "found by a new user": the command lines say their defaults, refuse what they
would misread, and fail with a sentence an operator can act on."""
from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common.cli_args import http_url, port
from ocsim.topology import TopologyError, parse_topology
from origin.link import parse_rate
from player import cli as play_cli
from player.report import PlayerEvent
from test_control_api import Client, MakeClient, make_config
from control.app import build_app

PARSERS = {
    "origin": "origin.cli", "edge": "edge.cli", "control": "control.cli", "play": "player.cli",
    "up": "ocsim.up", "demo": "ocsim.demo", "preposition": "control.preposition_cli",
}


def _parser(module: str) -> argparse.ArgumentParser:
    import importlib
    parser: argparse.ArgumentParser = importlib.import_module(module).build_parser()
    return parser


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_has_text_and_help_shows_defaults(name: str) -> None:
    parser = _parser(PARSERS[name])
    for action in parser._actions:  # noqa: SLF001 - argparse has no public list
        assert action.help, f"ocsim {name}: {action.option_strings or action.dest} has no help text"
    text = parser.format_help()
    defaults = [a for a in parser._actions if a.default not in (None, False, True, argparse.SUPPRESS, [], "")]  # noqa: SLF001
    if defaults:
        assert "(default:" in text or "(default " in text, f"ocsim {name} --help shows no defaults"


def test_play_help_says_the_default_speed_is_real_time() -> None:
    text = _parser("player.cli").format_help()
    assert "real time" in text and "(default: 1.0)" in text


@pytest.mark.parametrize("name", ["origin", "edge", "control"])
def test_port_out_of_range_is_refused(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _parser(PARSERS[name]).parse_args(["--port", "99999"])
    assert exit_.value.code == 2
    assert "99999 is not in 0..65535" in capsys.readouterr().err


def test_port_and_url_types() -> None:
    assert port("0") == 0 and port("65535") == 65535
    for bad in ("-1", "65536", "99999", "80a", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            port(bad)
    assert http_url("http://127.0.0.1:8100/") == "http://127.0.0.1:8100"
    with pytest.raises(argparse.ArgumentTypeError, match="did you mean http://127.0.0.1:8100"):
        http_url("127.0.0.1:8100")
    with pytest.raises(argparse.ArgumentTypeError):
        http_url("ftp://x")


def test_ocsim_version() -> None:
    run = subprocess.run([sys.executable, "-m", "ocsim", "--version"], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout.startswith("ocsim "), run


def test_rates_say_bits_or_bytes_and_refuse_sizes() -> None:
    assert parse_rate("50Mbit") == parse_rate("50Mbps") == parse_rate("50Mb/s") == 50_000_000
    assert parse_rate("50MB/s") == parse_rate("50MBps") == 400_000_000  # bytes: x 8, not 50 megabit
    assert parse_rate("400Mbit") == 400_000_000 and parse_rate("0") == 0
    for bad in ("50MB", "50GiB", "fast", "5 furlongs"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)


def test_topology_with_an_isp_of_zero_edges_is_refused() -> None:
    with pytest.raises(TopologyError, match="at least 1 edge"):
        parse_topology({"isps": {"isp-a": {"prefixes": ["10.1.0.0/16"], "edges": 0}}})


def test_play_without_a_scheme_is_a_readable_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        play_cli.main(["title-001", "--control", "127.0.0.1:8100"])
    assert exit_.value.code == 2
    assert "did you mean http://127.0.0.1:8100?" in capsys.readouterr().err


def test_failed_play_prints_one_clear_line_not_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    code = play_cli.main(["title-001", "--control", f"http://127.0.0.1:{dead}", "--connect-timeout", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith("ocsim play: title-001 did not play: control plane") and err.count("\n") == 1, err
    assert "segments" not in err and "QoE" not in err


async def test_unknown_isp_is_warned_about(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    # no edges; the origin (unreachable) as last resort, so the play is steered, then fails
    client: Client = await aiohttp_client(build_app(make_config(
        tmp_path / "c.db", steer_to_origin=True, origin_url=f"http://127.0.0.1:{dead}")))
    url = str(client.make_url("")).rstrip("/")

    async def play_as(isp: str) -> str:  # a child process: its asyncio.run owns its own loop
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ocsim", "play", "alpha", "--control", url, "--isp", isp, "--connect-timeout", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        return err.decode()

    assert "knows no ISP 'isp-z'" in await play_as("isp-z")
    assert "knows no ISP" not in await play_as("isp-a")


def test_status_line_counts_segments_on_the_stream() -> None:
    class Sink:
        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    sink: Any = Sink()
    line = play_cli.StatusLine("title-001", 1.0, sink)
    line.on_event(PlayerEvent("segment", edge="isp-a-1", index=0, bitrate_kbps=750, nbytes=375_000))
    line.on_event(PlayerEvent("segment", edge="isp-a-1", index=1, bitrate_kbps=1750, nbytes=875_000))
    assert "2 segments (8 s of media)" in sink.text and "1750 kbit/s" in sink.text and "isp-a-1" in sink.text
    assert sink.text.startswith("\r")


def test_up_with_a_port_taken_says_address_in_use_and_hints_ephemeral_ports(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        topo = tmp_path / "t.toml"
        topo.write_text(f'[origin]\nport = {busy}\n[control]\nport = 0\n'
                        '[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\nedges = 1\n')
        run = subprocess.run([sys.executable, "-m", "ocsim", "up", "--topology", str(topo),
                              "--state-dir", str(tmp_path / "up")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "address already in use" in run.stderr and "--ephemeral-ports" in run.stderr, run.stderr
    assert "did not start within" not in run.stderr


def test_up_ready_line_names_the_dashboard_and_the_token_file() -> None:
    from ocsim.up import ready_text
    text = ready_text(5, 1.2, Path("s.json"), "http://127.0.0.1:8100", Path(".ocsim/up/operator_token"))
    assert "dashboard: http://127.0.0.1:8100/dashboard" in text and ".ocsim/up/operator_token" in text
