"""URL tokens: steering signs, edges check, locally and in constant time.

A token is `{kid}.{expiry}.{isp}.{sig}` where `sig` is the unpadded base64url of
HMAC-SHA256(key[kid], "ocsim-token/1\\n{kid}\\n{expiry}\\n{isp}\\n/content/{title}/").
It rides in the path ahead of the content path,

    /t/{token}/content/{title}/master.m3u8

so the relative URIs inside playlists keep it. The edge strips it before the cache
lookup; the token never becomes part of a cache key. Key ids let keys rotate: a
Keyring signs with its current key and accepts any key it still holds.

A catalog token, `{kid}.{expiry}.{isp}.all.{sig}`, signs the prefix `/content/` instead
(the same MAC, the same message with that prefix), so it is good for every title until
its expiry. Steering hands one out beside each play answer (the answer's `fallback`) so
that a player can start a title it was never steered to while the control plane is down
(issue 11); it is still a signed, ISP-bound, expiring token, and the "all" marker cannot
turn a title token into one (the MAC covers the prefix).
"""
from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from common.ids import ISP_RE, content_prefix

_KID_RE = re.compile(r"[a-z0-9]{1,16}\Z")
# One spelling per token: the expiry has no leading zeros (else "0123" and "123" would both verify).
_TOKEN_RE = re.compile(
    r"([a-z0-9]{1,16})\.(0|[1-9][0-9]{0,11})\.(-|[a-z0-9][a-z0-9-]{0,31})\.(?:(all)\.)?([A-Za-z0-9_-]{43})\Z")
NO_ISP = "-"
CATALOG_PREFIX = "/content/"  # what a catalog token signs: every title


class TokenVerdict(enum.Enum):
    OK = "ok"
    MISSING = "missing token"
    MALFORMED = "malformed token"
    UNKNOWN_KEY = "unknown token key"
    BAD_SIGNATURE = "bad token signature"  # tampered, or issued for another title
    EXPIRED = "expired token"


@dataclass(slots=True)
class Keyring:
    """Token keys by id; `current` signs."""

    keys: dict[str, bytes] = field(default_factory=dict)
    current: str = ""

    @classmethod
    def generate(cls, kid: str = "k1") -> Keyring:
        return cls({kid: secrets.token_bytes(32)}, kid)

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """From 'kid:hexsecret[,kid:hexsecret...]'; the first key is current."""
        ring = cls()
        for item in text.split(","):
            kid, sep, hexkey = item.strip().partition(":")
            if not sep or not _KID_RE.match(kid):
                raise ValueError("token key must look like kid:hexsecret")
            try:
                key = bytes.fromhex(hexkey)
            except ValueError:
                raise ValueError(f"token key {kid}: secret is not hex") from None
            if len(key) < 16:
                raise ValueError(f"token key {kid}: secret shorter than 16 bytes")
            ring.keys[kid] = key
            ring.current = ring.current or kid
        if not ring.keys:
            raise ValueError("empty token keyring")
        return ring

    def format(self) -> str:
        order = [self.current] + [k for k in self.keys if k != self.current]
        return ",".join(f"{k}:{self.keys[k].hex()}" for k in order)

    def sign(self, title: str, expiry: int, isp: str = NO_ISP) -> str:
        if isp != NO_ISP and not ISP_RE.match(isp):
            raise ValueError(f"invalid isp name {isp!r}")
        sig = _mac(self.keys[self.current], self.current, expiry, isp, content_prefix(title))
        return f"{self.current}.{expiry}.{isp}.{sig}"

    def sign_catalog(self, expiry: int, isp: str = NO_ISP) -> str:
        """A token good for every title's content path until `expiry` (see the module doc)."""
        if isp != NO_ISP and not ISP_RE.match(isp):
            raise ValueError(f"invalid isp name {isp!r}")
        sig = _mac(self.keys[self.current], self.current, expiry, isp, CATALOG_PREFIX)
        return f"{self.current}.{expiry}.{isp}.all.{sig}"

    def check(self, token: str | None, content_path: str, now: float) -> TokenVerdict:
        """Is `token` valid for `content_path` at `now`? Constant-time in the signature."""
        return self.verify(token, content_path, now).verdict

    def verify(self, token: str | None, content_path: str, now: float) -> TokenCheck:
        """`check`, with the expiry the token carries when its signature is good (the one
        place the token format is parsed)."""
        if not token:
            return TokenCheck(TokenVerdict.MISSING)
        m = _TOKEN_RE.match(token)
        if not m:
            return TokenCheck(TokenVerdict.MALFORMED)
        kid, expiry_s, isp, scope, sig = m.groups()
        key = self.keys.get(kid)
        if key is None:
            return TokenCheck(TokenVerdict.UNKNOWN_KEY)
        title = _title_of(content_path)
        if title is None:
            return TokenCheck(TokenVerdict.BAD_SIGNATURE)
        expiry = int(expiry_s)
        expected = _mac(key, kid, expiry, isp, CATALOG_PREFIX if scope else content_prefix(title))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            return TokenCheck(TokenVerdict.BAD_SIGNATURE)
        if expiry < now:
            return TokenCheck(TokenVerdict.EXPIRED, expiry)
        return TokenCheck(TokenVerdict.OK, expiry)


@dataclass(frozen=True, slots=True)
class TokenCheck:
    verdict: TokenVerdict
    expiry: int = 0  # set when the signature is good (OK or EXPIRED)


def _title_of(content_path: str) -> str | None:
    """The title segment a token is bound to, or None if `content_path` has none."""
    parts = content_path.split("/", 3)
    if len(parts) < 4 or parts[1] != "content" or not parts[2]:
        return None
    return parts[2]


class TokenVerdicts:
    """A bounded memo of verified tokens, so a player's many requests with one token cost
    a dict lookup: (token, title) -> the expiry `Keyring.verify` read from it.

    Rules: only a good signature is remembered (a bad token is HMAC-checked once per
    request, never twice); the memo never parses a token itself, it keeps what `verify`
    returned; a different keyring object forgets everything remembered."""

    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._expiry: dict[tuple[str, str], int] = {}
        self._ring: Keyring | None = None

    def __len__(self) -> int:
        return len(self._expiry)

    def check(self, ring: Keyring, token: str | None, content_path: str, now: float) -> TokenVerdict:
        if self._ring is not ring:
            self._expiry.clear()
            self._ring = ring
        title = _title_of(content_path) if token else None
        if token and title is not None:
            expiry = self._expiry.get((token, title))
            if expiry is not None:
                return TokenVerdict.OK if expiry >= now else TokenVerdict.EXPIRED
        result = ring.verify(token, content_path, now)
        if result.verdict is TokenVerdict.OK and token and title is not None:
            if len(self._expiry) >= self.max_entries:
                self._expiry.clear()
            self._expiry[(token, title)] = result.expiry
        return result.verdict


def _mac(key: bytes, kid: str, expiry: int, isp: str, prefix: str) -> str:
    msg = f"ocsim-token/1\n{kid}\n{expiry}\n{isp}\n{prefix}".encode()
    return base64.urlsafe_b64encode(hmac.new(key, msg, hashlib.sha256).digest()).rstrip(b"=").decode()


def split_token_path(path: str) -> tuple[str | None, str]:
    """'/t/{token}/content/...' -> (token, '/content/...'); other paths -> (None, path)."""
    if path.startswith("/t/"):
        token, sep, rest = path[3:].partition("/")
        if sep:
            return token, "/" + rest
        return token, ""
    return None, path


def token_url(base_url: str, token: str, content_path: str) -> str:
    return f"{base_url.rstrip('/')}/t/{token}{content_path}"
