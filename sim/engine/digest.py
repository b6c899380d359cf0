"""Streaming summaries: fixed-size, mergeable log-bucket histograms of latencies.

Picture 3 million requests of a Black-Friday hour.  Keeping every request's
latencies to take a P99 at the end costs memory in proportion to the
requests; here each finished request only adds one to a counter.  A value
``x`` (milliseconds) goes into bucket ``i = ⌈log_γ x⌉``, which covers
``(γ^(i-1), γ^i]``, and the bucket is read back as ``2γ^i / (γ + 1)``: with
``γ = (1 + α) / (1 - α)`` that value is within a relative ``α`` of every
``x`` in the bucket (DDSketch, Masson, Rim & Lee 2019, VLDB 12(12), §2; the
log-bucket layout HdrHistogram uses).  capsim takes ``α = 0.5 %``
(:data:`RELATIVE_ERROR`): 231 buckets a decade, so a latency spread over
three decades needs ~700 counters however many requests there are.  Values
at or under :data:`ZERO_MS` (one microsecond: a wait that did not happen) are
counted apart as 0; the smallest and largest value, the count and the sum are
kept exactly, so the mean, the maximum and every statistic of a constant are
exact.

Percentiles follow numpy's default (``"linear"``, type 7 of Hyndman & Fan):
with ``h = (n-1)·q``, ``x_(⌊h⌋) + (h-⌊h⌋)·(x_(⌊h⌋+1) - x_(⌊h⌋))``, each order
statistic read from its bucket (and clamped into ``[min, max]``).  Each read
value is within ``α`` of the true order statistic, so the interpolated
percentile is within ``α`` of numpy's on the same values.

Two histograms of the same metric add exactly (:meth:`Histogram.merge`):
replications, time cells and shards combine by adding counters, in any
order.

:class:`Digest` is one replication's streaming summary: the run's time is cut
into cells (by arrival time; edges from :func:`cell_edges`) and every metric
of :data:`sim.spec.metrics.METRICS` gets one histogram per cell, beside a
few per-cell counts (finished, started, cache lookups and hits, routing
outcomes, answers delivered by end time).  Its size depends on the scenario's
cells and the spread of the latencies, never on the number of requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sim.engine.routing import KEPT_RAW, ROUTED, WRONG
from sim.spec.metrics import METRIC_NAMES

#: Relative error of a value read back from its bucket (and of every percentile).
RELATIVE_ERROR = 0.005
GAMMA = (1.0 + RELATIVE_ERROR) / (1.0 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(GAMMA)
#: Values at or under this (ms) are counted as 0: a microsecond is below any latency reported
#: (and a wait of a few floating-point roundings would otherwise open buckets down to 1e-12 ms).
ZERO_MS = 1e-3
#: Cells between the warm-up cut and the end of arrivals: 20 batches of 5 for one run's batch
#: means, 4 quarters of 25 for the trend test, the MSER-5 grid for ``warmup_s: auto``.
CELLS = 100

__all__ = ["CELLS", "GAMMA", "RELATIVE_ERROR", "ZERO_MS", "CellHistograms", "Digest", "Histogram", "cell_edges"]


def _check_finite(values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise ValueError("a latency to count is NaN or infinite (a bug in the stage that recorded it)")


def bucket_of(values: np.ndarray) -> np.ndarray:
    """``⌈log_γ x⌉`` of positive values (int64)."""
    buckets: np.ndarray = np.ceil(np.log(values) / _LOG_GAMMA).astype(np.int64)
    return buckets


def bucket_value(index: np.ndarray | int) -> np.ndarray:
    """The value a bucket reads back as: ``2γ^i / (γ + 1)``."""
    return 2.0 * np.exp(np.asarray(index, dtype=float) * _LOG_GAMMA) / (GAMMA + 1.0)


class Histogram:
    """One set of values as log-bucket counts (see the module docstring).

    ``offset``: the bucket index of ``counts[0]``; ``zeros``: values counted as 0;
    ``n``, ``total``, ``lo``, ``hi``: count, sum, minimum and maximum, exact.
    """

    __slots__ = ("counts", "hi", "lo", "n", "offset", "total", "zeros")

    def __init__(self) -> None:
        self.offset = 0
        self.counts = np.zeros(0, dtype=np.int64)
        self.zeros = 0
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf

    @classmethod
    def of(cls, values: np.ndarray | Sequence[float]) -> Histogram:
        h = cls()
        h.add(np.asarray(values, dtype=float))
        return h

    def add(self, values: np.ndarray) -> None:
        """Count ``values`` (ms, non-negative; NaN is not allowed)."""
        v = np.asarray(values, dtype=float).reshape(-1)
        if not v.size:
            return
        _check_finite(v)
        self.n += int(v.size)
        self.total += float(v.sum())
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        pos = v[v > ZERO_MS]
        self.zeros += int(v.size - pos.size)
        if pos.size:
            b = bucket_of(pos)
            self._reach(int(b.min()), int(b.max()))
            self.counts += np.bincount(b - self.offset, minlength=self.counts.size)

    def _reach(self, lo: int, hi: int) -> None:
        if not self.counts.size:
            self.offset, self.counts = lo, np.zeros(hi - lo + 1, dtype=np.int64)
            return
        new_lo, new_hi = min(lo, self.offset), max(hi, self.offset + self.counts.size - 1)
        if new_lo < self.offset or new_hi >= self.offset + self.counts.size:
            grown = np.zeros(new_hi - new_lo + 1, dtype=np.int64)
            grown[self.offset - new_lo : self.offset - new_lo + self.counts.size] = self.counts
            self.offset, self.counts = new_lo, grown

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts into this histogram (exact); returns self."""
        if other.n == 0:
            return self
        self.n += other.n
        self.total += other.total
        self.zeros += other.zeros
        self.lo, self.hi = min(self.lo, other.lo), max(self.hi, other.hi)
        if other.counts.size:
            self._reach(other.offset, other.offset + other.counts.size - 1)
            i = other.offset - self.offset
            self.counts[i : i + other.counts.size] += other.counts
        return self

    @classmethod
    def sum(cls, parts: Sequence[Histogram]) -> Histogram:
        out = cls()
        for p in parts:
            out.merge(p)
        return out

    def __len__(self) -> int:
        return self.n

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def at_ranks(self, ranks: np.ndarray) -> np.ndarray:
        """The order statistics ``x_(k)`` (0-based ``k``) as read from their buckets, clamped
        into ``[min, max]``; rank 0 and rank ``n-1`` are the exact minimum and maximum."""
        k = np.asarray(ranks, dtype=np.int64)
        cum = np.cumsum(self.counts)
        j = np.searchsorted(cum, k - self.zeros, side="right")
        vals = np.where(k < self.zeros, 0.0, bucket_value(self.offset + np.minimum(j, max(0, cum.size - 1))))
        vals = np.clip(vals, self.lo, self.hi)
        vals = np.where(k <= 0, self.lo, vals)
        return np.where(k >= self.n - 1, self.hi, vals)

    def quantiles(self, qs: Sequence[float]) -> np.ndarray:
        """numpy's ``percentile(values, 100·q)`` (linear method) for each ``q`` in [0, 1]."""
        q = np.asarray(qs, dtype=float)
        if self.n == 0:
            return np.full(q.shape, math.nan)
        h = (self.n - 1) * q
        below = np.floor(h).astype(np.int64)
        frac = h - below
        a = self.at_ranks(below)
        b = self.at_ranks(np.minimum(below + 1, self.n - 1))
        between: np.ndarray = a + frac * (b - a)
        return between

    def quantile(self, q: float) -> float:
        return float(self.quantiles([q])[0])

    def __eq__(self, other: object) -> bool:
        """Same counts, extremes and count; the sums to floating-point rounding (added in
        another order, the same values sum to a last bit apart)."""
        if not isinstance(other, Histogram):
            return NotImplemented
        (oa, ca), (ob, cb) = self.dense(), other.dense()
        same = (self.n, self.zeros, self.lo, self.hi, oa) == (other.n, other.zeros, other.lo, other.hi, ob)
        return same and np.array_equal(ca, cb) and math.isclose(self.total, other.total, rel_tol=1e-12)

    def dense(self) -> tuple[int, np.ndarray]:
        """``(offset, counts)`` with empty buckets trimmed from both ends."""
        nz = np.flatnonzero(self.counts)
        if not nz.size:
            return 0, np.zeros(0, dtype=np.int64)
        return self.offset + int(nz[0]), self.counts[nz[0] : nz[-1] + 1]


