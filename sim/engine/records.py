"""Per-request records: one flat row per finished request, folded into a streaming digest.

Rows are appended as tuples (cheap inside the event loop); every
:data:`CHUNK_ROWS` rows they are packed into one float64 block and counted
into the replication's :class:`~sim.engine.digest.Digest` (histograms by time
cell, from which every summary is computed).  Only when the records are kept
(``run.records``) are the blocks held, becoming column arrays once, at the
end (8 bytes a field instead of a tuple of Python numbers); otherwise each
block is dropped once counted, so the memory does not grow with the requests.
Times are seconds inside the engine and milliseconds in the records, as
everywhere at the edges.
"""

from __future__ import annotations

import numpy as np

from sim.engine.digest import Digest
from sim.spec.metrics import COLUMN_NAMES, COLUMNS

_KIND = {c.name: c.kind for c in COLUMNS}
_FIELDS = len(COLUMN_NAMES) - 2
#: Rows held as tuples before they are packed into a float64 block.
CHUNK_ROWS = 4096
#: One finished request as :meth:`Recorder.add` holds it: the columns of
#: :data:`sim.spec.metrics.COLUMNS` from ``user`` to ``routing_outcome`` (times in seconds).
RecordRow = tuple[
    int,  # user
    float,  # arrival_s
    int,  # query_key
    bool,  # cache_hit
    float,  # cache
    float,  # retrieval_wait
    float,  # retrieval_service
    float,  # llm_wait
    float,  # prefill
    float,  # decode
    int,  # prompt_tokens
    int,  # output_tokens
    int,  # replica
    float,  # ttft
    float,  # e2e
    int,  # preemptions
    int,  # question
    float,  # routing_wait
    float,  # routing_service
    int,  # routing_outcome
]


class Recorder:
    """Finished requests: counted into ``digest``; held as rows too when ``keep``."""

    __slots__ = ("blocks", "count", "digest", "keep", "replication", "rows")

    def __init__(self, replication: int, digest: Digest | None = None, keep: bool = True):
        self.replication = replication
        self.digest = digest
        self.keep = keep
        self.rows: list[RecordRow] = []
        self.blocks: list[np.ndarray] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count + len(self.rows)

    def _pack(self) -> None:
        # One C-level conversion of the rows to float64 (3.4x faster than a zip into columns
        # and an asarray per column); ints and flags are exact in float64.
        if self.rows:
            block = np.array(self.rows, dtype=float).reshape(len(self.rows), _FIELDS)
            self.count += len(self.rows)
            self.rows = []
            if self.digest is not None:
                self.digest.add_records(_columns(block))
            if self.keep:
                self.blocks.append(block)

    def add(
        self,
        user: int,
        arrival_s: float,
        key: int,
        hit: bool,
        cache_s: float,
        r_wait_s: float,
        r_service_s: float,
        l_wait_s: float,
        prefill_s: float,
        decode_s: float,
        prompt: int,
        output: int,
        replica: int,
        ttft_s: float,
        e2e_s: float,
        preemptions: int = -1,
        question: int = -1,
        routing_wait_s: float = 0.0,
        routing_service_s: float = 0.0,
        routing_outcome: int = -1,
    ) -> None:
        """``preemptions``: times the LLM preempted the request (-1 when the LLM stage is off);
        ``question``: the question asked (``key`` is the cache key it became); ``routing_outcome``
        -1 when the routing stage is off (see :data:`sim.spec.metrics.COLUMNS`)."""
        self.rows.append(
            (
                user,
                arrival_s,
                key,
                hit,
                cache_s,
                r_wait_s,
                r_service_s,
                l_wait_s,
                prefill_s,
                decode_s,
                prompt,
                output,
                replica,
                ttft_s,
                e2e_s,
                preemptions,
                question,
                routing_wait_s,
                routing_service_s,
                routing_outcome,
            )
        )
        if len(self.rows) >= CHUNK_ROWS:
            self._pack()

    def flush(self) -> None:
        """Count the rows not yet packed (at the end of the run)."""
        self._pack()

    def arrays(self) -> dict[str, np.ndarray]:
        """Column arrays sorted by arrival time, ms at the edges (the records kept)."""
        names = COLUMN_NAMES[2:]
        self._pack()
        blocks, self.blocks = self.blocks, []

        def column(j: int) -> np.ndarray:
            return np.concatenate([b[:, j] for b in blocks]) if blocks else np.empty(0)

        # Column by column from the blocks, each sorted as it is made: the memory held at
        # once is the blocks plus the columns, never a second copy of every row.
        order = np.argsort(column(names.index("arrival_s")), kind="stable")
        out: dict[str, np.ndarray] = {}
        for j, name in enumerate(names):
            col = column(j)[order]
            if _KIND[name] == "bool":
                out[name] = col != 0.0
            elif _KIND[name] == "int":
                out[name] = col.astype(np.int64)
            elif _KIND[name] == "ms":
                col *= 1e3
                out[name] = col
            else:
                out[name] = col
        n = len(order)
        out = {
            "request": np.arange(n, dtype=np.int64),
            "replication": np.full(n, self.replication, dtype=np.int64),
            **out,
        }
        return out


