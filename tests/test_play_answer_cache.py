"""PlayAnswerCache: one viewer's last good play answer per title, bounded in age and size."""
from __future__ import annotations

import pytest

from player.play_answer import PlayAnswerCache

ANSWER = {"isp": "isp-a", "candidates": [{"edge": "e1", "url": "http://127.0.0.1:1/t/x/content/t/master.m3u8"}]}


def test_an_answer_is_kept_for_its_age_and_counted_when_used() -> None:
    c = PlayAnswerCache(max_age_s=10.0)
    assert c.get("t", 0.0) is None
    c.put("t", ANSWER, 100.0)
    assert c.get("t", 105.0) == ANSWER and c.used == 1
    assert c.get("t", 110.5) is None  # too old: the tokens in it may be expired
    assert c.get("t", 99.0) is None  # a clock that went back: not trusted
    assert c.used == 1


def test_the_cache_is_bounded_least_recently_put_first() -> None:
    c = PlayAnswerCache(max_entries=2)
    for i, title in enumerate(("a", "b", "c")):
        c.put(title, ANSWER, float(i))
    assert len(c) == 2 and c.get("a", 3.0) is None and c.get("c", 3.0) == ANSWER


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        PlayAnswerCache(max_age_s=0)
