"""From replications to the numbers a report prints.

For every metric (a column of the records, in ms) and every statistic
(mean, p50, p90, p95, p99, max) a point summary holds, read from the
replications' streaming digests (:mod:`sim.engine.digest`: log-bucket
histograms by time cell, percentiles within 0.5 % of the exact ones, the
mean and maximum exact; per-request records are never needed):

* ``value``: the mean over replications of the per-replication statistic
  (with one replication, the statistic itself);
* ``ci``: a Student t interval over the per-replication statistics, or, with
  one replication, a batch-means half-width around the whole-run statistic
  (20 batches of the window's time cells; none for ``max``, nor for a
  percentile with too few values per batch);
  ``max`` too is the mean of the per-replication maxima, so every value lies
  inside its interval;

and each SLA gets a verdict from :func:`sim.analysis.stats.sla_verdict`: ``pass`` when
the whole interval is at or under the threshold, ``fail`` when the whole
interval is above it, ``inconclusive`` otherwise.

Warm-up: ``run.warmup_s`` cuts by arrival time; ``warmup: auto`` picks the
cut per replication with MSER-5 over the e2e series in arrival order (the
digest's 1,000 arrival-time cells as batches; the cut moved up to the next of
the 100 cell edges of the run) and reports it
(``warmup: {method, cut_s, cut_s_by_replication, dropped_fraction}``).

Stability (:func:`_stability`) says whether a steady state exists for the
percentiles to estimate; an ``analytic`` entry (:mod:`sim.analysis.crosscheck`) puts
Erlang C or MVA beside the simulated values where the scenario is exactly
analysable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TypedDict, cast

import numpy as np

from sim.analysis import crosscheck, stats
from sim.analysis.crosscheck import OfferedLoad
from sim.analysis.dollars import CostFigures, point_cost
from sim.analysis.estimate import gpu_stations, replica_capacity
from sim.analysis.stats import combine_verdicts
from sim.analysis.timeline import timeline
from sim.engine.digest import Digest, Histogram
from sim.engine.pipeline import Replication, retrieval_service_distribution
from sim.engine.records import Bins
from sim.engine.routing import RoutingInfo, routing_setup
from sim.spec.metrics import METRIC_NAMES, STATS
from sim.spec.schema import NULL_KV_BLOCKS, Scenario


def _digest(rep: Replication) -> Digest:
    if rep.digest is None:
        raise ValueError(f"replication {rep.replication} carries no digest to summarise")
    return rep.digest


def cut_of(rep: Replication, scn: Scenario) -> float:
    """Where the measurement window starts: ``run.warmup_s``, or with ``warmup: auto`` the
    MSER-5 cut over the digest's cells (see :func:`_mser_cut`)."""
    if scn.run.warmup_s != "auto":
        return float(scn.run.warmup_s)
    return _mser_cut(_digest(rep), rep.window_s[1])


def _mser_cut(d: Digest, end_s: float) -> float:
    """MSER-5 over the e2e series in arrival order, as the digest keeps it: the mean e2e
    latency of each of :data:`~sim.engine.digest.FINE_CELLS` equal cells of arrival time
    (empty ones skipped) are the batch means (:func:`sim.analysis.stats.mser`).  The cut
    found is moved up to the next edge of the digest's cells (at most 1 % of the run
    later), where every statistic of the window is exact."""
    if d.fine is None or not d.fine_end_s:
        raise ValueError("warmup_s: auto needs a digest with its fine e2e series")
    n, total = d.fine[:, 0], d.fine[:, 1]
    cells = np.flatnonzero(n > 0)
    if len(cells) < 2:
        return 0.0
    k = stats.mser(total[cells] / n[cells])
    cut = float(cells[k]) * d.fine_end_s / len(n)
    i = min(d.first_cell(cut), d.first_cell(end_s))
    return float(d.edges[i]) if i < d.cells else end_s


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


_BATCHES = 20
# Least values per batch for a batch percentile to be nearly unbiased: 5 / (1 - q).
_MIN_PER_BATCH = {"mean": 10, "p50": 10, "p90": 50, "p95": 100, "p99": 500}


def batches(d: Digest, cut_s: float, end_s: float, k: int = _BATCHES) -> list[slice]:
    """The cells of ``[cut, end)`` in ``k`` contiguous batches of equal whole cells; the
    leftover cells (fewer than ``k``) are dropped from the *start*, the part of the window
    nearest the warm-up.  Empty when there are fewer than ``k`` cells."""
    span = d.between(cut_s, end_s)
    m = span.stop - span.start
    b = m // k
    if b < 1:
        return []
    first = span.stop - b * k
    return [slice(first + j * b, first + (j + 1) * b) for j in range(k)]


