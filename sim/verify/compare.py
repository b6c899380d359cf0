"""``capsim verify``: measure a real stack under the scenario's load, simulate the same, compare.

What the prediction is calibrated from (isolated measurements only, never the
closed-loop run it is compared with):

* the LLM's step times: the scenario's ``llm.step_table`` (``capsim calibrate
  llm``: llama-batched-bench alone on the server's cores, before the server runs),
  or with ``--profile-llm`` a profile of the server itself, alone, taken right
  before every load (:mod:`sim.verify.step_profile`: batches of requests sent
  together, nothing else sending);
* the server's slots and step budget: the target's ``llm.parallel`` and
  ``llm.n_batch`` (``llm.max_batch``, ``llm.max_batched_tokens``);
* the retrieval service time: single searches one at a time over keep-alive
  HTTP, before the load (so the HTTP overhead is in every sample), as an
  empirical distribution; the extra time of a search that finds the service
  idle, by how long it was idle (trains of single searches each after an idle
  gap of 1-100 ms over back-to-back blocks around them: ``retrieval.wakeup_ms``);
  the slowdown of ``m = 2..workers`` searches at once beyond sharing the cores
  in time (``retrieval.contention``; on one core, from the service's own CPU
  clock: its CPU per search at ``m`` at once over alone) and, where the service reports its own
  search time, how long an answer waits behind a running search
  (``retrieval.handback_ms``); where it also reports its CPU clock, where a
  search's time alone goes (the search, the event loop's CPU, the part off
  the service's cores: ``phases_ms``), and on a one-core service its threads
  are then scheduled on that core (``retrieval.scheduler``, with this host's
  slice and tick, :func:`scheduler_for`) in place of the shared pool and its
  hand-back; workers and
  cores from the target; taken before the first load and after every load,
  and each load predicted from the two probes that bracket it, pooled; and,
  as a check of the pool in isolation (not a calibration), pairs
  of searches sent 0-6 ms apart, measured and as the pool models them
  (``retrieval_pairs``);
* the per-call HTTP + SSE overhead of the LLM endpoint: client first token
  minus the server's own prompt time, one request at a time, before the load;
  added as a constant to the (in-process, microseconds) cache lookup, i.e.
  to every request's path, outside any queue.

Bounds: P95 end to end <= 10 %, TTFT P95 <= 20 %, P50 (both) <= 10 %,
throughput <= 5 %.  A row outside its bound is ``undecided``, not ``outside``,
when the measurement cannot show the miss: the measured 95 % interval holds a
value within the bound, or, for a load played in segments, the error's own
interval over the segments does (:func:`verdict`, :func:`error_interval`).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim.analysis.estimate import mean_output_tokens, mean_prompt_tokens
from sim.analysis.stats import quantile_interval, t_interval
from sim.errors import CapsimError
from sim.physics.gpu import attention_pairs
from sim.physics.steptable import load_table, scaled_table, step_rows, write_table
from sim.run.sweep import simulate
from sim.spec.schema import Scenario, SchedulerSpec
from sim.spec.target import Target
from sim.verify.host import host_scheduler
from sim.verify.loadgen import (
    PAIR_PAUSE_S,
    PROBE_PAUSE_S,
    LiveRun,
    check_reachable,
    loop_cpu_ms,
    probe_contention,
    probe_llm,
    probe_llm_speed,
    probe_pairs,
    probe_retrieval,
    probe_wakeup,
    run_load,
)
from sim.verify.step_profile import describe, profile_batches, profile_mixed, profile_server
from sim.verify.wire import EndpointError, RunDeadline

BOUNDS = {
    ("e2e_ms", "p95"): 0.10,
    ("ttft_ms", "p95"): 0.20,
    ("e2e_ms", "p50"): 0.10,
    ("ttft_ms", "p50"): 0.10,
    ("throughput_per_s", "mean"): 0.05,
}
#: A retrieval-only scenario (llm.enabled: false): the search service alone, same bounds.
RETRIEVAL_BOUNDS = {
    ("e2e_ms", "p95"): 0.10,
    ("e2e_ms", "p50"): 0.10,
    ("retrieval_ms", "p95"): 0.10,
    ("retrieval_ms", "p50"): 0.10,
    ("throughput_per_s", "mean"): 0.05,
}
STATS = ("p50", "p95", "p99")
#: The calibration entries ``verify`` keeps per load (keyed by its user count).
PER_LOAD_CALIBRATION = ("step_tables", "retrieval", "llm_speed")
MAX_FAILURE_FRACTION = 0.01


@dataclass
class LoadComparison:
    users: int
    rows: list[dict[str, Any]]
    measured: dict[str, Any]
    predicted: dict[str, Any]
    loadgen: dict[str, float]
    failures: int
    requests: int
    failure_reasons: list[str] = field(default_factory=list)
    first_attempt: dict[str, Any] | None = None  # with ``--confirm``: the play this one replayed

    @property
    def too_many_failures(self) -> bool:
        return self.failures > MAX_FAILURE_FRACTION * max(1, self.requests)

    @property
    def misses(self) -> list[str]:
        """Rows whose miss the data prove: outside the bound from every value of the measured interval."""
        return [
            f"{r['metric']} {r['stat']} off by {r['rel_error']:+.1%} (bound {r['bound']:.0%})"
            for r in self.rows
            if r.get("verdict") == "outside"
        ]

    @property
    def undecided(self) -> list[str]:
        """Rows outside their bound that the data cannot decide: the measurement cannot tell the
        miss from its own noise, or (``--confirm``) only one of a load's two plays missed."""
        return [
            r["why"]
            if r.get("why")
            else f"{r['metric']} {r['stat']} off by {r['rel_error']:+.1%} (bound {r['bound']:.0%}), but the "
            f"measured 95 % interval {span_text(r['measured_ci'])} holds values within the bound"
            for r in self.rows
            if r.get("verdict") == "undecided"
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "requests": self.requests,
            "failures": self.failures,
            "failure_reasons": self.failure_reasons[:5],
            "measured": self.measured,
            "predicted": self.predicted,
            "loadgen": self.loadgen,
            "rows": self.rows,
            "misses": self.misses,
            "undecided": self.undecided,
            **({"first_attempt": self.first_attempt} if self.first_attempt is not None else {}),
        }