#: A :class:`CellHistograms` as pickled: ``(offset, counts, zeros, n, total, lo, hi)``.
_HistogramState = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class CellHistograms:
    """One metric's histograms, one per time cell, in one array ``(cells, buckets)``.

    The bucket range grows to what has been seen (shared by every cell), so
    the memory is ``cells × buckets spanned`` 4-byte counters: it grows with
    the logarithm of the latencies' spread (231 buckets a decade), never with
    the number of requests.
    """

    __slots__ = ("counts", "hi", "lo", "n", "offset", "total", "zeros")

    def __init__(self, cells: int) -> None:
        self.offset = 0
        self.counts = np.zeros((cells, 0), dtype=np.uint32)  # per cell and bucket: < 2^32 requests
        self.zeros = np.zeros(cells, dtype=np.int64)
        self.n = np.zeros(cells, dtype=np.int64)
        self.total = np.zeros(cells)
        self.lo = np.full(cells, math.inf)
        self.hi = np.full(cells, -math.inf)

    @property
    def cells(self) -> int:
        return len(self.n)

    def add(self, cell: np.ndarray, values: np.ndarray) -> None:
        """Count ``values[j]`` in cell ``cell[j]``."""
        if not len(values):
            return
        _check_finite(values)
        c = self.cells
        self.n += np.bincount(cell, minlength=c)
        self.total += np.bincount(cell, weights=values, minlength=c)
        np.minimum.at(self.lo, cell, values)
        np.maximum.at(self.hi, cell, values)
        pos = values > ZERO_MS
        self.zeros += np.bincount(cell[~pos], minlength=c)
        if pos.any():
            b = bucket_of(values[pos])
            lo, hi = int(b.min()), int(b.max())
            width = self.counts.shape[1]
            if not width:
                self.offset, self.counts = lo, np.zeros((c, hi - lo + 1), dtype=np.uint32)
            elif lo < self.offset or hi >= self.offset + width:
                new_lo, new_hi = min(lo, self.offset), max(hi, self.offset + width - 1)
                grown = np.zeros((c, new_hi - new_lo + 1), dtype=np.uint32)
                grown[:, self.offset - new_lo : self.offset - new_lo + width] = self.counts
                self.offset, self.counts = new_lo, grown
            width = self.counts.shape[1]
            np.add.at(self.counts.reshape(-1), cell[pos] * width + (b - self.offset), 1)

    def merge(self, other: CellHistograms) -> CellHistograms:
        """Add ``other``'s counts (the same cells) into these (exact); returns self."""
        if other.cells != self.cells:
            raise ValueError(f"cannot merge histograms of {other.cells} cells into {self.cells}")
        self.n += other.n
        self.zeros += other.zeros
        self.total += other.total
        np.minimum(self.lo, other.lo, out=self.lo)
        np.maximum(self.hi, other.hi, out=self.hi)
        width = other.counts.shape[1]
        if width:
            mine = self.counts.shape[1]
            lo = other.offset if not mine else min(self.offset, other.offset)
            hi = other.offset + width - 1 if not mine else max(self.offset + mine - 1, other.offset + width - 1)
            if not mine or lo < self.offset or hi >= self.offset + mine:
                grown = np.zeros((self.cells, hi - lo + 1), dtype=np.uint32)
                if mine:
                    grown[:, self.offset - lo : self.offset - lo + mine] = self.counts
                self.offset, self.counts = lo, grown
            i = other.offset - self.offset
            self.counts[:, i : i + width] += other.counts
        return self

    def select(self, cells: np.ndarray | slice) -> Histogram:
        """The histogram of the values in ``cells`` (a boolean mask, indices or a slice)."""
        h = Histogram()
        n = self.n[cells]
        h.n = int(n.sum())
        if not h.n:
            return h
        h.zeros = int(self.zeros[cells].sum())
        h.total = float(self.total[cells].sum())
        h.lo, h.hi = float(self.lo[cells].min()), float(self.hi[cells].max())
        h.offset, h.counts = self.offset, self.counts[cells].sum(axis=0, dtype=np.int64)
        return h

    def trimmed(self) -> CellHistograms:
        """The same counts with empty buckets at both ends dropped (for storage)."""
        nz = np.flatnonzero(self.counts.any(axis=0))
        out = CellHistograms.__new__(CellHistograms)
        out.zeros, out.n, out.total, out.lo, out.hi = self.zeros, self.n, self.total, self.lo, self.hi
        if nz.size:
            out.offset, out.counts = self.offset + int(nz[0]), self.counts[:, nz[0] : nz[-1] + 1].copy()
        else:
            out.offset, out.counts = 0, self.counts[:, :0]
        return out

    def __getstate__(self) -> _HistogramState:
        t = self.trimmed()
        return (t.offset, t.counts, t.zeros, t.n, t.total, t.lo, t.hi)

    def __setstate__(self, state: _HistogramState) -> None:
        self.offset, self.counts, self.zeros, self.n, self.total, self.lo, self.hi = state


