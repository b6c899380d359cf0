"""What a live run measured: percentiles of the requests inside a window with their intervals,
throughput by batch means, and the busy share of the LLM and of the retrieval workers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim.analysis.stats import quantile_interval, t_interval
from sim.verify.loadgen import LiveRun
from sim.verify.verdict import STATS


def busy_fraction(starts: np.ndarray, ends: np.ndarray, lo: float, hi: float) -> float:
    """Share of ``[lo, hi)`` covered by the union of ``[start, end)`` intervals.

    Intervals [0, 2) and [1, 3) inside [0, 4): covered [0, 3), 0.75.
    """
    if hi <= lo:
        return 0.0
    order = np.argsort(starts)
    covered = 0.0
    cur_s = 0.0
    cur_e: float | None = None
    for s, e in zip(starts[order], ends[order]):
        s, e = max(float(s), lo), min(float(e), hi)
        if e <= s:
            continue
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                covered += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        covered += cur_e - cur_s
    return covered / (hi - lo)


def throughput_interval(ends: np.ndarray, lo: float, hi: float, batches: int = 5) -> list[float | None]:
    """95 % interval of the completion rate over ``[lo, hi)`` by batch means: the window cut into
    ``batches`` equal parts, the rate of each, a t interval over them.

    Completions counted 2, 4, 2, 4, 3 in five 1-s parts: rates mean 3, sd 1, so
    3 +- t(0.975, 4) * 1 / sqrt(5) = 3 +- 1.2415.  Parts of a closed loop are correlated over
    time, which makes the true interval wider, as for the percentiles."""
    if hi <= lo or batches < 2:
        return [None, None]
    edges = np.linspace(lo, hi, batches + 1)
    counts, _ = np.histogram(np.asarray(ends, dtype=float), bins=edges)
    width = (hi - lo) / batches
    return finite_interval(t_interval(counts / width))


def finite_interval(ci: tuple[float, float]) -> list[float | None]:
    """An interval for JSON: an unbounded end is None."""
    return [x if math.isfinite(x) else None for x in ci]


def measured_stats(live: LiveRun, warmup_s: float, workers: int, rates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Percentiles of the ok requests that started inside ``[warmup_s, duration_s)``, throughput
    (completions inside it, whenever they started), utilisation; ``rates`` (throughput, its
    interval and utilisation) measured elsewhere replace the run's own (:func:`~sim.verify.segments.segment_rates`)."""
    r = live.records
    lo, hi = warmup_s, live.duration_s
    if not live.requests:
        return {"n": 0}
    inside = (r["t_start_s"] >= lo) & (r["t_start_s"] < hi)
    values = live_values(live, lo, hi)
    out: dict[str, Any] = {"n": len(values["e2e_ms"]), "ci": {}}
    for m, v in values.items():
        out[m] = {s: float(np.percentile(v, float(s[1:]))) if len(v) else None for s in STATS}
        out["ci"][m] = {s: finite_interval(quantile_interval(v, float(s[1:]) / 100)) for s in STATS}
    got = rates if rates is not None else window_rates(live, lo, hi, workers)
    out["throughput_per_s"] = got["throughput_per_s"]
    out["ci"]["throughput_per_s"] = {"mean": got["ci"]}
    out["utilization"] = got["utilization"]
    out["cache_hit_ratio"] = float(r["cache_hit"][inside].astype(bool).mean()) if inside.any() else None
    return out


def live_values(live: LiveRun, lo: float, hi: float) -> dict[str, np.ndarray]:
    """Each compared latency of the ok requests that started inside ``[lo, hi)``, ms (the
    retrieval's of those that missed the cache)."""
    r = live.records
    sel = r["ok"].astype(bool) & (r["t_start_s"] >= lo) & (r["t_start_s"] < hi)
    miss = sel & ~r["cache_hit"].astype(bool)
    return {m: r[m][pick].astype(float) for m, pick in (("e2e_ms", sel), ("ttft_ms", sel), ("retrieval_ms", miss))}


def window_rates(live: LiveRun, lo: float, hi: float, workers: int) -> dict[str, Any]:
    """Throughput over ``[lo, hi)`` (completions inside it, whenever they started) with its
    batch-means interval, and utilisation: the LLM's busy share of the window, the retrieval
    workers' from the searches of the requests that started inside it."""
    r = live.records
    ok = r["ok"].astype(bool)
    started = (r["t_start_s"] >= lo) & (r["t_start_s"] < hi)
    rv = r["retrieval_ms"][ok & started & ~r["cache_hit"].astype(bool)].astype(float)
    ends = r["llm_end_s"].astype(float)
    done = ok & (ends >= lo) & (ends < hi)
    return {
        "throughput_per_s": float(done.sum()) / (hi - lo),
        "ci": throughput_interval(ends[done], lo, hi),
        "utilization": {
            "gpu": busy_fraction(r["llm_sent_s"][ok].astype(float), ends[ok], lo, hi),
            "retrieval": float(rv.sum() / 1e3 / ((hi - lo) * workers)) if len(rv) else 0.0,
        },
    }