def _one_run_interval(parts: list[Histogram], stat: str, value: float, n: int, conf: float) -> tuple[float, float]:
    """Batch-means interval for one replication, centred on the whole-run value.

    The half-width comes from the spread of 20 batch statistics (each batch a stretch of
    the window's cells, read from their merged histogram); the centre is the statistic of
    the whole run (a batch percentile is biased towards the centre, so the batch average
    is not).  Percentiles need batches holding at least ``5 / (1 - q)`` values, else there
    is no interval; the maximum of one run has none (the batch maxima estimate a shorter
    run's maximum).
    """
    if stat == "max" or n < _BATCHES * _MIN_PER_BATCH[stat] or len(parts) < 2:
        return float("nan"), float("nan")
    if min(p.n for p in parts) < 10:
        return float("nan"), float("nan")
    lo, hi = stats.t_interval([hist_stat(p, stat, 0) for p in parts], conf)
    half = (hi - lo) / 2
    return value - half, value + half


# Least values per replication for the replication's percentile to be nearly
# unbiased (about 10 values beyond the quantile): 10 / (1 - q).  Below that the
# mean of per-replication percentiles is biased low and a t interval around it
# narrows on the wrong value, so there is no interval (and no verdict).
_MIN_PER_REPLICATION = {"mean": 2, "p50": 20, "p90": 100, "p95": 200, "p99": 1000, "max": 1}
_Q = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
# Requests still unfinished after the drain are the slowest of all: e2e and TTFT
# percentiles count them as +inf (censored) instead of leaving them out.
_CENSORED = ("e2e_ms", "ttft_ms")


def hist_stat(h: Histogram, stat: str, unfinished: int) -> float:
    """``stat`` of the values counted in ``h`` plus ``unfinished`` values known only to be
    larger than all of them.  Percentiles are numpy's linear ones read from the histogram
    (within :data:`sim.engine.digest.RELATIVE_ERROR` of the exact value); the mean and the
    maximum are exact."""
    n = h.n
    if not n:
        return float("nan")
    if stat == "mean":
        return h.mean
    if stat == "max":
        return float("inf") if unfinished else h.hi
    # The q-quantile of all `total` values sits at rank q (total - 1); ranks past n - 1 are +inf.
    rank = _Q[stat] * (n + unfinished - 1)
    if rank > n - 1:
        return float("inf")
    return h.quantile(rank / (n - 1)) if n > 1 else h.lo


def _finished(d: Digest, a_s: float, b_s: float) -> int:
    return int(d.count("finished")[d.between(a_s, b_s)].sum())


def _unfinished(rep: Replication) -> int:
    """Requests that arrived in the window and had not finished when the run ended."""
    lo, hi = rep.window_s
    started = rep.counters.get("started_in_window", 0)
    n = started.total if isinstance(started, Bins) else started
    return max(0, int(n) - _finished(_digest(rep), lo, hi))


def _unfinished_before(rep: Replication, t: float) -> int:
    """Requests that arrived before ``t`` (in the warm-up) and had not finished when the run ended."""
    d = _digest(rep)
    span = d.between(0.0, t)
    return max(0, int(d.count("started")[span].sum()) - int(d.count("finished")[span].sum()))


# --------------------------------------------------------------------------- the summary's sections


class _VerdictExtras(TypedDict, total=False):
    hint: str  # what to do about a verdict that is not a pass
    window_s: float  # a windowed SLA's window width


class SlaEntry(_VerdictExtras):
    """One SLA's verdict as the summary document holds it (read back as :class:`Verdict`)."""

    metric: str
    stat: str
    threshold: float
    value: float | None
    ci: list[float | None]
    verdict: str


class WarmupEntry(TypedDict):
    """What the warm-up cut: ``method`` (``fixed`` or ``mser5``), the cut, the share dropped."""

    method: str
    cut_s: float
    cut_s_by_replication: list[float]
    dropped_fraction: float


class Trend(TypedDict, total=False):
    """Whether e2e latency rises through the window (:func:`_trend`); empty when the load varies."""

    quarter_means_ms: list[float] | None
    growth: float | None
    growing: bool


class StabilityEntry(TypedDict):
    """Is there a steady state whose percentiles the run estimated (:func:`_stability`)?"""

    stable: bool
    kind: str | None
    incomplete_fraction: float
    offered_load: dict[str, float]
    trend: Trend
    note: str


class _PrecisionNote(TypedDict, total=False):
    note: str  # why the target was not reached, or had nothing to aim at


class PrecisionEntry(_PrecisionNote):
    """How close the SLA statistics came to ``run.target_precision`` (half-width / value)."""

    target: float
    worst: float | None
    reached: bool
    replications: int
    max_replications: int


class GpuEntry(TypedDict, total=False):
    """The LLM stage per step (:func:`_gpu_entry`; empty without one): steps, the memory-bound
    share, the mean batch, KV occupancy and blocks, preemptions, TPOT percentiles, the load
    against capacity, and for an autoscaled fleet its figures (:func:`sim.analysis.autoscale.fleet`)."""

    steps: float  # in the window, a time bin its edge cuts prorated (sim.engine.records.Bins)
    memory_bound_share: float | None
    mean_batch: float | None
    kv_occupancy: float | None
    kv_blocks: int | None
    preemptions: int
    preempted_share: float | None
    tpot_ms: dict[str, float | None] | None
    load: float | None
    autoscale: dict[str, Any]


