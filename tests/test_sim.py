"""The offline simulator: hand-computed replays, Belady, workloads, CLI, libCacheSim."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.policy import DEFAULT_POLICY, POLICIES, make_policy
from sim.belady import NEVER, belady_hits, next_uses
from sim.cli import main
from sim.replay import BELADY, preposition_sets, replay
from sim.sizes import parse_size
from sim.steering import assign_edges, title_of
from sim.trace import Trace, TraceFormatError, read_trace, write_trace
from sim.workload import LADDER_KBPS, SessionWorkload, session_trace, video_objects_trace, zipf_trace


def letters(keys: str, size: int = 1) -> Trace:
    return Trace(times=[float(i) for i in range(len(keys))], keys=list(keys), sizes=[size] * len(keys))


# -- Belady ---------------------------------------------------------------------------


def test_next_uses() -> None:
    assert next_uses(list("ABAB C")) == [2, 3, NEVER, NEVER, NEVER, NEVER]


def test_belady_hand_computed() -> None:
    # C and D are never used again: MIN does not cache them, A and B always hit.
    assert belady_hits(list("ABCABDAB"), [1] * 8, 2) == [False, False, False, True, True, False, True, True]
    # At C, the furthest next use among {A(4), B(3), C(5)} is C's own: C is bypassed.
    assert belady_hits(list("ABCBAC"), [1] * 6, 2) == [False, False, False, True, True, False]
    # At t2, next uses are A:3, B:4, C:5 -> C is bypassed; at t5 C is never used again.
    assert belady_hits(list("ABCABCA"), [1] * 7, 2) == [False, False, False, True, True, False, True]
    # At t2, next uses are A:5, B:3, C:4 -> A (furthest) is evicted, C kept.
    assert belady_hits(list("ABCBCA"), [1] * 6, 2) == [False, False, False, True, True, False]


def test_belady_variable_sizes_and_pins() -> None:
    # capacity 3: A(2) and B(1) fill it; C(2) is never reused and is bypassed.
    assert belady_hits(list("ABCAB"), [2, 1, 2, 2, 1], 3) == [False, False, False, True, True]
    # A pinned 2 of 3 bytes: B(2) can never fit, A always hits.
    assert belady_hits(list("ABAB"), [2, 2, 2, 2], 3, pinned={"A": 2}) == [True, False, True, False]


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.integers(0, 12), max_size=150), capacity=st.integers(1, 8))
def test_belady_beats_every_policy_with_equal_sizes(keys: list[int], capacity: int) -> None:
    trace = Trace(times=[0.0] * len(keys), keys=[str(k) for k in keys], sizes=[1] * len(keys))
    best = replay(trace, BELADY, capacity).total.hits
    for name in POLICIES:
        assert replay(trace, name, capacity).total.hits <= best


# -- replay -----------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "hits"), [
    ("lru", 1),      # A B C A D B: only the second A
    ("sieve", 1),
    (BELADY, 2),     # A and B kept, C and D bypassed
])
def test_replay_hand_computed(policy: str, hits: int) -> None:
    result = replay(letters("ABCADB"), policy, 3).total
    assert (result.requests, result.hits) == (6, hits)


@pytest.mark.parametrize(("policy", "hits"), [
    # capacity 4, unit sizes; "ABAC DBA" ("_" below is the key " ")
    # LRU: D evicts B (the least recently used), B evicts A: only the 2nd request for A hits.
    ("lru", [0, 0, 1, 0, 0, 0, 0, 0]),
    # (S3-FIFO's hand-computed case is in tests/test_policy.py: with a 4-byte cache its
    # small queue, 10% of the bytes, is too small to cache anything.)
    ("s3fifo", [0] * 8),
])
def test_replay_hand_computed_scan(policy: str, hits: list[int]) -> None:
    from edge.policy import make_policy

    trace = letters("ABAC DBA")
    cache = make_policy(policy, 4)
    assert [int(cache.request(k, 1)) for k in trace.keys] == hits
    assert replay(trace, policy, 4).total.hits == sum(hits)


@pytest.mark.parametrize("fraction", [0.01, 0.05])
@pytest.mark.parametrize("workload", ["lognormal", "pareto", "video"])
@pytest.mark.parametrize("policy", POLICIES)
def test_replay_counts_as_the_edge_s_calls_on_variable_sizes(policy: str, workload: str,
                                                             fraction: float) -> None:
    """The simulator's batch replay (each policy's written-out loop) gives exactly the hits,
    misses, bytes hit and byte misses of the edge's own calls, `lookup` and then `admit` on
    a miss (the base class's generic path through the policy's hooks), on generated
    variable-size traces at 1 % and 5 % of the unique bytes."""
    trace = (video_objects_trace(40, 30_000, 0.9, seed=3) if workload == "video"
             else zipf_trace(3_000, 30_000, 0.8, seed=3, sizes=workload))
    capacity = int(fraction * trace.unique_bytes)
    total = replay(trace, policy, capacity).total
    cache = make_policy(policy, capacity)
    hits = hit_bytes = 0
    for key, size in zip(trace.keys, trace.sizes):
        if cache.lookup(key):
            hits += 1
            hit_bytes += size
        else:
            cache.admit(key, size)
    assert 0 < hits < len(trace)
    assert (total.hits, total.bytes_hit) == (hits, hit_bytes)
    assert (total.requests - total.hits, total.origin_bytes) == (len(trace) - hits, trace.requested_bytes - hit_bytes)


def test_replay_counts_bytes_and_origin() -> None:
    trace = Trace(times=[0.0] * 4, keys=list("ABAB"), sizes=[10, 30, 10, 30])
    total = replay(trace, "lru", 100).total.to_dict()
    assert total["object_miss_ratio"] == 0.5
    assert total["byte_miss_ratio"] == 0.5
    assert total["origin_bytes"] == 40 and total["offload"] == 0.5
    lru_small = replay(trace, "lru", 30).total
    assert lru_small.hits == 0  # B evicts A and vice versa


@pytest.mark.parametrize("name", POLICIES)
async def test_replay_matches_a_live_edge_store(name: str, tmp_path: Path) -> None:
    """The simulator's hits are the live edge's hits for the same request sequence.

    The edge side is the real DiskStore doing what a miss does live: lookup, reserve (admit,
    then hold the bytes while filling), write the file, commit (release the hold). A
    policy whose live path differs from its simulated one (e.g. a fill re-entering a
    different queue than an admission would) shows up here as a different hit list."""
    from common.ids import parse_content_key
    from edge.store import DiskStore, ObjectMeta

    trace = zipf_trace(120, 1500, 0.9, 7, seed=3)
    store = DiskStore(tmp_path / "cache", make_policy(name, 200))
    await store.open()
    live: list[bool] = []
    for key, size, now in zip(trace.keys, trace.sizes, trace.times):
        path = parse_content_key(f"/content/t/235/{key}.seg")  # the store's keys are cache keys
        if store.lookup(path, now) is not None:
            live.append(True)
            continue
        live.append(False)
        res = store.reserve(path, size, now)
        if res is None:
            continue
        await store.begin(res)
        await store.write(res, b"x" * size)
        await store.commit(res, ObjectMeta(key=path.text, length=size, etag='"e"', content_type="video/mp2t",
                                           stored_at=now))
    await store.close()
    policy = make_policy(name, 200)
    simulated = [policy.request(key, size, now) for key, size, now in zip(trace.keys, trace.sizes, trace.times)]
    assert live == simulated
    assert replay(trace, name, 200).total.hits == sum(live)


def test_multi_edge_steering_and_preposition() -> None:
    trace = session_trace(SessionWorkload(titles=40, requests=4000, seed=2))
    assignment = assign_edges(trace.keys, 3)
    by_title: dict[str, int] = {}
    for key, edge in zip(trace.keys, assignment):
        assert by_title.setdefault(title_of(key), edge) == edge
    capacity = trace.unique_bytes // 20
    result = replay(trace, "lru", capacity, edges=3, assignment=assignment)
    assert result.total.requests == len(trace) == sum(e.requests for e in result.edges)
    pins = preposition_sets(trace, assignment, 3, capacity, 0.5)
    for edge, pinned in enumerate(pins):
        assert sum(pinned.values()) <= capacity // 2
        assert all(assignment[trace.keys.index(k)] == edge for k in pinned)
    pre = replay(trace, "lru", capacity, edges=3, preposition=0.5, assignment=assignment)
    assert pre.total.preposition_bytes == sum(sum(p.values()) for p in pins)
    pinned_requests = sum(1 for key, edge in zip(trace.keys, assignment) if key in pins[edge])
    assert pre.total.hits >= pinned_requests  # a pinned object always hits


# -- workloads, traces, sizes ---------------------------------------------------------


def test_zipf_is_seeded_and_skewed() -> None:
    a, b = zipf_trace(100, 3000, 1.0, seed=5), zipf_trace(100, 3000, 1.0, seed=5)
    assert a.keys == b.keys and a.keys != zipf_trace(100, 3000, 1.0, seed=6).keys
    assert a.keys.count("0") > a.keys.count("50") and set(a.sizes) == {4000}


def test_sessions_are_seeded_video_shaped() -> None:
    w = SessionWorkload(titles=30, requests=3000, seed=9)
    trace = session_trace(w)
    assert trace.keys == session_trace(w).keys and len(trace) == 3000
    assert trace.times == sorted(trace.times)
    for key, size in zip(trace.keys, trace.sizes):
        _, content, title, kbps, seg = key.split("/")
        assert content == "content" and seg.endswith(".seg") and int(kbps) in LADDER_KBPS
        nominal = int(kbps) * 1000 * 4 / 8
        assert 0.89 * nominal <= size <= 1.11 * nominal
    # sessions watch consecutive segments: many requests are followed by segment n+1
    seen = set(trace.keys)
    follows = sum(1 for k in seen if k.replace(f"/{k.rsplit('/', 1)[1]}",
                                                f"/{int(k.rsplit('/', 1)[1][:-4]) + 1}.seg") in seen)
    assert follows > len(seen) // 2


def test_trace_csv_roundtrip(tmp_path: Path) -> None:
    trace = zipf_trace(50, 200, 0.8, 1234, seed=1)
    write_trace(trace, tmp_path / "t.csv")
    back = read_trace(tmp_path / "t.csv")
    assert back.keys == trace.keys and back.sizes == trace.sizes
    (tmp_path / "bad.csv").write_text("time,id\n1,a\n")
    with pytest.raises(TraceFormatError):
        read_trace(tmp_path / "bad.csv")


@pytest.mark.parametrize(("text", "expected"), [
    ("123", 123), ("5KB", 5000), ("2MB", 2_000_000), ("1GB", 10**9), ("1TB", 10**12),
    ("1KiB", 1024), ("3MiB", 3 * 1024**2), ("1.5GiB", int(1.5 * 1024**3)), ("1TiB", 1024**4),
    ("5%", 50),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text, percent_of=1000) == expected


@pytest.mark.parametrize("text", ["", "12XB", "-5", "5%%"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text, percent_of=1000)


# -- CLI ------------------------------------------------------------------------------


def test_cli_json_defaults(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_trace = tmp_path / "trace.csv"
    argv = ["--synthetic", "zipf", "--requests", "4000", "--objects", "400", "--cache-size", "5%",
            "--json", "--write-trace", str(out_trace), "--preposition", "0.2"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["default"] == DEFAULT_POLICY
    assert set(report["policies"]) == {"lru", BELADY, DEFAULT_POLICY}
    for stats in report["policies"].values():
        assert {"object_miss_ratio", "byte_miss_ratio", "requests_per_s", "offload",
                "origin_bytes", "prepositioned"} <= set(stats)
    assert report["cache_size_bytes"] == int(0.05 * report["trace"]["unique_bytes"])
    assert main(["--trace", str(out_trace), "--cache-size", "80KB", "--policies", "sieve,s3fifo",
                 "--edges", "2", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert set(again["policies"]) == {"sieve", "s3fifo"} and again["edges"] == 2


def test_cli_mrc_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--requests", "2000", "--titles", "20", "--policies", "lru,belady",
                 "--mrc-out", str(tmp_path / "mrc")]) == 0
    assert "lru" in capsys.readouterr().out
    rows = (tmp_path / "mrc" / "mrc.csv").read_text().splitlines()
    assert rows[0].startswith("policy,cache_fraction") and len(rows) == 1 + 2 * 7
    assert (tmp_path / "mrc" / "mrc.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["--trace", str(tmp_path / "missing.csv")]) == 2
    assert main(["--synthetic", "zipf", "--requests", "10", "--policies", "nope"]) == 2


# -- against libCacheSim (reduced size; bench/libcachesim_check.py is the full run) ----


def test_lru_and_belady_match_libcachesim(tmp_path: Path) -> None:
    lcs = pytest.importorskip("libcachesim")
    trace = zipf_trace(2000, 60_000, 0.8, 100, seed=4)
    capacity = 100 * 100
    future = next_uses(trace.keys)
    path = tmp_path / "trace.oracleGeneral"
    record = struct.Struct("<IQIq")
    path.write_bytes(b"".join(record.pack(int(t), int(k) + 1, s, -1 if n == NEVER else n)
                              for t, k, s, n in zip(trace.times, trace.keys, trace.sizes, future)))
    for name, cls in (("lru", lcs.LRU), (BELADY, lcs.Belady)):
        reader = lcs.TraceReader(os.fspath(path), lcs.TraceType.ORACLE_GENERAL_TRACE)
        theirs, _ = cls(capacity).process_trace(reader)
        ours = replay(trace, name, capacity).total.to_dict()["object_miss_ratio"]
        assert abs(ours - theirs) < 0.005, (name, ours, theirs)


def test_synthetic_segment_sizes_are_the_live_content_model() -> None:
    """A session trace's segment sizes are what the origin serves for the same segment."""
    from common.content import Title
    from sim.workload import segment_size

    title = Title("title-7", 600.0)
    for kbps in LADDER_KBPS:
        for n in (0, 1, 57):
            assert segment_size("title-7", kbps, n) == title.segment(kbps, n).length
