"""IVF-Flat (faiss), inner product; knob ``nprobe`` (``retrieval.nprobe``).

A query compares against every centroid, then every vector of the ``nprobe``
lists it probes: ``x = nlist + N / nlist * nprobe`` vectors, so the law is
``a + b*(nlist + N/nlist*nprobe)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.errors import CalibrationError
from sim.indexes.base import Bench, IndexKind, Knobs, RetrievalRecord


def build(docs: np.ndarray, nlist: int, seed: int) -> tuple[np.ndarray, float, int]:
    """Train and fill; return (serialized index, build_s, bytes)."""
    import faiss  # heavy optional library: imported only to build

    t0 = time.perf_counter_ns()
    quant = faiss.IndexFlatIP(docs.shape[1])
    idx = faiss.IndexIVFFlat(quant, docs.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    idx.cp.seed = seed
    idx.cp.min_points_per_centroid = 1  # we already guarantee >= 39 per list by default
    idx.train(docs)
    idx.add(docs)
    build_s = (time.perf_counter_ns() - t0) / 1e9
    blob = faiss.serialize_index(idx)
    return blob, build_s, int(blob.size)


def load(blob: np.ndarray, nprobe: int) -> Any:
    import faiss  # heavy optional library: imported only to search

    idx = faiss.deserialize_index(blob)
    assert isinstance(idx, faiss.IndexIVF)  # read_index returns the concrete (IVF-Flat) class
    idx.nprobe = nprobe
    return idx


class IVF(IndexKind):
    name = "ivf"
    knob = "nprobe"
    knob_key = "retrieval.nprobe"
    knob_flag = "--nprobe"
    law = "a + b*(nlist + N/nlist*nprobe)"
    law_note = "a+b*(nlist+N/nlist*nprobe)"

    def law_x(self, docs: float, *, nlist: int | None = None, nprobe: int | None = None) -> float:
        if not nlist or not nprobe:
            raise CalibrationError("ivf scaling law needs nlist and nprobe (positive integers)")
        return float(nlist) + float(docs) / float(nlist) * float(nprobe)

    def knob_values(self, bench: Knobs) -> list[int | None]:
        return list(bench.nprobe)

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[RetrievalRecord]:
        out = []
        k = bench.top_k
        nl = bench.nlist(docs)
        blob, build_s, mem = build(corpus, nl, bench.seed)
        bench.tick(f"N={docs}: ivf nlist={nl} built in {build_s:.1f}s")
        for p in bench.nprobe:

            def factory(_p: int = p, _q: np.ndarray = queries, _b: np.ndarray = blob) -> Callable[[int], Any]:
                x = load(_b, _p)
                return lambda i: x.search(_q[i : i + 1], k)[1][0]

            out += self.time_threads(
                bench,
                factory,
                docs,
                truth,
                label=f"ivf nprobe={p}",
                knob_value=p,
                build_s=build_s,
                memory_bytes=mem,
                params={"nlist": nl, "metric": "inner_product"},
            )
        return out
