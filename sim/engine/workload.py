"""Who asks what, and when.

* **Closed** workload: ``users`` shoppers, each looping think -> ask -> wait
  for the answer.  Load falls as responses slow down, as it does with real
  people in a chat window.  Each user has its own random stream, so the same
  user thinks the same times and asks the same questions whatever the system
  under test does (common random numbers across sweep points).
* **Open** workload: requests arrive at ``rate_per_s`` whatever happens,
  Poisson (exponential gaps) or gamma gaps with a given ``cv`` for bursts.

Query popularity: with probability ``hot_fraction`` a request asks one of
``hot_keys`` hot questions ("where is my order?" and its variants), uniformly;
otherwise one of the remaining ``distinct - hot_keys`` keys with Zipf(s)
popularity by rank (s = 0 is uniform).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.distributions import packed
from sim.spec.schema import QueriesConfig


class Popularity:
    """The popularity law of query keys; keys ``0 .. hot_keys-1`` are the hot set.

    Built once per run (the Zipf CDF over the cold keys is an array of
    ``distinct - hot_keys`` floats) and shared by every :class:`QueryKeys`.
    """

    def __init__(self, cfg: QueriesConfig):
        self.hot_fraction = cfg.hot_fraction
        self.hot_keys = cfg.hot_keys
        cold = cfg.distinct - cfg.hot_keys
        self.cold_cdf: np.ndarray | None
        if cold > 0:
            weights = np.arange(1, cold + 1, dtype=float) ** (-cfg.zipf_s)
            self.cold_cdf = np.cumsum(weights / weights.sum())
            self.cold_cdf[-1] = 1.0
        else:
            self.cold_cdf = None

    def probabilities(self) -> np.ndarray:
        """Exact probability of each key (for analytic hit-rate estimates)."""
        cold = 0 if self.cold_cdf is None else len(self.cold_cdf)
        p = np.zeros(self.hot_keys + cold)
        if self.hot_keys:
            p[: self.hot_keys] = (self.hot_fraction if cold else 1.0) / self.hot_keys
        if cold:
            p[self.hot_keys :] = (1 - self.hot_fraction) * np.diff(np.concatenate([[0.0], self.cold_cdf]))
        return p


class QueryKeys:
    """Samples query keys from a :class:`Popularity` with one generator."""

    def __init__(self, pop: Popularity, rng: np.random.Generator, block: int = 256):
        self.hot_fraction = pop.hot_fraction
        self.hot_keys = pop.hot_keys
        self._cold_cdf = pop.cold_cdf
        self._rng = rng
        self._block = block
        self._buf: Sequence[int] = ()
        self._i = 0

    def sample(self, size: int) -> np.ndarray:
        u_hot = self._rng.random(size)
        u_key = self._rng.random(size)
        keys = np.empty(size, dtype=np.int64)
        hot = u_hot < self.hot_fraction
        if self._cold_cdf is None:
            hot[:] = True
        keys[hot] = np.minimum((u_key[hot] * self.hot_keys).astype(np.int64), self.hot_keys - 1)
        if self._cold_cdf is not None:
            cold = ~hot
            keys[cold] = self.hot_keys + np.searchsorted(self._cold_cdf, u_key[cold], side="right")
        return keys

    def __call__(self) -> int:
        if self._i >= len(self._buf):
            self._buf = packed(self.sample(self._block))
            self._i = 0
        k = self._buf[self._i]
        self._i += 1
        return k
