"""Property-based fuzz (hypothesis) of every JSON and msgpack endpoint of the origin, the
control plane and an edge, and of raw request lines and headers at the edge's fast lane.

Real processes on loopback, raw sockets with bounded timeouts (so a hang fails the test
instead of stalling it). Properties: every answer is a complete HTTP response below 500
(or a closed connection, never silence), a refused request changes no state, and at the
end no service logged a traceback or an ERROR. Secrets go to the services through the
environment (OCSIM_*), never argv. Derandomized, so a run is the same every time.
"""
from __future__ import annotations

import json
import secrets
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.wire import CONTENT_TYPE as MSGPACK, EDGE_HEADER, SIGNATURE_HEADER, edge_key, sign
from ocsim.procs import ServiceProcess

pytestmark = pytest.mark.timeout(120)

IO_TIMEOUT_S = 5.0  # no answer within this is a hang
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FUZZ_EDGE = "fz1"  # a made-up edge the test can sign for (it knows the fleet secret)


@dataclass
class Topo:
    origin: str
    control: str
    edge: str
    origin_token: str
    control_token: str
    edge_token: str
    fleet_secret: bytes
    procs: list[ServiceProcess]


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topo]:
    tmp = tmp_path_factory.mktemp("fuzz")
    logs = tmp / "logs"
    tokens = [secrets.token_hex(12) for _ in range(3)]
    fleet = secrets.token_bytes(32)
    (tmp / "topology.toml").write_text('[isps.isp-a]\nprefixes = ["10.1.0.0/16"]\n')
    procs: list[ServiceProcess] = []

    def start(name: str, args: list[str], env: dict[str, str]) -> ServiceProcess:
        p = ServiceProcess(name, args, log_dir=logs, env=env)
        procs.append(p)
        return p.start(30)

    try:
        origin = start("origin", ["origin", "--host", "127.0.0.1", "--port", "0", "--seed", "1",
                                  "--state-dir", str(tmp / "origin")], {"OCSIM_ORIGIN_ADMIN_TOKEN": tokens[0]})
        control = start("control", ["control", "--host", "127.0.0.1", "--port", "0", "--state-dir", str(tmp / "c"),
                                    "--origin", origin.url, "--topology", str(tmp / "topology.toml")],
                        {"OCSIM_CONTROL_OPERATOR_TOKEN": tokens[1], "OCSIM_CONTROL_FLEET_SECRET": fleet.hex()})
        edge = start("edge", ["edge", "--host", "127.0.0.1", "--port", "0", "--id", "e1", "--isp", "isp-a",
                              "--upstream", origin.url, "--control", control.url, "--cache-dir", str(tmp / "cache"),
                              "--capacity", "20MB"],
                     {"OCSIM_EDGE_OPERATOR_TOKEN": tokens[2], "OCSIM_EDGE_EDGE_KEY": edge_key(fleet, "e1").hex()})
        for p in procs:  # secrets never on a command line
            cmdline = Path(f"/proc/{p.pid}/cmdline").read_bytes()
            assert not any(t.encode() in cmdline for t in tokens) and fleet.hex().encode() not in cmdline
        yield Topo(origin.url, control.url, edge.url, tokens[0], tokens[1], tokens[2], fleet, procs)
    finally:
        for p in reversed(procs):
            p.stop(timeout=10)
    for p in procs:  # after a clean stop: nothing of ours went wrong, nothing the clients did was an ERROR
        text = p.log_path.read_text(errors="replace") if p.log_path else ""
        assert "Traceback" not in text, f"{p.name} logged a traceback"
        errors = [ln for ln in text.splitlines() if '"level": "error"' in ln]
        assert not errors, f"{p.name} logged errors: {errors[:3]}"


# ------------------------------------------------------------------ a raw HTTP/1.1 client

