"""Named random streams: one per purpose per replication.

Every draw in a run comes from a generator made here.  The stream for a
purpose (``"arrivals"``, ``"query"``, ``"retrieval"``, ...) in replication
``r`` of a scenario with seed ``s`` is::

    Generator(PCG64(SeedSequence(s, spawn_key=(r, crc32(purpose)))))

so it depends on nothing else: not on the process that runs it, not on the
other purposes, not on the configuration being simulated.  Two sweep points
that differ only in, say, the number of GPUs therefore see the same arrivals
and the same query keys (common random numbers), and replication 7 gives the
same records on a laptop or on a Dask worker.
"""

from __future__ import annotations

import zlib

import numpy as np


def spawn_key(replication: int, purpose: str, *sub: int) -> tuple[int, ...]:
    return (int(replication), zlib.crc32(purpose.encode()), *map(int, sub))


def stream(seed: int, replication: int, purpose: str, *sub: int) -> np.random.Generator:
    """The generator for ``purpose`` (and optional sub-index, e.g. a user id)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=spawn_key(replication, purpose, *sub))
    return np.random.Generator(np.random.PCG64(ss))