class RetrievalEntry(TypedDict):
    """The index searched and where its times came from, with the recall that buys them."""

    index: str
    top_k: int
    docs: int
    ef_search: int | None
    nprobe: int | None
    recall_at_k: float | None
    mean_service_ms: float | None
    source: str | None
    extrapolated: bool
    interpolated: bool
    description: str | None


class RoutingOutcomes(TypedDict, total=False):
    """What the routing stage did: the shares of requests routed, kept on their raw key and
    routed wrong, and the share that carried a typed variant never seen before."""

    outcomes: dict[str, float]
    novel_keys: float


class RoutingEntry(RoutingInfo, RoutingOutcomes):
    """The routing stage's description (:func:`sim.engine.routing.routing_setup`) and what it did."""


def summarize_point(scn: Scenario, reps: list[Replication], params: dict[str, Any] | None = None) -> PointSummary:
    """One point's summary over its replications: the metrics, throughput, utilisation,
    the GPU's figures, stability, cross-checks and the SLA verdicts; every figure from the
    replications' digests (:mod:`sim.engine.digest`), never from per-request records."""
    conf = scn.run.confidence
    cuts = [cut_of(r, scn) for r in reps]
    digests = [_digest(r) for r in reps]
    spans = [d.between(c, r.window_s[1]) for d, c, r in zip(digests, cuts, reps)]
    metrics = _metrics(reps, cuts, digests, spans, conf)
    lengths = [r.window_s[1] - c for r, c in zip(reps, cuts)]
    throughput, x_ci, tokens_per_s = _delivered(digests, spans, lengths, conf)
    # Stage counters from the same cut as the records (fixed, or MSER-5's per replication).
    c0 = [
        {k: (v.total_from(cut) if isinstance(v, Bins) else v) for k, v in r.counters.items()}
        for r, cut in zip(reps, cuts)
    ]
    util = _utilization(scn, c0, lengths)
    completed = int(sum(d.count("finished")[s].sum() for d, s in zip(digests, spans)))
    gpu = GpuEntry()
    if scn.llm.enabled:
        gpu = _gpu_entry(scn, c0, lengths, digests, spans, completed, metrics, throughput)
    started, incomplete = _started_incomplete(reps, digests, c0)
    hit_rate = _cache_hit_rate(digests, spans) if scn.cache.enabled else None
    varying = scn.workload.time_varying
    # A load that changes over time has no steady state to test for (sim.analysis.timeline says
    # what is done instead): no offered-load formula at one rate, no trend test.
    offered = {} if varying else crosscheck.offered_load(scn, hit_rate)
    trend: Trend = {} if varying else _trend(digests, cuts, reps, conf)
    stability = _stability(scn, started, incomplete, util, offered, trend)
    model = None if varying else crosscheck.exact_model(scn)
    if model is not None:
        p_wait = None if model["model"] == "MVA" else _p_wait(reps, cuts, digests, spans, conf)
        model["compare"] = crosscheck.compare(model, metrics, (throughput, x_ci), p_wait)
    sla = sla_verdicts(scn, metrics, stability)
    tl = timeline(scn, reps) if scn.timeline_on else None
    if tl is not None:
        sla += [_windowed_verdict(v) for v in tl["sla"]]
    return PointSummary(
        params=dict(params or {}),
        metrics={k: MetricSummary.from_dict(m) for k, m in metrics.items()},
        throughput_per_s=throughput,
        throughput_ci=x_ci,
        cache_hit_rate=hit_rate,
        utilization=util,
        gpu=gpu,
        completed=completed,
        incomplete=incomplete,
        replications=len(reps),
        warmup_s=cuts[0] if len(set(cuts)) == 1 else cuts,
        warmup=_warmup_entry(scn, reps, completed, cuts),
        stability=stability,
        cost=point_cost(scn, throughput, tokens_per_s),
        sla=[Verdict.from_dict(v) for v in sla],
        analytic=model,
        retrieval=_retrieval_entry(scn) if scn.retrieval.enabled else None,
        precision=_precision(scn, sla, len(reps)) if scn.run.target_precision is not None else None,
        routing=_routing_entry(scn, digests, spans) if scn.routing.enabled or scn.routing.typed_variants else None,
        timeline=tl,
    )


