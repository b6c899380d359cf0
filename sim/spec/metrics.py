"""The metric registry: every per-request quantity, once.

Record columns, the metrics a summary reports, the metrics an SLA may name
and the stage each needs are all derived from :data:`COLUMNS` and
:data:`METRICS` below; adding a metric is one line here (plus, for a record
column, the engine filling it in).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Statistics a summary gives for every metric (and an SLA may name).
STATS: tuple[str, ...] = ("mean", "p50", "p90", "p95", "p99", "max")

Kind = Literal["int", "float", "bool", "ms"]


@dataclass(frozen=True)
class Column:
    """One column of the per-request records: ``ms`` columns are seconds inside the engine."""

    name: str
    kind: Kind
    doc: str


#: One row per finished request, in this order (``request`` and ``replication`` come first).
COLUMNS: tuple[Column, ...] = (
    Column("request", "int", "index of the request in its replication, by arrival"),
    Column("replication", "int", "replication index"),
    Column("user", "int", "closed-loop user (-1 for open arrivals)"),
    Column("arrival_s", "float", "arrival time, simulated seconds"),
    Column("query_key", "int", "the cache key asked for"),
    Column("cache_hit", "bool", "answered from the cache"),
    Column("cache_ms", "ms", "cache lookup"),
    Column("retrieval_wait_ms", "ms", "wait for a retrieval worker"),
    Column("retrieval_service_ms", "ms", "vector search"),
    Column("llm_wait_ms", "ms", "wait for admission to a GPU replica"),
    Column("prefill_ms", "ms", "admission to first token"),
    Column("decode_ms", "ms", "first to last token"),
    Column("prompt_tokens", "int", "prompt tokens"),
    Column("output_tokens", "int", "generated tokens"),
    Column("replica", "int", "LLM replica that served it (-1: none)"),
    Column("ttft_ms", "ms", "arrival to first token"),
    Column("e2e_ms", "ms", "arrival to answer"),
    Column("preemptions", "int", "times the LLM preempted it (-1: LLM stage off)"),
    Column("question", "int", "the question asked (query_key is the key the cache saw for it)"),
    Column("routing_wait_ms", "ms", "wait for a routing worker"),
    Column("routing_service_ms", "ms", "edit-distance routing of the utterance"),
    Column(
        "routing_outcome",
        "int",
        "-1: routing off; 0: routed to its question; 1: not routed (raw key kept); 2: routed to another question",
    ),
)

Stage = Literal["always", "routing", "cache", "retrieval", "llm"]


@dataclass(frozen=True)
class Metric:
    """A latency a summary reports (milliseconds) and an SLA may bound."""

    name: str
    stage: Stage
    doc: str
    #: The statistics the results tables show as columns (terminal table, summary.csv/.parquet).
    table: tuple[str, ...] = ()


#: Summarised metrics, in report order; each may be named in ``sla:``.
METRICS: tuple[Metric, ...] = (
    Metric("e2e_ms", "always", "arrival to answer", table=("p50", "p95", "p99")),
    Metric("ttft_ms", "llm", "arrival to first token", table=("p95",)),
    Metric("tpot_ms", "llm", "time per output token after the first: decode_ms / (output_tokens - 1)"),
    Metric("routing_ms", "routing", "routing wait + edit-distance routing, routed requests only", table=("p95",)),
    Metric("routing_wait_ms", "routing", "wait for a routing worker"),
    Metric("routing_service_ms", "routing", "edit-distance routing of the utterance"),
    Metric("cache_ms", "cache", "cache lookup"),
    Metric("retrieval_ms", "retrieval", "retrieval wait + search, cache misses only"),
    Metric("retrieval_wait_ms", "retrieval", "wait for a retrieval worker, cache misses only"),
    Metric("retrieval_service_ms", "retrieval", "vector search, cache misses only"),
    Metric("llm_wait_ms", "llm", "wait for admission to a GPU replica"),
    Metric("prefill_ms", "llm", "admission to first token"),
    Metric("decode_ms", "llm", "first to last token"),
)

METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in METRICS)
#: Metrics an SLA may name.
SLA_METRICS: tuple[str, ...] = METRIC_NAMES
#: ``(metric, statistic)`` columns of the results tables, in report order.
TABLE_COLUMNS: tuple[tuple[str, str], ...] = tuple((m.name, st) for m in METRICS for st in m.table)
#: The stage an SLA metric needs (metrics measured always are absent).
METRIC_STAGE: dict[str, str] = {m.name: m.stage for m in METRICS if m.stage != "always"}
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