def cell_edges(lo_s: float, hi_s: float, extra: Sequence[float] = ()) -> np.ndarray:
    """Left edges of the time cells: ``[0, lo)``, :data:`CELLS` equal cells over ``[lo, hi)``,
    and ``[hi, ∞)`` for what arrives after (the drain); ``extra`` edges (timeline windows)
    are added, so every statistic over whole cells is exact at those edges too."""
    grid = np.linspace(lo_s, hi_s, CELLS + 1)
    grid[-1] = hi_s
    edges = np.union1d(np.concatenate([[0.0], grid]), np.asarray(extra, dtype=float))
    inside: np.ndarray = edges[(edges >= 0.0) & (edges <= hi_s)]
    return inside


def window_edges(end_s: float, width_s: float) -> np.ndarray:
    """Edges of windows of ``width_s`` from 0 to ``end_s`` (the last one may be shorter)."""
    k = max(1, math.ceil(end_s / width_s - 1e-9))
    edges: np.ndarray = np.minimum(np.arange(k + 1) * width_s, end_s)
    return edges


#: Cells of the e2e series ``warmup_s: auto`` runs MSER-5 over (count and sum each).
FINE_CELLS = 1000

#: Per-cell counts a Digest keeps beside the histograms (by arrival time unless noted).
COUNTS = (
    "finished",  # requests finished (arrived in the cell)
    "started",  # requests started, finished or not
    "lookups",  # cache lookups made (finished or not)
    "hits",  # of which hits
    "misses",  # finished requests that missed the cache
    "waited",  # of which waited for a retrieval worker
    "preempted",  # finished requests the LLM preempted at least once
    "routed",  # routing outcomes of finished requests
    "kept_raw",
    "wrong",
    "novel_keys",  # finished requests whose cache key is a novel typed variant
    "routing",  # finished requests that went through the routing stage
    "delivered",  # answers delivered in the cell (by end time)
    "delivered_tokens",  # their output tokens
)
_COUNT = {name: i for i, name in enumerate(COUNTS)}