def _metrics(
    reps: list[Replication], cuts: list[float], digests: list[Digest], spans: list[slice], conf: float
) -> dict[str, dict[str, Any]]:
    """Each metric some replication saw inside its window: its statistics with intervals (from the
    replications, or with one replication from batches of its window)."""
    unfinished = [_unfinished(r) for r in reps]
    metrics: dict[str, dict[str, Any]] = {}
    for m in METRIC_NAMES:
        per_rep = [d.hist[m].select(s) for d, s in zip(digests, spans)]
        if any(h.n for h in per_rep):
            one_run = (
                [digests[0].hist[m].select(b) for b in batches(digests[0], cuts[0], reps[0].window_s[1])]
                if len(reps) == 1
                else []
            )
            cens = unfinished if m in _CENSORED else [0] * len(reps)
            metrics[m] = _metric_entry(per_rep, cens, conf, one_run)
    return metrics


def _started_incomplete(reps: list[Replication], digests: list[Digest], c0: list[dict[str, float]]) -> tuple[int, int]:
    """Requests started in the window and those never answered, over the replications."""
    started = sum(int(c["started_in_window"]) for c in c0)
    finished_in_window = sum(_finished(d, *r.window_s) for d, r in zip(digests, reps))
    incomplete = max(0, started - finished_in_window)
    # A request that arrived in the warm-up and never finished is cut from the statistics
    # with its warm-up, but it is still a request the system never answered: count it.
    stuck_in_warmup = sum(_unfinished_before(r, r.window_s[0]) for r in reps)
    return started + stuck_in_warmup, incomplete + stuck_in_warmup


def _p_wait(
    reps: list[Replication], cuts: list[float], digests: list[Digest], spans: list[slice], conf: float
) -> tuple[float | None, list[float | None]]:
    """The fraction of retrieval misses that waited, with its interval (one replication: from batches)."""
    if len(reps) == 1:
        d = digests[0]
        cells = batches(d, cuts[0], reps[0].window_s[1])
        parts = [(d.count("waited")[b].sum(), d.count("misses")[b].sum()) for b in cells]
    else:
        parts = [(d.count("waited")[s].sum(), d.count("misses")[s].sum()) for d, s in zip(digests, spans)]
    return crosscheck.waited_fraction(parts, len(reps) == 1, conf)


def _metric_entry(per_rep: list[Histogram], cens: list[int], conf: float, one_run: list[Histogram]) -> dict[str, Any]:
    """One metric's statistics, their intervals and count; ``per_rep``: the window's histogram
    per replication; ``cens``: unfinished requests per replication counted as +inf (0 for
    metrics not censored); ``one_run``: with one replication, its batches' histograms."""
    values: dict[str, float | None] = {}
    ci: dict[str, list[float | None]] = {}
    pooled_stats = False
    pooled = Histogram.sum(per_rep)
    for st in STATS:
        per = np.array([hist_stat(h, st, u) for h, u in zip(per_rep, cens)])
        per = per[~np.isnan(per)]
        val = float(per.mean()) if len(per) else float("nan")
        lo = hi = float("nan")
        enough = min((h.n for h in per_rep), default=0) >= _MIN_PER_REPLICATION[st]
        if len(per) >= 2 and np.all(np.isfinite(per)):
            if enough:
                lo, hi = stats.t_interval(per, conf)
            else:  # too short for per-replication percentiles: pool them, no interval
                val = hist_stat(pooled, st, sum(cens))
                pooled_stats = pooled_stats or st != "max"
        elif len(per) == 1 and math.isfinite(val):
            lo, hi = _one_run_interval(one_run, st, val, pooled.n, conf)
        values[st] = _finite(val)
        ci[st] = [_finite(lo), _finite(hi)]
    if pooled_stats:
        # A pooled percentile sees every replication's tail, so the maximum must too: the
        # mean of per-replication maxima can sit below a pooled p99.
        values["max"] = _finite(hist_stat(pooled, "max", sum(cens)))
        ci["max"] = [None, None]
    return {**values, "ci": ci, "n": int(pooled.n)}


def _delivered(
    digests: list[Digest], spans: list[slice], lengths: list[float], conf: float
) -> tuple[float, list[float | None], float]:
    """(answers per second, its interval, output tokens per second) delivered in the window.

    Throughput counts answers *delivered* inside the window (by end time), not requests
    that arrived in it and finished, which overstates a filling system."""
    delivered = [float(d.count("delivered")[s].sum()) for d, s in zip(digests, spans)]
    delivered_tokens = [float(d.count("delivered_tokens")[s].sum()) for d, s in zip(digests, spans)]
    per_rep_x = np.array([n / L for n, L in zip(delivered, lengths) if L > 0])
    tokens_per_s = float(np.mean([t / L for t, L in zip(delivered_tokens, lengths) if L > 0] or [0.0]))
    throughput = float(per_rep_x.mean()) if len(per_rep_x) else 0.0
    x_ci: list[float | None] = (
        [_finite(b) for b in stats.t_interval(per_rep_x, conf)] if len(per_rep_x) >= 2 else [None, None]
    )
    return throughput, x_ci, tokens_per_s


