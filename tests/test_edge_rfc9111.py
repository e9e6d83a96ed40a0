"""The RFC 9111 core (edge.rfc9111), case by case; each test names the section it checks.
Pure: the clock is an argument."""
from __future__ import annotations

import pytest

from edge.rfc9111 import (DELTA_MAX, NotStored, Stored, Use, cache_status, conditional_headers, current_age,
                          effective_cache_control, freshen, freshness_lifetime, invalidates, judge, parse_age,
                          parse_cache_control, parse_http_date, storable, validator_matches, variant_of,
                          vary_names)

T0 = 1_700_000_000.0  # request and response time of the stored responses below
DATE = "Tue, 14 Nov 2023 22:13:20 GMT"  # == T0
assert parse_http_date(DATE) == T0


def stored(now_headers: dict[str, str], status: int = 200) -> Stored:
    h = {"date": DATE, **now_headers}
    return Stored(status, h, T0, T0)


# -- 5.2 Cache-Control parsing ---------------------------------------------------------------

def test_5_2_directives_are_case_insensitive_and_quoted_arguments_unquoted() -> None:
    cc = parse_cache_control('Max-Age=60, private="set-cookie, x", no-cache')
    assert cc.seconds("max-age") == 60.0 and cc.directives["private"] == "set-cookie, x" and cc.has("no-cache")


def test_4_2_1_a_repeated_directive_counts_by_its_first_occurrence() -> None:
    assert parse_cache_control("max-age=10, max-age=1000").seconds("max-age") == 10.0


def test_1_2_2_an_invalid_delta_seconds_is_stale_and_a_huge_one_is_capped() -> None:
    assert parse_cache_control("max-age=abc").seconds("max-age") == 0.0
    assert parse_cache_control("max-age=-5").seconds("max-age") == 0.0
    assert parse_cache_control("max-age").seconds("max-age") == 0.0
    assert parse_cache_control("max-age=99999999999999999999").seconds("max-age") == DELTA_MAX


@pytest.mark.parametrize("garbage", ["", ",,,", "=5", "\x00\x01", '"unterminated', "max age=5"])
def test_5_2_malformed_cache_control_is_ignored_not_an_error(garbage: str) -> None:
    cc = parse_cache_control(garbage)
    assert not cc.has("max-age")


# -- 5.1 Age, 5.3 Expires --------------------------------------------------------------------

def test_5_1_age_uses_the_first_member_and_ignores_an_invalid_value() -> None:
    assert parse_age("30, 40") == 30.0
    assert parse_age("-1") is None and parse_age("abc") is None and parse_age("") is None


def test_5_3_an_invalid_expires_is_already_expired() -> None:
    assert freshness_lifetime({"expires": "0", "date": DATE}, response_time=T0) == 0.0
    assert freshness_lifetime({"expires": "not a date"}, response_time=T0) == 0.0


def test_4_2_1_expires_minus_date() -> None:
    h = {"date": DATE, "expires": "Tue, 14 Nov 2023 22:14:20 GMT"}
    assert freshness_lifetime(h, response_time=T0) == 60.0


# -- 4.2.1 lifetime precedence, 4.2.2 heuristic ---------------------------------------------

def test_4_2_1_s_maxage_over_max_age_over_expires() -> None:
    h = {"cache-control": "max-age=10, s-maxage=20", "expires": "Tue, 14 Nov 2023 22:14:20 GMT", "date": DATE}
    assert freshness_lifetime(h, response_time=T0) == 20.0
    h["cache-control"] = "max-age=10"
    assert freshness_lifetime(h, response_time=T0) == 10.0


def test_4_2_2_heuristic_is_a_fraction_of_last_modified_age_only_where_allowed() -> None:
    h = {"date": DATE, "last-modified": "Tue, 14 Nov 2023 21:13:20 GMT"}  # an hour before
    assert freshness_lifetime(h, 200, response_time=T0) == pytest.approx(360.0)
    assert freshness_lifetime(h, 302, response_time=T0) == 0.0  # 302 is not heuristically cacheable
    assert freshness_lifetime({"date": DATE}, 200, response_time=T0) == 0.0  # no Last-Modified


# -- 4.2.3 age ----------------------------------------------------------------------------------

def test_4_2_3_current_age_adds_age_header_delay_and_resident_time() -> None:
    h = {"date": DATE, "age": "5"}
    assert current_age(h, request_time=T0 - 2, response_time=T0, now=T0 + 10) == 5 + 2 + 10
    late = {"date": "Tue, 14 Nov 2023 22:13:00 GMT"}  # 20 s before the response arrived
    assert current_age(late, request_time=T0, response_time=T0, now=T0) == 20


