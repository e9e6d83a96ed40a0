"""Replaying a trace with libCacheSim, to check ocsim's policies against a reference.

libCacheSim (the ``libcachesim`` package, the ``check`` extra) reads traces in its
``oracleGeneral`` binary format: per request uint32 time, uint64 object id, uint32 size,
int64 index of the next request for the same object (-1: never). Object ids are the
trace's keys numbered in order of first appearance (from 1).

Rules of this module: the only IO is writing the temporary trace file; libcachesim is
imported lazily, so the simulator works without it.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sim.belady import NEVER, next_uses
from sim.trace import Trace

__all__ = ["LIBCACHESIM_POLICIES", "libcachesim_available", "libcachesim_miss_ratios",
           "oracle_general_file", "write_oracle_general"]

_RECORD = struct.Struct("<IQIq")

# ocsim policy name -> libCacheSim class name (with its default parameters)
LIBCACHESIM_POLICIES: dict[str, str] = {
    "lru": "LRU", "belady": "Belady", "s3fifo": "S3FIFO", "sieve": "Sieve", "wtinylfu": "WTinyLFU",
}


def libcachesim_available() -> bool:
    try:
        import libcachesim  # noqa: F401
    except ImportError:
        return False
    return True


def write_oracle_general(trace: Trace, path: str) -> None:
    future = next_uses(trace.keys)
    ids: dict[str, int] = {}
    pack = _RECORD.pack
    with open(path, "wb") as out:
        out.write(b"".join(
            pack(int(t) & 0xFFFFFFFF, ids.setdefault(key, len(ids) + 1), size,
                 -1 if nxt == NEVER else nxt)
            for t, key, size, nxt in zip(trace.times, trace.keys, trace.sizes, future)))


@contextmanager
def oracle_general_file(trace: Trace) -> Iterator[str]:
    """A temporary oracleGeneral file of ``trace``, removed on exit."""
    fd, path = tempfile.mkstemp(suffix=".oracleGeneral.bin")
    os.close(fd)
    try:
        write_oracle_general(trace, path)
        yield path
    finally:
        os.unlink(path)


def libcachesim_miss_ratios(path: str, policy: str, capacity: int) -> tuple[float, float]:
    """(object miss ratio, byte miss ratio) of libCacheSim's ``policy`` on the file."""
    import libcachesim as lcs

    cls = getattr(lcs, LIBCACHESIM_POLICIES[policy])
    reader = lcs.TraceReader(path, lcs.TraceType.ORACLE_GENERAL_TRACE)
    obj_miss, byte_miss = cls(capacity).process_trace(reader)
    return float(obj_miss), float(byte_miss)