def _cache_hit_rate(digests: list[Digest], spans: list[slice]) -> float | None:
    """Hits over lookups made inside the window, finished or not: counting finished requests
    alone reads 100 % on an overloaded point where only hits get through."""
    hits = sum(float(d.count("hits")[s].sum()) for d, s in zip(digests, spans))
    total = sum(float(d.count("lookups")[s].sum()) for d, s in zip(digests, spans))
    return hits / total if total else None


def _utilization(scn: Scenario, c0: list[dict[str, float]], span: list[float]) -> dict[str, float]:
    """Busy share of each enabled stage's servers over the window, mean over replications."""
    util: dict[str, float] = {}
    if scn.routing.enabled:
        util["routing"] = float(np.mean([c["routing_busy_s"] / (c["routing_workers"] * s) for c, s in zip(c0, span)]))
    if scn.retrieval.enabled:
        util["retrieval"] = float(
            np.mean([c["retrieval_busy_s"] / (c["retrieval_workers"] * s) for c, s in zip(c0, span)])
        )
    if scn.llm.enabled:
        util["gpu"] = float(np.mean([c["gpu_busy_s"] / (c["gpu_replicas"] * s) for c, s in zip(c0, span)]))
    return util


def _gpu_entry(
    scn: Scenario,
    c0: list[dict[str, float]],
    span: list[float],
    digests: list[Digest],
    spans: list[slice],
    n_req: int,
    metrics: Mapping[str, Mapping[str, Any]],
    throughput: float,
) -> GpuEntry:
    """Per step: memory- or compute-bound, batch size; KV occupancy is blocks in use over
    the blocks requests can hold (the pool less the engine's null block, as vLLM's
    ``BlockPool.get_usage`` divides), time-weighted over the window (idle time included)."""
    steps = sum(c["gpu_steps"] for c in c0)
    block_time = sum((c["gpu_kv_blocks"] - NULL_KV_BLOCKS) * c["gpu_replicas"] * s for c, s in zip(c0, span))
    preempted = sum(int(d.count("preempted")[s].sum()) for d, s in zip(digests, spans))
    tpot = metrics.get("tpot_ms", {})
    return {
        "steps": steps,
        "memory_bound_share": _finite(sum(c["gpu_steps_memory_bound"] for c in c0) / steps) if steps else None,
        "mean_batch": _finite(sum(c["gpu_batch_step_sum"] for c in c0) / steps) if steps else None,
        "kv_occupancy": _finite(sum(c["gpu_kv_block_seconds"] for c in c0) / block_time) if block_time else None,
        "kv_blocks": int(c0[0]["gpu_kv_blocks"]) if c0 else None,
        "preemptions": round(sum(c["gpu_preemptions"] for c in c0)),
        "preempted_share": _finite(preempted / n_req) if n_req else None,
        "tpot_ms": {st: tpot.get(st) for st in ("p50", "p90", "p95", "p99")} if tpot else None,
        "load": _gpu_load(scn, throughput),
    }


def _gpu_load(scn: Scenario, throughput_per_s: float) -> float | None:
    """Answers delivered per second over what the replicas can deliver at a full batch
    (``capsim estimate``'s replica capacity): the GPU's headroom.  The ``gpu`` utilisation
    beside it is the share of time a replica has any request in flight, which continuous
    batching keeps near 100 % long before the GPU runs out of capacity.  A disaggregated
    deployment: the busier pool's (each pool's demand per request from the estimate)."""
    if scn.llm.enabled and scn.llm.disaggregated is not None:
        pools, _ = gpu_stations(scn)
        if not pools:
            return None
        return _finite(max(throughput_per_s * d / m for d, m in pools.values()))
    cap = replica_capacity(scn)
    if not cap or not cap.get("requests_per_s"):
        return None
    return _finite(throughput_per_s / (scn.llm.replicas * cap["requests_per_s"]))


def _retrieval_entry(scn: Scenario) -> RetrievalEntry:
    """Where the search times came from and, when measured, the recall that buys them:
    a fast answer from the wrong documents is worse than a slow right one."""

    r = scn.retrieval
    _, info = retrieval_service_distribution(scn)
    return {
        "index": r.index,
        "top_k": r.top_k,
        "docs": r.docs,
        "ef_search": r.ef_search,
        "nprobe": r.nprobe,
        "recall_at_k": info.get("recall"),
        "mean_service_ms": info.get("mean_ms"),
        "source": info.get("source"),
        "extrapolated": info.get("extrapolated", False),
        "interpolated": info.get("interpolated", False),
        "description": info.get("description"),
    }


