"""Append-only per-request records: one flat row per finished request.

Rows are appended as tuples (cheap inside the event loop) and turned into
column arrays once, at the end.  Times are seconds inside the engine and
milliseconds in the records, as everywhere at the edges.
"""

from __future__ import annotations

import numpy as np

COLUMNS = (
    "request", "replication", "user", "arrival_s", "query_key", "cache_hit", "cache_ms",
    "retrieval_wait_ms", "retrieval_service_ms", "llm_wait_ms", "prefill_ms", "decode_ms",
    "prompt_tokens", "output_tokens", "replica", "ttft_ms", "e2e_ms", "preemptions",
)
_MS = {"cache_ms", "retrieval_wait_ms", "retrieval_service_ms", "llm_wait_ms", "prefill_ms",
       "decode_ms", "ttft_ms", "e2e_ms"}
_INT = {"request", "replication", "user", "query_key", "prompt_tokens", "output_tokens", "replica",
        "preemptions"}


class Recorder:
    __slots__ = ("replication", "rows")

    def __init__(self, replication: int):
        self.replication = replication
        self.rows: list[tuple] = []

    def add(self, user, arrival_s, key, hit, cache_s, r_wait_s, r_service_s, l_wait_s, prefill_s,
            decode_s, prompt, output, replica, ttft_s, e2e_s, preemptions=-1) -> None:
        """``preemptions``: times the LLM preempted the request (-1 when the LLM stage is off)."""
        self.rows.append((user, arrival_s, key, hit, cache_s, r_wait_s, r_service_s, l_wait_s,
                          prefill_s, decode_s, prompt, output, replica, ttft_s, e2e_s, preemptions))

    def arrays(self) -> dict[str, np.ndarray]:
        """Column arrays sorted by arrival time, ms at the edges."""
        names = COLUMNS[2:]
        if self.rows:
            cols = list(zip(*self.rows))
        else:
            cols = [()] * len(names)
        out: dict[str, np.ndarray] = {}
        for name, col in zip(names, cols):
            if name == "cache_hit":
                out[name] = np.asarray(col, dtype=bool)
            elif name in _INT:
                out[name] = np.asarray(col, dtype=np.int64)
            elif name in _MS:
                out[name] = np.asarray(col, dtype=float) * 1e3
            else:
                out[name] = np.asarray(col, dtype=float)
        order = np.argsort(out["arrival_s"], kind="stable")
        out = {k: v[order] for k, v in out.items()}
        n = len(order)
        out = {"request": np.arange(n, dtype=np.int64),
               "replication": np.full(n, self.replication, dtype=np.int64), **out}
        return out
