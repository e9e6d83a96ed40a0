"""Which edge serves each request of a trace, offline.

Rendezvous (highest-random-weight) hashing of the title over the edge ids: a title
always lands on the same edge and titles spread evenly. The order is the control
plane's own (``control.steering.hrw_order``), i.e. the live ranker's first choice when
every edge is healthy and none is over its load bound; the bounded-load spill and the
"already holds the title" preference are not modelled offline.
"""

from __future__ import annotations

from collections.abc import Sequence

from control.steering import hrw_order

__all__ = ["assign_edges", "edge_ids", "title_of"]


def title_of(key: str) -> str:
    """The title of a content path ``/content/{title}/...``; any other key is its own title."""
    if key.startswith("/content/"):
        return key.split("/", 3)[2]
    return key


def edge_ids(count: int) -> list[str]:
    return [f"edge-{i}" for i in range(count)]


def assign_edges(keys: Sequence[str], edges: int) -> list[int]:
    """Per request, the index of the edge (0..edges-1) that serves it."""
    if edges <= 1:
        return [0] * len(keys)
    ids = edge_ids(edges)
    by_title: dict[str, int] = {}
    by_key: dict[str, int] = {}
    result = []
    for key in keys:
        edge = by_key.get(key)
        if edge is None:
            title = title_of(key)
            edge = by_title.get(title)
            if edge is None:
                edge = by_title[title] = _first_choice(title, ids)
            by_key[key] = edge
        result.append(edge)
    return result


def _first_choice(title: str, ids: list[str]) -> int:
    return ids.index(hrw_order(title, ids)[0])
