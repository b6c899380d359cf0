"""What every retrieval index kind provides, and the bench it is timed on."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypedDict

import numpy as np

from sim.errors import CalibrationError
from sim.registry import INDEXES

#: Least training points per IVF list (faiss warns below 39).
MIN_POINTS_PER_LIST = 39


def auto_nlist(docs: int) -> int:
    """Default IVF list count: ``round(4*sqrt(N))`` capped at ``N // 39``, >= 1."""
    return max(1, min(round(4 * math.sqrt(docs)), docs // MIN_POINTS_PER_LIST))


Factory = Callable[[], Callable[[int], Any]]


class IndexParams(TypedDict, total=False):
    """How an index was built, as its records say: HNSW's ``M``, ``ef_construction`` and
    ``space``; IVF's ``nlist``; faiss's ``metric``."""

    M: int
    ef_construction: int
    space: str
    nlist: int
    metric: str


class ScaledFrom(TypedDict):
    """A record timed on a subsample and scaled to the corpus: the subsample's size, the factor
    every latency was multiplied by, and how."""

    scaled_from_docs: int
    scale_factor: float
    note: str


class _Scaled(TypedDict, total=False):
    scaled_from_docs: int
    scale_factor: float
    note: str


class RetrievalRecord(_Scaled):
    """One measured configuration in a retrieval calibration file's ``records``: the index,
    corpus size, dimension, k, knob and query threads; the latency quantiles at the file's
    ``probs`` and mean (ms, from ``samples`` searches), recall@k, build time and memory, the
    build parameters; and, when timed on a subsample, :class:`ScaledFrom`'s fields."""

    index: str
    docs: int
    dim: int
    top_k: int
    knob: str | None
    knob_value: int | None
    threads: int
    samples: int
    mean_ms: float
    values_ms: list[float]
    recall: float
    build_s: float
    memory_bytes: int
    params: IndexParams


class Knobs(Protocol):
    """The knob lists a calibration measures (all :meth:`IndexKind.knob_values` reads)."""

    ef: list[int]
    nprobe: list[int]
    threads: list[int]


class Bench(Knobs, Protocol):
    """The timing harness an index kind measures itself on (:mod:`sim.calibrate.retrieval`)."""

    dim: int
    top_k: int
    n_queries: int
    seed: int
    M: int
    ef_construction: int
    linear_python_docs: int
    linear_python_queries: int
    cache: dict[Any, Any]

    def nlist(self, docs: int) -> int: ...

    def time(self, factory: Factory, n_queries: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """Latencies (ns) and found ids of ``n_queries`` single searches on ``threads`` workers."""
        ...

    def record(
        self,
        *,
        index: str,
        docs: int,
        knob_value: int | None,
        threads: int,
        lat_ns: np.ndarray,
        scale: float,
        recall: float,
        build_s: float,
        memory_bytes: int,
        params: IndexParams,
        extra: ScaledFrom | None = None,
    ) -> RetrievalRecord:
        """The record of ``lat_ns`` (single-search latencies, ns, times ``scale``) on this bench."""
        ...

    def recall(self, found: np.ndarray, truth: np.ndarray) -> float: ...

    def exact_topk(self, docs: np.ndarray, queries: np.ndarray) -> np.ndarray: ...

    def tick(self, what: str) -> None: ...


class IndexKind:
    """One kind of index.  Subclasses set the class attributes and implement two methods."""

    name: str = ""
    #: The knob's short name in calibration files (``ef``, ``nprobe``) or None.
    knob: str | None = None
    #: The scenario key that sets the knob, and the calibration flag that measures it.
    knob_key: str | None = None
    knob_flag: str | None = None
    #: The scaling law, as written in calibration files.
    law: str = "a + b*N"
    #: The same law, as profile notes print it.
    law_note: str = "a+b*N"

    def law_x(self, docs: float, *, nlist: int | None = None, nprobe: int | None = None) -> float:
        """The regressor ``x`` of ``time = a + b*x``: ``N`` unless overridden."""
        return float(docs)

    def knob_values(self, bench: Knobs) -> list[int | None]:
        """The knob settings a calibration measures."""
        return [None]

    def time_threads(
        self,
        bench: Bench,
        factory: Factory,
        docs: int,
        truth: np.ndarray,
        *,
        label: str,
        knob_value: int | None = None,
        build_s: float = 0.0,
        memory_bytes: int = 0,
        params: IndexParams | None = None,
    ) -> list[RetrievalRecord]:
        """Time ``bench.n_queries`` single searches at every thread count: one record each."""
        out = []
        for T in bench.threads:
            lat, ids = bench.time(factory, bench.n_queries, T)
            out.append(
                bench.record(
                    index=self.name,
                    docs=docs,
                    knob_value=knob_value,
                    threads=T,
                    lat_ns=lat,
                    scale=1.0,
                    recall=bench.recall(ids, truth),
                    build_s=build_s,
                    memory_bytes=memory_bytes,
                    params=params or {},
                )
            )
            bench.tick(f"N={docs}: {label} threads={T}")
        return out

    def measure(
        self, bench: Bench, docs: int, corpus: np.ndarray, queries: np.ndarray, truth: np.ndarray
    ) -> list[RetrievalRecord]:
        """Build on ``corpus`` (``docs`` rows) and time single searches: one record per knob and thread count."""
        raise NotImplementedError


def kind(name: str) -> IndexKind:
    """The registered kind ``name`` (an instance); bad names raise :class:`CalibrationError`."""
    if name not in INDEXES:
        raise CalibrationError(f"index {name!r} is not one of {', '.join(INDEXES.names())}")
    return INDEXES.load(name)()


def kinds() -> tuple[str, ...]:
    return INDEXES.names()
