"""What an autoscaled fleet did and cost: replicas over time, GPU-hours, dollars.

Each replication's autoscaler leaves its history in the timeseries (``autoscale_t_s``
and the ``paid``, ``provisioned`` and ``ready`` counts from each time on; see
:mod:`sim.engine.llm.autoscale`).  Over the measurement window ``[lo, hi)``::

    replica_hours = integral of paid(t) dt / 3600        (starting, ready and draining replicas)
    gpu_hours     = replica_hours x tensor_parallel
    mean GPUs     = gpu_hours / ((hi - lo) / 3600)

and the point's ``cost`` is priced at those mean GPUs (:func:`sim.analysis.dollars.cost_figures`)
instead of ``llm.replicas``: the fleet pays for a replica from the decision that starts it
until it is cancelled or has drained.  Means are over replications, with a Student t
interval across them.  :func:`with_autoscale` puts the figures in the point summary:
``cost`` repriced and ``gpu["autoscale"]``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from sim.analysis.dollars import cost_figures
from sim.analysis.stats import t_interval
from sim.engine.llm.autoscale import cold_start_s, mean_count
from sim.engine.pipeline import Replication
from sim.spec.schema import Scenario

#: The counts the history holds, in its column order after the time.
COUNTS = ("paid", "provisioned", "ready")


def history(rep: Replication) -> list[tuple[float, ...]]:
    """One replication's autoscaler history as rows ``(t, paid, provisioned, ready)``."""
    ts = rep.timeseries
    if "autoscale_t_s" not in ts:
        return []
    cols = [np.asarray(ts["autoscale_t_s"], dtype=float)] + [
        np.asarray(ts[f"autoscale_{c}"], dtype=float) for c in COUNTS
    ]
    return [tuple(float(c[i]) for c in cols) for i in range(len(cols[0]))]


def _interval(values: list[float], conf: float) -> list[float | None]:
    lo, hi = t_interval(values, conf) if len(values) >= 2 else (math.nan, math.nan)
    return [None if math.isnan(lo) else lo, None if math.isnan(hi) else hi]


def fleet(scn: Scenario, reps: list[Replication]) -> dict[str, Any] | None:
    """The autoscaled fleet's figures (None for a static fleet): mean replicas paid and ready,
    GPU-hours with an interval, scale-ups per replication, the cold start, and per
    ``timeline.window_s`` window the mean paid and ready replicas."""
    a = scn.llm.autoscale
    if a is None or not scn.llm.enabled or not reps:
        return None
    tp = int(scn.llm.tensor_parallel)
    conf = scn.run.confidence
    lo, hi = reps[0].window_s
    hours = (hi - lo) / 3600.0
    rows = [history(r) for r in reps]
    paid = [mean_count(h, 1, lo, hi) for h in rows]
    ready = [mean_count(h, 3, lo, hi) for h in rows]
    gpu_hours = [p * tp * hours for p in paid]
    ups = [sum(1 for k in range(1, len(h)) if h[k][2] > h[k - 1][2]) for h in rows]
    width = float(scn.timeline.window_s)
    # the timeline's windows: from 0 in steps of window_s, the last one cut at the run's end
    k = max(1, math.ceil(hi / width - 1e-9))
    edges = [min(i * width, hi) for i in range(k + 1)]
    windows = [
        {
            "start_s": float(s),
            "end_s": float(e),
            "paid": float(np.mean([mean_count(h, 1, s, e) for h in rows])),
            "ready": float(np.mean([mean_count(h, 3, s, e) for h in rows])),
        }
        for s, e in itertools.pairwise(edges)
        if e > s
    ]
    return {
        "signal": a.signal,
        "target": a.target,
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "cold_start_s": cold_start_s(scn.llm.weights_bytes, a.load_bytes_per_s, a.engine_start_s),
        "replicas_paid": float(np.mean(paid)),
        "replicas_ready": float(np.mean(ready)),
        "gpu_hours": float(np.mean(gpu_hours)),
        "gpu_hours_ci": _interval(gpu_hours, conf),
        "scale_ups": float(np.mean(ups)),
        "window_s": width,
        "windows": windows,
    }


def output_tokens_per_s(reps: list[Replication]) -> float:
    """Output tokens of the answers delivered (by end time) inside the window, per second, mean
    over replications: the rate the summary prices per million tokens (an autoscaled run's
    warm-up is fixed, so the window is the same for every replication)."""
    rates = []
    for r in reps:
        lo, hi = r.window_s
        if hi > lo and r.digest is not None:  # the digest counts answers' tokens by end time
            rates.append(float(r.digest.count("delivered_tokens")[r.digest.between(lo, hi)].sum()) / (hi - lo))
    return float(np.mean(rates)) if rates else 0.0


def with_autoscale(summary: Any, scn: Scenario, reps: list[Replication]) -> Any:
    """``summary`` (a :class:`~sim.analysis.summary.PointSummary`) with an autoscaled fleet's
    figures: ``gpu["autoscale"]`` and ``cost`` priced at the mean GPUs paid for.  A static
    fleet's summary comes back as it was."""
    f = fleet(scn, reps)
    if f is None:
        return summary
    lo, hi = reps[0].window_s
    gpus_held = f["gpu_hours"] / ((hi - lo) / 3600.0) if hi > lo else 0.0
    cost = summary.cost
    if cost is not None:
        cost = cost_figures(scn, summary.throughput_per_s, output_tokens_per_s(reps), gpus_held)
        if cost is not None:
            cost["gpu_hours"] = f["gpu_hours"]
    gpu = {**summary.gpu, "autoscale": f}
    if gpu.get("load") is not None and f["replicas_ready"] > 0:
        # the summary divides by llm.replicas (the fleet the run starts with): by the ready ones
        gpu["load"] = gpu["load"] * scn.llm.replicas / f["replicas_ready"]
    return dataclasses.replace(summary, gpu=gpu, cost=cost)
