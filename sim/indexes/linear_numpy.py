"""Exact scan with numpy: one matrix-vector product, then ``argpartition`` for the top k."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sim.indexes.base import Bench, IndexKind


def scan(q: np.ndarray, docs: np.ndarray, k: int) -> np.ndarray:
    s = docs @ q
    part = np.argpartition(-s, k - 1)[:k]
    return part[np.argsort(-s[part])]


class LinearNumpy(IndexKind):
    name = "linear_numpy"
    law = "a + b*N"

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[dict[str, Any]]:
        k = bench.top_k

        def factory(_d: np.ndarray = corpus, _q: np.ndarray = queries) -> Callable[[int], Any]:
            d = _d.copy()  # each worker its own copy
            return lambda i: scan(_q[i], d, k)

        bench.tick(f"N={docs}: linear_numpy ready")
        out = []
        for T in bench.threads:
            lat, ids = bench.time(factory, bench.n_queries, T)
            out.append(
                bench.record(
                    index=self.name,
                    docs=docs,
                    knob_value=None,
                    threads=T,
                    lat_ns=lat,
                    scale=1.0,
                    recall=bench.recall(ids, truth),
                    build_s=0.0,
                    memory_bytes=corpus.nbytes,
                    params={},
                )
            )
            bench.tick(f"N={docs}: linear_numpy threads={T}")
        return out
