"""From replications to the numbers a report prints.

For every metric (a column of the records, in ms) and every statistic
(mean, p50, p90, p95, p99, max) a point summary holds:

* ``value``: the mean over replications of the per-replication statistic
  (with one replication, the statistic itself);
* ``ci``: a Student t interval over the per-replication statistics, or, with
  one replication, a batch-means interval over that run;

and each SLA gets a verdict from :func:`sim.stats.sla_verdict`: ``pass`` when
the whole interval is at or under the threshold, ``fail`` when the whole
interval is above it, ``inconclusive`` otherwise.

Warm-up: ``run.warmup_s`` cuts by arrival time; ``warmup: auto`` picks the
cut per replication with MSER-5 on the e2e series and reports it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import stats
from .config import STATS, Scenario
from .pipeline import Replication

METRICS = (
    "e2e_ms", "ttft_ms", "tpot_ms", "cache_ms", "retrieval_ms", "retrieval_wait_ms",
    "retrieval_service_ms", "llm_wait_ms", "prefill_ms", "decode_ms",
)


def metric_values(rec: dict[str, np.ndarray], metric: str) -> np.ndarray:
    """The values of one metric in one replication's (windowed) records."""
    if metric in ("retrieval_ms", "retrieval_wait_ms", "retrieval_service_ms"):
        miss = ~rec["cache_hit"]
        if metric == "retrieval_ms":
            return (rec["retrieval_wait_ms"] + rec["retrieval_service_ms"])[miss]
        return rec[metric][miss]
    if metric == "tpot_ms":
        many = rec["output_tokens"] > 1
        return rec["decode_ms"][many] / (rec["output_tokens"][many] - 1)
    return rec[metric]


def window(rep: Replication, scn: Scenario) -> tuple[dict[str, np.ndarray], float]:
    """Records that arrived inside the measurement window, and the cut used."""
    rec = rep.records
    if scn.run.warmup_s == "auto":
        # MSER-5 on the e2e series in arrival order; cut by the arrival time found.
        in_run = rec["arrival_s"] < rep.window_s[1]
        cut_i = stats.mser5(rec["e2e_ms"][in_run]) if in_run.any() else 0
        cut_s = float(rec["arrival_s"][in_run][cut_i]) if in_run.sum() > cut_i else 0.0
    else:
        cut_s = float(scn.run.warmup_s)
    keep = (rec["arrival_s"] >= cut_s) & (rec["arrival_s"] < rep.window_s[1])
    return {k: v[keep] for k, v in rec.items()}, cut_s


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def summarize_point(scn: Scenario, reps: list[Replication], params: dict[str, Any] | None = None) -> dict:
    conf = scn.run.confidence
    windowed = [window(r, scn) for r in reps]
    recs = [w[0] for w in windowed]
    cuts = [w[1] for w in windowed]
    metrics: dict[str, dict] = {}
    for m in METRICS:
        per_rep = [metric_values(r, m) for r in recs]
        if not any(len(v) for v in per_rep):
            continue
        values: dict[str, float | None] = {}
        ci: dict[str, list[float | None]] = {}
        for st in STATS:
            per = np.array([stats.stat_value(v, st) if len(v) else np.nan for v in per_rep])
            per = per[np.isfinite(per)]
            if st == "max":
                val = float(per.max()) if len(per) else float("nan")
            else:
                val = float(per.mean()) if len(per) else float("nan")
            if len(per) >= 2:
                lo, hi = stats.t_interval(per, conf)
            elif len(per) == 1:
                lo, hi = stats.batch_means_interval(next(v for v in per_rep if len(v)), st, conf)
            else:
                lo = hi = float("nan")
            values[st] = _finite(val)
            ci[st] = [_finite(lo), _finite(hi)]
        metrics[m] = {**values, "ci": ci, "n": int(sum(len(v) for v in per_rep))}

    lengths = [r.window_s[1] - c for r, c in zip(reps, cuts)]
    completed = [len(r["e2e_ms"]) for r in recs]
    throughput = float(np.mean([n / L for n, L in zip(completed, lengths) if L > 0])) if reps else 0.0
    hits = sum(int(r["cache_hit"].sum()) for r in recs)
    total = sum(len(r["cache_hit"]) for r in recs)
    util: dict[str, float] = {}
    c0 = [r.counters for r in reps]
    span = [r.window_s[1] - r.window_s[0] for r in reps]
    if scn.retrieval.enabled:
        util["retrieval"] = float(np.mean([c["retrieval_busy_s"] / (c["retrieval_workers"] * s)
                                           for c, s in zip(c0, span)]))
    if scn.llm.enabled:
        util["gpu"] = float(np.mean([c["gpu_busy_s"] / (c["gpu_replicas"] * s) for c, s in zip(c0, span)]))
    gpu: dict[str, float | None] = {}
    if scn.llm.enabled:
        steps = sum(c["gpu_steps"] for c in c0)
        busy = sum(c["gpu_busy_s"] for c in c0)
        gpu = {
            "steps": steps,
            "memory_bound_share": _finite(sum(c["gpu_steps_memory_bound"] for c in c0) / steps) if steps else None,
            "mean_batch": _finite(sum(c["gpu_batch_step_sum"] for c in c0) / steps) if steps else None,
            "kv_occupancy": _finite(sum(c["gpu_kv_token_seconds"] for c in c0) / busy / c0[0]["gpu_kv_capacity_tokens"])
            if busy else None,
        }
    started = sum(int(c["started_in_window"]) for c in c0)
    finished_in_window = sum(int(((r.records["arrival_s"] >= r.window_s[0]) &
                                  (r.records["arrival_s"] < r.window_s[1])).sum()) for r in reps)
    incomplete = max(0, started - finished_in_window)
    stability = _stability(scn, started, incomplete, util)
    point: dict[str, Any] = {
        "params": dict(params or {}),
        "metrics": metrics,
        "throughput_per_s": throughput,
        "cache_hit_rate": (hits / total) if (scn.cache.enabled and total) else None,
        "utilization": util,
        "gpu": gpu,
        "completed": int(sum(completed)),
        "incomplete": incomplete,
        "replications": len(reps),
        "warmup_s": cuts[0] if len(set(cuts)) == 1 else cuts,
        "stability": stability,
    }
    point["sla"] = sla_verdicts(scn, metrics, stability)
    return point


