"""Exact scan with numpy: one matrix-vector product, then ``argpartition`` for the top k."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.indexes.base import Bench, IndexKind, RetrievalRecord


def scan(q: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    s = docs @ q
    part = np.argpartition(-s, k - 1)[:k]
    return part[np.argsort(-s[part])]


class LinearNumpy(IndexKind):
    name = "linear_numpy"
    law = "a + b*N"

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[RetrievalRecord]:
        k = bench.top_k

        def factory(_d: np.ndarray = corpus, _q: np.ndarray = queries) -> Callable[[int], Any]:
            d = _d.copy()  # each worker its own copy
            return lambda i: scan(_q[i], d, k)

        bench.tick(f"N={docs}: linear_numpy ready")
        return self.time_threads(bench, factory, docs, truth, label=self.name, memory_bytes=corpus.nbytes)
