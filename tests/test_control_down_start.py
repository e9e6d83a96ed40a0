"""Issue 11: a viewer starts a title it was never steered to while the control plane is down.

Pure parts: the catalog token (common.tokens) is good for every title, ISP-bound and
expiring, and cannot be made from a title token; `PlayAnswerCache` builds an answer for a
title it never saw from the last answer's `fallback`. End to end (real processes: origin,
control, one edge): a player is steered to one title, the control plane is killed, and the
same viewer then starts another title from the fallback, served by the edge, which still
refuses a tampered or missing token.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from common.tokens import Keyring, TokenVerdict, token_url
from common.wire import edge_key
from ocsim.procs import ServiceProcess
from player.driver import Timeouts, play_session
from player.play_answer import PlayAnswerCache
from test_control_support import FLEET_SECRET, OPERATOR_TOKEN, TOKEN_KEY, TOPOLOGY, bearer, eventually

RING = Keyring.parse(TOKEN_KEY)


def test_a_catalog_token_opens_every_title_until_it_expires() -> None:
    tok = RING.sign_catalog(1000, "isp-a")
    assert ".all." in tok
    for path in ("/content/t1/master.m3u8", "/content/other/235/3.seg"):
        assert RING.check(tok, path, 999.0) is TokenVerdict.OK
    assert RING.check(tok, "/content/t1/master.m3u8", 1001.0) is TokenVerdict.EXPIRED
    assert RING.check(tok, "/origin/x", 999.0) is TokenVerdict.BAD_SIGNATURE  # no content path


def test_a_title_token_cannot_be_widened_and_a_catalog_token_cannot_be_tampered() -> None:
    title_tok = RING.sign("t1", 1000, "isp-a")
    kid, exp, isp, sig = title_tok.split(".")
    widened = f"{kid}.{exp}.{isp}.all.{sig}"
    assert RING.check(widened, "/content/t2/master.m3u8", 999.0) is TokenVerdict.BAD_SIGNATURE
    cat = RING.sign_catalog(1000, "isp-a")
    other_isp = cat.replace(".isp-a.", ".isp-b.")
    later = cat.replace(".1000.", ".2000.")
    narrowed = cat.replace(".all.", ".")
    for bad in (other_isp, later, narrowed):
        assert RING.check(bad, "/content/t1/master.m3u8", 999.0) is TokenVerdict.BAD_SIGNATURE
    assert RING.check(cat, "/content/t1/master.m3u8", 999.0) is TokenVerdict.OK
    assert Keyring.generate().check(cat, "/content/t1/master.m3u8", 999.0) is not TokenVerdict.OK


def test_the_cache_builds_an_answer_for_a_new_title_from_the_fallback() -> None:
    answer: dict[str, object] = {"isp": "isp-a", "candidates": [{"edge": "e1", "url": "http://127.0.0.1:1/t/x/content/t1/master.m3u8"}],
              "fallback": {"token": "TOK", "expires": 2000,
                           "edges": [{"edge": "e1", "url": "http://127.0.0.1:1"}, {"edge": "e2", "url": "http://127.0.0.1:2/"}]}}
    c = PlayAnswerCache(max_age_s=10.0)
    assert c.get("t2", 0.0) is None
    c.put("t1", answer, 100.0)
    assert c.get("t1", 101.0) == answer and c.used_fallback == 0
    got = c.get("t2", 102.0)
    assert got == {"title": "t2", "isp": "isp-a", "candidates": [
        {"edge": "e1", "url": "http://127.0.0.1:1/t/TOK/content/t2/master.m3u8"},
        {"edge": "e2", "url": "http://127.0.0.1:2/t/TOK/content/t2/master.m3u8"}]}
    assert c.used == 2 and c.used_fallback == 1
    assert c.get("t2", 111.0) is None  # the fallback ages like an answer


@pytest.mark.parametrize("fallback", [None, "x", {"token": 1, "edges": []}, {"token": "a/b", "edges": []},
                                      {"token": "T", "edges": [{"edge": "e1", "url": "ftp://x"}]}, {"token": "T"}])
def test_a_malformed_fallback_is_ignored(fallback: Any) -> None:
    c = PlayAnswerCache()
    c.put("t1", {"candidates": [{"edge": "e1", "url": "http://h/t/x/content/t1/master.m3u8"}], "fallback": fallback}, 0.0)
    assert c.get("t2", 1.0) is None and c.get("t1", 1.0) is not None


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_a_new_title_starts_from_the_fallback_while_control_is_down(
        start_service: Callable[..., ServiceProcess], origin: ServiceProcess, tmp_path: Path) -> None:
    (tmp_path / "topology.toml").write_text(TOPOLOGY)
    control = start_service(
        "control", "control", "--host", "127.0.0.1", "--port", "0", "--state-dir", str(tmp_path / "control"),
        "--topology", str(tmp_path / "topology.toml"), "--origin", origin.url, "--operator-token", OPERATOR_TOKEN,
        "--fleet-secret", FLEET_SECRET.hex(), "--token-key", TOKEN_KEY, "--heartbeat-interval", "0.5",
        "--no-access-log")
    edge = start_service(
        "a1", "edge", "--host", "127.0.0.1", "--port", "0", "--id", "a1", "--isp", "isp-a",
        "--upstream", origin.url, "--cache-dir", str(tmp_path / "a1"), "--capacity", "1GiB",
        "--control", control.url, "--edge-key", edge_key(FLEET_SECRET, "a1").hex(), "--token-key", TOKEN_KEY,
        "--heartbeat-interval", "0.5", "--no-access-log")
    timeouts = Timeouts(connect_s=1.0, read_s=3.0, segment_s=5.0, playlist_s=5.0, steering_s=2.0)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async def fleet_up() -> bool:
            async with http.get(control.url + "/v1/fleet", headers=bearer()) as resp:
                return any(e["id"] == "a1" and e["state"] == "up" for e in (await resp.json())["edges"])

        await eventually(fleet_up, timeout=15)
        async with http.get(control.url + "/v1/catalog") as resp:
            first, second = sorted(t["id"] for t in (await resp.json())["titles"])[:2]

        answers = PlayAnswerCache()
        kw: dict[str, Any] = dict(isp="isp-a", speed=200.0, max_segments=2, session=http, timeouts=timeouts,
                                  verify=True)
        rep = (await play_session(control.url, first, answers=answers, **kw)).to_dict()
        assert rep["state"] == "ended" and rep["errors"] == 0 and answers.used == 0, rep

        control.kill()
        # a viewer with no answer at all cannot start: the control plane really is gone
        cold = (await play_session(control.url, second, answers=PlayAnswerCache(), **kw)).to_dict()
        assert cold["errors"] == 1, cold
        # the viewer steered to `first` starts `second`, never steered to, from the fallback
        rep = (await play_session(control.url, second, answers=answers, **kw)).to_dict()
        assert rep["state"] == "ended" and rep["errors"] == 0 and rep["edges"] == ["a1"], (rep.get("error"), rep)
        assert rep["verified"] is True and answers.used_fallback == 1
        # and `first` again, from its own cached answer: verified without the control plane too
        rep = (await play_session(control.url, first, answers=answers, **kw)).to_dict()
        assert rep["state"] == "ended" and rep["errors"] == 0 and rep["verified"] is True, rep.get("error")
        assert answers.used == 2 and answers.used_fallback == 1

        # the edge still wants a good token on content paths
        path = f"/content/{second}/master.m3u8"
        good = RING.sign_catalog(2_000_000_000, "isp-a")
        tampered = good[:-1] + ("A" if good[-1] != "A" else "B")
        for url, status in ((edge.url + path, 403), (token_url(edge.url, tampered, path), 403),
                            (token_url(edge.url, Keyring.generate().sign_catalog(2_000_000_000), path), 403),
                            (token_url(edge.url, good, path), 200)):
            async with http.get(url) as resp:
                assert resp.status == status, (url, await resp.text())
