"""Results over time: percentiles, queues and utilisation per window, windowed SLAs, recovery.

Picture: a flash sale takes the shop from 50 to 1,000 shoppers and back.  A
single P95 over the whole run mixes the quiet start, the spike and the
drain into one number that answers nothing.  Here the run (from 0 to
``run.duration_s``, by arrival time) is cut into windows of ``window_s``;
in each window and replication the statistic of the requests that *arrived*
in it is taken, and the value is the mean over replications with a Student t
interval across them -- an ensemble estimate of "P95 at 10:03", which needs
no steady state, only independent replications of the same day.

What replaces the stationary machinery for a load that changes over time:

* **warm-up** -- no cut: the run starts empty, as a real morning does, and
  the first windows show the fill.  ``warmup_s: auto`` (MSER-5) is refused
  at load: it looks for where a stationary series settles.
* **steady-state checks** -- the "latency rises through the window" trend
  test is not applied (latency is meant to change); instead every request
  must finish within ``run.drain_s`` after arrivals stop (else the point is
  unstable), each window's statistic is censored by the requests that
  arrived in it and never finished (counted as slower than all), and
  :func:`recovery` says when P95 came back under the SLA.

Unfinished requests: a window's percentile counts its arrivals that had not
finished by the end of the run as +infinity, so a window the system never
answered reads as infinite, not as its few lucky fast requests.

Every window's statistic comes from the replication's digest
(:mod:`sim.engine.digest`), whose time cells include the window edges: a
window's histogram is the sum of its cells', exact, and its percentiles are
within 0.5 % of those of the window's requests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, TypedDict

import numpy as np

from sim.analysis import stats
from sim.engine.digest import Digest, Histogram, window_edges
from sim.engine.load_profile import breakpoints
from sim.engine.pipeline import Replication
from sim.engine.records import Bins
from sim.spec.schema import Scenario, ScheduleProfile

_Q = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
#: Least requests per window and replication for an interval: about 5 beyond the quantile.
MIN_PER_WINDOW = {"mean": 2, "p50": 10, "p90": 50, "p95": 100, "p99": 500, "max": 1}
WINDOW_STATS = ("p50", "p95", "p99")

NOTE = (
    "load changes over time: no warm-up cut and no steady-state trend test; statistics are per "
    "arrival window, averaged over replications with a t interval across them; requests unfinished "
    "at the end count as slower than all in their window"
)


def censored_stat(values: np.ndarray, stat: str, unfinished: int) -> float:
    """``stat`` of ``values`` plus ``unfinished`` values known only to be larger than all of them."""
    n = len(values)
    return _censored(
        stat,
        n,
        unfinished,
        lambda: float(values.mean()),
        lambda: float(values.max()),
        lambda q: float(np.percentile(values, 100.0 * q)) if n > 1 else float(values[0]),
    )


def censored_hist_stat(h: Histogram, stat: str, unfinished: int) -> float:
    """:func:`censored_stat` of the values counted in ``h`` (percentiles read from the
    histogram, within :data:`sim.engine.digest.RELATIVE_ERROR`; mean and maximum exact)."""
    n = h.n
    return _censored(stat, n, unfinished, lambda: h.mean, lambda: h.hi, lambda q: h.quantile(q) if n > 1 else h.lo)


def _censored(
    stat: str,
    n: int,
    unfinished: int,
    mean: Callable[[], float],
    top: Callable[[], float],
    at: Callable[[float], float],
) -> float:
    """The censoring rule both read: with unfinished values (larger than every finished one) the
    mean and maximum are unbounded, and a percentile is too once its rank among all ``n +
    unfinished`` values falls past the finished ones; else ``at`` reads the finished values at
    the fraction of their range the rank gives."""
    if stat in ("mean", "max"):
        return float("inf") if unfinished else ((mean() if stat == "mean" else top()) if n else float("nan"))
    total = n + unfinished
    if total == 0:
        return float("nan")
    rank = _Q[stat] * (total - 1)
    if rank > n - 1:
        return float("inf")
    return at(rank / (n - 1) if n > 1 else 0.0)


def _edges(end_s: float, width: float) -> np.ndarray:
    return window_edges(end_s, width)


def _digest(rep: Replication) -> Digest:
    if rep.digest is None:
        raise ValueError(f"replication {rep.replication} carries no digest to summarise")
    return rep.digest


def per_window(reps: list[Replication], edges: np.ndarray, metric: str, stat: str) -> np.ndarray:
    """Shape (replications, windows): the statistic of each window's arrivals (nan: none)."""
    out = np.full((len(reps), len(edges) - 1), np.nan)
    for r, rep in enumerate(reps):
        d = _digest(rep)
        for w in range(len(edges) - 1):
            span = d.between(float(edges[w]), float(edges[w + 1]))
            h = d.hist[metric].select(span)
            unf = 0
            if metric in ("e2e_ms", "ttft_ms"):
                unf = max(0, int(d.count("started")[span].sum()) - int(d.count("finished")[span].sum()))
            out[r, w] = censored_hist_stat(h, stat, unf)
    return out