def metric_values(rec: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """The values of one metric in a set of records (columns in ms): retrieval metrics over
    cache misses, routing metrics over routed requests, TPOT over answers of 2+ tokens."""
    values: np.ndarray
    if metric in ("retrieval_ms", "retrieval_wait_ms", "retrieval_service_ms"):
        miss = ~rec["cache_hit"]
        if metric == "retrieval_ms":
            values = (rec["retrieval_wait_ms"] + rec["retrieval_service_ms"])[miss]
            return values
        values = rec[metric][miss]
        return values
    if metric in ("routing_ms", "routing_wait_ms", "routing_service_ms"):
        routed = rec["routing_outcome"] >= 0
        if metric == "routing_ms":
            values = (rec["routing_wait_ms"] + rec["routing_service_ms"])[routed]
            return values
        values = rec[metric][routed]
        return values
    if metric == "tpot_ms":
        many = rec["output_tokens"] > 1
        values = rec["decode_ms"][many] / (rec["output_tokens"][many] - 1)
        return values
    return rec[metric]


def _metric_mask(rec: dict[str, np.ndarray], metric: str) -> np.ndarray | None:
    """Which records carry ``metric`` (None: all), matching :func:`metric_values`."""
    if metric.startswith("retrieval"):
        return ~rec["cache_hit"]
    if metric.startswith("routing"):
        return rec["routing_outcome"] >= 0
    if metric == "tpot_ms":
        return rec["output_tokens"] > 1
    return None


class Digest:
    """One replication's streaming summary: per time cell, a histogram of every metric and
    the counts of :data:`COUNTS`.  ``edges``: the cells' left edges (the last cell runs to
    infinity)."""

    __slots__ = ("counts", "edges", "fine", "fine_end_s", "hist")

    def __init__(self, edges: np.ndarray, fine_end_s: float | None = None) -> None:
        """``fine_end_s``: also count e2e latency (count and sum) in :data:`FINE_CELLS` equal
        cells over ``[0, fine_end_s)``, the series ``warmup_s: auto`` looks for its cut in."""
        self.edges = np.asarray(edges, dtype=float)
        c = len(self.edges)
        self.hist = {m: CellHistograms(c) for m in METRIC_NAMES}
        self.counts = np.zeros((c, len(COUNTS)))
        self.fine_end_s = fine_end_s
        self.fine = np.zeros((FINE_CELLS, 2)) if fine_end_s else None

    @property
    def cells(self) -> int:
        return len(self.edges)

    def cell_of(self, t_s: np.ndarray) -> np.ndarray:
        return np.maximum(np.searchsorted(self.edges, t_s, side="right") - 1, 0)

    def count(self, name: str) -> np.ndarray:
        """Per-cell count ``name`` (see :data:`COUNTS`)."""
        return self.counts[:, _COUNT[name]]

    def _bump(self, name: str, cell: np.ndarray, weights: np.ndarray | None = None) -> None:
        self.counts[:, _COUNT[name]] += np.bincount(cell, weights=weights, minlength=self.cells)

    def add_started(self, t_s: np.ndarray) -> None:
        self._bump("started", self.cell_of(np.asarray(t_s, dtype=float)))

    def add_lookups(self, t_s: np.ndarray, hit: np.ndarray) -> None:
        cell = self.cell_of(np.asarray(t_s, dtype=float))
        self._bump("lookups", cell)
        self._bump("hits", cell[np.asarray(hit, dtype=bool)])

    def add_records(self, rec: dict[str, np.ndarray]) -> None:
        """Count a block of finished requests (columns as in the records, times in ms)."""
        n = len(rec["arrival_s"])
        if not n:
            return
        cell = self.cell_of(rec["arrival_s"])
        for m, h in self.hist.items():
            mask = _metric_mask(rec, m)
            vals = metric_values(rec, m)
            h.add(cell if mask is None else cell[mask], vals)
        self._bump("finished", cell)
        miss = ~rec["cache_hit"]
        self._bump("misses", cell[miss])
        self._bump("waited", cell[miss & (rec["retrieval_wait_ms"] > 0)])
        self._bump("preempted", cell[rec["preemptions"] > 0])
        oc = rec["routing_outcome"]
        self._bump("routing", cell[oc >= 0])
        self._bump("routed", cell[oc == ROUTED])
        self._bump("kept_raw", cell[oc == KEPT_RAW])
        self._bump("wrong", cell[oc == WRONG])
        self._bump("novel_keys", cell[rec["query_key"] < 0])
        if self.fine is not None and self.fine_end_s:
            t = rec["arrival_s"]
            inside = t < self.fine_end_s
            i = np.minimum((t[inside] * (FINE_CELLS / self.fine_end_s)).astype(np.int64), FINE_CELLS - 1)
            self.fine[:, 0] += np.bincount(i, minlength=FINE_CELLS)
            self.fine[:, 1] += np.bincount(i, weights=rec["e2e_ms"][inside], minlength=FINE_CELLS)
        end = self.cell_of(rec["arrival_s"] + rec["e2e_ms"] / 1e3)
        self._bump("delivered", end)
        self._bump("delivered_tokens", end, rec["output_tokens"].astype(float))

    def merge(self, other: Digest) -> Digest:
        """Add ``other`` (a digest over the same cells: another shard of the same replication's
        requests) into this one, exactly; returns self."""
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge digests over different time cells")
        for m, h in self.hist.items():
            h.merge(other.hist[m])
        self.counts += other.counts
        if self.fine is not None and other.fine is not None:
            self.fine += other.fine
        return self

    def first_cell(self, t_s: float) -> int:
        """The first cell that starts at or after ``t_s``."""
        return int(np.searchsorted(self.edges, t_s - 1e-9 * max(1.0, abs(t_s)), side="left"))

    def between(self, a_s: float, b_s: float) -> slice:
        """The cells covering ``[a, b)`` (``a``, ``b`` at cell edges; ``b = inf``: to the end)."""
        return slice(self.first_cell(a_s), self.cells if math.isinf(b_s) else self.first_cell(b_s))
