"""The shared response selector (common.selection) and the token verdict memo (common.tokens)."""
from __future__ import annotations

import pytest

from common import tokens
from common.selection import NONE, Outcome, Preconditions, Selection, from_headers, select_response
from common.tokens import Keyring, TokenVerdict, TokenVerdicts

ETAG = '"abc"'
N = 100


@pytest.mark.parametrize(("pre", "expected"), [
    (NONE, Selection(Outcome.FULL, 0, N)),
    (Preconditions(range="bytes=10-19"), Selection(Outcome.PARTIAL, 10, 20)),
    (Preconditions(range="bytes=-5"), Selection(Outcome.PARTIAL, 95, 100)),
    (Preconditions(range="bytes=100-"), Selection(Outcome.UNSATISFIABLE)),
    (Preconditions(range="bytes=0-1,5-6"), Selection(Outcome.FULL, 0, N)),  # 14.2: may ignore
    (Preconditions(range="items=0-1"), Selection(Outcome.FULL, 0, N)),
    (Preconditions(if_none_match=ETAG), Selection(Outcome.NOT_MODIFIED)),
    (Preconditions(if_none_match='W/"abc"'), Selection(Outcome.NOT_MODIFIED)),  # weak comparison
    (Preconditions(if_none_match="*"), Selection(Outcome.NOT_MODIFIED)),
    (Preconditions(if_none_match='"other"', range="bytes=0-0"), Selection(Outcome.PARTIAL, 0, 1)),
    (Preconditions(range="bytes=0-9", if_range=ETAG), Selection(Outcome.PARTIAL, 0, 10)),
    (Preconditions(range="bytes=0-9", if_range='"old"'), Selection(Outcome.FULL, 0, N)),
    (Preconditions(range="bytes=0-9", if_range='W/"abc"'), Selection(Outcome.FULL, 0, N)),  # strong only
    (Preconditions(range="bytes=500-", if_range='"old"'), Selection(Outcome.FULL, 0, N)),
    (Preconditions(if_range=ETAG), Selection(Outcome.FULL, 0, N)),  # If-Range without Range: ignored
    (Preconditions(if_match=ETAG, range="bytes=1-1"), Selection(Outcome.PARTIAL, 1, 2)),
    (Preconditions(if_match="*"), Selection(Outcome.FULL, 0, N)),
    (Preconditions(if_match='"other"'), Selection(Outcome.PRECONDITION_FAILED)),
    (Preconditions(if_match='W/"abc"'), Selection(Outcome.PRECONDITION_FAILED)),  # 13.1.1: strong
    (Preconditions(if_match='"other"', if_none_match=ETAG), Selection(Outcome.PRECONDITION_FAILED)),  # 13.2.2
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_select_response(method: str, pre: Preconditions, expected: Selection) -> None:
    assert select_response(method, N, ETAG, pre) == expected


def test_selection_status_and_content_range() -> None:
    assert Selection(Outcome.PARTIAL, 10, 20).content_range(N) == "bytes 10-19/100"
    assert Selection(Outcome.UNSATISFIABLE).content_range(N) == "bytes */100"
    assert Selection(Outcome.FULL, 0, N).content_range(N) is None
    assert [Selection(o).status for o in Outcome] == [200, 206, 304, 416, 412]


def test_from_headers_reads_the_four_fields() -> None:
    h = {"Range": "bytes=0-0", "If-Match": "*", "If-None-Match": '"x"', "If-Range": '"y"', "Other": "z"}
    assert from_headers(h) == Preconditions("bytes=0-0", "*", '"x"', '"y"')
    assert not from_headers({}).any and from_headers(h).any


PATH = "/content/t1/master.m3u8"


class CountingRing(Keyring):
    """A keyring that counts its HMAC checks."""

    verifies = 0

    def verify(self, token: str | None, content_path: str, now: float) -> tokens.TokenCheck:
        type(self).verifies += 1
        return super().verify(token, content_path, now)


@pytest.fixture
def ring() -> CountingRing:
    CountingRing.verifies = 0
    base = Keyring.generate()
    return CountingRing(dict(base.keys), base.current)


def test_a_good_token_is_verified_once(ring: CountingRing) -> None:
    memo = TokenVerdicts()
    token = ring.sign("t1", 1000)
    for _ in range(3):
        assert memo.check(ring, token, PATH, 500) is TokenVerdict.OK
    assert memo.check(ring, token, "/content/t1/235/index.m3u8", 500) is TokenVerdict.OK  # same title
    assert ring.verifies == 1
    assert memo.check(ring, token, PATH, 1001) is TokenVerdict.EXPIRED  # from the memo, no HMAC
    assert ring.verifies == 1


@pytest.mark.parametrize(("token", "verdict"), [
    (None, TokenVerdict.MISSING), ("", TokenVerdict.MISSING), ("nope", TokenVerdict.MALFORMED),
])
def test_bad_tokens_are_not_remembered(ring: CountingRing, token: str | None, verdict: TokenVerdict) -> None:
    memo = TokenVerdicts()
    assert memo.check(ring, token, PATH, 500) is verdict
    assert len(memo) == 0


def test_a_failed_token_costs_one_check_per_request(ring: CountingRing) -> None:
    memo = TokenVerdicts()
    other = ring.sign("t2", 1000)  # for another title
    assert memo.check(ring, other, PATH, 500) is TokenVerdict.BAD_SIGNATURE
    assert ring.verifies == 1 and len(memo) == 0
    expired = ring.sign("t1", 10)
    assert memo.check(ring, expired, PATH, 500) is TokenVerdict.EXPIRED
    assert ring.verifies == 2 and len(memo) == 0


def test_a_new_keyring_forgets_and_the_memo_is_bounded(ring: CountingRing) -> None:
    memo = TokenVerdicts(max_entries=2)
    token = ring.sign("t1", 1000)
    assert memo.check(ring, token, PATH, 500) is TokenVerdict.OK
    other_ring = Keyring.generate("k2")
    assert memo.check(other_ring, token, PATH, 500) is TokenVerdict.UNKNOWN_KEY
    assert len(memo) == 0
    for t in ("a1", "a2", "a3"):
        assert memo.check(ring, ring.sign(t, 1000), f"/content/{t}/master.m3u8", 500) is TokenVerdict.OK
    assert len(memo) <= 2