def _windowed_verdict(v: Mapping[str, Any]) -> SlaEntry:
    """A windowed SLA (``timeline.sla``) as an entry of the point's ``sla`` list."""
    hint = ""
    if v["windows_failed"]:
        hint = f"over the threshold in the windows starting at {', '.join(f'{t:g}' for t in v['windows_failed'])} s"
    elif v["verdict"] == "inconclusive":
        where = ", ".join(f"{t:g}" for t in v["windows_inconclusive"]) or "all"
        hint = f"undecided in the windows starting at {where} s: add replications or widen timeline.sla_window_s"
    out: SlaEntry = {
        "metric": v["metric"],
        "stat": v["stat"],
        "threshold": v["threshold"],
        "value": v["value"],
        "ci": [None, None],
        "verdict": v["verdict"],
        "window_s": v["window_s"],
    }
    if hint:
        out["hint"] = hint
    return out


def _routing_entry(scn: Scenario, digests: list[Digest], spans: list[slice]) -> RoutingEntry:
    """The routing stage's configuration and calibrated figures, and what it did: the share
    of requests routed to their question, kept on their raw key, or routed to another one,
    and the share that carried a typed variant never seen before (``novel_keys``)."""
    _, _, _, info = routing_setup(scn)

    def total(name: str) -> float:
        return sum(float(d.count(name)[s].sum()) for d, s in zip(digests, spans))

    n = total("finished")
    did: RoutingOutcomes = {}
    if n and scn.routing.enabled:
        did["outcomes"] = {
            "routed": total("routed") / n,
            "kept_raw": total("kept_raw") / n,
            "wrong": total("wrong") / n,
        }
    if n:
        did["novel_keys"] = total("novel_keys") / n
    return {**info, **did}


def _warmup_entry(scn: Scenario, reps: list[Replication], kept: int, cuts: list[float]) -> WarmupEntry:
    """What was cut: ``method`` (``fixed`` or ``mser5``), the cut per replication, the share dropped."""
    before = sum(_finished(_digest(r), 0.0, r.window_s[1]) for r in reps)
    return {
        "method": "mser5" if scn.run.warmup_s == "auto" else "fixed",
        "cut_s": float(np.mean(cuts)) if cuts else 0.0,
        "cut_s_by_replication": [float(c) for c in cuts],
        "dropped_fraction": (1 - kept / before) if before else 0.0,
    }


def _precision(scn: Scenario, sla: list[SlaEntry], n_reps: int) -> PrecisionEntry:
    """How close the SLA statistics came to ``run.target_precision`` (half-width / value)."""
    target = scn.run.target_precision
    worst = 0.0
    for s in sla:
        lo, hi = s["ci"]
        v = s["value"]
        r = math.inf if (v is None or lo is None or hi is None) else stats.ci_half_width_ratio(lo, hi, v)
        worst = max(worst, r)
    assert target is not None  # only called when run.target_precision is set
    reached = worst <= target
    out: PrecisionEntry = {
        "target": target,
        "worst": _finite(worst),
        "reached": reached,
        "replications": n_reps,
        "max_replications": scn.run.max_replications,
    }
    if not sla:
        out["note"] = "no SLA statistic to target: run.target_precision added no replications"
    elif not reached and n_reps >= scn.run.max_replications:
        out["note"] = (
            f"stopped at run.max_replications = {scn.run.max_replications} before every SLA "
            f"statistic's half-width was within {target:.1%} of its value"
        )
    return out


def _trend(digests: list[Digest], cuts: list[float], reps: list[Replication], conf: float) -> Trend:
    """Does e2e latency keep rising through the measurement window?

    Each replication's window (after the warm-up cut) is split into four equal
    spans of arrival time (whole cells of the digest: each cell goes to the quarter
    its start falls in, exact for a fixed warm-up's 100 cells); ``growth`` is the mean
    over replications of ``(last-quarter mean - first-quarter mean) / overall mean``.
    The series is called growing when growth exceeds 25 %, the four quarter means
    (averaged over replications) rise monotonically, and, with two or more
    replications, the t interval of the per-replication growth lies above 0.
    A steady system passes all three only by a rare accident; a queue that
    grows without bound (or has not filled yet) fails all three.
    """
    quarters = []
    for d, cut, rep in zip(digests, cuts, reps):
        h = d.hist["e2e_ms"]
        span = d.between(cut, rep.window_s[1])
        n, y = h.n[span], h.total[span]
        if n.sum() < 40:
            continue
        edges = np.linspace(cut, rep.window_s[1], 5)
        idx = np.clip(np.searchsorted(edges, d.edges[span] + 1e-9 * max(1.0, rep.window_s[1]), side="right") - 1, 0, 3)
        counts = np.bincount(idx, weights=n, minlength=4)
        if (counts < 10).any():
            continue
        quarters.append(np.bincount(idx, weights=y, minlength=4) / counts)
    if not quarters:
        return {"quarter_means_ms": None, "growth": None, "growing": False}
    q = np.array(quarters)
    level = float(q.mean())
    g = (q[:, 3] - q[:, 0]) / level if level > 0 else np.zeros(len(q))
    avg = q.mean(axis=0)
    growth = float(g.mean())
    significant = len(g) < 2 or stats.t_interval(g, conf)[0] > 0
    growing = growth > 0.25 and bool(np.all(np.diff(avg) > 0)) and significant
    return {"quarter_means_ms": [float(v) for v in avg], "growth": growth, "growing": bool(growing)}


