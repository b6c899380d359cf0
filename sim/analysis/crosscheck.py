"""Analytic cross-checks: is this scenario exactly solvable, and what do the formulas say?

Picture the simplest capsim runs.  Requests arrive as a Poisson stream, the
cache and the LLM are switched off, and retrieval is ``c`` workers with
exponential service times: that *is* an M/M/c queue, so Erlang C gives the
exact steady-state wait distribution.  Or ``N`` users think, ask, wait and
think again in front of one such pool: a closed product-form network, solved
exactly by Mean Value Analysis.  In those cases a run can show the formula's
value beside the simulated one, and a disagreement beyond the confidence
interval is a bug (in the engine or in the scenario's warm-up).

:func:`exact_model` decides whether a scenario is one of those cases and
evaluates the formulas (pure: no records needed).  :func:`compare` puts the
formula next to the simulated statistics of a point summary.
:func:`offered_load` is the open-workload utilisation estimate ``λ·E[S]/c``
per stage, used by the stability check whether or not the scenario is exact.

Exactness conditions (anything else gets no ``analytic`` entry):

* **M/M/c** — ``workload.mode: open`` with ``arrival: poisson``; ``llm``
  disabled; ``retrieval.service_ms`` exponential, ``overhead_ms`` zero, no
  core sharing (``cpu_cores`` unset or ≥ ``workers``); the cache disabled or
  of capacity 0 (every lookup misses, and a lookup delay that is i.i.d. per
  request displaces Poisson arrivals into Poisson arrivals).
* **MVA** — ``workload.mode: closed`` with the same retrieval and LLM
  conditions; the cache disabled or of capacity 0 (the lookup is then a pure
  delay station, added to the think time).  The think time may have any
  distribution: a delay station is insensitive (BCMP), so MVA is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from sim.analysis import stats
from sim.engine.pipeline import retrieval_service_distribution
from sim.physics import queueing as analytic
from sim.physics.sharing import contention_at
from sim.spec.schema import ConstantSpec, ExponentialSpec, Scenario, build_distribution


def _retrieval_is_exponential(scn: Scenario) -> str | None:
    """``None`` when retrieval is one exponential FCFS pool, else why not."""
    r = scn.retrieval
    if scn.llm.enabled:
        return "the LLM stage is enabled"
    if not r.enabled:
        return "retrieval is disabled"
    if not isinstance(r.service_ms, ExponentialSpec):
        return "retrieval.service_ms is not exponential"
    if not (isinstance(r.overhead_ms, ConstantSpec) and r.overhead_ms.value == 0):
        return "retrieval.overhead_ms is not zero"
    if r.cpu_cores is not None and r.cpu_cores < r.workers:
        return "retrieval workers share fewer cores"
    if any(c != 1 for c in (r.contention or ())):
        return "concurrent searches slow each other down (retrieval.contention)"
    if scn.cache.enabled and scn.cache.capacity > 0:
        return "the cache can hit"
    return None


def why_not_exact(scn: Scenario) -> str | None:
    """``None`` when :func:`exact_model` applies, else a short reason."""
    reason = _retrieval_is_exponential(scn)
    if reason:
        return reason
    if scn.workload.mode == "open" and scn.workload.arrival != "poisson":
        return "arrivals are not Poisson"
    return None


def _lookup_mean_s(scn: Scenario) -> float:
    return build_distribution(scn.cache.lookup_ms).mean / 1e3 if scn.cache.enabled else 0.0


def exact_model(scn: Scenario, quantile: float = 0.95) -> dict[str, Any] | None:
    """The formulas' answer for an exactly analysable scenario, or ``None``.

    Open (M/M/c, with ``a = λ·E[S]``, ``ρ = a/c``, ``C`` = Erlang C)::

        p_wait = C,  mean_wait = C / (cμ - λ),  P(W_q > t) = C·e^{-(cμ-λ)t}

    Closed (MVA): throughput ``X(N)`` and mean response ``R(N)`` with think
    time ``Z`` (+ the cache lookup delay when the cache is on with capacity 0)
    and one ``c``-server station of demand ``E[S]``.  Times are in ms.
    """
    if why_not_exact(scn) is not None:
        return None
    r = scn.retrieval
    c = int(r.workers)
    service = r.service_ms
    assert isinstance(service, ExponentialSpec)  # why_not_exact checked it
    mean_s = service.mean / 1e3
    lookup_s = _lookup_mean_s(scn)
    w = scn.workload
    if w.mode == "open":
        assert w.rate_per_s is not None  # WorkloadConfig requires it in open mode
        return _open_model(float(w.rate_per_s), c, mean_s, lookup_s, quantile)
    assert w.users is not None  # WorkloadConfig requires it in closed mode
    think_s = build_distribution(w.think_s).mean
    z = think_s + lookup_s
    m = analytic.mva(int(w.users), z, [mean_s], [c])
    return {
        "model": "MVA",
        "users": int(w.users),
        "think_s": think_s,
        "servers": c,
        "service_mean_ms": mean_s * 1e3,
        "stable": True,
        "throughput_per_s": m.throughput_per_s,
        "mean_response_ms": m.response_s * 1e3,
        "mean_wait_ms": (m.response_s - mean_s) * 1e3,
        "mean_e2e_ms": (m.response_s + lookup_s) * 1e3,
        "utilization": m.utilization[0],
    }


def _open_model(lam: float, c: int, mean_s: float, lookup_s: float, quantile: float) -> dict[str, Any]:
    """M/M/c at arrival rate ``lam`` per s: its waits and responses (ms), or why it has no steady state."""
    pct = f"p{round(quantile * 100)}"
    rho = lam * mean_s / c
    out: dict[str, Any] = {
        "model": f"M/M/{c}" if c > 1 else "M/M/1",
        "servers": c,
        "arrival_rate_per_s": lam,
        "service_mean_ms": mean_s * 1e3,
        "utilization": rho,
    }
    if rho >= 1:
        out.update(stable=False, note=f"offered load ρ = λ·E[S]/c = {rho:.3g} ≥ 1: no steady state")
        return out
    q = analytic.mmc(c, lam, 1.0 / mean_s)
    out.update(
        stable=True,
        p_wait=q.p_wait,
        mean_wait_ms=q.mean_wait_s * 1e3,
        **{f"{pct}_wait_ms": q.wait_quantile_s(quantile) * 1e3},
        mean_response_ms=q.mean_response_s * 1e3,
        **{f"{pct}_response_ms": q.response_quantile_s(quantile) * 1e3},
        mean_e2e_ms=(q.mean_response_s + lookup_s) * 1e3,
        throughput_per_s=lam,
    )
    return out


class CompareRow(TypedDict):
    """One quantity the formula predicts beside what the simulation measured (its interval),
    whether the prediction lies in the interval and the relative error."""

    quantity: str
    analytic: float
    simulated: float | None
    ci: list[float | None]
    within_ci: bool | None
    rel_error: float | None


def _row(
    quantity: str, analytic_value: float, simulated: float | None, ci: Sequence[float | None] | None
) -> CompareRow:
    lo, hi = (ci or [None, None])[:2]
    return {
        "quantity": quantity,
        "analytic": analytic_value,
        "simulated": simulated,
        "ci": [lo, hi],
        "within_ci": (lo <= analytic_value <= hi) if lo is not None and hi is not None else None,
        "rel_error": ((simulated - analytic_value) / analytic_value)
        if simulated is not None and analytic_value
        else None,
    }


def waited_fraction(
    parts: Sequence[tuple[float, float]], one_run: bool, confidence: float
) -> tuple[float | None, list[float | None]]:
    """Share of retrievals that queued (``retrieval_wait_ms > 0``), with its interval.

    ``parts``: ``(retrievals that waited, retrievals)`` per replication, or with
    ``one_run`` per batch of one replication's window.  A t interval over replications;
    over one replication, the batch fractions' t half-width around the whole-run share.
    """
    kept = [(float(w), float(n)) for w, n in parts if n > 0]
    if not kept:
        return None, [None, None]
    fr = np.array([w / n for w, n in kept])

    def f(x: float) -> float | None:
        return None if not math.isfinite(x) else float(x)

    if not one_run:
        lo, hi = stats.t_interval(fr, confidence) if len(fr) >= 2 else (math.nan, math.nan)
        return float(fr.mean()), [f(lo), f(hi)]
    share = sum(w for w, _ in kept) / sum(n for _, n in kept)
    if len(kept) < 2 or min(n for _, n in kept) < 10:
        return share, [None, None]
    lo, hi = stats.t_interval(fr, confidence)
    half = (hi - lo) / 2
    return share, [f(share - half), f(share + half)]


def compare(
    model: dict[str, Any],
    metrics: Mapping[str, Mapping[str, Any]],
    throughput: tuple[float, list[float | None]],
    p_wait: tuple[float | None, list[float | None]] | None = None,
    quantile: float = 0.95,
) -> list[CompareRow]:
    """Rows ``{quantity, analytic, simulated, ci, within_ci, rel_error}`` for a point."""
    if not model.get("stable"):
        return []
    pct = f"p{round(quantile * 100)}"
    rows: list[CompareRow] = []

    def metric_row(name: str, metric: str, stat: str, key: str) -> None:
        m = metrics.get(metric)
        if m is not None and key in model:
            rows.append(_row(name, model[key], m.get(stat), m["ci"].get(stat)))

    if model["model"] == "MVA":
        rows.append(_row("throughput_per_s", model["throughput_per_s"], throughput[0], throughput[1]))
        metric_row("mean response (e2e_ms mean)", "e2e_ms", "mean", "mean_e2e_ms")
        metric_row("mean wait (retrieval_wait_ms mean)", "retrieval_wait_ms", "mean", "mean_wait_ms")
        return rows
    metric_row("mean wait (retrieval_wait_ms mean)", "retrieval_wait_ms", "mean", "mean_wait_ms")
    metric_row(f"{pct} wait (retrieval_wait_ms {pct})", "retrieval_wait_ms", pct, f"{pct}_wait_ms")
    if p_wait is not None and p_wait[0] is not None:
        rows.append(_row("P(wait) (share of retrievals that queued)", model["p_wait"], p_wait[0], p_wait[1]))
    metric_row("mean response (retrieval_ms mean)", "retrieval_ms", "mean", "mean_response_ms")
    metric_row(f"{pct} response (retrieval_ms {pct})", "retrieval_ms", pct, f"{pct}_response_ms")
    rows.append(_row("throughput_per_s", model["throughput_per_s"], throughput[0], throughput[1]))
    return rows


class OfferedLoad(TypedDict):
    """A stage's offered load ``ρ`` and what makes it: arrival rate, mean service, servers."""

    offered_load: float
    arrival_rate_per_s: float
    service_mean_ms: float
    servers: int