# -- 4.2 fresh / stale ---------------------------------------------------------------------------

def test_4_2_fresh_until_lifetime_then_revalidate() -> None:
    s = stored({"cache-control": "max-age=60"})
    assert judge(s, {}, T0 + 59).use is Use.FRESH
    v = judge(s, {}, T0 + 61)
    assert v.use is Use.REVALIDATE and v.ttl == pytest.approx(-1)


def test_5_2_2_4_response_no_cache_always_revalidates() -> None:
    assert judge(stored({"cache-control": "max-age=600, no-cache"}), {}, T0 + 1).use is Use.REVALIDATE


def test_5_2_1_4_request_no_cache_and_5_4_pragma_revalidate() -> None:
    s = stored({"cache-control": "max-age=600"})
    assert judge(s, {"cache-control": "no-cache"}, T0 + 1).use is Use.REVALIDATE
    assert judge(s, {"pragma": "no-cache"}, T0 + 1).use is Use.REVALIDATE


def test_5_2_1_1_request_max_age_and_5_2_1_3_min_fresh() -> None:
    s = stored({"cache-control": "max-age=600"})
    assert judge(s, {"cache-control": "max-age=5"}, T0 + 10).use is Use.REVALIDATE
    assert judge(s, {"cache-control": "min-fresh=595"}, T0 + 10).use is Use.REVALIDATE
    assert judge(s, {"cache-control": "min-fresh=10"}, T0 + 10).use is Use.FRESH


def test_5_2_1_2_max_stale_accepts_stale_unless_must_revalidate() -> None:
    s = stored({"cache-control": "max-age=10"})
    assert judge(s, {"cache-control": "max-stale=30"}, T0 + 30).use is Use.FRESH
    assert judge(s, {"cache-control": "max-stale=5"}, T0 + 30).use is Use.REVALIDATE
    assert judge(s, {"cache-control": "max-stale"}, T0 + 9999).use is Use.FRESH
    strict = stored({"cache-control": "max-age=10, must-revalidate"})
    assert judge(strict, {"cache-control": "max-stale"}, T0 + 30).use is Use.REVALIDATE  # 5.2.2.2


# -- RFC 5861 --------------------------------------------------------------------------------------

def test_rfc5861_3_stale_while_revalidate_window() -> None:
    s = stored({"cache-control": "max-age=10, stale-while-revalidate=30"})
    assert judge(s, {}, T0 + 5).use is Use.FRESH
    assert judge(s, {}, T0 + 30).use is Use.STALE_WHILE_REVALIDATE
    assert judge(s, {}, T0 + 41).use is Use.REVALIDATE


def test_rfc5861_4_stale_if_error_window_and_4_2_4_must_revalidate_forbids_it() -> None:
    s = stored({"cache-control": "max-age=10, stale-if-error=60"})
    assert judge(s, {}, T0 + 30).may_serve_stale_on_error
    assert not judge(s, {}, T0 + 80).may_serve_stale_on_error
    assert judge(stored({"cache-control": "max-age=10"}), {"cache-control": "stale-if-error=60"},
                 T0 + 30).may_serve_stale_on_error
    for strict in ("must-revalidate", "proxy-revalidate", "s-maxage=10"):  # 5.2.2.2, 5.2.2.8, 5.2.2.10
        assert not judge(stored({"cache-control": f"max-age=10, stale-if-error=60, {strict}"}), {},
                         T0 + 30).may_serve_stale_on_error, strict
    plain = stored({"cache-control": "max-age=10"})
    assert not judge(plain, {}, T0 + 30).may_serve_stale_on_error  # no stale-if-error: no stale on error


def test_5_2_2_8_proxy_revalidate_forbids_stale_while_revalidate_in_a_shared_cache() -> None:
    s = stored({"cache-control": "max-age=10, stale-while-revalidate=30, proxy-revalidate"})
    assert judge(s, {}, T0 + 20).use is Use.REVALIDATE


# -- section 3: storing ----------------------------------------------------------------------------

def test_3_what_a_shared_cache_stores() -> None:
    ok: dict[str, str] = {"cache-control": "max-age=60"}
    assert storable("GET", 200, {}, ok) is None
    assert storable("POST", 200, {}, ok) is NotStored.METHOD
    assert storable("GET", 299, {}, ok) is NotStored.STATUS
    assert storable("GET", 200, {}, {"cache-control": "no-store, max-age=60"}) is NotStored.NO_STORE  # 5.2.2.5
    assert storable("GET", 200, {"cache-control": "no-store"}, ok) is NotStored.NO_STORE  # 5.2.1.5
    assert storable("GET", 200, {}, {"cache-control": "private, max-age=60"}) is NotStored.PRIVATE  # 5.2.2.7
    assert storable("GET", 302, {}, {}) is NotStored.NOT_CACHEABLE  # no freshness, not heuristic


