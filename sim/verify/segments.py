"""A load played in segments with isolated probes between them: each segment predicted from the
probes on its two sides (the LLM's step table scaled by the server's speed there), the segments'
windows pooled for the measurement and for the prediction, and each figure's error per segment
(how far the load reproduces itself, :func:`sim.verify.verdict.error_interval`)."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.analysis.stats import t_interval
from sim.engine.digest import metric_values
from sim.physics.steptable import scaled_table
from sim.run.sweep import simulate
from sim.spec.schema import Scenario
from sim.spec.target import Target
from sim.verify.compare import compared_metrics, load_comparison, overrides_for
from sim.verify.loadgen import (
    LiveRun,
    run_load,
)
from sim.verify.measured import finite_interval, live_values, measured_stats, window_rates
from sim.verify.probes import (
    PROBE_PAUSE_S,
    LLMProbe,
    probe_llm_speed,
    probe_retrieval,
    server_vs_table,
)
from sim.verify.retrieval_probe import RetrievalProbe, calibration_entry, scheduler_for
from sim.verify.verdict import (
    BOUNDS,
    RETRIEVAL_BOUNDS,
    STATS,
    LoadComparison,
    compared_row,
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
        "ci": finite_interval(t_interval(rates)) if len(parts) >= 2 else [None, None],
        "utilization": util,
    }


def compare_segments(
    parts: Sequence[LiveRun], scn: Scenario, ovs: Sequence[dict[str, Any]], warmup_s: float, workers: int
) -> LoadComparison:
    """:func:`~sim.verify.compare.compare_one` for a load played as segments, each predicted from its own overrides
    (the probes on its two sides; its own seed, ``run.seed`` in them, replayed by the live
    segment).  Measured: the segments' windows pooled.  Predicted: per replication, the
    segments' windows pooled; replication 0 (common random numbers) is the prediction, the
    t interval over replications its interval."""
    live = merged_live(parts, warmup_s)
    meas = measured_stats(live, 0.0, workers, rates=segment_rates(parts, warmup_s, workers))
    runs = [simulate(scn, {**ov, "run.records": True}, jobs=1).points[0] for ov in ovs]  # per-request pooling
    metric_names = compared_metrics(scn)
    pool = _pool(runs, metric_names)
    reps = len(pool.done_by_rep)
    window = float(sum(pool.spans))
    thr = [sum(by_seg) / window for by_seg in pool.done_by_rep]
    bounds = BOUNDS if scn.llm.enabled else RETRIEVAL_BOUNDS
    live_each = [live_values(p, warmup_s, p.duration_s) for p in parts]
    rows = []
    for m in metric_names:
        if m not in meas:
            continue
        for st in STATS:
            q = float(st[1:])
            per = [float(np.percentile(v, q)) if len(v) else float("nan") for v in pool.pooled[m]]
            ci = list(t_interval(per)) if reps >= 2 and all(math.isfinite(x) for x in per) else None
            errs = segment_errors([metric_values(x, m) for x in pool.first], [v[m] for v in live_each], q)
            pred_m = per[0] if math.isfinite(per[0]) else None
            rows.append(compared_row(m, st, meas[m][st], pred_m, ci, bounds, meas["ci"][m][st], errs))
    thr_each = [c / s for c, s in zip(pool.done_by_rep[0], pool.spans)]
    thr_live = [window_rates(p, warmup_s, p.duration_s, workers)["throughput_per_s"] for p in parts]
    rows.append(
        compared_row(
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
        "n": len(pool.pooled["e2e_ms"][0]),
        "segments": len(parts),
    }
    return load_comparison(live, rows, meas, pred)


@dataclass
class _Pool:
    """The segments' simulated windows, pooled per replication: each metric's values (one array a
    replication), replication 0's windowed records per segment (each segment's own prediction),
    the requests that finished inside each window (per replication, per segment) and the
    windows' lengths (s)."""

    pooled: dict[str, list[np.ndarray]]
    first: list[dict[str, np.ndarray]]
    done_by_rep: list[list[int]]
    spans: list[float]


def _pool(runs: Sequence[Any], metric_names: Sequence[str]) -> _Pool:
    """Pool the simulated segments' windows, replication by replication (as many as every segment has)."""
    reps = min(len(pt.replications) for pt in runs)
    pool = _Pool({m: [] for m in metric_names}, [], [], [])
    for r in range(reps):
        recs, done = [], []
        for pt in runs:
            rep = pt.replications[r]
            lo, hi = rep.window_s
            a = rep.records["arrival_s"]
            recs.append({k: v[(a >= lo) & (a < hi)] for k, v in rep.records.items()})
            end = a + rep.records["e2e_ms"] / 1e3
            done.append(int(((end >= lo) & (end < hi)).sum()))
            if r == 0:
                pool.spans.append(hi - lo)
        for m in metric_names:
            pool.pooled[m].append(np.concatenate([metric_values(x, m) for x in recs]))
        pool.done_by_rep.append(done)
        if r == 0:
            pool.first = recs
    return pool


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
    llm_probe: LLMProbe  # probe_llm's: overhead_ms, bos_tokens
    table: str | None  # the load's step table (LLM on)
    relative_decode: bool  # the table was profiled right before the load: it sets the decode level
    probe_tokens: tuple[int, int]  # prompt and output tokens of each speed probe (the scenario's means)