def offered_load(scn: Scenario, hit_rate: float | None) -> dict[str, OfferedLoad]:
    """Open workloads: per-stage offered load ``ρ = λ_stage·E[S] / capacity``.

    Retrieval sees the misses: ``λ·(1 - hit rate)``; its capacity is
    ``min(workers, cpu_cores)`` concurrent searches.  ``ρ ≥ 1`` means arrivals
    outpace the stage and its queue grows without bound.  Closed workloads
    cannot overload a stage (the users wait), so they get ``{}``.  The LLM
    stage's capacity depends on batching and is judged from the run instead.
    """
    if scn.workload.mode != "open" or not scn.retrieval.enabled:
        return {}

    try:
        dist, info = retrieval_service_distribution(scn)
    except Exception:  # a calibration problem is reported by the run itself
        return {}
    r = scn.retrieval
    servers = min(r.workers, r.cpu_cores or r.workers)
    miss = 1.0 - (hit_rate or 0.0) if scn.cache.enabled else 1.0
    rate = scn.workload.rate_per_s
    assert rate is not None  # WorkloadConfig requires it in open mode
    lam = float(rate) * miss
    rho = lam * dist.mean * contention_at(servers, info["contention"]) / servers
    return {
        "retrieval": {
            "offered_load": rho,
            "arrival_rate_per_s": lam,
            "service_mean_ms": dist.mean * 1e3,
            "servers": servers,
        }
    }