def test_3_5_authorization_needs_an_explicit_permission() -> None:
    auth = {"authorization": "Bearer x"}
    assert storable("GET", 200, auth, {"cache-control": "max-age=60"}) is NotStored.AUTHORIZATION
    assert storable("GET", 200, auth, {"cache-control": "s-maxage=60"}) is None
    assert storable("GET", 200, auth, {"cache-control": "public, max-age=60"}) is None


# -- RFC 9213 CDN-Cache-Control ------------------------------------------------------------------

def test_rfc9213_cdn_cache_control_replaces_cache_control_for_this_cache() -> None:
    h = {"cache-control": "no-store", "cdn-cache-control": "max-age=120"}
    assert storable("GET", 200, {}, h) is None
    assert freshness_lifetime(h, response_time=T0) == 120.0
    assert effective_cache_control({"cache-control": "max-age=5", "cdn-cache-control": ",,"}).seconds("max-age") == 5


# -- 4.1 Vary --------------------------------------------------------------------------------------

def test_4_1_vary_names_and_star() -> None:
    assert vary_names("Accept-Encoding, accept-language") == ("accept-encoding", "accept-language")
    assert vary_names(None) == () and vary_names("") == ()
    assert vary_names("accept, *") is None
    assert vary_names("bad header, accept") == ("accept",)  # a non-token member is ignored


def test_4_1_variants_differ_by_selecting_values_with_whitespace_normalised() -> None:
    names = ("accept-encoding",)
    assert variant_of(names, {"accept-encoding": "gzip, br"}) == variant_of(names, {"accept-encoding": "gzip,br"})
    assert variant_of(names, {"accept-encoding": "gzip"}) != variant_of(names, {"accept-encoding": "br"})
    assert variant_of(names, {}) != variant_of(names, {"accept-encoding": ""})  # absent != empty
    assert variant_of((), {"accept-encoding": "gzip"}) == ""


def test_4_1_vary_star_never_matches_and_is_not_stored() -> None:
    assert judge(stored({"cache-control": "max-age=60", "vary": "*"}), {}, T0).use is Use.MISS
    assert storable("GET", 200, {}, {"cache-control": "max-age=60", "vary": "*"}) is NotStored.VARY_STAR


# -- 4.3 validation --------------------------------------------------------------------------------

def test_4_3_1_conditional_request_carries_the_validators() -> None:
    assert conditional_headers({"etag": '"v1"', "last-modified": DATE}) == {
        "If-None-Match": '"v1"', "If-Modified-Since": DATE}
    assert conditional_headers({}) == {}


def test_4_3_4_a_304_updates_stored_headers_but_not_content_length() -> None:
    old = {"etag": '"v1"', "cache-control": "max-age=10", "content-length": "100", "x-a": "1"}
    new = freshen(old, {"cache-control": "max-age=99", "content-length": "0", "date": DATE})
    assert new["cache-control"] == "max-age=99" and new["content-length"] == "100" and new["x-a"] == "1"
    assert new["date"] == DATE


def test_4_3_4_a_304_selects_by_etag_then_last_modified() -> None:
    assert validator_matches({"etag": '"v1"'}, {"etag": '"v1"'})
    assert not validator_matches({"etag": '"v1"'}, {"etag": '"v2"'})
    assert validator_matches({"last-modified": DATE}, {"last-modified": DATE})


# -- 4.4 invalidation ------------------------------------------------------------------------------

def test_4_4_unsafe_methods_invalidate_on_non_error_responses() -> None:
    assert invalidates("POST", 200) and invalidates("PUT", 204) and invalidates("DELETE", 302)
    assert not invalidates("POST", 500) and not invalidates("GET", 200) and not invalidates("HEAD", 200)


# -- RFC 9211 Cache-Status -------------------------------------------------------------------------

def test_rfc9211_cache_status_members() -> None:
    assert cache_status("ocsim", hit=True, ttl=12.7) == "ocsim; hit; ttl=12"
    assert cache_status("ocsim", hit=False, fwd="stale", fwd_status=304, stored=True) == (
        "ocsim; fwd=stale; fwd-status=304; stored")
    assert cache_status("ocsim", hit=True, detail="stale-while-revalidate") == (
        "ocsim; hit; detail=stale-while-revalidate")
