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
from typing import Any, cast

import numpy as np


def spawn_key(replication: int, purpose: str, *sub: int) -> tuple[int, ...]:
    return (int(replication), zlib.crc32(purpose.encode()), *map(int, sub))


def stream(seed: int, replication: int, purpose: str, *sub: int) -> np.random.Generator:
    """The generator for ``purpose`` (and optional sub-index, e.g. a user id)."""
    ss = np.random.SeedSequence(int(seed), spawn_key=spawn_key(replication, purpose, *sub))
    return np.random.Generator(np.random.PCG64(ss))


class ParkedStream:
    """The stream :func:`stream` gives for the same arguments, holding only its state.

    A closed workload holds four streams for every shopper; a ``Generator`` with its bit
    generator and seed sequence takes about a kilobyte, its state alone (four numbers) a
    quarter of that.  A parked stream draws through ``scratch``, one generator shared by
    every parked stream of a model: each call of a generator method sets ``scratch``'s state
    to this stream's, draws, and keeps the state it leaves.  The values are those the
    stream's own generator draws, in the same order (a ``Generator`` keeps nothing between
    draws outside its bit generator's state).  Setting and reading the state costs a few
    microseconds a call, so it suits streams drawn in blocks
    (:class:`sim.distributions.Sampler`)."""

    __slots__ = ("_scratch", "_state")

    def __init__(self, scratch: np.random.Generator, seed: int, replication: int, purpose: str, *sub: int):
        ss = np.random.SeedSequence(int(seed), spawn_key=spawn_key(replication, purpose, *sub))
        self._scratch = scratch
        self._state = _compact(np.random.PCG64(ss).state)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._scratch, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            bits = self._scratch.bit_generator
            s, inc, has32, u32 = self._state
            bits.state = {
                "bit_generator": "PCG64",
                "state": {"state": s, "inc": inc},
                "has_uint32": has32,
                "uinteger": u32,
            }
            try:
                return method(*args, **kwargs)
            finally:
                self._state = _compact(bits.state)

        return call


def _compact(state: Any) -> tuple[int, int, int, int]:
    """A PCG64 state as four numbers (a quarter of the dict's memory)."""
    return (state["state"]["state"], state["state"]["inc"], state["has_uint32"], state["uinteger"])


def parked(scratch: np.random.Generator, seed: int, replication: int, purpose: str, *sub: int) -> np.random.Generator:
    """:func:`stream`'s generator for the same arguments, as a :class:`ParkedStream` drawing
    through ``scratch`` (it has every method of a generator)."""
    return cast(np.random.Generator, ParkedStream(scratch, seed, replication, purpose, *sub))