def counts(reps: list[Replication], edges: np.ndarray) -> np.ndarray:
    """Requests started per window and replication (finished or not)."""
    out = np.zeros((len(reps), len(edges) - 1))
    for r, rep in enumerate(reps):
        d = _digest(rep)
        for w in range(len(edges) - 1):
            out[r, w] = d.count("started")[d.between(float(edges[w]), float(edges[w + 1]))].sum()
    return out


def combine(
    per: np.ndarray, n: np.ndarray, stat: str, conf: float
) -> tuple[list[float | None], list[list[float | None]]]:
    """Per window: mean over replications and a t interval (None where it cannot be had)."""
    values: list[float | None] = []
    cis: list[list[float | None]] = []
    for w in range(per.shape[1]):
        col = per[:, w]
        col = col[~np.isnan(col)]
        if not len(col):
            values.append(None)
            cis.append([None, None])
            continue
        v = float(col.mean())
        lo: float | None = None
        hi: float | None = None
        if len(col) >= 2 and np.all(np.isfinite(col)) and n[:, w].min() >= MIN_PER_WINDOW[stat]:
            a, b = stats.t_interval(col, conf)
            lo, hi = float(a), float(b)
        values.append(v if math.isfinite(v) else None)
        cis.append([lo, hi])
    return values, cis


def _bins_between(b: Bins, a: float, z: float) -> float:
    return b.total_from(a) - b.total_from(z)


def window_verdict(per: np.ndarray, lo: float | None, hi: float | None, threshold: float) -> str:
    """``pass`` / ``fail`` / ``inconclusive`` for one window: by the interval when there is
    one; without one, ``fail`` only when every replication's value is over the threshold."""
    col = per[~np.isnan(per)]
    if not len(col):
        return "none"
    if lo is not None and hi is not None:
        return stats.sla_verdict(float(col.mean()), lo, hi, threshold)
    if len(col) >= 2 and np.all(col > threshold):
        return "fail"
    return "inconclusive"


def spike_end_s(scn: Scenario) -> float | None:
    """When the load starts its last fall (a schedule's last downward step or ramp)."""
    p = scn.workload.profile
    if not isinstance(p, ScheduleProfile):
        return None
    ts, vs = breakpoints(p)
    end = None
    for i in range(1, len(ts)):
        if vs[i] < vs[i - 1]:
            end = ts[i - 1]
    return end


class ReplicationRecovery(TypedDict):
    """One replication's recovery: when its statistic was last over the threshold (None: not
    within the run), how long it was over in all, and whether it recovered."""

    recovered_at_s: float | None
    time_over_s: float
    recovered: bool


class Recovery(TypedDict):
    """:func:`recovery`'s answer over the replications (means with t intervals)."""

    threshold: float
    spike_end_s: float | None
    by_replication: list[ReplicationRecovery]
    recovered: bool
    time_over_s: float
    time_over_s_ci: list[float | None]
    tail_s: float | None
    tail_s_ci: list[float | None]


