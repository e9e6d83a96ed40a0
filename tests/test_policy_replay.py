"""The batch entry point (`EvictionPolicy.replay`) decides exactly as `request` does.

Each policy writes its replay loop out over local names for speed; these cases check,
policy by policy, that the totals and the final cache state match one `request` per
item, on variable sizes, with pinned objects, and over sketch resets and regrowth.
"""

from __future__ import annotations

import random

import pytest

from edge.policy import POLICIES, EvictionPolicy, make_policy


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