def _stability(
    scn: Scenario,
    started: int,
    incomplete: int,
    util: dict[str, float],
    offered: dict[str, OfferedLoad] | None = None,
    trend: Trend | None = None,
) -> StabilityEntry:
    """Is there a steady state whose percentiles the run estimated?

    ``kind`` is ``"overloaded"`` when arrivals outpace a stage (open workload
    with offered load ``λ·E[S]/c ≥ 1``, see :func:`sim.analysis.crosscheck.offered_load`;
    or over 1 % of the window's requests unfinished after the drain; or a
    stage busy all the time while requests are left unfinished), and
    ``"not_steady"`` when e2e latency still rises through the window
    (:func:`_trend`).  Either way the percentiles depend on the run length.
    """
    offered = offered or {}
    frac = incomplete / started if started else 0.0
    overload = []
    for stage, o in offered.items():
        if o["offered_load"] >= 1:
            overload.append(
                f"{stage} offered load {o['offered_load']:.2f} ≥ 1 "
                f"({o['arrival_rate_per_s']:.3g}/s x {o['service_mean_ms']:.3g} ms "
                f"/ {o['servers']} servers)"
            )
    if frac > 0.01:
        overload.append(
            f"{frac:.0%} of the requests that arrived in the window had not finished "
            f"{scn.run.drain_seconds:g} s after it"
        )
    busy = [k for k, u in util.items() if u > 0.985]
    if busy and frac > 0.001:
        overload.append(f"{', '.join(busy)} busy {max(util[k] for k in busy):.1%} of the time")
    growing = bool(trend and trend.get("growing"))
    notes = []
    kind = None
    if overload:
        kind = "overloaded"
        notes.append(
            "; ".join(overload) + ": queues grow without bound, so its percentiles depend on "
            "the run length (they are not steady-state values)"
        )
    if growing and kind is None:
        kind = "not_steady"
        qm = trend["quarter_means_ms"] if trend else None
        assert qm is not None  # growing implies a trend of four quarter means
        notes.append(
            f"e2e latency rises through the window (mean {qm[0]:,.0f} ms in the first quarter, "
            f"{qm[-1]:,.0f} ms in the last): queues are still growing, so percentiles depend on "
            f"the run length; lengthen run.duration_s or the warm-up"
        )
    if kind is None:
        near = [f"{k} offered load {o['offered_load']:.2f}" for k, o in offered.items() if o["offered_load"] >= 0.95]
        if near:
            notes.append(", ".join(near) + ": near saturation, percentiles converge slowly (check the intervals)")
    return {
        "stable": kind is None,
        "kind": kind,
        "incomplete_fraction": frac,
        "offered_load": {k: o["offered_load"] for k, o in offered.items()},
        "trend": trend or {},
        "note": "; ".join(notes),
    }


def sla_verdicts(
    scn: Scenario, metrics: Mapping[str, Mapping[str, Any]], stability: StabilityEntry | None = None
) -> list[SlaEntry]:
    out: list[SlaEntry] = []
    for metric, thresholds in scn.sla.items():
        for st, thr in thresholds.items():
            m = metrics.get(metric)
            if m is None:
                out.append(
                    {
                        "metric": metric,
                        "stat": st,
                        "threshold": thr,
                        "value": None,
                        "ci": [None, None],
                        "verdict": "inconclusive",
                        "hint": f"no request produced {metric} (is its stage enabled?)",
                    }
                )
                continue
            val = m[st]
            lo, hi = m["ci"][st]
            verdict = stats.sla_verdict(
                float("nan") if val is None else val,
                float("nan") if lo is None else lo,
                float("nan") if hi is None else hi,
                thr,
            )
            hint = ""
            if stability is not None and not stability["stable"]:
                if stability.get("kind") == "not_steady" and verdict == "pass":
                    verdict = "inconclusive"
                elif stability.get("kind") != "not_steady":
                    verdict = "fail"
                hint = (
                    "latency still rises through the run: lengthen run.duration_s or the warm-up"
                    if stability.get("kind") == "not_steady"
                    else "the system is unstable at this load"
                )
            elif lo is None or hi is None:
                need = _MIN_PER_REPLICATION.get(st, 2)
                hint = (
                    f"no confidence interval for {st}: it needs at least 2 replications of "
                    f"{need:,}+ requests each (or one long run); add replications or lengthen "
                    f"run.duration_s"
                )
            elif verdict == "inconclusive":
                hint = (
                    "the interval straddles the threshold: add replications (--replications) or lengthen run.duration_s"
                )
            entry: SlaEntry = {
                "metric": metric,
                "stat": st,
                "threshold": thr,
                "value": val,
                "ci": [lo, hi],
                "verdict": verdict,
            }
            if hint:
                entry["hint"] = hint
            out.append(entry)
    return out


