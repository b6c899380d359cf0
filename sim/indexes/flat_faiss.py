"""Exact scan with faiss (``IndexFlatIP``): BLAS-backed brute force, no knob, law ``a + b*N``.

Added by following the README's "How to add an index": this file plus one
line in :data:`sim.registry.INDEXES`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.indexes.base import Bench, IndexKind, RetrievalRecord


class FlatFaiss(IndexKind):
    name = "flat_faiss"
    law = "a + b*N"

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[RetrievalRecord]:
        import faiss  # heavy optional library: imported only to build

        k = bench.top_k
        t0 = time.perf_counter_ns()
        index = faiss.IndexFlatIP(corpus.shape[1])
        index.add(corpus)
        build_s = (time.perf_counter_ns() - t0) / 1e9
        blob = faiss.serialize_index(index)

        def factory(_b: np.ndarray = blob, _q: np.ndarray = queries) -> Callable[[int], Any]:
            x = faiss.deserialize_index(_b)  # each worker its own copy
            return lambda i: x.search(_q[i : i + 1], k)[1][0]

        bench.tick(f"N={docs}: flat_faiss ready")
        return self.time_threads(
            bench,
            factory,
            docs,
            truth,
            label=self.name,
            build_s=build_s,
            memory_bytes=int(blob.size),
            params={"metric": "inner_product"},
        )
