"""The edge's eviction policies: hand-computed cases, invariants, defining behaviour."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import random

from edge.policy import (
    DEFAULT_POLICY,
    POLICIES,
    Admission,
    EvictionPolicy,
    LRUPolicy,
    S3FIFOPolicy,
    S3TinyLFUPolicy,
    SievePolicy,
    WTinyLFUPolicy,
    make_policy,
)

FAST = settings(max_examples=150, deadline=None)


def drive(policy: EvictionPolicy, keys: str, size: int = 1) -> tuple[list[bool], list[str]]:
    """Edge-style calls for each one-letter key; returns hits and evictions in order."""
    hits: list[bool] = []
    evicted: list[str] = []
    for key in keys:
        if policy.lookup(key):
            hits.append(True)
        else:
            hits.append(False)
            evicted.extend(policy.admit(key, size).evicted)
    return hits, evicted


# -- hand-computed cases -------------------------------------------------------------


def test_lru_evicts_least_recently_used() -> None:
    lru = LRUPolicy(3)
    hits, evicted = drive(lru, "ABCAD")
    assert hits == [False, False, False, True, False]
    assert evicted == ["B"]
    assert sorted(lru.keys()) == ["A", "C", "D"]


def test_sieve_hand_skips_visited_and_stays() -> None:
    sieve = SievePolicy(3)
    hits, evicted = drive(sieve, "ABCA")
    assert hits == [False, False, False, True]
    # D: the hand starts at the oldest (A, visited: cleared, skipped) and evicts B.
    assert sieve.admit("D", 1).evicted == ("B",)
    assert sieve.hand == "C"
    # E: the hand is at C (not visited): C goes, A survives although it is older.
    assert sieve.admit("E", 1).evicted == ("C",)
    assert sorted(sieve.keys()) == ["A", "D", "E"]
    # F: after evicting C the hand moved to the next newer object, D, which goes.
    assert sieve.admit("F", 1).evicted == ("D",)
    # G: the hand is at E, then F: the old A survives while the hand sweeps newer ones.
    assert sieve.admit("G", 1).evicted == ("E",)
    assert sieve.hand == "F" and "A" in sieve


def test_s3fifo_hand_computed_with_variable_sizes() -> None:
    """libCacheSim's S3-FIFO, step by step: 10 bytes, small queue 4, main 6, ghost 9,
    an object moves from small to main after 2 hits."""
    s3 = S3FIFOPolicy(10, small_ratio=0.4)
    assert s3.admit("A", 2) == Admission(True, ()) and s3.admit("B", 2) == Admission(True, ())
    assert s3.in_small("A") and s3.in_small("B")
    assert s3.lookup("A") and s3.lookup("A")  # A: 2 hits
    # Warm-up: small is full (4 of 4) and nothing was evicted yet, so C and D go to main.
    assert s3.admit("C", 3) == Admission(True, ()) and s3.admit("D", 3) == Admission(True, ())
    assert s3.in_main("C") and s3.in_main("D") and s3.used == 10
    # E needs a byte; main (6) is not over its share, so small is evicted from: A (2 hits)
    # moves to main, B (0 hits) leaves, its key into the ghost.
    assert s3.admit("E", 1) == Admission(True, ("B",))
    assert s3.in_main("A") and s3.in_ghost("B") and s3.in_small("E")
    # B comes back (2 bytes): main holds 8 > 6, so main's CLOCK evicts: C has no hit.
    # B's key was in the ghost: it enters main directly.
    assert s3.admit("B", 2) == Admission(True, ("C",))
    assert s3.in_main("B") and not s3.in_ghost("B")
    assert s3.lookup("D")  # D's counter: 1
    # F (3): main holds 7 > 6: D gets a second chance (counter 1 -> 0, to the back),
    # A's counter was reset when it moved to main: A goes.
    assert s3.admit("F", 3) == Admission(True, ("A",))
    assert [k for k in ("D", "B") if s3.in_main(k)] == ["D", "B"] and s3.in_small("F")
    # An object of 10% of the cache or more (here: the small queue's 4 bytes) is not cached.
    assert s3.admit("G", 4) == Admission(False, ())
    assert s3.used == 9 and sorted(s3.keys()) == ["B", "D", "E", "F"]


def test_wtinylfu_frequent_objects_survive_a_scan() -> None:
    capacity = 200
    tiny, lru = WTinyLFUPolicy(capacity), LRUPolicy(capacity)
    hot = [f"hot{i}" for i in range(150)]
    for policy in (tiny, lru):
        for _ in range(4):
            for key in hot:
                if not policy.lookup(key):
                    policy.admit(key, 1)
        for i in range(2000):  # a scan of one-hit wonders
            if not policy.lookup(f"scan{i}"):
                policy.admit(f"scan{i}", 1)
    assert all(key in tiny for key in hot)
    assert not any(key in lru for key in hot)


def test_wtinylfu_rejects_a_cold_candidate() -> None:
    tiny = WTinyLFUPolicy(100)  # window: 1 byte
    for i in range(100):
        for _ in range(3):
            tiny.lookup(f"k{i}")
        tiny.admit(f"k{i}", 1)
    assert len(tiny) == 100
    tiny.lookup("new")
    # "new" enters the window, pushing k99 out as the candidate for main; it ties
    # with main's victim k0 (both seen 3 times) and ties keep the incumbent.
    first = tiny.admit("new", 1)
    assert first == Admission(True, ("k99",)) and tiny.segment_of("new") == "window"
    tiny.lookup("cold")
    # "new" (seen once) is now the candidate and loses against k0.
    assert tiny.admit("cold", 1) == Admission(True, ("new",))
    assert all(f"k{i}" in tiny for i in range(99))
    assert tiny.segment_of("k0") == "probation"
    for _ in range(5):
        tiny.lookup("cold")
    # "cold" (now frequent) beats k0 when pushed out of the window.
    assert tiny.admit("warm", 1) == Admission(True, ("k0",))
    assert tiny.segment_of("cold") == "probation"


def _recency_trace(n: int, seed: int = 7) -> list[str]:
    """Fresh keys, each requested 4 times at random gaps of 1-80 requests, never again."""
    rng = random.Random(seed)
    events: list[tuple[int, str]] = []
    for i in range(n):
        pos = i
        for _ in range(4):
            events.append((pos, f"r{i}"))
            pos += rng.randint(1, 80)
    events.sort()
    return [key for _, key in events[:n]]


def _frequency_trace(n: int, seed: int = 7) -> list[str]:
    """IRM Zipf(0.9) over 1,000 keys: stable popularity, no recency signal."""
    rng = random.Random(seed)
    keys = [f"f{i}" for i in range(1000)]
    return rng.choices(keys, weights=[1 / (rank + 1) ** 0.9 for rank in range(1000)], k=n)


@pytest.mark.parametrize(("trace", "grows"), [(_recency_trace(30_000), True),
                                              (_frequency_trace(30_000), False)])
def test_wtinylfu_hill_climber_moves_the_window(trace: list[str], grows: bool) -> None:
    # 100 one-byte entries: the sketch samples 2,560 requests, so ~11 climbing steps.
    adaptive = WTinyLFUPolicy(100, window_ratio=0.2, adaptive=True)
    fixed = WTinyLFUPolicy(100, window_ratio=0.2, adaptive=False)
    hits = {True: 0, False: 0}
    for key in trace:
        hits[True] += adaptive.request(key, 1)
        hits[False] += fixed.request(key, 1)
    assert fixed.window_share == pytest.approx(0.2)
    if grows:  # reuse within ~80 requests: only a large window (LRU) catches it
        assert adaptive.window_share > 0.4
    else:      # stable popularity: the frequency-filtered main should get the bytes
        assert adaptive.window_share < 0.1
    assert hits[True] > hits[False]
    default_on, default_off = make_policy("wtinylfu-adaptive", 100), make_policy("wtinylfu", 100)
    assert isinstance(default_on, WTinyLFUPolicy) and default_on.adaptive
    assert isinstance(default_off, WTinyLFUPolicy) and not default_off.adaptive


def test_wtinylfu_large_candidate_does_not_waste_victims() -> None:
    tiny = WTinyLFUPolicy(10, window_ratio=0.1)  # window: 1 byte
    for key in ("a", "b", "c"):
        for _ in range(3):
            tiny.lookup(key)
    tiny.admit("a", 1)
    for key in ("b", "c", "d", "e", "f", "g", "h", "i"):
        tiny.admit(key, 1)
    assert tiny.used == 9
    before = set(tiny.keys())
    # "big" (4 bytes, seen once) pushes "i" then itself out of the window; it would need
    # several victims and does not beat the hot "a": it is rejected without evicting any.
    tiny.lookup("big")
    result = tiny.admit("big", 4)
    assert not result.admitted
    assert before - set(result.evicted) <= set(tiny.keys())
    assert "a" in tiny and "b" in tiny and "c" in tiny


def test_s3tinylfu_gates_the_doors_into_main() -> None:
    s3 = S3TinyLFUPolicy(10)  # small: 0.2 bytes (one object); main: 9.8 bytes
    for i in range(10):
        key = f"h{i}"
        for _ in range(3):
            s3.lookup(key)
        s3.admit(key, 1)
        s3.lookup(key)  # a hit in small: each may move to main
    # Making room moves h0..h8 to main while it has room; h9 then needs main's victim
    # (h0, counter 0 after CLOCK) to go and only ties with it: it leaves via the ghost.
    assert s3.admit("a", 1).evicted == ("h9",)
    assert all(s3.in_main(f"h{i}") for i in range(9)) and s3.in_ghost("h9")
    assert s3.admit("b", 1).evicted == ("a",) and s3.in_ghost("a")
    # A ghost hit on a cold key: it loses the gate and is cached in small, not main.
    s3.lookup("a")
    assert s3.admit("a", 1).admitted and s3.in_small("a")
    # A ghost hit on a key seen often enough beats main's victim and enters main.
    for _ in range(8):
        s3.lookup("w")
    s3.admit("w", 1)
    s3.admit("x", 1)
    assert s3.in_ghost("w")
    s3.lookup("w")
    assert s3.admit("w", 1).admitted and s3.in_main("w")
    assert s3.used <= s3.capacity


# -- the shared contract -------------------------------------------------------------


@pytest.mark.parametrize("name", POLICIES)
def test_contract_basics(name: str) -> None:
    # S3-FIFO does not cache an object of >= its small queue (10% of the bytes); with a
    # 7-byte small queue every object below is cacheable.
    policy = S3FIFOPolicy(10, small_ratio=0.7) if name == "s3fifo" else make_policy(name, 10)
    assert policy.name == name and policy.capacity == 10
    assert policy.admit("big", 11) == Admission(False, ())
    assert policy.admit("a", 4).admitted and policy.size_of("a") == 4 and policy.used == 4
    assert policy.admit("a", 6).admitted and policy.size_of("a") == 6 and policy.used == 6
    assert policy.lookup("a") and not policy.lookup("b")
    assert policy.pin("a") and policy.is_pinned("a") and not policy.pin("zz")
    for i in range(30):
        admission = policy.admit(f"x{i}", 2)
        assert "a" not in admission.evicted
    assert "a" in policy
    assert policy.admit("y", 5) == Admission(False, ())  # 6 pinned + 5 > 10
    assert policy.unpin("a") and not policy.is_pinned("a") and not policy.unpin("zz")
    assert policy.remove("a") and not policy.remove("a")
    assert policy.used == sum(policy.size_of(k) or 0 for k in policy.keys())
    assert len(policy) == len(list(policy.keys()))


def test_registry() -> None:
    assert set(POLICIES) >= {"lru", "s3fifo", "sieve", "wtinylfu"}
    assert DEFAULT_POLICY in POLICIES
    with pytest.raises(ValueError):
        make_policy("nope", 1)


# -- invariants under random operation sequences -----------------------------------

KEYS = st.sampled_from([f"k{i}" for i in range(12)])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("lookup"), KEYS, st.just(0)),
        st.tuples(st.just("admit"), KEYS, st.integers(0, 12)),
        st.tuples(st.just("admit_pinned"), KEYS, st.integers(0, 6)),
        st.tuples(st.just("remove"), KEYS, st.just(0)),
        st.tuples(st.just("pin"), KEYS, st.just(0)),
        st.tuples(st.just("unpin"), KEYS, st.just(0)),
    ),
    max_size=120,
)


@pytest.mark.parametrize("name", POLICIES)
@FAST
@given(ops=OPS, capacity=st.integers(0, 30))
def test_invariants(name: str, ops: list[tuple[str, str, int]], capacity: int) -> None:
    policy = make_policy(name, capacity)
    model: dict[str, int] = {}   # what must be resident
    pinned: set[str] = set()
    for op, key, size in ops:
        if op == "lookup":
            assert policy.lookup(key) == (key in model)
        elif op in ("admit", "admit_pinned"):
            was_pinned = key in pinned
            pinned.discard(key)
            model.pop(key, None)
            pinned_bytes = sum(model[k] for k in pinned)
            result = policy.admit(key, size, pinned=op == "admit_pinned")
            fits = size <= capacity - pinned_bytes
            if not fits:
                assert not result.admitted
            if op == "admit_pinned" or was_pinned:
                assert result.admitted == fits
            for victim in result.evicted:
                assert victim not in pinned, "a pinned object was evicted"
                assert victim not in policy
                model.pop(victim)
            if result.admitted:
                model[key] = size
                if op == "admit_pinned" or was_pinned:
                    pinned.add(key)
            assert key not in result.evicted
        elif op == "remove":
            assert policy.remove(key) == (key in model)
            model.pop(key, None)
            pinned.discard(key)
        elif op == "pin":
            assert policy.pin(key) == (key in model)
            if key in model:
                pinned.add(key)
        else:
            assert policy.unpin(key) == (key in model)
            pinned.discard(key)
        assert policy.used <= policy.capacity
        assert dict((k, policy.size_of(k)) for k in policy.keys()) == model
        assert policy.used == sum(model.values())
        assert {k for k in model if policy.is_pinned(k)} == pinned
        assert policy.pinned_bytes == sum(model[k] for k in pinned)


REQUESTS = st.lists(st.tuples(st.integers(0, 15), st.integers(1, 4)), max_size=200)


@FAST
@given(requests=REQUESTS)
def test_s3fifo_one_hit_wonders_leave_via_small(requests: list[tuple[int, int]]) -> None:
    s3 = S3FIFOPolicy(40)  # small queue 4 bytes: objects of 4 bytes are not cached
    hits_since_insert: dict[str, int] = {}
    entered_small: set[str] = set()
    for n, size in requests:
        key = f"k{n}"
        if s3.lookup(key):
            hits_since_insert[key] += 1
            continue
        small_before = {k for k in s3.keys() if s3.in_small(k)}
        ghost_hit = s3.in_ghost(key)
        warm_up = not s3._has_evicted
        result = s3.admit(key, size)
        assert result.admitted == (size < 4)
        for victim in result.evicted:
            if hits_since_insert.pop(victim) < s3.move_threshold and victim in entered_small:
                assert victim in small_before
                assert victim not in s3 and s3.in_ghost(victim)  # it is remembered
            entered_small.discard(victim)
        if result.admitted:
            hits_since_insert[key] = 0
            if s3.in_main(key):
                assert ghost_hit or warm_up
            else:
                assert s3.in_small(key)
                entered_small.add(key)


def _sieve_order(sieve: SievePolicy) -> list[str]:
    order, node = [], sieve._oldest
    while node is not None:
        order.append(node.key)
        node = node.newer
    return order


@FAST
@given(requests=REQUESTS)
def test_sieve_hits_move_neither_objects_nor_hand(requests: list[tuple[int, int]]) -> None:
    sieve = SievePolicy(10)
    for n, size in requests:
        key = f"k{n}"
        hand, order = sieve.hand, _sieve_order(sieve)
        if sieve.lookup(key):
            assert sieve.hand == hand and _sieve_order(sieve) == order
        else:
            sieve.admit(key, size)
            assert set(_sieve_order(sieve)) == set(sieve.keys())


@FAST
@given(requests=REQUESTS)
def test_wtinylfu_segments_partition_the_cache(requests: list[tuple[int, int]]) -> None:
    tiny = WTinyLFUPolicy(20)
    for n, size in requests:
        key = f"k{n}"
        if not tiny.lookup(key):
            tiny.admit(key, size)
        assert all(tiny.segment_of(k) is not None for k in tiny.keys())
        assert tiny._window_bytes == sum(tiny._window.values())
        assert tiny._protected_bytes == sum(tiny._protected.values())


@settings(max_examples=50, deadline=None)  # long sequences: bounded for a loaded 2-core machine
@given(requests=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6)), min_size=300, max_size=900),
       capacity=st.integers(5, 40))
def test_adaptive_wtinylfu_keeps_budget_and_segments(requests: list[tuple[int, int]],
                                                     capacity: int) -> None:
    # sample_factor=1: the climber moves the window every 256 requests.
    tiny = WTinyLFUPolicy(capacity, window_ratio=0.2, sample_factor=1, adaptive=True)
    for n, size in requests:
        key = f"k{n}"
        if not tiny.lookup(key):
            tiny.admit(key, size)
        assert tiny.used <= tiny.capacity
        assert tiny.used == sum(tiny.size_of(k) or 0 for k in tiny.keys())
        assert all(tiny.segment_of(k) is not None for k in tiny.keys())
        assert tiny._window_bytes == sum(tiny._window.values())
        assert tiny._protected_bytes == sum(tiny._protected.values())
        assert 0 <= tiny.window_share <= 1


@pytest.mark.parametrize("name", POLICIES)
@FAST
@given(requests=st.lists(st.tuples(st.integers(0, 30), st.integers(1, 5)), max_size=300),
       capacity=st.integers(1, 40))
def test_request_fast_path_equals_edge_calls(name: str, requests: list[tuple[int, int]],
                                             capacity: int) -> None:
    """The simulator's request() and the edge's lookup()+admit() make the same decisions."""
    sim, edge = make_policy(name, capacity), make_policy(name, capacity)
    for n, size in requests:
        key = f"/content/t{n % 3}/750/{n}.seg"
        hit = sim.request(key, size, 1.0)
        if edge.lookup(key, 1.0):
            assert hit
        else:
            assert not hit
            edge.admit(key, size, 1.0)
        assert list(sim.keys()) == list(edge.keys())
        assert sim.used == edge.used


def test_frequency_sketch_doorkeeper_saturation_and_aging() -> None:
    from edge.policy import FrequencySketch

    sketch = FrequencySketch(16, sample_factor=1, max_count=15)  # resets every 16 accesses
    assert sketch.sample_size == 16
    sketch.increment("A")
    assert sketch.estimate("A") == 1  # only the doorkeeper knows A
    for _ in range(4):
        sketch.increment("A")
    sketch.increment("B")
    assert (sketch.estimate("A"), sketch.estimate("B"), sketch.estimate("C")) == (5, 1, 0)
    for _ in range(10):  # the 16th access resets: counters halve, the doorkeeper empties
        sketch.increment("C")
    assert (sketch.estimate("A"), sketch.estimate("B"), sketch.estimate("C")) == (2, 0, 4)
    for _ in range(40):
        sketch.increment("D")
    assert sketch.estimate("D") <= 15 + 1  # saturates (plus the doorkeeper's one)


def test_s3fifo_size_cap_is_relative_to_the_small_queue() -> None:
    # 1,000 bytes: small queue 100. A 99-byte object is cached, a 100-byte one is not,
    # and a rejected object evicts nothing.
    s3 = S3FIFOPolicy(1000)
    assert s3.admit("ok", 99).admitted and s3.in_small("ok")
    for i in range(9):
        s3.admit(f"m{i}", 99)
    used = s3.used
    assert s3.admit("big", 100) == Admission(False, ()) and s3.used == used


def test_s3tinylfu_gate_hand_computed_with_variable_sizes() -> None:
    """The default's gate with objects of different sizes, step by step (capacity 1000:
    small 20 bytes, main 980, ghost 980). The gate weighs frequency only, not bytes: for
    the byte miss ratio an object's worth per byte of cache is its request rate, so a
    small object that is asked for more often may displace a larger one."""
    s3 = S3TinyLFUPolicy(1000)
    s3.lookup("a"), s3.lookup("a")               # sketch: a = 2
    s3.admit("a", 600)
    s3.lookup("a")                               # a hit in small; a = 3
    s3.lookup("b")
    s3.admit("b", 300)
    s3.lookup("b")                               # b = 2
    s3.lookup("z")
    s3.admit("z", 100)                           # used 1000: nothing to evict yet
    s3.lookup("y")
    # y needs 60 bytes: a (hit) moves to main (600 <= 980), b too (900), z (never hit)
    # leaves via the ghost; y goes to small.
    assert s3.admit("y", 60).evicted == ("z",)
    assert s3.in_main("a") and s3.in_main("b") and s3.in_ghost("z") and s3.in_small("y")
    assert s3.used == 960
    s3.lookup("a"), s3.lookup("b")               # hits in main: CLOCK counters 1; a = 4, b = 3
    # z comes back (ghost hit, z = 2). Room first: y (cold) leaves small. Then the gate:
    # main (900 bytes) has no room for 100 more within 980, CLOCK clears a's and b's
    # counters and offers a (estimate 4); 2 is not above 4, so z is cached in small.
    s3.lookup("z")
    result = s3.admit("z", 100)
    assert result.admitted and result.evicted == ("y",)
    assert s3.in_small("z") and s3.in_main("a") and s3.in_main("b") and s3.used == 1000
    for _ in range(3):
        s3.lookup("z")                           # hits in small; z = 5
    # v (30 bytes) makes z leave small; z (5) beats main's victim a (4) and enters main,
    # and main's CLOCK then evicts a: 600 bytes leave for 100 more requested ones.
    s3.lookup("v")
    assert s3.admit("v", 30).evicted == ("a",)
    assert s3.in_main("z") and s3.in_main("b") and s3.in_small("v") and s3.used == 430
