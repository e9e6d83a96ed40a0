"""Configuration: built-in defaults, then a TOML file, then OCSIM_* environment, then flags.

Every service's argparse parser gets `--config FILE`; `apply_config` reads the file's
`[section]` table and the environment variables `OCSIM_{SECTION}_{OPTION}` (e.g.
`OCSIM_EDGE_CAPACITY=10GiB`) and installs them as parser defaults, so explicit flags
still win. Unknown keys are an error naming the key, before anything starts. This is
how secrets reach a service without a command line: a 0600 `--config` file (what
`ocsim up` writes) or the environment (`OCSIM_CONTROL_OPERATOR_TOKEN`, `OCSIM_EDGE_EDGE_KEY`).
"""
from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    pass


def _coerce(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_config(section: str, path: str | Path | None = None,
                env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Merged settings for one section: file first, environment over it."""
    values: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config {path}: {exc}") from None
        table = data.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"config {path}: [{section}] must be a table")
        values.update({k.replace("-", "_"): v for k, v in table.items()})
    prefix = f"OCSIM_{section.upper()}_"
    for key, raw in (os.environ if env is None else env).items():
        if key.startswith(prefix):
            values[key[len(prefix):].lower()] = _coerce(raw)
    return values


def apply_config(parser: argparse.ArgumentParser, section: str, argv: Sequence[str],
                 env: Mapping[str, str] | None = None) -> None:
    """Install file and environment settings as defaults of `parser`."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(list(argv))
    values = load_config(section, known.config, env)
    actions = {a.dest: a for a in parser._actions}  # noqa: SLF001 - argparse has no public list
    unknown = sorted(set(values) - set(actions))
    if unknown:
        raise ConfigError(f"unknown {section} setting(s): {', '.join(unknown)}")
    # A string option (a token, a hex secret, a path) keeps the environment's text as is:
    # OCSIM_CONTROL_OPERATOR_TOKEN=0123 is the string "0123", not the integer 123.
    prefix = f"OCSIM_{section.upper()}_"
    for key, raw in (os.environ if env is None else env).items():
        dest = key[len(prefix):].lower() if key.startswith(prefix) else ""
        action = actions.get(dest)
        if action is not None and action.type is None and action.nargs is None and action.const is None:
            values[dest] = raw
    parser.set_defaults(**values)


def parse_service_args(parser: argparse.ArgumentParser, section: str, argv: Sequence[str]) -> argparse.Namespace:
    """Flags over environment over file: `apply_config`, then parse. A bad config file or
    setting is a usage error (exit 2) naming it, like a bad flag."""
    try:
        apply_config(parser, section, argv)
    except ConfigError as exc:
        parser.error(str(exc))
    return parser.parse_args(list(argv))
