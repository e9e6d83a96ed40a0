"""The batch entry point (`EvictionPolicy.replay`) decides exactly as `request` does.

Each policy writes its replay loop out over local names for speed; these cases check,
policy by policy, that the totals and the final cache state match one `request` per
item, on variable sizes, with pinned objects, and over sketch resets and regrowth.
"""

from __future__ import annotations

import random

import pytest

from edge.policy import (
    POLICIES,
    EvictionPolicy,
    FrequencySketch,
    S3TinyLFUPolicy,
    WTinyLFUPolicy,
    _Jitter,
    _SieveNode,
    make_policy,
)


def _trace(seed: int, n: int, objects: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    size_of = {k: max(1, int(rng.lognormvariate(6, 1.5))) for k in range(objects)}
    ranks = [min(objects - 1, int(rng.paretovariate(0.7))) for _ in range(n)]
    return [f"k{r}" for r in ranks], [size_of[r] for r in ranks]


def _state(cache: EvictionPolicy) -> tuple[object, ...]:
    return (cache.used, list(cache.keys()), sorted(k for k in cache.keys() if cache.is_pinned(k)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy", POLICIES)
def test_replay_decides_as_request_does(policy: str, seed: int) -> None:
    keys, sizes = _trace(seed, 20_000, 900)
    capacity = [2_000, 20_000, 200_000, 2_000_000][seed]
    one, batch = make_policy(policy, capacity), make_policy(policy, capacity)
    for cache in (one, batch):
        cache.admit("pinned-a", capacity // 20, pinned=True)
        cache.admit(keys[0], sizes[0], pinned=True)
    hits = hit_bytes = 0
    for key, size in zip(keys, sizes):
        if one.request(key, size):
            hits += 1
            hit_bytes += size
    # in two batches, so state carried between calls is checked too
    first = batch.replay(keys[:7000], sizes[:7000])
    second = batch.replay(keys[7000:], sizes[7000:])
    assert (first[0] + second[0], first[1] + second[1]) == (hits, hit_bytes)
    assert _state(batch) == _state(one)
    assert batch.used <= capacity
    # and the policy goes on deciding alike afterwards, through the single-request path
    tail_keys, tail_sizes = _trace(seed + 100, 1000, 900)
    assert [batch.request(k, s) for k, s in zip(tail_keys, tail_sizes)] == \
        [one.request(k, s) for k, s in zip(tail_keys, tail_sizes)]


def _plain(value: object) -> object:
    """A comparable copy of one piece of policy state (dict order kept: it is FIFO/LRU order)."""
    if isinstance(value, dict):
        return [(k, _plain(v)) for k, v in value.items()]
    if isinstance(value, FrequencySketch):
        return ("sketch", _plain(value._cells), value._additions, value.sample_size)
    if isinstance(value, _Jitter):
        return ("jitter", value._state)
    if isinstance(value, _SieveNode):
        return ("node", value.key, value.visited)
    return value


def _internals(cache: EvictionPolicy) -> dict[str, object]:
    """Every slot of the policy: queues in order, counters, sketch cells, jitter, climber."""
    return {slot: _plain(getattr(cache, slot, None))
            for cls in type(cache).__mro__ for slot in getattr(cls, "__slots__", ())}


def _shifting_trace(seed: int, n: int) -> tuple[list[str], list[int]]:
    """Variable sizes (lognormal: mostly tens of bytes, some of many KB) and popularity that
    moves: three skewed phases over different key ranges (so the climber steps and the
    sketch ages), then a uniform loop over a set a little too big for a small cache."""
    rng = random.Random(seed)
    keys: list[str] = []
    for phase in range(3):
        for _ in range(n // 6):
            keys.append(f"p{phase}-{min(3000, int(rng.paretovariate(0.6)))}" if rng.random() < 0.8
                        else f"x{rng.randrange(4000)}")
    while len(keys) < n:
        keys.append(f"u{rng.randrange(150)}")
    size_of: dict[str, int] = {}
    for key in keys:
        if key not in size_of:
            size_of[key] = max(1, int(rng.lognormvariate(4.3, 1.0) if key[0] == "u"
                                      else rng.lognormvariate(4, 1.5)))
    return keys, [size_of[k] for k in keys]


def _loop_trace(seed: int, n: int) -> tuple[list[str], list[int]]:
    """A uniform loop over 150 objects of ~100 bytes (lognormal) from a cold start: all of
    them get warm, so TinyLFU compares warm candidates with warm victims and the jitter
    decides some comparisons."""
    rng = random.Random(seed)
    keys = [f"u{rng.randrange(150)}" for _ in range(n)]
    size_of = {f"u{i}": max(1, int(rng.lognormvariate(4.3, 1.0))) for i in range(150)}
    return keys, [size_of[k] for k in keys]


class _CountingJitter(_Jitter):
    """The jitter of the request-path cache, counting the losers it lets in."""

    __slots__ = ("wins",)

    def __init__(self) -> None:
        super().__init__()
        self.wins = 0

    def admit(self, candidate_freq: int) -> bool:
        won = super().admit(candidate_freq)
        self.wins += won
        return won


@pytest.mark.parametrize("policy", POLICIES)
def test_replay_gives_request_s_hit_sequence(policy: str) -> None:
    """The fast loop and one `request` per item agree request for request: the hit
    sequence (replayed one item per call), the running totals at random checkpoints of a
    long batch, and every piece of internal state there (queue order, sketch cells,
    jitter, climber), on a variable-size trace that reaches resets, regrowth, the jitter,
    multi-victim admission and the climber (checked below, so the test keeps covering them)."""
    jitter_wins = 0
    regrown = climbed = False
    for (keys, sizes), capacity, pin in ((_shifting_trace(7, 60_000), 10_000, True),
                                         (_shifting_trace(7, 60_000), 80_000, True),
                                         (_loop_trace(1, 30_000), 10_000, False)):
        one, single, batch, check = (make_policy(policy, capacity) for _ in range(4))
        for cache in (one, single, batch, check):
            if pin:
                cache.admit("pinned-a", 500, pinned=True)
        if isinstance(one, (WTinyLFUPolicy, S3TinyLFUPolicy)):
            one._jitter = jitter = _CountingJitter()
        expected = [one.request(k, s) for k, s in zip(keys, sizes)]
        assert 0.1 < sum(expected) / len(expected) < 0.9
        # one item per replay call: the exact hit sequence
        assert [single.replay([k], [s])[0] == 1 for k, s in zip(keys, sizes)] == expected
        assert _internals(single) == _internals(one)
        # long batches of random lengths: totals and state at every checkpoint
        rng = random.Random(capacity)
        at = 0
        while at < len(keys):
            stop = min(len(keys), at + rng.choice((1, 2, 17, 300, 5000, 20_000)))
            got = batch.replay(keys[at:stop], sizes[at:stop])
            for k, s in zip(keys[at:stop], sizes[at:stop]):
                check.request(k, s)
            hit = expected[at:stop]
            assert got == (sum(hit), sum(s for s, h in zip(sizes[at:stop], hit) if h))
            assert _internals(batch) == _internals(check), f"state differs after request {stop}"
            at = stop
        if isinstance(one, (WTinyLFUPolicy, S3TinyLFUPolicy)):
            jitter_wins += jitter.wins
            regrown |= one._sketch_entries > 256
        if isinstance(one, WTinyLFUPolicy):
            climbed |= one.window_share != 0.01
    if policy in ("wtinylfu", "wtinylfu-adaptive", "s3tinylfu"):
        assert jitter_wins > 0 and regrown
    assert climbed == (policy == "wtinylfu-adaptive")