def recovery(per: np.ndarray, edges: np.ndarray, threshold: float, after_s: float | None, conf: float) -> Recovery:
    """When each replication's windowed statistic was last over ``threshold``.

    ``recovered_at_s``: end of the last window over the threshold, per
    replication (None when the last window with requests is still over: not
    recovered within the run).  ``tail_s``: ``recovered_at_s - after_s`` (the
    spike's end), at least 0.  ``time_over_s``: total length of windows over.
    """
    by_rep: list[ReplicationRecovery] = []
    for row in per:
        over = np.flatnonzero(row > threshold)
        have = np.flatnonzero(~np.isnan(row))
        if not len(over):
            by_rep.append({"recovered_at_s": 0.0, "time_over_s": 0.0, "recovered": True})
            continue
        last = int(over[-1])
        recovered = bool(len(have)) and last < int(have[-1])
        width = np.diff(edges)
        by_rep.append(
            {
                "recovered_at_s": float(edges[last + 1]) if recovered else None,
                "time_over_s": float(width[over].sum()),
                "recovered": recovered,
            }
        )
    rec = [b["recovered_at_s"] for b in by_rep]
    recovered = all(r is not None for r in rec)
    over = np.array([b["time_over_s"] for b in by_rep])
    tail_s: float | None = None
    tail_s_ci: list[float | None] = [None, None]
    if recovered and after_s is not None:
        tail = np.array([max(0.0, float(r) - after_s) if r else 0.0 for r in rec])
        tail_s = float(tail.mean())
        tail_s_ci = [float(x) for x in stats.t_interval(tail, conf)] if len(tail) >= 2 else [None, None]
    return {
        "threshold": threshold,
        "spike_end_s": after_s,
        "by_replication": by_rep,
        "recovered": recovered,
        "time_over_s": float(over.mean()),
        "time_over_s_ci": [float(x) for x in stats.t_interval(over, conf)] if len(over) >= 2 else [None, None],
        "tail_s": tail_s,
        "tail_s_ci": tail_s_ci,
    }


_Sla = tuple[str, str, float, float]  # metric, statistic, threshold, window width (s)


def _latency_windows(reps: list[Replication], edges: np.ndarray, conf: float) -> list[dict[str, Any]]:
    """One entry a window: its bounds, the mean requests it saw and the e2e statistics with intervals."""
    n = counts(reps, edges)
    windows: list[dict[str, Any]] = [
        {"start_s": float(a), "end_s": float(b), "requests": float(n[:, i].mean())}
        for i, (a, b) in enumerate(itertools.pairwise(edges))
    ]
    for st in WINDOW_STATS:
        per = per_window(reps, edges, "e2e_ms", st)
        vals, cis = combine(per, n, st, conf)
        for w, v, c in zip(windows, vals, cis):
            w.setdefault("e2e_ms", {"ci": {}})
            w["e2e_ms"][st] = v
            w["e2e_ms"]["ci"][st] = c
    return windows


def _window_queues(reps: list[Replication], a: float, b: float) -> dict[str, float]:
    """Each stage's queue in ``[a, b)``: the mean of the samples inside, averaged over replications."""
    q: dict[str, float] = {}
    for name, key in (("routing", "routing_queue"), ("retrieval", "retrieval_queue"), ("llm", "llm_waiting")):
        vals_q = []
        for rep in reps:
            ts = rep.timeseries
            if key not in ts or "t_s" not in ts:
                continue
            t = np.asarray(ts["t_s"])
            sel = (t >= a) & (t < b)
            x = np.asarray(ts[key], dtype=float)
            if x.ndim == 2:
                x = x.sum(axis=1)
            if sel.any():
                vals_q.append(float(x[sel].mean()))
        if vals_q:
            q[name] = float(np.mean(vals_q))
    return q


def _window_load_level(reps: list[Replication], a: float, b: float) -> float | None:
    """The sampled load level in ``[a, b)``, averaged over the replications that sampled it there."""
    lv = [
        float(np.asarray(r.timeseries["load_level"])[sel].mean())
        for r in reps
        if (sel := (np.asarray(r.timeseries["t_s"]) >= a) & (np.asarray(r.timeseries["t_s"]) < b)).any()
    ]
    return float(np.mean(lv)) if lv else None