def _speed(table: str | None, target: Target, tokens: tuple[int, int]) -> np.ndarray | None:
    """The LLM server's speed now against the table, isolated: one (prompt ratio, decode ratio)
    row per probe request, each sent after a pause (:data:`~sim.verify.probes.PROBE_PAUSE_S`)."""
    if table is None:
        return None
    got = probe_llm_speed(target, prompt_tokens=tokens[0], output_tokens=tokens[1], pause_s=PROBE_PAUSE_S)
    rows = []
    for t in got["tries"]:
        r = server_vs_table(table, {**t, "output_tokens": tokens[1]})
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


def _play_parts(
    scn: Scenario, target: Target, plan: SegmentPlan, before: RetrievalProbe | None, seeds: list[int]
) -> tuple[list[LiveRun], list[np.ndarray | None], list[np.ndarray | None]]:
    """Play the live segments, one a seed, with 150 searches alone and an LLM speed probe between
    two (and the speed probed before the first and after the last): the segments, the searches
    alone on each side (the last side still to come) and the speeds."""
    duration_s, _warmup_s, drain_s = plan.times
    retrieves = scn.retrieval.enabled and target.retrieval is not None
    parts: list[LiveRun] = []
    sides: list[np.ndarray | None] = [before.alone_ms if before is not None else None]
    speeds = [_speed(plan.table, target, plan.probe_tokens)]
    for j, seed in enumerate(seeds):
        scn_j = scn.model_copy(update={"run": scn.run.model_copy(update={"seed": seed})})
        parts.append(
            run_load(scn_j, target, plan.users, duration_s / plan.segments, drain_s, plan.llm_probe["bos_tokens"])
        )
        if j < plan.segments - 1:
            sides.append(probe_retrieval(target, scn.retrieval.top_k, n=150) if retrieves else None)
            speeds.append(_speed(plan.table, target, plan.probe_tokens))
    speeds.append(_speed(plan.table, target, plan.probe_tokens))
    return parts, sides, speeds


@dataclass
class _Probed:
    """What the probes around and between the segments say: the searches alone on each side,
    contention, wake-up and hand-back (the full probes pooled), the scheduler they imply, and
    each segment's step-table factors."""

    sides: list[np.ndarray | None]
    contention: tuple[float, ...]
    wakeup_ms: list[tuple[float, float]]
    handback_ms: list[float]
    scheduler: dict[str, float] | None
    factors: list[tuple[float, float]]


def _segment_overrides(
    scn: Scenario, target: Target, plan: SegmentPlan, seeds: list[int], probed: _Probed, tmp: Path
) -> list[dict[str, Any]]:
    """Each segment's prediction overrides: from the searches on its two sides, its own seed,
    and its scaled step table (written under ``tmp``)."""
    ovs = []
    for j, seed in enumerate(seeds):
        got = [x for x in (probed.sides[j], probed.sides[j + 1]) if x is not None]
        ov = overrides_for(
            scn,
            target,
            plan.users,
            plan.times[0] / plan.segments,
            plan.times[1] / plan.segments,
            np.concatenate(got) if got else None,
            plan.llm_probe["overhead_ms"],
            replications=plan.replications,
            contention=probed.contention,
            wakeup_ms=probed.wakeup_ms,
            handback_ms=probed.handback_ms,
            scheduler=probed.scheduler,
        )
        ov["run.seed"] = seed
        if plan.table is not None and probed.factors:
            ov["llm.step_table"] = _scaled_segment_table(plan.table, tmp, plan.users, j, probed.factors[j])
        ovs.append(ov)
    return ovs


def _scaled_segment_table(table: str, tmp: Path, users: int, j: int, f: tuple[float, float]) -> str:
    """Segment ``j``'s step table: ``table`` scaled by its (prefill, decode) factors, written under ``tmp``."""
    path = tmp / f"steps_{users}users_segment{j}.csv"
    scaled_table(table, path, f[0], f[1], f"{table} scaled by {f[0]:.4f} (prefill), {f[1]:.4f} (decode)")
    return str(path)


def play_segmented(
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
    request (:func:`~sim.verify.probes.probe_llm_speed`, ~4.5 s), the same before the first segment and after the
    last.  Each segment is predicted from the searches of the probes on its two sides (wake-up,
    contention and hand-back from the full probes around the whole load) and from the step
    table scaled by the LLM speed of its two sides (prompt and decode separately, see
    :func:`segment_factors`), its ``warmup_s / segments`` cut, with its
    own seed so the segments draw different think times and keys.  Returns the pooled live
    run, the comparison and the retrieval probe after the load."""
    users, segments = plan.users, plan.segments
    seeds = [scn.run.seed + SEGMENT_SEED * j for j in range(segments)]
    parts, sides, speeds = _play_parts(scn, target, plan, before, seeds)
    after = probe_search()
    sides.append(after.alone_ms if after is not None else None)
    _r, contention, wakeup_ms, handback_ms = RetrievalProbe.pooled(before, after)
    phases = RetrievalProbe.phases(before, after)
    sched = scheduler_for(target, phases)
    factors = segment_factors(speeds, plan.relative_decode)
    warm = plan.times[1] / segments
    with tempfile.TemporaryDirectory(prefix="capsim-verify-") as tmp:
        probed = _Probed(sides, contention, wakeup_ms, handback_ms, sched, factors)
        ovs = _segment_overrides(scn, target, plan, seeds, probed, Path(tmp))
        workers = target.retrieval.workers if target.retrieval else 1
        cmp = compare_segments(parts, scn, ovs, warm, workers)
    alone = [x for x in sides if x is not None]
    if alone:
        every = np.concatenate(alone)
        sides_p50 = [float(np.median(x)) for x in alone]
        calib["retrieval"][str(users)] = {
            **calibration_entry(every, contention, wakeup_ms, handback_ms, sides_p50, phases, sched),
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
