"""The article's exact scan in pure Python: a dot product per document in a
Python loop, then the k best with heapq.  O(N) and slow, so it is timed on a
subsample of at most ``linear_python_docs`` documents and scaled by N/sub."""

from __future__ import annotations

import heapq
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.indexes.base import Bench, IndexKind, RetrievalRecord


def scan(q: list[float], docs: list[list[float]], k: int) -> list[int]:
    scores = []
    for i, d in enumerate(docs):
        scores.append((sum(a * b for a, b in zip(q, d)), i))
    return [i for _, i in heapq.nlargest(k, scores)]


def list_bytes(rows: list[list[float]]) -> int:
    """Memory of a list of Python float lists (the scan's corpus)."""
    if not rows:
        return 0
    one = sys.getsizeof(rows[0]) + sum(sys.getsizeof(v) for v in rows[0])
    return sys.getsizeof(rows) + one * len(rows)


class LinearPython(IndexKind):
    name = "linear_python"
    law = "a + b*N"

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[RetrievalRecord]:
        k = bench.top_k
        sub = min(docs, bench.linear_python_docs)
        pq = min(bench.n_queries, bench.linear_python_queries)
        t0 = time.perf_counter_ns()
        sub_rows = corpus[:sub].tolist()
        conv_s = (time.perf_counter_ns() - t0) / 1e9
        mem = int(list_bytes(sub_rows) * docs / sub)
        del sub_rows
        qrows = queries[:pq].tolist()
        sub_truth = bench.exact_topk(corpus[:sub], queries[:pq])

        def factory(_d: np.ndarray = corpus[:sub], _q: list = qrows) -> Callable[[int], Any]:
            rows = _d.tolist()  # private Python lists of floats
            return lambda i: scan(_q[i], rows, k)

        bench.tick(f"N={docs}: linear_python ready (subsample {sub})")
        out = []
        for T in bench.threads:
            key = (self.name, sub, T)
            if key not in bench.cache:  # the same subsample serves every larger N
                lat, ids = bench.time(factory, pq, T)
                bench.cache[key] = (lat, bench.recall(ids, sub_truth))
            lat, rc = bench.cache[key]
            note = (
                (
                    f"timed once per thread count on a {sub}-document subsample with {pq} queries "
                    f"(reused for every N >= {sub}); every latency multiplied by N/{sub} (O(N) scan); "
                    "recall measured on the subsample; build_s is the tolist() conversion scaled the same way"
                )
                if sub < docs
                else f"timed on all {docs} documents with {pq} queries"
            )
            out.append(
                bench.record(
                    index=self.name,
                    docs=docs,
                    knob_value=None,
                    threads=T,
                    lat_ns=lat,
                    scale=docs / sub,
                    recall=rc,
                    build_s=conv_s * docs / sub,
                    memory_bytes=mem,
                    params={},
                    extra={"scaled_from_docs": sub, "scale_factor": docs / sub, "note": note},
                )
            )
            bench.tick(f"N={docs}: linear_python threads={T}")
        return out