def pct_text(x: float | None) -> str:
    """A signed relative error, one decimal (``+20.9%``); ``-`` for none."""
    return "-" if x is None else f"{x:+.1%}"


def confirmed(first: LoadComparison, again: LoadComparison) -> LoadComparison:
    """A load played twice (``verify --confirm``: the first play had a row outside its bound, the
    replay was re-profiled and re-probed): the replay's rows, except that a row is ``outside``
    only when both plays put it outside.  Outside in one play and not in the other, it is
    ``undecided``, with both errors in its ``why``: one play cannot tell a model's miss from a
    passing state of the host (on this project's 2-core VM the LLM server once decoded 1.24x
    slower than the probes around it said for a whole 100-s load, and at its usual speed in the
    run after); a miss of the model repeats.  Every row keeps the first play's error and verdict
    (``first``), and the first play whole is kept in ``first_attempt``."""
    before = {(r["metric"], r["stat"]): r for r in first.rows}
    rows = []
    for r in again.rows:
        f = before.get((r["metric"], r["stat"]))
        a, b = (f or {}).get("verdict"), r.get("verdict")
        row = {**r, "first": None if f is None else {"rel_error": f["rel_error"], "verdict": a}}
        if f is not None and (a == "outside") != (b == "outside"):
            row["verdict"] = "undecided"
            row["why"] = (
                f"{r['metric']} {r['stat']} off by {pct_text(f['rel_error'])} in the first play and "
                f"{pct_text(r['rel_error'])} in the replay (bound {r['bound']:.0%}): outside in one of the two, "
                "not reproduced"
            )
        rows.append(row)
    return replace(again, rows=rows, first_attempt=first.to_dict())


def num_text(x: float) -> str:
    """One decimal from 10 up, two below (a throughput of 0.25 requests/s, a 6.73 ms search)."""
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.2f}"


def span_text(ci: list) -> str:
    lo, hi = ci
    return f"{'-inf' if lo is None else num_text(lo)}-{'inf' if hi is None else num_text(hi)}"


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
    return _finite(t_interval(counts / width))


def _finite(ci: tuple[float, float]) -> list[float | None]:
    """An interval for JSON: an unbounded end is None."""
    return [x if math.isfinite(x) else None for x in ci]