def _columns(block: np.ndarray) -> dict[str, np.ndarray]:
    """One packed block as record columns (ms at the edges, flags as bool), unsorted."""
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(COLUMN_NAMES[2:]):
        col = block[:, j]
        kind = _KIND[name]
        out[name] = col != 0.0 if kind == "bool" else (col * 1e3 if kind == "ms" else col)
    return out


class Bins:
    """An amount (busy seconds, steps, block-seconds, events) accumulated over time.

    Kept in bins so the total after *any* cut can be taken once the run is
    over: a fixed ``warmup_s`` or the one MSER-5 picks from the records.  Bin 0
    is ``[0, lo)`` (the fixed warm-up), then ``n`` equal bins cover
    ``[lo, hi)``; amounts past ``hi`` are dropped.  A total from ``lo`` is
    exact; from a cut inside a bin, that bin is prorated (error at most one
    bin's worth: 1/n of the window).  An amount over an interval is spread
    uniformly across it, as a step's work is over the step.
    """

    __slots__ = ("hi", "lo", "values", "width")

    def __init__(self, lo: float, hi: float, n: int = 200):
        self.lo, self.hi = float(lo), float(hi)
        self.width = (self.hi - self.lo) / n
        self.values = [0.0] * (n + 1)

    def _upper(self, i: int) -> float:
        if i == 0:
            return self.lo
        # The last bin ends exactly at hi: lo + n * width can round to just below it.
        return self.hi if i >= len(self.values) - 1 else min(self.hi, self.lo + i * self.width)

    def _index(self, t: float) -> int:
        if t < self.lo:
            return 0
        return min(len(self.values) - 1, 1 + int((t - self.lo) / self.width))

    def add(self, start: float, end: float, amount: float) -> None:
        """Add ``amount`` spread over ``[start, end)`` (at the instant ``start`` if ``end <= start``)."""
        if end <= start:
            if 0.0 <= start < self.hi:
                self.values[self._index(start)] += amount
            return
        a, b = max(start, 0.0), min(end, self.hi)
        if b <= a:
            return
        rate = amount / (end - start)
        i = self._index(a)
        if b <= self._upper(i):  # the usual case: all inside one bin
            self.values[i] += rate * (b - a)
            return
        while a < b:
            seg = min(b, self._upper(i))
            if seg > a:
                self.values[i] += rate * (seg - a)
                a = seg
            i += 1

    def total_from(self, cut: float) -> float:
        """The amount at times ``>= cut`` (the bin holding ``cut`` prorated)."""
        if cut <= 0:
            return float(sum(self.values))
        i = self._index(cut)
        start = 0.0 if i == 0 else self.lo + (i - 1) * self.width
        width = self._upper(i) - start
        part = self.values[i] * (self._upper(i) - cut) / width if width > 0 else 0.0
        return float(part + sum(self.values[i + 1 :]))

    @property
    def total(self) -> float:
        """The amount inside ``[lo, hi)``: the fixed measurement window."""
        return float(sum(self.values[1:]))

    @staticmethod
    def add_all(bins: tuple[Bins, ...], start: float, end: float, amounts: tuple[float, ...]) -> None:
        """``bins[k].add(start, end, amounts[k])`` for every k, the bins sharing one time grid:
        the interval's split into bins is computed once (an LLM step feeds five counters)."""
        first = bins[0]
        if end <= start or start < 0.0 or end > first.hi:
            for b, x in zip(bins, amounts):
                b.add(start, end, x)
            return
        # _index(start) and _upper of it, written out: an LLM step or epoch comes here
        lo, last = first.lo, len(first.values) - 1
        if start < lo:
            i, upper = 0, lo
        else:
            i = 1 + int((start - lo) / first.width)
            if i >= last:
                i, upper = last, first.hi
            else:
                upper = min(first.hi, lo + i * first.width)
        if end <= upper:  # the usual case: the whole step inside one bin
            for b, x in zip(bins, amounts):
                b.values[i] += x
            return
        for b, x in zip(bins, amounts):
            b.add(start, end, x)

    @staticmethod
    def sum(parts: list[Bins]) -> Bins:
        out = Bins.__new__(Bins)
        first = parts[0]
        out.lo, out.hi, out.width = first.lo, first.hi, first.width
        out.values = [sum(v) for v in zip(*(p.values for p in parts))]
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Bins) and (self.lo, self.hi, self.values) == (other.lo, other.hi, other.values)

    def __getstate__(self) -> tuple[float, float, float, list[float]]:
        return (self.lo, self.hi, self.width, self.values)

    def __setstate__(self, state: tuple[float, float, float, list[float]]) -> None:
        self.lo, self.hi, self.width, self.values = state
