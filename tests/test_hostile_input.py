"""Hostile input (issue 15, "found by the fuzzer"): one test per point, in process, plus the
strict input layer itself. The property-based fuzz over live services is in
tests/test_fuzz_services.py."""
from __future__ import annotations

import json
import logging
import math
from typing import Any

import msgpack
import pytest
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.test_utils import TestClient

from common.auth import bearer_matches
from common.errors import BadRequest, Conflict
from common.http_input import MAX_DEPTH, check_decoded, decode_json
from common.service import ClientParseErrors
from common.tokens import Keyring, TokenVerdict
from common.wire import BadMessage, BadSignature, Heartbeat, Register, sign, verify_signature
from control.fleet import Fleet
from edge.hitpath import _BARE_LINE_END_RE
from origin.link import LinkSettings, parse_rate

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------ the strict layer

@pytest.mark.parametrize("raw", [
    b"[" * 5000 + b"]" * 5000,                  # RecursionError before
    b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1),
    b'{"path": "\\ud800"}',                      # a lone surrogate (UnicodeEncodeError later)
    b'{"\\udfff": 1}',                           # ... in a key
    b'{"bandwidth_bps": 1e400}',                 # OverflowError later
    b'{"x": NaN}', b'{"x": Infinity}', b'{"x": -Infinity}',
    b'{"x": 1' + b"0" * 30 + b"}",               # beyond 64 bits
    b'{"x": "\xff"}', b'{"x": "\xed\xa0\x80"}',  # not UTF-8 / an encoded surrogate
])
def test_the_strict_layer_refuses_what_broke_handlers(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        decode_json(raw)


def test_the_strict_layer_passes_ordinary_bodies() -> None:
    value = {"path": "/content/t1/master.m3u8", "n": [1, 2.5, -3, True, None], "s": "h\u00e9llo \U0001f600"}
    assert decode_json(json.dumps(value).encode()) == value
    deep: Any = 1
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert decode_json(json.dumps(deep).encode()) == deep


def test_check_decoded_is_iterative() -> None:
    deep: Any = []
    for _ in range(100_000):  # far past the recursion limit; must be a 400, not a RecursionError
        deep = [deep]
    with pytest.raises(BadRequest):
        check_decoded(deep)


# ------------------------------------------------------------------ credentials

@pytest.mark.parametrize("header", ["Bearer \udcff", "Bearer tok\udcffen", "Bearer \u00e9", "Bearer a\x00b"])
def test_a_non_ascii_authorization_header_never_matches_and_never_raises(header: str) -> None:
    assert bearer_matches(header, "token") is False


def test_a_non_ascii_signature_is_a_bad_message_not_a_crash() -> None:
    with pytest.raises(BadMessage):
        verify_signature(b"k" * 32, b"body", "ab\udcffcd")
    with pytest.raises(BadSignature):
        verify_signature(b"k" * 32, b"body", "00" * 32)


# ------------------------------------------------------------------ signed messages

def _register_body(ts: Any) -> bytes:
    return msgpack.packb({"edge_id": "e1", "isp": "isp-a", "url": "http://127.0.0.1:1", "capacity_bytes": 1,
                          "ts": ts}, use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf])
def test_a_signed_message_with_a_non_finite_ts_is_refused(ts: float) -> None:
    key = b"k" * 32
    body = _register_body(ts)
    with pytest.raises(BadMessage):
        Register.unseal(key, body, sign(key, body))


def test_msgpack_goes_through_the_same_strict_layer() -> None:
    deep: Any = 1
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    body = msgpack.packb({"edge_id": "e1", "isp": "isp-a", "url": "u", "capacity_bytes": 1, "ts": 1.0,
                          "version": deep}, use_bin_type=True)
    with pytest.raises(BadMessage):
        Register.unpack(body)
    with pytest.raises(BadMessage):  # an integer msgpack can carry but JSON consumers could not
        Register.unpack(_register_body(2 ** 64 - 1))


def _hb(seq: int, ts: float, reg: float) -> Heartbeat:
    return Heartbeat("e1", "isp-a", "http://127.0.0.1:1", seq, ts, "up", 1000, 10, 1, 0.0, 0.0, 0.0,
                     registration_ts=reg)


def test_a_heartbeat_captured_before_a_re_registration_is_refused_after_it() -> None:
    fleet, now = Fleet(), 1_000_000.0
    fleet.register(Register("e1", "isp-a", "http://127.0.0.1:1", 1000, now), now)
    captured = _hb(50, now + 1, now)
    fleet.heartbeat(_hb(1, now + 1, now), now + 1)
    fleet.register(Register("e1", "isp-a", "http://127.0.0.1:1", 1000, now + 2), now + 2)  # the edge restarts
    with pytest.raises(Conflict):
        fleet.heartbeat(captured, now + 3)  # replayed: seq 50 > -1, but of the old registration
    fleet.heartbeat(_hb(1, now + 3, now + 2), now + 3)  # the edge's genuine next heartbeat still goes in


