"""Request traces: the in-memory form the simulator replays, and its CSV file format.

A trace file is CSV with a header line ``timestamp,object_id,size_bytes``; one request
per line, in time order. In memory a trace is three parallel lists, which keeps the
replay loop free of per-request objects.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Trace", "TraceFormatError", "read_trace", "write_trace"]

HEADER = ("timestamp", "object_id", "size_bytes")


class TraceFormatError(ValueError):
    """The trace file is not ``timestamp,object_id,size_bytes`` CSV."""


@dataclass(slots=True)
class Trace:
    """Parallel lists: request i asks for ``keys[i]`` (``sizes[i]`` bytes) at ``times[i]``."""

    times: list[float] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def object_sizes(self) -> dict[str, int]:
        """Each object's size (its last seen size if the trace varies it)."""
        return dict(zip(self.keys, self.sizes))

    @property
    def unique_bytes(self) -> int:
        return sum(self.object_sizes().values())

    @property
    def requested_bytes(self) -> int:
        return sum(self.sizes)


def read_trace(path: str | Path) -> Trace:
    trace = Trace()
    times, keys, sizes = trace.times, trace.keys, trace.sizes
    interned: dict[str, str] = {}
    with open(path, newline="") as handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise TraceFormatError(f"{path}: first line must be {','.join(HEADER)}")
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                t, key, size = row
                times.append(float(t))
                sizes.append(int(size))
            except ValueError as exc:
                raise TraceFormatError(f"{path}:{line}: bad row {row!r}") from exc
            if sizes[-1] < 0:
                raise TraceFormatError(f"{path}:{line}: negative size")
            keys.append(interned.setdefault(key, key))
    return trace


def write_trace(trace: Trace, path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        out.writerows(_rows(trace))


def _rows(trace: Trace) -> Iterable[tuple[str, str, int]]:
    for t, key, size in zip(trace.times, trace.keys, trace.sizes):
        yield (f"{t:.3f}", key, size)
