"""Distributions that sample with a given generator and know their moments.

A scenario writes a service time, think time or token count either as a plain
number (a constant) or as a mapping such as ``{dist: lognormal, mean: 110,
cv: 0.3}``.  :func:`build` turns that spec into one of the classes below.
Each class samples with a ``numpy.random.Generator`` it is handed (randomness
never lives here) and knows its exact ``mean`` and ``variance`` so analytic
estimates and tests can use them.

Parameterisation by mean and coefficient of variation (cv = sd / mean) is the
one a capacity planner thinks in:

* lognormal: sigma^2 = ln(1 + cv^2), mu = ln(mean) - sigma^2 / 2
* gamma:     shape k = 1 / cv^2, scale theta = mean * cv^2
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Distribution(Protocol):
    @property
    def mean(self) -> float: ...

    @property
    def variance(self) -> float: ...

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Constant:
    value: float

    @property
    def mean(self) -> float:
        return float(self.value)

    @property
    def variance(self) -> float:
        return 0.0

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, float(self.value))


@dataclass(frozen=True)
class Exponential:
    mean: float

    @property
    def variance(self) -> float:
        return self.mean**2

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.exponential(self.mean, size)


@dataclass(frozen=True)
class Lognormal:
    mean: float
    cv: float

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log1p(self.cv**2))

    @property
    def mu(self) -> float:
        return math.log(self.mean) - self.sigma**2 / 2

    @property
    def variance(self) -> float:
        return (self.mean * self.cv) ** 2

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.cv == 0:
            return np.full(size, float(self.mean))
        return rng.lognormal(self.mu, self.sigma, size)


@dataclass(frozen=True)
class Gamma:
    mean: float
    cv: float

    @property
    def variance(self) -> float:
        return (self.mean * self.cv) ** 2

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.cv == 0:
            return np.full(size, float(self.mean))
        shape = 1.0 / self.cv**2
        return rng.gamma(shape, self.mean / shape, size)


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def variance(self) -> float:
        return (self.high - self.low) ** 2 / 12

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, size)


@dataclass(frozen=True)
class Empirical:
    """Resample uniformly from the given observations."""

    samples: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))

    @property
    def variance(self) -> float:
        return float(np.var(self.samples))

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.choice(np.asarray(self.samples, dtype=float), size)


@dataclass(frozen=True)
class Quantile:
    """Inverse-CDF sampling from stored quantiles (linear between them).

    ``probs`` rise from 0 to 1 and ``values`` are the matching quantiles, as a
    calibration file stores them.  A draw is ``interp(u, probs, values)`` with
    ``u ~ U(0, 1)``, so the distribution is piecewise uniform between stored
    quantiles and its mean is the trapezoid sum below.
    """

    probs: tuple[float, ...]
    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        p, v = np.asarray(self.probs), np.asarray(self.values)
        return float(np.sum(np.diff(p) * (v[1:] + v[:-1]) / 2))

    @property
    def variance(self) -> float:
        # E[X^2] of a uniform on [a, b] is (a^2 + ab + b^2) / 3.
        p, v = np.asarray(self.probs), np.asarray(self.values)
        a, b = v[:-1], v[1:]
        ex2 = float(np.sum(np.diff(p) * (a * a + a * b + b * b) / 3))
        return ex2 - self.mean**2

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.interp(rng.random(size), self.probs, self.values)


@dataclass(frozen=True)
class Scaled:
    """``factor * base + offset``: unit changes and added overheads."""

    base: Distribution
    factor: float = 1.0
    offset: float = 0.0

    @property
    def mean(self) -> float:
        return self.factor * self.base.mean + self.offset

    @property
    def variance(self) -> float:
        return self.factor**2 * self.base.variance

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.factor * self.base.sample(rng, size) + self.offset


@dataclass(frozen=True)
class Sum:
    """Sum of independent distributions (e.g. search time + overhead)."""

    parts: tuple[Distribution, ...]

    @property
    def mean(self) -> float:
        return sum(p.mean for p in self.parts)

    @property
    def variance(self) -> float:
        return sum(p.variance for p in self.parts)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        total = np.zeros(size)
        for part in self.parts:
            total += part.sample(rng, size)
        return total


def packed(values: np.ndarray) -> Sequence[Any]:
    """``values`` as a compact sequence of Python numbers: an ``array`` of doubles (or of
    64-bit integers) whose items read back exactly as ``values.tolist()`` gives them."""
    kind = values.dtype.kind
    if kind == "f":
        return array("d", np.ascontiguousarray(values, dtype=np.float64).tobytes())
    if kind in "iu" and values.dtype.itemsize <= 8 and (kind == "i" or values.dtype.itemsize < 8):
        return array("q", np.ascontiguousarray(values, dtype=np.int64).tobytes())
    return values.tolist()


class Sampler:
    """Draws one float at a time from a distribution, in blocks.

    Calling numpy once per event costs microseconds; drawing ``block`` values
    at once and handing them out one by one keeps the event loop cheap while
    the sequence of values stays a pure function of the generator's state.
    A block of floats is held as an ``array('d')`` (8 bytes a value, read back
    as Python floats), not a list of float objects (32 bytes a value): a
    closed workload holds a few samplers for every user.
    """

    __slots__ = ("_block", "_buf", "_dist", "_i", "_rng")

    def __init__(self, dist: Distribution, rng: np.random.Generator, block: int = 1024):
        self._dist, self._rng, self._block = dist, rng, block
        self._buf: Sequence[float] = ()
        self._i = 0

    def __call__(self) -> float:
        if self._i >= len(self._buf):
            self._buf = packed(self._dist.sample(self._rng, self._block))
            self._i = 0
        v = self._buf[self._i]
        self._i += 1
        return v

    def add_next(self, k: int) -> float:
        """The next ``k`` values added one by one to 0.0: what ``k`` calls and a running sum give."""
        i, buf = self._i, self._buf
        total = 0.0
        if i + k <= len(buf):
            for v in buf[i : i + k]:
                total += v
            self._i = i + k
            return total
        for _ in range(k):
            total += self()
        return total