def test_a_nan_registration_cannot_disable_the_must_be_newer_check() -> None:
    key = b"k" * 32
    body = _register_body(math.nan)
    with pytest.raises(BadMessage):  # refused at decoding, so it never becomes register_ts
        Register.unseal(key, body, sign(key, body))


# ------------------------------------------------------------------ tokens

def test_a_token_has_one_spelling_only() -> None:
    ring = Keyring.generate()
    path = "/content/t1/master.m3u8"
    token = ring.sign("t1", 2_000_000_000)
    assert ring.check(token, path, 1.0) is TokenVerdict.OK
    kid, expiry, rest = token.split(".", 2)
    assert ring.check(f"{kid}.0{expiry}.{rest}", path, 1.0) is TokenVerdict.MALFORMED
    assert ring.check(f"{kid}.00{expiry}.{rest}", path, 1.0) is TokenVerdict.MALFORMED
    zero = ring.sign("t1", 0)
    assert zero.split(".")[1] == "0" and ring.check(zero, path, 0.0) is TokenVerdict.OK


# ------------------------------------------------------------------ the origin's link

@pytest.mark.parametrize("value", [1e400, math.inf, math.nan, 1e300, -1, "9" * 400 + "t", "1e400"])
def test_an_absurd_rate_is_a_bad_request_not_an_overflow(value: Any) -> None:
    with pytest.raises(BadRequest):
        LinkSettings().updated({"bandwidth_bps": value})
    with pytest.raises(ValueError):
        parse_rate(value)


# ------------------------------------------------------------------ the fast lane's heads

@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\n", b"GET / HTTP/1.1\nHost: a\n\n", b"GET / HTTP/1.1\rHost: a\r\r",
                                  b"GET / HTTP/1.1\r\nHost: a\n\r\n"])
def test_a_bare_line_end_is_seen_before_the_head_ends(head: bytes) -> None:
    assert _BARE_LINE_END_RE.search(head) is not None


@pytest.mark.parametrize("head", [b"GET / HTTP/1.1\r\nHost: a\r\n", b"GET / HTTP/1.1\r", b"GET / HTTP/1.1\r\n\r"])
def test_a_crlf_head_in_progress_is_not_a_bare_line_end(head: bytes) -> None:
    assert _BARE_LINE_END_RE.search(head) is None


# ------------------------------------------------------------------ logs

def test_a_parser_refusal_is_logged_at_info_without_a_traceback() -> None:
    try:
        raise BadHttpMessage("Invalid method encountered")
    except BadHttpMessage as exc:
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                   ("127.0.0.1",), (type(exc), exc, exc.__traceback__))
    assert ClientParseErrors().filter(record)
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "Invalid method" in record.getMessage()
    try:
        raise RuntimeError("ours")
    except RuntimeError as exc:
        ours = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request", (),
                                 (type(exc), exc, exc.__traceback__))
    assert ClientParseErrors().filter(ours) and ours.levelno == logging.ERROR and ours.exc_info is not None


# ------------------------------------------------------------------ the edge's and origin's admin APIs, in process

@pytest.fixture
async def origin_client(aiohttp_client: Any) -> TestClient[Any, Any]:
    from common.content import Catalog, Title
    from origin.app import build_app
    app = build_app(Catalog.of([Title("t1", 20.0, (235,), 1.0)]), LinkSettings(), "origin-token")
    c: TestClient[Any, Any] = await aiohttp_client(app)
    return c


ORIGIN_AUTH = {"Authorization": "Bearer origin-token"}


@pytest.mark.parametrize("body,ctype", [
    (b'{"bandwidth_bps": 1e400}', "application/json"),
    (b'{"latency_ms": 5}', "application/json; charset=nope"),
    (b'{"latency_ms": 5}', "application/json; charset=" + "x" * 200),
    (b'{"down": "\\ud800"}', "application/json"),
    (b"[" * 5000, "application/json"),
])
async def test_the_origin_s_put_link_refuses_hostile_bodies_with_a_4xx(origin_client: TestClient[Any, Any],
                                                                      body: bytes, ctype: str) -> None:
    before = await (await origin_client.get("/admin/link", headers=ORIGIN_AUTH)).json()
    resp = await origin_client.put("/admin/link", data=body, headers={**ORIGIN_AUTH, "Content-Type": ctype})
    assert 400 <= resp.status < 500 and "error" in await resp.json()
    assert await (await origin_client.get("/admin/link", headers=ORIGIN_AUTH)).json() == before


# ------------------------------------------------------------------ secrets from the environment

def test_a_secret_from_the_environment_stays_a_string() -> None:
    from common.config import apply_config
    from control.cli import build_parser
    parser = build_parser()
    apply_config(parser, "control", [], env={"OCSIM_CONTROL_OPERATOR_TOKEN": "0123",
                                             "OCSIM_CONTROL_FLEET_SECRET": "1" * 64, "OCSIM_CONTROL_PORT": "9100"})
    args = parser.parse_args([])
    assert args.operator_token == "0123" and args.fleet_secret == "1" * 64 and args.port == 9100
