"""One load's prediction and comparison: the scenario overrides that make the simulation stand for
the target at that load, and the simulated figures held against the measured ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.run.sweep import simulate
from sim.spec.schema import Scenario
from sim.spec.target import Target
from sim.verify.loadgen import (
    LiveRun,
)
from sim.verify.measured import measured_stats
from sim.verify.server_clock import request_path
from sim.verify.verdict import (
    BOUNDS,
    RETRIEVAL_BOUNDS,
    STATS,
    ComparedRow,
    LoadComparison,
    compared_row,
)


def overrides_for(
    scn: Scenario,
    target: Target,
    users: int,
    duration_s: float,
    warmup_s: float,
    retrieval_ms: np.ndarray | None,
    llm_overhead_ms: float,
    replications: int,
    contention: Sequence[float] = (),
    wakeup_ms: float | list[tuple[float, float]] = 0.0,
    handback_ms: Sequence[float] = (),
    scheduler: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Scenario overrides that make the simulation stand for this target at this load (with
    ``scheduler``, :func:`~sim.verify.retrieval_probe.scheduler_for`'s, the service's threads scheduled on its one core
    in place of the shared pool's hand-back)."""
    ov: dict[str, Any] = {
        "workload.users": users,
        "run.duration_s": duration_s,
        "run.warmup_s": warmup_s,
        "run.replications": replications,
        "run.target_precision": None,
        **request_path(llm_overhead_ms),
    }
    if scn.llm.enabled:
        llm = target.llm_endpoint()
        ov["llm.max_batch"] = llm.parallel
        ov["llm.max_batched_tokens"] = max(llm.n_batch, llm.parallel)
        ov["llm.replicas"] = 1
    if retrieval_ms is not None and target.retrieval is not None and scn.retrieval.enabled:
        ov["retrieval.service_ms"] = {"dist": "empirical", "samples": [round(float(x), 4) for x in retrieval_ms]}
        ov["retrieval.overhead_ms"] = {"dist": "constant", "value": 0.0}
        ov["retrieval.workers"] = target.retrieval.workers
        ov["retrieval.cpu_cores"] = len(target.retrieval.cores) or None
        ov["retrieval.contention"] = list(contention) if contention else None
        ov["retrieval.wakeup_ms"] = [list(p) for p in wakeup_ms] if isinstance(wakeup_ms, list) else wakeup_ms
        ov["retrieval.handback_ms"] = (
            {"dist": "empirical", "samples": [round(float(x), 4) for x in handback_ms]} if len(handback_ms) else None
        )
        if scheduler is not None:
            ov["retrieval.scheduler"] = scheduler
            ov["retrieval.handback_ms"] = None  # the scheduled threads make the hand-back
    return ov


def compared_metrics(scn: Scenario) -> tuple[str, ...]:
    """The latencies held against the live run: end to end, and each stage the scenario has."""
    stages = (("ttft_ms", scn.llm.enabled), ("retrieval_ms", scn.retrieval.enabled))
    return ("e2e_ms", *(m for m, on in stages if on))


def compare_one(live: LiveRun, scn: Scenario, ov: dict[str, Any], warmup_s: float, workers: int) -> LoadComparison:
    """The prediction is the simulated replication 0, which replays the live run's own think times,
    keys and token counts (common random numbers: the workload's sampling noise cancels, what is
    left is the system's response); the interval is that of ``run.replications`` replications
    (what a rerun with fresh draws would show)."""
    meas = measured_stats(live, warmup_s, workers)
    s = simulate(scn, {**ov, "run.replications": 1}, jobs=1).points[0].summary.to_dict()
    spread = simulate(scn, ov, jobs=1).points[0].summary.to_dict()
    metrics = s["metrics"]
    bounds = BOUNDS if scn.llm.enabled else RETRIEVAL_BOUNDS
    rows = []
    for m in compared_metrics(scn):
        if m not in metrics or m not in meas:
            continue
        for st in STATS:
            ci = spread["metrics"][m].get("ci", {}).get(st)
            rows.append(compared_row(m, st, meas[m][st], metrics[m].get(st), ci, bounds, meas["ci"][m][st]))
    rows.append(
        compared_row(
            "throughput_per_s",
            "mean",
            meas["throughput_per_s"],
            s["throughput_per_s"],
            spread["throughput_ci"],
            bounds,
            meas["ci"]["throughput_per_s"]["mean"],
        )
    )
    pred = {
        "throughput_per_s": s["throughput_per_s"],
        "utilization": s["utilization"],
        "n": metrics.get("e2e_ms", {}).get("n", 0),
    }
    return load_comparison(live, rows, meas, pred)


def load_comparison(
    live: LiveRun, rows: list[ComparedRow], meas: dict[str, Any], pred: dict[str, Any]
) -> LoadComparison:
    """Rows, measured and predicted figures with the load generator's own cost."""
    cpu_per_req = live.cpu_s / max(1, live.requests) * 1e3
    lag = live.records["lag_ms"].astype(float) if live.requests else np.zeros(1)
    loadgen = {
        "cpu_ms_per_request": cpu_per_req,
        "cpu_share_of_one_core": live.cpu_s / max(live.wall_s, 1e-9),
        "think_timer_lag_p50_ms": float(np.percentile(lag, 50)),
        "think_timer_lag_p99_ms": float(np.percentile(lag, 99)),
    }
    return LoadComparison(
        live.users,
        rows,
        meas,
        pred,
        loadgen,
        len(live.failures),
        live.requests,
        sorted(set(live.failures)),
    )