def _stability(scn: Scenario, started: int, incomplete: int, util: dict[str, float]) -> dict:
    frac = incomplete / started if started else 0.0
    reasons = []
    if frac > 0.01:
        reasons.append(f"{frac:.0%} of the requests that arrived in the window had not finished "
                       f"{scn.run.drain_s if scn.run.drain_s is not None else 'the drain time'} s after it")
    busy = [k for k, u in util.items() if u > 0.985]
    if busy and frac > 0.001:
        reasons.append(f"{', '.join(busy)} busy {max(util[k] for k in busy):.1%} of the time")
    return {"stable": not reasons, "incomplete_fraction": frac,
            "note": ("; ".join(reasons) + ": queues grow without bound, so its percentiles depend on "
                     "the run length") if reasons else ""}


def sla_verdicts(scn: Scenario, metrics: dict, stability: dict | None = None) -> list[dict]:
    out = []
    for metric, thresholds in scn.sla.items():
        for st, thr in thresholds.items():
            m = metrics.get(metric)
            if m is None:
                out.append({"metric": metric, "stat": st, "threshold": thr, "value": None,
                            "ci": [None, None], "verdict": "inconclusive",
                            "hint": f"no request produced {metric} (is its stage enabled?)"})
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
            if stability is not None and not stability["stable"] and verdict != "fail":
                verdict, hint = "fail", "the system is unstable at this load"
            elif verdict == "inconclusive":
                hint = ("the interval straddles the threshold: add replications (--replications) "
                        "or lengthen run.duration_s")
            elif lo is None:
                hint = "no confidence interval (too few requests); verdict from the point value"
            out.append({"metric": metric, "stat": st, "threshold": thr, "value": val,
                        "ci": [lo, hi], "verdict": verdict, **({"hint": hint} if hint else {})})
    return out
