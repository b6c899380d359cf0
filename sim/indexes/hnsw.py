"""HNSW graph index (hnswlib), inner product; knob ``ef`` (``retrieval.ef_search``).

Search cost grows like ``ln N`` (the graph's layers), so the law is ``a + b*ln N``.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.indexes.base import Bench, IndexKind, Knobs, RetrievalRecord


def build(docs: np.ndarray, M: int, ef_construction: int, seed: int, save_to: str) -> tuple[float, int]:
    """Build, save to ``save_to`` (workers load private copies); return (build_s, bytes)."""
    import hnswlib  # heavy optional library: imported only to build

    t0 = time.perf_counter_ns()
    idx = hnswlib.Index(space="ip", dim=docs.shape[1])
    idx.init_index(max_elements=docs.shape[0], M=M, ef_construction=ef_construction, random_seed=seed)
    idx.add_items(docs, np.arange(docs.shape[0]), num_threads=1)
    build_s = (time.perf_counter_ns() - t0) / 1e9
    idx.save_index(save_to)
    return build_s, os.path.getsize(save_to)


def load(path: str, dim: int, n: int, ef: int) -> Any:
    import hnswlib  # heavy optional library: imported only to search

    idx = hnswlib.Index(space="ip", dim=dim)
    idx.load_index(path, max_elements=n)
    idx.set_ef(ef)
    idx.set_num_threads(1)
    return idx


class HNSW(IndexKind):
    name = "hnsw"
    knob = "ef"
    knob_key = "retrieval.ef_search"
    knob_flag = "--ef"
    law = "a + b*ln(N)"
    law_note = "a+b*ln N"

    def law_x(self, docs: float, *, nlist: int | None = None, nprobe: int | None = None) -> float:
        return math.log(float(docs))

    def knob_values(self, bench: Knobs) -> list[int | None]:
        return list(bench.ef)

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[RetrievalRecord]:
        out = []
        dim, k = bench.dim, bench.top_k
        with tempfile.TemporaryDirectory(prefix="capsim-hnsw-") as td:
            path = os.path.join(td, "index.bin")
            build_s, mem = build(corpus, bench.M, bench.ef_construction, bench.seed, path)
            bench.tick(f"N={docs}: hnsw built in {build_s:.1f}s")
            for e in bench.ef:

                def factory(_e: int = e, _q: np.ndarray = queries) -> Callable[[int], Any]:
                    x = load(path, dim, docs, _e)
                    return lambda i: x.knn_query(_q[i : i + 1], k=k, num_threads=1)[0][0]

                out += self.time_threads(
                    bench,
                    factory,
                    docs,
                    truth,
                    label=f"hnsw ef={e}",
                    knob_value=e,
                    build_s=build_s,
                    memory_bytes=mem,
                    params={"M": bench.M, "ef_construction": bench.ef_construction, "space": "ip"},
                )
        return out
