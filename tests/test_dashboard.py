"""Issue 15: the dashboard tells a new operator where the token is, uses the CLI's units
(binary, like `common.sizes.format_size`), and shows unplaced titles and job errors."""
from __future__ import annotations

import re

from common.sizes import format_size
from control.dashboard import PAGE


def test_the_page_says_where_the_operator_token_is() -> None:
    assert 'id="hint"' in PAGE
    assert ".ocsim/up/operator_token" in PAGE and "--state-dir" in PAGE
    assert '$("hint").hidden' in PAGE  # the hint goes once a token is in


def test_sizes_use_the_cli_units_not_decimal_gb() -> None:
    assert " GB" not in PAGE and "1e9" not in PAGE and "1e6" not in PAGE
    assert '"GiB"' in PAGE and "1024" in PAGE
    # the JS formatter is the Python one: same units, same rounding, for a few values
    assert format_size(2 * 1024**3) == "2.0 GiB" and format_size(512) == "512 B"
    js = re.search(r"function fmtSize\(n\) \{(.*?)\n\}", PAGE, re.S)
    assert js and 'toFixed(1) + " " + units[i]' in js.group(1) and 'toFixed(0) + " B"' in js.group(1)


def test_jobs_show_placed_of_asked_unplaced_titles_and_errors() -> None:
    assert "titles placed / asked" in PAGE and "unplaced" in PAGE
    assert "j.unplaced" in PAGE and "j.error" in PAGE


def test_live_charts_read_the_pipeline_through_this_origin_only() -> None:
    """The charts ask `/v1/pipeline/series` on the control plane (with the token), never the
    collector: no absolute URL in the page, so its CSP and the read API's lack of CORS hold."""
    assert 'fetch("/v1/pipeline/series?"' in PAGE and "http://" not in PAGE.replace("http://www.w3.org", "")
    for metric in ("bytes_to_players", "bytes_from_origin", "offload", "sps", "startup_s", "rebuffer_ratio",
                   "misses.cold", "misses.evicted", "misses.coalesced", "misses.peer", "misses.stale"):
        assert f'"{metric}"' in PAGE
    assert "innerHTML" not in PAGE  # values go in as text