def _window_utilization(reps: list[Replication], a: float, b: float) -> dict[str, float]:
    """Each stage's busy time in ``[a, b)`` over its servers times the window, averaged over replications."""
    u: dict[str, float] = {}
    for name, busy, servers in (
        ("routing", "routing_busy_s", "routing_workers"),
        ("retrieval", "retrieval_busy_s", "retrieval_workers"),
        ("gpu", "gpu_busy_s", "gpu_replicas"),
    ):
        vals_u = []
        for rep in reps:
            bb, k = rep.counters.get(busy), rep.counters.get(servers)
            if isinstance(bb, Bins) and isinstance(k, (int, float)) and b > a:
                vals_u.append(_bins_between(bb, a, b) / (float(k) * (b - a)))
        if vals_u:
            u[name] = float(np.mean(vals_u))
    return u


def _windowed_sla(reps: list[Replication], edges: np.ndarray, n: np.ndarray, conf: float, sla: _Sla) -> dict[str, Any]:
    """One windowed SLA judged in every window of ``edges`` (``n``: the requests each saw): the verdict,
    the worst window's value and the windows that failed or could not be judged."""
    metric, st, thr, width = sla
    per = per_window(reps, edges, metric, st)
    vals, cis = combine(per, n, st, conf)
    wv = [window_verdict(per[:, i], c[0], c[1], thr) for i, c in enumerate(cis)]
    judged = [v for v in wv if v != "none"]  # no window judged: nothing is shown
    verdict = stats.combine_verdicts(judged) if judged else "inconclusive"
    worst = max((v for v in vals if v is not None), default=None)
    if any(v is None and np.any(np.isinf(per[:, i])) for i, v in enumerate(vals)):
        worst = math.inf
    return {
        "metric": metric,
        "stat": st,
        "threshold": thr,
        "window_s": width,
        "value": None if worst is None or not math.isfinite(worst) else worst,
        "verdict": verdict,
        "windows_failed": [float(edges[i]) for i, v in enumerate(wv) if v == "fail"],
        "windows_inconclusive": [float(edges[i]) for i, v in enumerate(wv) if v == "inconclusive"],
    }


def timeline(scn: Scenario, reps: list[Replication]) -> dict[str, Any]:
    """The ``timeline`` entry of a point summary (see the module docstring)."""
    conf = scn.run.confidence
    end = float(scn.run.duration_s)
    cfg = scn.timeline
    edges = _edges(end, cfg.window_s)
    windows = _latency_windows(reps, edges, conf)
    # queues (sampled state, mean of the samples inside the window) and utilisation (busy time)
    for w in windows:
        a, b = w["start_s"], w["end_s"]
        w["queue"] = _window_queues(reps, a, b)
        if "load_level" in reps[0].timeseries:
            w["load_level"] = _window_load_level(reps, a, b)
        w["utilization"] = _window_utilization(reps, a, b)
    out: dict[str, Any] = {"window_s": cfg.window_s, "windows": windows, "note": NOTE}
    sla_width = cfg.sla_window_s or cfg.window_s
    sla_edges = _edges(end, sla_width)
    sla_n = counts(reps, sla_edges)
    out["sla"] = [
        _windowed_sla(reps, sla_edges, sla_n, conf, (metric, st, thr, sla_width))
        for metric, thresholds in cfg.sla.items()
        for st, thr in thresholds.items()
    ]
    # recovery after the spike, against the e2e P95 threshold (windowed SLA first, else the plain SLA)
    limit: float | None = (cfg.sla.get("e2e_ms") or {}).get("p95") or (scn.sla.get("e2e_ms") or {}).get("p95")
    if limit is not None:
        per = per_window(reps, edges, "e2e_ms", "p95")
        out["recovery"] = {"metric": "e2e_ms", "stat": "p95", **recovery(per, edges, limit, spike_end_s(scn), conf)}
    return out
