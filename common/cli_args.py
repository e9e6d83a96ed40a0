"""What every ocsim command line shares: help that shows defaults, and argument types that
refuse a bad value with a message saying what a good one looks like (argparse turns the
`ArgumentTypeError` into "ocsim X: error: argument --port: ..." and exit 2).

Rules of this module: pure functions of the argument text; no IO.
"""
from __future__ import annotations

import argparse
import math
from importlib.metadata import PackageNotFoundError, version
from urllib.parse import urlsplit


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """`--help` shows each flag's default (for flags with help text; every flag has some)
    and keeps the description's line breaks."""


def ocsim_version() -> str:
    try:
        return version("ocsim")
    except PackageNotFoundError:  # run from a checkout without installing
        return "0+unknown"


def port(text: str) -> int:
    """A TCP port: 0 (ephemeral) to 65535. (`--port 99999` used to bind another port.)"""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535 (0 = ephemeral)")
    return value


def http_url(text: str) -> str:
    """An http(s) URL with a host, e.g. http://127.0.0.1:8100 (no trailing slash)."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = f" (did you mean http://{text}?)" if "://" not in text else ""
        raise argparse.ArgumentTypeError(f"not an http URL: {text!r}{hint}")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in URL {text!r}") from None
    return text.rstrip("/")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text!r}")
    return value


__all__ = ["HelpFormatter", "http_url", "ocsim_version", "port", "positive_float"]
