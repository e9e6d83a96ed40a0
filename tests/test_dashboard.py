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
