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
from collections.abc import Sequence
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

    def __init__(
        self,
        scratch: np.random.Generator,
        seed: int,
        replication: int,
        purpose: str,
        *sub: int,
        state: tuple[int, int, int, int] | None = None,
    ):
        """``state``: the stream's starting state when it is known already (:func:`pcg64_states`)."""
        if state is None:
            ss = np.random.SeedSequence(int(seed), spawn_key=spawn_key(replication, purpose, *sub))
            state = _compact(np.random.PCG64(ss).state)
        self._scratch = scratch
        self._state = state

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


def parked_many(
    scratch: np.random.Generator, seed: int, replication: int, purpose: str, subs: Sequence[int]
) -> list[np.random.Generator]:
    """``[parked(scratch, seed, replication, purpose, s) for s in subs]``, their starting states
    computed together (:func:`pcg64_states`): a shop's shoppers' streams in one go."""
    states = pcg64_states(seed, spawn_key(replication, purpose), subs)
    return [cast(np.random.Generator, ParkedStream(scratch, seed, replication, purpose, state=st)) for st in states]


# numpy's SeedSequence (numpy/random/bit_generator.pyx, after Melissa O'Neill's seed_seq
# alternative, https://www.pcg-random.org/posts/developing-a-seed_seq-alternative.html) and
# PCG64's seeding (numpy/random/_pcg64.pyx, numpy/random/src/pcg64/pcg64.h:
# pcg_setseq_128_srandom_r with PCG_DEFAULT_MULTIPLIER_128).
_POOL = 4
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _XSHIFT, _M32 = 0xCA01F9DD, 0x4973F715, 16, 0xFFFFFFFF
_PCG_MULT, _M128 = 0x2360ED051FC65DA44385DF649FCCF645, (1 << 128) - 1


def _words(n: int) -> list[int]:
    """An entropy integer as SeedSequence's 32-bit words, least significant first."""
    if n < 0:
        raise ValueError(f"entropy must be non-negative, got {n}")
    out = [n & _M32]
    n >>= 32
    while n:
        out.append(n & _M32)
        n >>= 32
    return out


class _Hash:
    """SeedSequence's ``hashmix`` over arrays of words: the hash constant's sequence does not
    depend on the data, so every lane steps it alike."""

    def __init__(self) -> None:
        self.const = _INIT_A

    def __call__(self, value: np.ndarray) -> np.ndarray:
        value = value ^ np.uint32(self.const)
        self.const = (self.const * _MULT_A) & _M32
        value = value * np.uint32(self.const)
        return value ^ (value >> np.uint32(_XSHIFT))


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r: np.ndarray = x * np.uint32(_MIX_L) - y * np.uint32(_MIX_R)
    return r ^ (r >> np.uint32(_XSHIFT))


def pcg64_states(seed: int, key: tuple[int, ...], subs: Sequence[int]) -> list[tuple[int, int, int, int]]:
    """The starting state (as :class:`ParkedStream` holds it) of
    ``PCG64(SeedSequence(seed, spawn_key=(*key, sub)))`` for every ``sub`` in ``subs``, computed
    for all of them at once with numpy's 32-bit arithmetic (each ``sub`` below 2**32).  The same
    numbers numpy's own classes give, one by one, in a fraction of the time."""
    sub = np.asarray(subs, dtype=np.int64)
    if sub.size and (sub.min() < 0 or sub.max() > _M32):
        raise ValueError("sub-stream indices must lie in [0, 2**32)")
    lanes = sub.size
    run = _words(int(seed))
    run += [0] * (_POOL - len(run))  # a spawned sequence pads the run entropy to the pool size
    const = [np.full(lanes, w, dtype=np.uint32) for w in run + [w for k in key for w in _words(int(k))]]
    entropy = [*const, sub.astype(np.uint32)]
    hashmix = _Hash()
    pool = [hashmix(entropy[i]) for i in range(_POOL)]
    for i_src in range(_POOL):
        for i_dst in range(_POOL):
            if i_src != i_dst:
                pool[i_dst] = _mix(pool[i_dst], hashmix(pool[i_src]))
    for i_src in range(_POOL, len(entropy)):
        for i_dst in range(_POOL):
            pool[i_dst] = _mix(pool[i_dst], hashmix(entropy[i_src]))
    # generate_state(4, uint64): eight 32-bit words from the pool, paired little-endian.
    hc = _INIT_B
    out32 = []
    for i in range(8):
        v = pool[i % _POOL] ^ np.uint32(hc)
        hc = (hc * _MULT_B) & _M32
        v = v * np.uint32(hc)
        out32.append(v ^ (v >> np.uint32(_XSHIFT)))
    w64 = [(out32[2 * j + 1].astype(np.uint64) << np.uint64(32)) | out32[2 * j].astype(np.uint64) for j in range(4)]
    states = []
    for a, b, c, d in zip(*(w.tolist() for w in w64)):
        inc = ((((c << 64) | d) << 1) | 1) & _M128
        state = ((inc + ((a << 64) | b)) * _PCG_MULT + inc) & _M128  # two LCG steps from 0
        states.append((state, inc, 0, 0))
    return states