def exchange(url: str, raw: bytes) -> bytes:
    """Send `raw`, return what came back up to the end of the response head (or until the
    server closed). A silent server past IO_TIMEOUT_S fails the test: that is a hang."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=IO_TIMEOUT_S) as s:
        s.sendall(raw)
        got = b""
        deadline = time.monotonic() + IO_TIMEOUT_S
        while b"\r\n\r\n" not in got:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no answer within {IO_TIMEOUT_S}s to {raw[:120]!r}") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got


def status_of(answer: bytes, raw: bytes) -> int | None:
    """The status of a response head; None for a connection closed without one."""
    if not answer:
        return None
    assert answer.startswith(b"HTTP/1.1 ") or answer.startswith(b"HTTP/1.0 "), (raw[:120], answer[:120])
    code = int(answer.split(b" ", 2)[1])
    assert code < 500, f"{code} for {raw[:200]!r}: {answer[:300]!r}"
    return code


def request(method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: fuzz", b"Connection: close",
             b"Content-Length: %d" % len(body)]
    lines += [k + b": " + v for k, v in headers or []]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def call(url: str, method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
         ) -> tuple[int | None, bytes]:
    raw = request(method, path, body, headers)
    answer = exchange(url, raw)
    return status_of(answer, raw), answer


def get_json(url: str, path: str, token: str) -> Any:
    raw = request("GET", path, headers=[(b"Authorization", f"Bearer {token}".encode())])
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=IO_TIMEOUT_S) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return json.loads(body)


# ------------------------------------------------------------------ strategies

json_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c,
                                                                                          max_size=3), max_leaves=8)
# Spellings json.dumps never makes but a hostile client does.
hostile_literal = st.sampled_from([b"1e400", b"-1e400", b"NaN", b"Infinity", b"-Infinity", b'"\\ud800"',
                                   b'"\\udfff x"', b'"\xff"', b'"\xed\xa0\x80"', b"1" + b"0" * 30,
                                   b"9" * 5000, b"-0.0", b'"' + b"a" * 70000 + b'"', b"[" * 3000 + b"]" * 3000,
                                   b'{"a":' * 3000 + b"1" + b"}" * 3000, b"[true]", b'"/content/t1/master.m3u8"'])
charsets = st.sampled_from(["", "; charset=utf-8", "; charset=UTF-8", "; charset=nope", "; charset=base64",
                            "; charset=rot13", "; charset=" + "x" * 200, "; charset=latin-1", "; charset=\"utf-16\""])


def json_body(fields: list[str]) -> st.SearchStrategy[bytes]:
    """A JSON object of (mostly) the endpoint's own fields, each a value or a hostile literal,
    or a whole hostile body."""
    value = json_value.map(lambda v: json.dumps(v).encode()) | hostile_literal
    names = st.sampled_from([*fields, "extra", "\\ud800"])
    obj = st.lists(st.tuples(names, value), max_size=4).map(
        lambda kv: b"{" + b",".join(b'"' + k.encode() + b'":' + v for k, v in kv) + b"}")
    return obj | hostile_literal | st.binary(max_size=64)


AUTH_SHAPES = st.sampled_from(["good", "good", "good", "good", "none", "wrong", "xff", "other-service"])


def auth_header(shape: str, token: str, other: str) -> list[tuple[bytes, bytes]]:
    return {"good": [(b"Authorization", b"Bearer " + token.encode())], "none": [],
            "wrong": [(b"Authorization", b"Bearer nope")], "xff": [(b"Authorization", b"Bearer \xff" + token.encode())],
            "other-service": [(b"Authorization", b"Bearer " + other.encode())]}[shape]


def snapshot(t: Topo) -> tuple[Any, ...]:
    """What a refused request must not change."""
    link = get_json(t.origin, "/admin/link", t.origin_token)
    estats = get_json(t.edge, "/admin/stats", t.edge_token)
    catalog = get_json(t.control, "/v1/catalog", t.control_token)
    jobs = get_json(t.control, "/v1/prepositions", t.control_token)
    fleet = get_json(t.control, "/v1/fleet", t.control_token)
    edges = sorted((e["id"], e["isp"], e["url"], e.get("admin_down")) for e in fleet["edges"])
    return link, {k: estats.get(k) for k in ("objects", "pinned_objects", "used_bytes")}, catalog, jobs, edges


# (service attribute, token attribute, other service's token attribute, method, path, fields)
JSON_ENDPOINTS = [
    ("origin", "origin_token", "edge_token", "PUT", "/admin/link",
     ["latency_ms", "bandwidth_bps", "total_bandwidth_bps", "error_rate", "down"]),
    ("edge", "edge_token", "control_token", "POST", "/admin/purge", ["path", "title"]),
    ("edge", "edge_token", "control_token", "POST", "/admin/pin", ["path"]),
    ("edge", "edge_token", "control_token", "POST", "/admin/unpin", ["path"]),
    ("control", "control_token", "edge_token", "POST", "/v1/play", ["title", "client_ip", "isp"]),
    ("control", "control_token", "edge_token", "POST", "/v1/edges/e1/admin", ["down"]),
    ("control", "control_token", "edge_token", "POST", "/v1/prepositions",
     ["titles", "top", "renditions", "bandwidth_bps", "replicas"]),  # no "isp": a job that ran would fill the edge
]
GET_ENDPOINTS = [("origin", "origin_token", "edge_token", "/admin/stats"), ("origin", "origin_token", "edge_token", "/admin/link"),
                 ("edge", "edge_token", "control_token", "/admin/stats"),
                 ("control", "control_token", "edge_token", "/v1/fleet"),
                 ("control", "control_token", "edge_token", "/v1/prepositions")]


@given(st.data())
@SETTINGS
def test_json_endpoints_answer_hostile_bodies_with_a_4xx_and_change_nothing(topo: Topo, data: st.DataObject) -> None:
    svc, tok, other, method, path, fields = data.draw(st.sampled_from(JSON_ENDPOINTS), "endpoint")
    body = data.draw(json_body(fields), "body")
    ctype = "application/json" + data.draw(charsets, "charset")
    headers = [(b"Content-Type", ctype.encode()), *auth_header(data.draw(AUTH_SHAPES, "auth"),
                                                               getattr(topo, tok), getattr(topo, other))]
    before = snapshot(topo)
    status, _ = call(getattr(topo, svc), method, path, body, headers)
    if status is None or status >= 400:
        assert snapshot(topo) == before, (svc, path, body[:200])


@given(st.data())
@settings(SETTINGS, max_examples=40)
def test_operator_reads_refuse_bad_credentials_with_401_or_403(topo: Topo, data: st.DataObject) -> None:
    svc, tok, other, path = data.draw(st.sampled_from(GET_ENDPOINTS), "endpoint")
    shape = data.draw(AUTH_SHAPES, "auth")
    status, _ = call(getattr(topo, svc), "GET", path, headers=auth_header(shape, getattr(topo, tok),
                                                                           getattr(topo, other)))
    expected = {"good": {200}, "none": {401}, "xff": {401}, "wrong": {403}, "other-service": {403}}[shape]
    assert status in expected, (svc, path, shape, status)


REGISTER_FIELDS = {"edge_id": FUZZ_EDGE, "isp": "isp-a", "url": "http://127.0.0.1:9", "capacity_bytes": 10 ** 9,
                   "ts": 0.0}
msgpack_leaf = (st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 64 - 1) | st.floats() | st.text(max_size=8)
                | st.binary(max_size=8))
msgpack_value = st.recursive(msgpack_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                                max_size=3),
                             max_leaves=6)
deep_list: Any = 1
for _ in range(200):
    deep_list = [deep_list]


@given(st.data())
@settings(SETTINGS, max_examples=100)
def test_msgpack_endpoints_answer_hostile_messages_with_a_4xx(topo: Topo, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["register", "heartbeat"]), "kind")
    msg: dict[str, Any] = {**REGISTER_FIELDS, "ts": time.time()}
    if kind == "heartbeat":
        msg.update(seq=1, state="up", used_bytes=0, objects=0, req_rate=0.0, byte_rate=0.0, hit_ratio=0.0,
                   registration_ts=0.0)
    for name in data.draw(st.lists(st.sampled_from([*msg, "extra"]), max_size=3), "fields"):
        msg[name] = data.draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 2 ** 64 - 1, deep_list,
                                               "\udcff".encode("utf-8", "surrogatepass")]) | msgpack_value, name)
    form = data.draw(st.sampled_from(["map", "map", "map", "garbage"]), "form")
    body = msgpack.packb(msg, use_bin_type=True) if form == "map" else data.draw(st.binary(max_size=64), "garbage")
    key = edge_key(topo.fleet_secret, FUZZ_EDGE)
    sig = data.draw(st.sampled_from(["good", "good", "good", "xff", "none", "bad"]), "sig")
    sig_header = {"good": sign(key, body).encode(), "xff": b"\xff" + sign(key, body).encode(), "none": None,
                  "bad": b"00" * 32}[sig]
    edge_hdr = data.draw(st.sampled_from([FUZZ_EDGE.encode(), b"fz\xff", b""]), "edge header")
    headers = [(b"Content-Type", MSGPACK.encode()), (EDGE_HEADER.encode(), edge_hdr)]
    if sig_header is not None:
        headers.append((SIGNATURE_HEADER.encode(), sig_header))
    path = "/v1/edges/register" if kind == "register" else f"/v1/edges/{FUZZ_EDGE}/heartbeat"
    call(topo.control, "POST", path, body, headers)  # no 5xx, no hang (checked inside)


token_chars = st.sampled_from(list(b"!#$%&'*+.^_`|~-") + list(range(ord("0"), ord("9") + 1))
                              + list(range(ord("a"), ord("z") + 1)) + [0xFF, 0x00, ord(" "), ord(":")])
header_name = st.lists(token_chars, min_size=0, max_size=10).map(bytes).filter(
    lambda n: n.strip().lower() not in (b"content-length", b"transfer-encoding", b"expect"))
header_value = st.binary(max_size=20).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))


@given(method=st.sampled_from([b"GET", b"HEAD", b"POST", b"G\xffT", b"", b"get"]),
       target=st.sampled_from([b"/", b"/content/title-001/master.m3u8", b"/healthz", b"/t/x/content/a/b", b"*",
                               b"/\xff", b"/%00", b"/" + b"a" * 9000]) | st.binary(max_size=12),
       version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"HTTP/1.1 extra", b""]),
       line_end=st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]),
       headers=st.lists(st.tuples(header_name, header_value), max_size=4),
       split=st.integers(0, 40))
@settings(SETTINGS, max_examples=150)
def test_raw_request_heads_at_the_edge_get_an_answer(topo: Topo, method: bytes, target: bytes, version: bytes,
                                                     line_end: bytes, headers: list[tuple[bytes, bytes]],
                                                     split: int) -> None:
    lines = [method + b" " + target + b" " + version, b"Host: fuzz", *(k + b":" + v for k, v in headers)]
    raw = line_end.join(lines) + line_end + line_end
    parts = urlsplit(topo.edge)
    with socket.create_connection((parts.hostname, parts.port), timeout=IO_TIMEOUT_S) as s:
        s.sendall(raw[:split])  # the head may arrive in two reads
        s.sendall(raw[split:])
        got = b""
        deadline = time.monotonic() + IO_TIMEOUT_S
        while b"\r\n\r\n" not in got:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                raise AssertionError(f"edge hung on {raw[:150]!r}") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
    status_of(got, raw)


@pytest.mark.parametrize("line_end", [b"\n", b"\r"])
def test_a_request_with_bare_line_ends_is_answered_not_left_hanging(topo: Topo, line_end: bytes) -> None:
    raw = line_end.join([b"GET /content/title-001/master.m3u8 HTTP/1.1", b"Host: fuzz", b"", b""])
    status_of(exchange(topo.edge, raw), raw)  # within IO_TIMEOUT_S, and not a 5xx


def test_the_fuzzed_services_are_still_healthy(topo: Topo) -> None:
    for url in (topo.origin, topo.control, topo.edge):
        status, _ = call(url, "GET", "/healthz")
        assert status == 200, url
    assert all(p.alive() for p in topo.procs)
    print(f"fuzzed with python {sys.version.split()[0]}")