# --------------------------------------------------------------------------- the typed summary


@dataclass
class MetricSummary:
    """One metric's statistics (ms): value per statistic, its interval, and how many requests."""

    values: dict[str, float | None]
    ci: dict[str, list[float | None]]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.values, "ci": self.ci, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricSummary:
        return cls({st: d[st] for st in STATS}, {st: list(d["ci"][st]) for st in STATS}, int(d["n"]))


@dataclass
class Verdict:
    """One SLA's verdict: ``pass`` / ``fail`` / ``inconclusive`` for metric, statistic and threshold."""

    metric: str
    stat: str
    threshold: float
    value: float | None
    ci: list[float | None]
    verdict: str
    hint: str = ""
    window_s: float | None = None  # set for a windowed SLA: it must hold in every window of this width

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "metric": self.metric,
            "stat": self.stat,
            "threshold": self.threshold,
            "value": self.value,
            "ci": self.ci,
            "verdict": self.verdict,
        }
        if self.hint:
            d["hint"] = self.hint
        if self.window_s is not None:
            d["window_s"] = self.window_s
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Verdict:
        return cls(
            d["metric"],
            d["stat"],
            d["threshold"],
            d["value"],
            list(d["ci"]),
            d["verdict"],
            d.get("hint", ""),
            d.get("window_s"),
        )


@dataclass
class PointSummary:
    """Everything a point's replications say, typed.  :meth:`to_dict` is the JSON document of
    one point (``capsim run --json`` prints a list of them); :meth:`from_dict` reads it back
    and raises ``KeyError``/``TypeError``/``ValueError`` on anything else.  ``summary["key"]``
    reads the document too, for code written against the dictionary."""

    params: dict[str, Any]
    metrics: dict[str, MetricSummary]
    throughput_per_s: float
    throughput_ci: list[float | None]
    cache_hit_rate: float | None
    utilization: dict[str, float]
    gpu: GpuEntry
    completed: int
    incomplete: int
    replications: int
    warmup_s: float | list[float]
    warmup: WarmupEntry
    stability: StabilityEntry
    cost: CostFigures | None
    sla: list[Verdict]
    analytic: dict[str, Any] | None = None
    retrieval: RetrievalEntry | None = None
    precision: PrecisionEntry | None = None
    routing: RoutingEntry | None = None
    timeline: dict[str, Any] | None = None

    @property
    def stable(self) -> bool:
        return bool(self.stability["stable"])

    @property
    def verdict(self) -> str:
        """``pass`` / ``fail`` / ``inconclusive`` over every SLA (``none`` without SLAs)."""
        return combine_verdicts([s.verdict for s in self.sla])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "params": self.params,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "throughput_per_s": self.throughput_per_s,
            "throughput_ci": self.throughput_ci,
            "cache_hit_rate": self.cache_hit_rate,
            "utilization": self.utilization,
            "gpu": self.gpu,
            "completed": self.completed,
            "incomplete": self.incomplete,
            "replications": self.replications,
            "warmup_s": self.warmup_s,
            "warmup": self.warmup,
            "stability": self.stability,
        }
        if self.analytic is not None:
            d["analytic"] = self.analytic
        if self.retrieval is not None:
            d["retrieval"] = self.retrieval
        if self.routing is not None:
            d["routing"] = self.routing
        if self.timeline is not None:
            d["timeline"] = self.timeline
        d["cost"] = self.cost
        d["sla"] = [v.to_dict() for v in self.sla]
        if self.precision is not None:
            d["precision"] = self.precision
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PointSummary:
        if not isinstance(d, dict):
            raise TypeError(f"a point summary is a mapping, got {type(d).__name__}")
        return cls(
            params=dict(d["params"]),
            metrics={k: MetricSummary.from_dict(m) for k, m in d["metrics"].items()},
            throughput_per_s=d["throughput_per_s"],
            throughput_ci=list(d["throughput_ci"]),
            cache_hit_rate=d["cache_hit_rate"],
            utilization=dict(d["utilization"]),
            gpu=cast(GpuEntry, dict(d["gpu"])),
            completed=int(d["completed"]),
            incomplete=int(d["incomplete"]),
            replications=int(d["replications"]),
            warmup_s=d["warmup_s"],
            warmup=cast(WarmupEntry, dict(d["warmup"])),  # the JSON boundary
            stability=cast(StabilityEntry, dict(d["stability"])),
            cost=d["cost"],
            sla=[Verdict.from_dict(v) for v in d["sla"]],
            analytic=d.get("analytic"),
            retrieval=d.get("retrieval"),
            precision=d.get("precision"),
            routing=d.get("routing"),
            timeline=d.get("timeline"),
        )

    def with_params(self, params: dict[str, Any]) -> PointSummary:
        return replace(self, params=dict(params))

    # Read access by key, as the JSON document (notebooks and tests written against dicts).
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()