def measured_stats(live: LiveRun, warmup_s: float, workers: int, rates: dict[str, Any] | None = None) -> dict[str, Any]:
    """Percentiles of the ok requests that started inside ``[warmup_s, duration_s)``, throughput
    (completions inside it, whenever they started), utilisation; ``rates`` (throughput, its
    interval and utilisation) measured elsewhere replace the run's own (:func:`segment_rates`)."""
    r = live.records
    lo, hi = warmup_s, live.duration_s
    if not live.requests:
        return {"n": 0}
    inside = (r["t_start_s"] >= lo) & (r["t_start_s"] < hi)
    values = live_values(live, lo, hi)
    out: dict[str, Any] = {"n": len(values["e2e_ms"]), "ci": {}}
    for m, v in values.items():
        out[m] = {s: float(np.percentile(v, float(s[1:]))) if len(v) else None for s in STATS}
        out["ci"][m] = {s: _finite(quantile_interval(v, float(s[1:]) / 100)) for s in STATS}
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
    ``scheduler``, :func:`scheduler_for`'s, the service's threads scheduled on its one core
    in place of the shared pool's hand-back)."""
    ov: dict[str, Any] = {
        "workload.users": users,
        "run.duration_s": duration_s,
        "run.warmup_s": warmup_s,
        "run.replications": replications,
        "run.target_precision": None,
        "cache.lookup_ms": {"dist": "constant", "value": max(0.0, llm_overhead_ms)},
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


def scheduler_for(target: Target, phases: dict[str, float] | None) -> dict[str, float] | None:
    """``retrieval.scheduler`` for a service on one core whose probes measured where a search's
    time goes (the loop's CPU, the part off the core), with this host's slice and tick
    (:mod:`sim.verify.host`); None otherwise (more cores, or a service that reports no CPU
    clock): the shared pool with the measured hand-back."""
    if target.retrieval is None or len(target.retrieval.cores) != 1 or not phases:
        return None
    host = host_scheduler()
    return {
        "loop_cpu_ms": round(max(0.0, phases["loop_cpu_ms"]), 4),
        "off_core_ms": round(max(0.0, phases["off_core_ms"]), 4),
        "slice_ms": host["slice_ms"],
        "tick_ms": host["tick_ms"],
    }


def _row(
    metric: str,
    stat: str,
    meas: float | None,
    pred: float | None,
    ci: list | None,
    bounds: dict = BOUNDS,
    measured_ci: list | None = None,
    segment_errors: Sequence[float] = (),
) -> dict[str, Any]:
    """One compared figure; ``segment_errors``: its relative error in each segment of the load
    (:func:`error_interval`), none for a load played in one piece."""
    rel = (pred - meas) / meas if (meas not in (None, 0) and pred is not None) else None
    lo, hi = (ci or [None, None])[:2]
    inside = None if (lo is None or hi is None or meas is None) else bool(lo <= meas <= hi)
    bound = bounds.get((metric, stat))
    mlo, mhi = (measured_ci or [None, None])[:2]
    err_ci = error_interval(rel, segment_errors)
    row = {
        "metric": metric,
        "stat": stat,
        "measured": meas,
        "predicted": pred,
        "ci": [lo, hi],
        "measured_ci": [mlo, mhi],
        "rel_error": rel,
        "inside_ci": inside,
        "bound": bound,
        "verdict": verdict(rel, bound, pred, measured_ci, err_ci),
    }
    if segment_errors:
        row["segment_errors"] = [round(float(e), 4) for e in segment_errors]
        row["error_ci"] = err_ci
    if row["verdict"] == "undecided" and err_ci is not None and bound is not None and meets(err_ci, bound):
        row["why"] = (
            f"{metric} {stat} off by {pct_text(rel)} (bound {bound:.0%}), but its error moves between the load's "
            f"{len(segment_errors)} segments ({', '.join(pct_text(e) for e in segment_errors)}): its 95 % interval "
            f"{pct_text(err_ci[0])} to {pct_text(err_ci[1])} holds errors within the bound (the system does not "
            "reproduce itself to within it)"
        )
    return row


def error_interval(rel: float | None, segment_errors: Sequence[float]) -> list[float] | None:
    """The 95 % interval of a load's relative error from how it moves between the load's
    segments: the pooled error ``rel`` +- t(0.975, J - 1) * sd / sqrt(J), with sd the standard
    deviation of the ``J`` segments' own errors (batch means applied to the error: each segment
    is a play of the same load, predicted from the probes on its two sides, so the spread holds
    the sampling noise, the closed loop's correlation and the host's drift between plays that
    the probes did not follow).  None without ``rel`` or with fewer than two finite segment
    errors.

    Errors -14, -18, -10 and -20 % around a pooled -15 %: sd 4.435 %, half width 3.1824 *
    4.435 / 2 = 7.057 %: -22.06 % to -7.94 %."""
    e = np.asarray([x for x in segment_errors if x is not None and math.isfinite(x)], dtype=float)
    if rel is None or len(e) < 2:
        return None
    lo, hi = t_interval(e)
    half = (hi - lo) / 2
    return [rel - half, rel + half]


def meets(err_ci: Sequence[float], bound: float) -> bool:
    """Whether an interval of relative errors holds an error within ``bound``: [-22 %, -8 %]
    does at 10 %, [-22 %, -11 %] does not."""
    return err_ci[0] <= bound and err_ci[1] >= -bound


def verdict(
    rel: float | None,
    bound: float | None,
    pred: float | None,
    measured_ci: list | None,
    error_ci: Sequence[float] | None = None,
) -> str | None:
    """``within`` the bound; ``outside`` it; or ``undecided``: the error misses the bound, but
    some value inside the measurement's own 95 % interval is within the bound of the
    prediction (the live run had too few requests to tell a miss from its sampling noise: a
    longer load decides), or, for a load played in segments, the error's own interval over
    them (:func:`error_interval`) holds an error within the bound (the system does not
    reproduce itself to within the bound: a miss that size is not shown).  ``outside``
    therefore says the data prove a miss: even the end of the measured interval nearest the
    prediction is farther from it than the bound, and so is every error the segments'
    spread allows.  With bound ``b`` the prediction ``p`` is within it of a true value ``m``
    when ``p / (1 + b) <= m <= p / (1 - b)``; the verdict asks whether that range meets the
    measured interval.  None without a bound; a row without a measured interval is within
    or outside by its error alone."""
    if bound is None or rel is None or pred is None:
        return None
    if abs(rel) <= bound:
        return "within"
    if error_ci is not None and meets(error_ci, bound):
        return "undecided"
    if measured_ci is None:
        return "outside"
    lo, hi = measured_ci[:2]
    near_lo = pred / (1.0 + bound)
    near_hi = pred / (1.0 - bound) if bound < 1.0 else math.inf
    if (hi is None or near_lo <= hi) and (lo is None or lo <= near_hi):
        return "undecided"
    return "outside"


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
            rows.append(_row(m, st, meas[m][st], metrics[m].get(st), ci, bounds, meas["ci"][m][st]))
    rows.append(
        _row(
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
    return _comparison(live, rows, meas, pred)


def _comparison(live: LiveRun, rows: list, meas: dict[str, Any], pred: dict[str, Any]) -> LoadComparison:
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


def merged_live(parts: Sequence[LiveRun], warmup_s: float) -> LiveRun:
    """The segments of one load as one run: each segment's requests from its own warm-up cut on,
    the windows end to end (times shifted so segment ``j``'s window starts where ``j - 1``'s
    ended); measure its percentiles with no further warm-up.  Its completions are not the
    load's: a request finishing in a segment's drain lands in the next one's span, and those in
    flight at a cut are gone; :func:`segment_rates` measures throughput and utilisation."""
    cols = parts[0].records.keys()
    segs, span = [], 0.0
    for p in parts:
        keep = np.asarray(p.records["t_start_s"], dtype=float) >= warmup_s
        seg = {c: np.asarray(p.records[c])[keep] for c in cols}
        for c in ("t_start_s", "llm_sent_s", "llm_end_s"):
            seg[c] = seg[c].astype(float) + (span - warmup_s)
        segs.append(seg)
        span += p.duration_s - warmup_s
    return LiveRun(
        parts[0].users,
        span,
        {c: np.concatenate([g[c] for g in segs]) for c in cols},
        sum(p.wall_s for p in parts),
        sum(p.cpu_s for p in parts),
        [f for p in parts for f in p.failures],
    )


def segment_rates(parts: Sequence[LiveRun], warmup_s: float, workers: int) -> dict[str, Any]:
    """Throughput and utilisation of a load played as segments, each measured in its own window
    ``[warmup_s, duration_s)`` (every completion inside it, whenever the request started; busy
    time inside it) and pooled by window length; the throughput's 95 % interval is a t interval
    over the segments' rates (each segment a batch).

    Two 10 s windows with 12 and 8 completions: 1.0 requests/s, interval 1.0 +- t(0.975, 1) *
    0.2828 / sqrt(2) = 1.0 +- 2.541.  (The first segmented LLM run measured the merged windows,
    where drain completions spilled into the next window and requests in flight at a cut were
    lost: 7 users' throughput came out 8 % off the prediction.)"""
    each = [window_rates(p, warmup_s, p.duration_s, workers) for p in parts]
    spans = np.array([p.duration_s - warmup_s for p in parts])
    rates = np.array([m["throughput_per_s"] for m in each])
    util = {
        k: float(sum(m["utilization"][k] * s for m, s in zip(each, spans)) / spans.sum()) for k in ("gpu", "retrieval")
    }
    return {
        "throughput_per_s": float((rates * spans).sum() / spans.sum()),
        "ci": _finite(t_interval(rates)) if len(parts) >= 2 else [None, None],
        "utilization": util,
    }


def compare_segments(
    parts: Sequence[LiveRun], scn: Scenario, ovs: Sequence[dict[str, Any]], warmup_s: float, workers: int
) -> LoadComparison:
    """:func:`compare_one` for a load played as segments, each predicted from its own overrides
    (the probes on its two sides; its own seed, ``run.seed`` in them, replayed by the live
    segment).  Measured: the segments' windows pooled.  Predicted: per replication, the
    segments' windows pooled; replication 0 (common random numbers) is the prediction, the
    t interval over replications its interval."""
    from sim.analysis.timeline import metric_values  # deferred: the summary's metric extraction

    live = merged_live(parts, warmup_s)
    meas = measured_stats(live, 0.0, workers, rates=segment_rates(parts, warmup_s, workers))
    runs = [simulate(scn, ov, jobs=1).points[0] for ov in ovs]
    reps = min(len(pt.replications) for pt in runs)
    metric_names = compared_metrics(scn)
    pooled: dict[str, list[np.ndarray]] = {m: [] for m in metric_names}
    done, spans = [], []
    first: list[dict[str, np.ndarray]] = []  # replication 0 of each segment, windowed: its own prediction
    for r in range(reps):
        recs = []
        for pt in runs:
            rep = pt.replications[r]
            lo, hi = rep.window_s
            a = rep.records["arrival_s"]
            recs.append({k: v[(a >= lo) & (a < hi)] for k, v in rep.records.items()})
            end = a + rep.records["e2e_ms"] / 1e3
            done.append((r, int(((end >= lo) & (end < hi)).sum())))
            if r == 0:
                spans.append(hi - lo)
        for m in metric_names:
            pooled[m].append(np.concatenate([metric_values(x, m) for x in recs]))
        if r == 0:
            first = recs
    window = float(sum(spans))
    thr = [sum(c for rr, c in done if rr == r) / window for r in range(reps)]
    bounds = BOUNDS if scn.llm.enabled else RETRIEVAL_BOUNDS
    live_each = [live_values(p, warmup_s, p.duration_s) for p in parts]
    rows = []
    for m in metric_names:
        if m not in meas:
            continue
        for st in STATS:
            q = float(st[1:])
            per = [float(np.percentile(v, q)) if len(v) else float("nan") for v in pooled[m]]
            ci = list(t_interval(per)) if reps >= 2 and all(math.isfinite(x) for x in per) else None
            errs = segment_errors([metric_values(x, m) for x in first], [v[m] for v in live_each], q)
            pred_m = per[0] if math.isfinite(per[0]) else None
            rows.append(_row(m, st, meas[m][st], pred_m, ci, bounds, meas["ci"][m][st], errs))
    thr_each = [c / s for (rr, c), s in zip(done[: len(runs)], spans)]
    thr_live = [window_rates(p, warmup_s, p.duration_s, workers)["throughput_per_s"] for p in parts]
    rows.append(
        _row(
            "throughput_per_s",
            "mean",
            meas["throughput_per_s"],
            thr[0],
            list(t_interval(thr)) if reps >= 2 else None,
            bounds,
            meas["ci"]["throughput_per_s"]["mean"],
            relative_errors(thr_each, thr_live),
        )
    )
    util = [pt.summary.to_dict()["utilization"] for pt in runs]
    pred = {
        "throughput_per_s": thr[0],
        "utilization": {k: float(np.mean([u[k] for u in util])) for k in util[0]},
        "n": len(pooled["e2e_ms"][0]),
        "segments": len(parts),
    }
    return _comparison(live, rows, meas, pred)


def relative_errors(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    """Per segment, the prediction's error relative to the measurement; segments where either
    is missing or the measurement is 0 are left out.  (9, 12) against (10, 10): (-0.1, 0.2)."""
    return [(p - m) / m for p, m in zip(predicted, measured) if math.isfinite(p) and math.isfinite(m) and m != 0]


def segment_errors(predicted: Sequence[np.ndarray], measured: Sequence[np.ndarray], q: float) -> list[float]:
    """Per segment, the ``q`` percentile of its predicted values (its own simulated replication
    0) against that of its live ones (:func:`relative_errors`); a segment without values on
    either side is left out."""
    both = [(p, m) for p, m in zip(predicted, measured) if len(p) and len(m)]
    pairs = [(float(np.percentile(p, q)), float(np.percentile(m, q))) for p, m in both]
    return relative_errors([p for p, _ in pairs], [m for _, m in pairs])


#: Segment j of a load replays the scenario's streams under seed + SEGMENT_SEED * j.
SEGMENT_SEED = 7919


@dataclass(frozen=True)
class SegmentPlan:
    """How one load is played in segments and what its prediction starts from."""

    users: int
    times: tuple[float, float, float]  # duration_s, warmup_s, drain_s of the whole load
    replications: int
    segments: int
    llm_probe: dict[str, Any]  # probe_llm's: overhead_ms, bos_tokens
    table: str | None  # the load's step table (LLM on)
    relative_decode: bool  # the table was profiled right before the load: it sets the decode level
    probe_tokens: tuple[int, int]  # prompt and output tokens of each speed probe (the scenario's means)


def _speed(table: str | None, target: Target, tokens: tuple[int, int]) -> np.ndarray | None:
    """The LLM server's speed now against the table, isolated: one (prompt ratio, decode ratio)
    row per probe request, each sent after a pause (:data:`~sim.verify.loadgen.PROBE_PAUSE_S`)."""
    if table is None:
        return None
    got = probe_llm_speed(target, prompt_tokens=tokens[0], output_tokens=tokens[1], pause_s=PROBE_PAUSE_S)
    rows = []
    for t in got["tries"]:
        r = _server_vs_table(table, {**t, "output_tokens": tokens[1]})
        rows.append((r["prompt_ratio"], r["decode_ratio_batch1"]))
    return np.asarray(rows, dtype=float)


def segment_factors(speeds: Sequence[np.ndarray | None], relative_decode: bool) -> list[tuple[float, float]]:
    """Per segment, what to scale the step table's (prefill, decode) rows by.  ``speeds``: per
    probe set (before the first segment, between segments, after the last) one row per request
    alone, its (prompt, decode) time over the table's for the same work.  A side's speed is its
    requests' median (robust to one slow request); a segment's, the mean of its two sides.
    Empty when a probe set is missing.

    Prompt: the probes' own level, times the mean over the median of all the load's prompt
    ratios (a step's mean time, not its median, sets the throughput and the queues, and the
    server's times have a right tail).  The prefill law is a least-squares fit over every
    profiled row, and the profile's medians are of back-to-back steps: in six runs' 4- and
    7-user loads live prompts took 3-4 % (median) and 5-7 % (mean) longer than it said, at
    every batch; the probes are as long as the scenario's requests and each follows a pause.

    Decode, with ``relative_decode`` (the table was profiled right before the load): over the
    median of the sides' decode speeds, so the profile (every gap between streamed tokens,
    medians of repeated tries) sets the level and the probes only the drift.  A probe's ms per
    token over 24 tokens has a heavy right tail (one in 15 at x2.5 of its neighbours): its
    mean is no level.  Relative to the first probe alone, one slow first probe (x1.19 against
    0.95-1.0 around it) made a 7-user prediction 14-23 % optimistic.  Without
    ``relative_decode``, the sides' own level.

    Probe sets [(1.2, 1.0), (1.2, 1.0), (1.5, 1.0)], [(1.0, 1.0)] * 3, [(1.0, 1.1)] * 3 around
    two segments: sides (1.2, 1.0), (1.0, 1.0), (1.0, 1.1); all nine prompt ratios mean 1.1,
    median 1.0; decode median 1.0.  Factors (1.1 * 1.1, 1.0) and (1.0 * 1.1, 1.05)."""
    if not speeds or any(x is None for x in speeds):
        return []
    sets = [np.asarray(x, dtype=float).reshape(-1, 2) for x in speeds]
    sides = np.array([np.median(x, axis=0) for x in sets])
    every = np.concatenate(sets)
    scale = np.array(
        [
            every[:, 0].mean() / np.median(every[:, 0]),
            1.0 / np.median(sides[:, 1]) if relative_decode else 1.0,
        ]
    )
    mid = (sides[:-1] + sides[1:]) / 2 * scale
    return [(float(a), float(b)) for a, b in mid]


def _segmented(
    scn: Scenario,
    target: Target,
    plan: SegmentPlan,
    before: RetrievalProbe | None,
    probe_search: Callable[[], RetrievalProbe | None],
    calib: dict[str, Any],
) -> tuple[LiveRun, LoadComparison, RetrievalProbe | None]:
    """One load played as ``plan.segments`` live segments with short isolated probes between
    them, the full retrieval probe after the last.

    Why: the host drifts.  On this project's 2-core VM, one-second medians of back-to-back
    searches moved with a standard deviation of 7 % over three minutes with nothing else
    running; 1-2 s probes on both sides of a 60 s load estimated its mean speed with a 4.5 %
    standard deviation (worst 11 %), 1-s probes every 10-15 s with 1.7-2.2 % (worst 4-6 %).
    The LLM server drifts with it: in one run, requests alone during a 4-user load took 5-7 %
    longer than the profile taken right before it said, 12-14 % in its first third.

    Between segments: 150 back-to-back searches (~1 s) where the scenario retrieves, and three
    requests alone to the LLM server, each after a 1-s pause and as long as the scenario's mean
    request (:func:`probe_llm_speed`, ~4.5 s), the same before the first segment and after the
    last.  Each segment is predicted from the searches of the probes on its two sides (wake-up,
    contention and hand-back from the full probes around the whole load) and from the step
    table scaled by the LLM speed of its two sides (prompt and decode separately, see
    :func:`segment_factors`), its ``warmup_s / segments`` cut, with its
    own seed so the segments draw different think times and keys.  Returns the pooled live
    run, the comparison and the retrieval probe after the load."""
    duration_s, warmup_s, drain_s = plan.times
    users, segments = plan.users, plan.segments
    k = scn.retrieval.top_k
    retrieves = scn.retrieval.enabled and target.retrieval is not None
    seg_s, warm = duration_s / segments, warmup_s / segments
    parts: list[LiveRun] = []
    sides: list[np.ndarray | None] = [before.alone_ms if before is not None else None]
    speeds = [_speed(plan.table, target, plan.probe_tokens)]
    seeds = [scn.run.seed + SEGMENT_SEED * j for j in range(segments)]
    for j, seed in enumerate(seeds):
        scn_j = scn.model_copy(update={"run": scn.run.model_copy(update={"seed": seed})})
        parts.append(run_load(scn_j, target, users, seg_s, drain_s, plan.llm_probe["bos_tokens"]))
        if j < segments - 1:
            sides.append(probe_retrieval(target, k, n=150) if retrieves else None)
            speeds.append(_speed(plan.table, target, plan.probe_tokens))
    speeds.append(_speed(plan.table, target, plan.probe_tokens))
    after = probe_search()
    sides.append(after.alone_ms if after is not None else None)
    _r, contention, wakeup_ms, handback_ms = RetrievalProbe.pooled(before, after)
    phases = RetrievalProbe.phases(before, after)
    sched = scheduler_for(target, phases)
    factors = segment_factors(speeds, plan.relative_decode)
    ovs = []
    with tempfile.TemporaryDirectory(prefix="capsim-verify-") as tmp:
        for j, seed in enumerate(seeds):
            got = [x for x in (sides[j], sides[j + 1]) if x is not None]
            r_ms = np.concatenate(got) if got else None
            ov = overrides_for(
                scn,
                target,
                users,
                seg_s,
                warm,
                r_ms,
                plan.llm_probe["overhead_ms"],
                replications=plan.replications,
                contention=contention,
                wakeup_ms=wakeup_ms,
                handback_ms=handback_ms,
                scheduler=sched,
            )
            ov["run.seed"] = seed
            if plan.table is not None and factors:
                f = factors[j]
                path = Path(tmp) / f"steps_{users}users_segment{j}.csv"
                scaled_table(
                    plan.table, path, f[0], f[1], f"{plan.table} scaled by {f[0]:.4f} (prefill), {f[1]:.4f} (decode)"
                )
                ov["llm.step_table"] = str(path)
            ovs.append(ov)
        workers = target.retrieval.workers if target.retrieval else 1
        cmp = compare_segments(parts, scn, ovs, warm, workers)
    alone = [x for x in sides if x is not None]
    if alone:
        every = np.concatenate(alone)
        sides_p50 = [float(np.median(x)) for x in alone]
        calib["retrieval"][str(users)] = {
            **_calib_entry(every, contention, wakeup_ms, handback_ms, sides_p50, phases, sched),
            "segments": segments,
        }
    if factors:
        calib["llm_speed"][str(users)] = {
            "probes_prompt_decode_ratio": [x.tolist() for x in speeds if x is not None],
            "segment_factors_prompt_decode": [list(f) for f in factors],
            "probe_tokens_prompt_output": list(plan.probe_tokens),
            "probe_pause_s": PROBE_PAUSE_S,
            "decode_relative_to_median_side": plan.relative_decode,
        }
    return merged_live(parts, warm), cmp, after


def _calib_entry(
    alone_ms: np.ndarray,
    contention: Sequence[float],
    wakeup_ms: list[tuple[float, float]],
    handback_ms: Sequence[float],
    sides_p50: list[float],
    phases: dict[str, float] | None = None,
    scheduler: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What one load's retrieval prediction was calibrated from, for verify.json (``phases``:
    :meth:`RetrievalProbe.phases`; ``scheduler``: :func:`scheduler_for`'s, None where the
    shared pool and the hand-back stood for the service)."""
    return {
        "isolated_ms": _spread(alone_ms),
        "contention": list(contention),
        "wakeup_ms": wakeup_ms,
        "handback_ms": _spread(handback_ms),
        "p50_before_after_ms": sides_p50,
        "phases_ms": phases,
        "scheduler": scheduler,
    }


def _pairs(target: Target, k: int, probe: RetrievalProbe, probe_s: float, progress) -> dict[str, Any]:
    """The pair probe, measured and as the pool models it, for verify.json."""
    assert target.retrieval is not None
    n = max(4, round(40 * min(probe_s, 1.0)))
    rows = probe_pairs(target, k, n=n)
    cores = len(target.retrieval.cores) or None
    sched = scheduler_for(target, RetrievalProbe.phases(probe, None))
    for row in rows:
        first, second = pair_model(probe, target.retrieval.workers, cores, row["apart_ms"], PAIR_PAUSE_S, sched)
        row.update(model_first_ms=first, model_second_ms=second)
    if progress:
        progress(f"retrieval pairs measured alone ({n} per offset); the table's preamble shows them")
    return {"pause_ms": PAIR_PAUSE_S * 1e3, "pairs_each": n, "rows": rows}


def pair_text(row: dict[str, float]) -> str:
    """One offset of the pair probe: measured (modelled) first / second, ms."""
    return (
        f"{row['apart_ms']:.1f} ms apart {row['first_ms']:.2f}/{row['second_ms']:.2f} "
        f"(model {row['model_first_ms']:.2f}/{row['model_second_ms']:.2f})"
    )


def pair_model(
    probe: RetrievalProbe,
    workers: int,
    cpu_cores: int | None,
    apart_ms: float,
    pause_s: float,
    scheduler: dict[str, float] | None = None,
    n: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    """What capsim's retrieval pool (:class:`sim.engine.pool.WorkerPool`, calibrated from
    ``probe`` as a load's prediction is) says a pair of :func:`~sim.verify.loadgen.probe_pairs`
    takes: medians of the first's and the second's latency, ms, over ``n`` pairs, each
    after ``pause_s`` idle (so the first pays the wake-up) with searches drawn from the
    one-at-a-time probe and hand-backs from its samples; with ``scheduler``
    (:func:`scheduler_for`'s) the threads on one core instead
    (:class:`sim.engine.sched.SchedulerPool`, no hand-back).

    Hand-computed: searches of 4 ms, two workers on one core, no wake-up or hand-back,
    sent 1 ms apart: the first runs alone for 1 ms, then the two share the core, the first's
    3 ms left take 6 and it ends at 7; the second, 3 ms done by then, ends at 8: 7 and 7."""
    import simpy  # deferred: the pool's event loop

    from sim.engine.pool import WorkerPool  # deferred: the simulator's engine
    from sim.engine.sched import SchedulerPool, scheduler_pool

    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    back = list(probe.handback_ms)
    wake = [(x / 1e3, y / 1e3) for x, y in probe.wakeup_ms]
    pool: WorkerPool | SchedulerPool
    if scheduler is None:
        pool = WorkerPool(
            env,
            workers,
            cpu_cores,
            (0.0, math.inf),
            probe.contention,
            wake,
            (lambda: float(rng.choice(back)) / 1e3) if back else None,
        )
    else:
        pool = scheduler_pool(env, workers, (0.0, math.inf), SchedulerSpec(**scheduler), rng, probe.contention, wake)
    alone = np.asarray(probe.alone_ms, dtype=float)
    lat: list[list[float]] = [[], []]

    def one(i: int):
        yield env.timeout(i * apart_ms / 1e3)
        t0 = env.now
        got = env.event()

        def done(_arg: Any) -> None:
            got.succeed()

        pool.acquire(lambda _a: pool.serve(float(rng.choice(alone)) / 1e3, done, None), None)
        yield got
        pool.release(t0, env.now)
        lat[i].append((env.now - t0) * 1e3)

    def pairs():
        for _ in range(n):
            yield env.timeout(pause_s)
            yield env.all_of([env.process(one(0)), env.process(one(1))])

    env.process(pairs())
    env.run()
    return float(np.median(lat[0])), float(np.median(lat[1]))


def _spread(samples: Sequence[float] | np.ndarray) -> dict[str, float] | None:
    """P50, P95 and count of a sample, for the calibration record; None when empty."""
    if not len(samples):
        return None
    return {"p50": float(np.percentile(samples, 50)), "p95": float(np.percentile(samples, 95)), "n": len(samples)}


def _server_vs_table(path: str, alone: dict) -> dict[str, float]:
    """The server's own times for one request alone over what the table says for the same work."""
    t = load_table(path)
    n = alone["prompt_tokens"]
    return {
        "prompt_ratio": alone["prompt_ms"] / t.prefill_ms(n, attention_pairs(n, 0)),
        "decode_ratio_batch1": alone["decode_ms_per_token"] / t.decode_ms(1, n + alone["output_tokens"] / 2),
    }


@dataclass(frozen=True)
class RetrievalProbe:
    """The retrieval service measured alone at one moment (see :mod:`sim.verify.loadgen`)."""

    alone_ms: np.ndarray  # one search at a time, back to back
    contention: tuple[float, ...]  # (1, c2, ..): slow-down with m searches in service at once
    wakeup_ms: list[tuple[float, float]]  # [(idle_ms, extra_ms), ..] for the first search after idle
    handback_ms: list[float] = field(default_factory=list)  # answers waiting for a held core, ms
    search_ms: float | None = None  # median of the service's own search time, one at a time
    loop_cpu_ms: float | None = None  # the service's CPU per request outside the search (loop_cpu_ms)

    @staticmethod
    def phases(a: RetrievalProbe | None, b: RetrievalProbe | None) -> dict[str, float] | None:
        """Where a search's time alone goes, from the probes that report it (averaged): the
        service's own search, its CPU outside the search (parse and answer: an event loop's
        work), and the rest, off the service's cores (the client and the wire): median
        latency alone less the other two: a one-core service's ``retrieval.scheduler``
        (:func:`scheduler_for`).  None when no probe has both."""
        got = [p for p in (a, b) if p is not None and p.search_ms is not None and p.loop_cpu_ms is not None]
        if not got:
            return None
        search = float(np.mean([p.search_ms for p in got]))
        loop = float(np.mean([p.loop_cpu_ms for p in got]))
        alone = float(np.mean([np.median(p.alone_ms) for p in got]))
        return {"search_ms": search, "loop_cpu_ms": loop, "off_core_ms": alone - search - loop}

    @staticmethod
    def pooled(
        a: RetrievalProbe | None, b: RetrievalProbe | None
    ) -> tuple[np.ndarray | None, tuple[float, ...], list[tuple[float, float]], list[float]]:
        """Two probes taken as one: the searches together, contention and wake-up averaged
        point by point (both probes use the same m and the same idle gaps), the hand-back
        samples together (none unless both have them)."""
        got = [p for p in (a, b) if p is not None]
        if not got:
            return None, (), [], []
        alone = np.concatenate([p.alone_ms for p in got])
        cont = tuple(float(np.mean(c)) for c in zip(*(p.contention for p in got)))
        wake = [(pts[0][0], float(np.mean([e for _, e in pts]))) for pts in zip(*(p.wakeup_ms for p in got))]
        back = [x for p in got for x in p.handback_ms] if all(p.handback_ms for p in got) else []
        return alone, cont, wake, back


@dataclass(frozen=True)
class ServerProfile:
    """``--profile-llm``: profile the server alone before every load (:mod:`sim.verify.step_profile`)."""

    folder: Path  # where the per-load tables are written
    npp: tuple[int, ...] = (64, 192)
    ntg: int = 24
    repeat: int = 3

    def table(self, target: Target, users: int, progress=None, replay: bool = False) -> str:
        npl = profile_batches(target.llm_endpoint().parallel)
        rows = profile_server(target, list(self.npp), self.ntg, npl, self.repeat)
        mixed = profile_mixed(target, max(self.npp), npl[:-1], self.repeat)
        path = self.folder / f"steps_{users}users{'_replay' if replay else ''}.csv"
        beside = "/".join(map(str, npl[:-1])) or "0"
        write_table(
            step_rows(rows) + mixed,
            path,
            describe(target, list(self.npp), self.ntg, npl, self.repeat)
            + f"; mixed steps: {max(self.npp)}-token prompt beside {beside} decoders",
        )
        if progress:
            dec = ", ".join(f"b{r['b']} {r['t_tg_s'] / r['tg'] * 1e3:.1f}" for r in rows if r["pp"] == rows[0]["pp"])
            progress(f"{users} users: server profiled alone -> {path.name} (decode step ms: {dec})")
        return str(path.resolve())


def verify(
    scn: Scenario,
    target: Target,
    users: list[int],
    duration_s: float,
    warmup_s: float,
    drain_s: float = 60.0,
    replications: int = 5,
    progress=None,
    profile: ServerProfile | None = None,
    probe_s: float = 1.0,
    segments: int = 1,
    confirm: bool = False,
) -> tuple[list[LoadComparison], dict[str, Any], list[LiveRun]]:
    """Probe (isolated), then for every load: play it for real and simulate it; compare.

    With ``profile``, the LLM server is profiled alone right before every load and that
    load is predicted from its own profile (a calibration minutes old on a shared machine
    is not the machine that serves the load).  With ``confirm``, a load with a row outside its
    bound is played once more, re-profiled and re-probed, and the two plays are merged by
    :func:`confirmed` (the first play's calibration under ``calib["first_attempt"]``); the
    live requests of both plays are returned, the replay's with ``attempt`` 1."""
    llm_on = scn.llm.enabled
    if not llm_on and not scn.retrieval.enabled:
        raise CapsimError("verify needs llm.enabled or retrieval.enabled: there is no stage to hold against a server")
    if llm_on and scn.llm.step_table is None and profile is None:
        raise CapsimError(
            "llm.step_table: verify needs a measured step table; run `capsim calibrate llm` first or pass --profile-llm"
        )
    if scn.workload.mode != "closed":
        raise CapsimError("workload.mode: verify plays closed-loop users; set mode: closed")
    if scn.retrieval.enabled and target.retrieval is None:
        raise CapsimError("--target: the scenario retrieves (retrieval.enabled) but the target has no retrieval.url")
    if llm_on:
        target.llm_endpoint()  # a one-line error now, before anything is sent
    plays = len(users) * (2 if confirm else 1)
    budget_s = RUN_SETUP_S + plays * (duration_s + drain_s + RUN_PER_LOAD_S)
    before_deadline = RunDeadline.at
    RunDeadline.at = time.monotonic() + budget_s
    try:
        times = (duration_s, warmup_s, drain_s)
        return _verify(scn, target, users, times, replications, progress, profile, probe_s, segments, confirm)
    except EndpointError as e:  # a probe's request failed: the target's fault, said as such
        raise CapsimError(str(e)) from None
    finally:
        RunDeadline.at = before_deadline


#: The deadline of a whole verify run, a net under every request's own: the set-up's
#: probes and profile, then per play of a load its live run and drain plus its probes.
RUN_SETUP_S = 900.0
RUN_PER_LOAD_S = 900.0


def _verify(
    scn: Scenario,
    target: Target,
    users: list[int],
    times: tuple[float, float, float],
    replications: int,
    progress: Any,
    profile: ServerProfile | None,
    probe_s: float,
    segments: int,
    confirm: bool,
) -> tuple[list[LoadComparison], dict[str, Any], list[LiveRun]]:
    duration_s, warmup_s, drain_s = times
    llm_on = scn.llm.enabled
    retrieves = scn.retrieval.enabled and target.retrieval is not None
    check_reachable(target)
    table = (profile.table(target, users[0], progress) if profile else str(scn.llm.step_table)) if llm_on else None
    probe: dict[str, Any] = probe_llm(target) if llm_on else {"overhead_ms": 0.0, "bos_tokens": 0, "server_alone": None}
    k = scn.retrieval.top_k

    def probe_search() -> RetrievalProbe | None:
        """Retrieval alone: one at a time, m at once, after idle spells (seconds)."""
        if not retrieves:
            return None
        own: list[float | None] = []
        cpu: list[float | None] = []
        r_ms = probe_retrieval(target, k, server=own, cpu=cpu)
        wake = probe_wakeup(target, k, train_s=probe_s)
        contention, handback = probe_contention(target, k, r_ms, alone_server_ms=own, alone_cpu_ms=cpu)
        reported = [x for x in own if x is not None]
        search = float(np.median(reported)) if reported and len(reported) == len(own) else None
        return RetrievalProbe(r_ms, contention, wake, handback, search, loop_cpu_ms(cpu, own))

    calib: dict[str, Any] = {
        "llm_overhead_ms": probe["overhead_ms"] if llm_on else None,
        "llm_server_clock": probe["server_clock"] if llm_on else None,
        "llm_bos_tokens": probe["bos_tokens"] if llm_on else None,
        "step_table": table if profile is None else "profiled alone before every load (--profile-llm)",
        "step_tables": {},
        "server_alone_vs_table": _server_vs_table(table, probe["server_alone"]) if table else None,
        "retrieval": {},
        "llm_speed": {},
    }
    workers = target.retrieval.workers if target.retrieval else 1
    # Speed probes as long as the scenario's mean request (the prefill law is a least-squares
    # fit over every profiled row, a few % off at a given length): ids sent, less the BOS.
    probe_tokens = (
        max(1, round(mean_prompt_tokens(scn)) - int(probe["bos_tokens"])),
        max(1, round(mean_output_tokens(scn))),
    )
    before = probe_search()
    if before is not None and workers > 1:
        calib["retrieval_pairs"] = _pairs(target, k, before, probe_s, progress)

    def play(n: int, profiled: bool, attempt: int) -> tuple[LiveRun, LoadComparison]:
        """One load, live and simulated; ``profiled``: the table is this load's (else profile now)."""
        nonlocal table, before
        if llm_on and profile is not None and not profiled:
            table = profile.table(target, n, progress, replay=attempt > 0)
        calib["step_tables"][str(n)] = table
        again = " (replay)" if attempt else ""
        if segments > 1:
            if progress:
                progress(f"{n} users{again}: live load for {duration_s:.0f} s in {segments} segments, probed between")
            plan = SegmentPlan(
                n,
                (duration_s, warmup_s, drain_s),
                replications,
                segments,
                probe,
                table,
                profile is not None,
                probe_tokens,
            )
            live, cmp, before = _segmented(scn, target, plan, before, probe_search, calib)
            return replace(live, attempt=attempt), cmp
        if progress:
            progress(f"{n} users{again}: live load for {duration_s:.0f} s")
        live = run_load(scn, target, n, duration_s, drain_s, probe["bos_tokens"])
        after = probe_search()
        # The probes on both sides of the load, pooled: the service drifts by as much as
        # the errors verify is after (one-at-a-time medians 5.7-7.0 ms between loads here),
        # and a load is best described by the isolated measurements that bracket it.
        r_ms, contention, wakeup_ms, handback_ms = RetrievalProbe.pooled(before, after)
        sides = [float(np.median(p.alone_ms)) for p in (before, after) if p is not None]
        phases = RetrievalProbe.phases(before, after)
        sched = scheduler_for(target, phases)
        before = after
        if r_ms is not None:
            calib["retrieval"][str(n)] = _calib_entry(r_ms, contention, wakeup_ms, handback_ms, sides, phases, sched)
        ov = overrides_for(
            scn,
            target,
            n,
            duration_s,
            warmup_s,
            r_ms,
            probe["overhead_ms"],
            replications,
            contention,
            wakeup_ms,
            handback_ms,
            sched,
        )
        if table:
            ov["llm.step_table"] = table
        if progress:
            progress(f"{n} users{again}: simulating")
        return replace(live, attempt=attempt), compare_one(live, scn, ov, warmup_s, workers)

    out, lives = [], []
    for i, n in enumerate(users):
        live, cmp = play(n, i == 0, 0)
        lives.append(live)
        if confirm and cmp.misses and not cmp.too_many_failures:
            if progress:
                progress(f"{n} users: outside ({'; '.join(cmp.misses)}): playing the load again, re-probed")
            # the first play's per-load calibration, before the replay writes its own
            first_calib = {k: calib[k].pop(str(n)) for k in PER_LOAD_CALIBRATION if str(n) in calib[k]}
            # Probed afresh on both sides: the probe after the first play would otherwise open the
            # replay too, and one odd probe would put both plays outside (README, "--confirm").
            before = probe_search()
            live, again = play(n, False, 1)
            lives.append(live)
            cmp = confirmed(cmp, again)
            calib.setdefault("first_attempt", {})[str(n)] = first_calib
        out.append(cmp)
    return out, calib, lives
