"""Operator bearer tokens and shared secrets, compared in constant time."""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path


def printable_ascii(text: str) -> bool:
    """Only printable ASCII (and spaces/tabs): what a credential header may hold. aiohttp
    hands other bytes over as surrogate escapes, which must never reach `.encode()`."""
    return text.isascii() and all(" " <= c <= "~" or c == "\t" for c in text)


def bearer_matches(authorization: str | None, token: str) -> bool:
    """True when an `Authorization: Bearer <token>` header carries exactly `token`.

    A header with anything but printable ASCII never matches (and never raises)."""
    if not authorization or not token or not printable_ascii(authorization):
        return False
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())


def load_or_create_secret(state_dir: str | Path, name: str, nbytes: int = 32) -> str:
    """A hex secret kept in `state_dir/name` (mode 0600), generated on first use.

    No secret is ever built in: a fresh state directory gets fresh secrets."""
    path = Path(state_dir) / name
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(nbytes)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.replace(tmp, path)
    return value
