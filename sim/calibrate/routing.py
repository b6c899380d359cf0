"""Measure fuzzy routing (latency and outcome) and write a calibration file.

Picture: for each canonical-set size N (default 50, 100, 200, 400) the first N
questions of a seeded shuffle of ``canonical_questions.txt`` are the router's
targets (so the sets are nested), and ``make_utterances`` generates shopper
texts from exactly those N questions (plus off-topic ones).  Every utterance
is routed one at a time with :func:`edit_distance.route` and each call is
timed with ``time.perf_counter_ns`` (normalisation included; garbage
collector off during the timed loop; untimed warm-up calls first).  Each
call's process CPU time (``time.process_time_ns``) is recorded too.

Schedule: all (impl, size) configurations are built first and then timed
*interleaved* -- each configuration's calls are cut into ``rounds`` chunks and
every round runs one chunk of every configuration, in a seeded random order
(:func:`time_interleaved`).  A first version timed the sizes one after the
other; another process took about half the CPU during the N=50/100 records
only (CPU share 0.5-0.65 vs 1.0), which inflated the small sizes by ~1.6x
and bent the fitted law.  Interleaving spreads such bursts over all sizes.

* ``rapidfuzz`` (``extractOne`` with the threshold as ``score_cutoff``) and
  ``rapidfuzz_nocutoff`` (every question scored in full, the threshold
  applied afterwards) -- timed on all N questions and all utterances, in
  ``rapidfuzz_passes`` passes (the pass means show the run-to-run noise).
* ``two_row`` and ``numpy_table`` (pure Python / numpy scalar loops, no
  pruning) -- too slow for the full grid, so, like the retrieval harness, each
  is timed on a random subsample of ``k = min(N, slow_max_questions)``
  questions and the first ``slow_utterances`` utterances, and every latency is
  multiplied by ``scale = sum_{q in set} len(q) / sum_{q in subsample} len(q)``
  (the cost is linear in the characters scanned; this is ``N/k`` up to the
  mean question length of the subsample).  The record keeps ``timed_questions``,
  ``timed_utterances``, ``scale_factor``.  A ``scaling_check`` times them once
  on a full set and compares with the scaled estimate for the same utterances.

Scaling law, per implementation: ``t = a + b * x`` with
``x = len(u) * sum_{q in set} len(q)`` (DP cells; ``len`` after
normalisation), fitted

* across sizes: ``x`` = mean over the utterances, ``t`` = mean and the
  p50/p90/p95/p99 latencies (scaled where subsampled), least squares, ``r2``;
* per utterance: every timed call (unscaled, against the set it was timed
  on) -- the honest ``r2`` for the subsampled impls, whose across-size points
  are scaled copies of subsample timings.

Routing outcome at the chosen threshold (``rapidfuzz`` on the full set; all
three impls give the same answer, checked on the subsample as
``agreement_with_rapidfuzz``): for utterances made from a canonical question,
the share routed to it (correct), to another question (wrong) or to none;
for off-topic ones the share rejected.  Also a threshold sweep (one
``extractOne`` without cutoff per utterance), a typo-rate sweep at the
largest size, and the cache-key cardinality that motivates routing.

Noise: another process may share the CPU.  Recorded: load average at start
and end, a fixed probe workload timed ``noise_probe_repeats`` times at start
and end (median, min, max, coefficient of variation), and for every record the
process CPU time / wall time over its timed loop (1.0 = never descheduled).
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.calibrate.edit_distance import DEFAULT_THRESHOLD, IMPLS, nearest, route, two_row
from sim.calibrate.machine import cpu_model, loadavg, run_header, usable_cores
from sim.calibrate.retrieval import fit_law  # one least-squares law for every calibration
from sim.calibrate.utterances import Utterance, load_questions, make_utterances, normalize
from sim.files import atomic_write_text

VERSION = 1
KIND = "capsim.routing_calibration"
HERE = Path(__file__).resolve().parent
DEFAULT_QUESTIONS = HERE.parent / "data" / "canonical_questions.txt"
#: Quantile probabilities stored per record: 0 (min), 0.01 .. 0.99, 1 (max).
PROBS: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))
HEADLINE = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
LAW = "t_ms = a + b*x, x = len(u) * sum_q len(q) (DP cells per routed utterance)"
WARMUP = 5
DEFAULT_SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
DEFAULT_TYPO_SWEEP = (0.03, 0.06, 0.1, 0.15)

Progress = Callable[[str], None]


# --------------------------------------------------------------------------
# helpers


def _g(v: float, digits: int = 5) -> float:
    return float(f"{v:.{digits}g}")


def machine_description() -> dict[str, Any]:
    """Platform, CPU model, core counts, Python / numpy / rapidfuzz versions."""
    try:
        import rapidfuzz  # deferred: only to record its version

        rf: str | None = rapidfuzz.__version__
    except ImportError:
        rf = None
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity_count": usable_cores(),
        "versions": {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "numpy": np.__version__,
            "rapidfuzz": rf,
        },
    }


def time_calls(fn: Callable[[int], Any], n: int, warmup: int = WARMUP) -> tuple[np.ndarray, float, list[Any]]:
    """Call ``fn(i)`` for ``i = 0..n-1`` (after ``warmup`` untimed calls on
    the first items), each timed with ``perf_counter_ns``.  Returns latencies
    in ms, the CPU share (process CPU time / wall time of the timed loop) and
    the results."""
    for i in range(min(warmup, n)):
        fn(i)
    lat = np.empty(n, dtype=np.int64)
    out: list[Any] = []
    was = gc.isenabled()
    gc.disable()
    try:
        c0, w0 = time.process_time_ns(), time.perf_counter_ns()
        for i in range(n):
            t0 = time.perf_counter_ns()
            r = fn(i)
            lat[i] = time.perf_counter_ns() - t0
            out.append(r)
        c1, w1 = time.process_time_ns(), time.perf_counter_ns()
    finally:
        if was:
            gc.enable()
    return lat / 1e6, (c1 - c0) / max(w1 - w0, 1), out


def _summary(lat_ms: np.ndarray) -> dict[str, Any]:
    q = np.quantile(lat_ms, PROBS)
    q = np.maximum.accumulate(q)
    d: dict[str, Any] = {k: _g(float(np.quantile(lat_ms, p))) for k, p in HEADLINE.items()}
    d["mean_ms"] = _g(float(lat_ms.mean()))
    d["min_ms"] = _g(float(lat_ms.min()))
    d["max_ms"] = _g(float(lat_ms.max()))
    d["values_ms"] = [_g(float(v)) for v in q]
    return d


@dataclass
class TimedConfig:
    """One timed configuration: ``fn(i)`` for ``i = 0..n_calls-1``, routed
    against ``targets``.  Filled by :func:`time_interleaved`."""

    key: tuple[str, str, int]
    n_calls: int
    fn: Callable[[int], Any]
    targets: Sequence[str]
    timed_questions: int
    lat_ns: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cpu_ns: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    results: list[Any] = field(default_factory=list)
    wall_total_ns: int = 0
    cpu_total_ns: int = 0

    def lat_ms(self) -> np.ndarray:
        return self.lat_ns / 1e6

    def cpu_ms(self) -> np.ndarray:
        return self.cpu_ns / 1e6

    def cpu_share(self) -> float:
        return self.cpu_total_ns / max(self.wall_total_ns, 1)


def time_interleaved(
    configs: Sequence[TimedConfig], rounds: int, rng: np.random.Generator, tick: Progress | None = None
) -> None:
    """Time every config's calls, interleaved: calls are split into ``rounds``
    contiguous chunks; in each round every config runs its chunk, configs in a
    random order.  Each config gets ``WARMUP`` untimed calls before its first
    chunk and 1 before every later one.  Per call: wall time
    (``perf_counter_ns``) and process CPU time (``process_time_ns``, taken
    outside the wall-clock pair).  Garbage collection is off while timing."""
    rounds = max(int(rounds), 1)
    chunks = [np.array_split(np.arange(c.n_calls), rounds) for c in configs]
    for c in configs:
        c.lat_ns = np.zeros(c.n_calls, dtype=np.int64)
        c.cpu_ns = np.zeros(c.n_calls, dtype=np.int64)
        c.results = [None] * c.n_calls
        c.wall_total_ns = c.cpu_total_ns = 0
    pc, pt = time.perf_counter_ns, time.process_time_ns
    was = gc.isenabled()
    try:
        for r in range(rounds):
            for j in rng.permutation(len(configs)):
                c, idx = configs[int(j)], chunks[int(j)][r]
                if idx.size == 0:
                    continue
                for i in range(WARMUP if r == 0 else 1):
                    c.fn(int(idx[i % idx.size]))
                gc.disable()
                lat, cpu, res, fn = c.lat_ns, c.cpu_ns, c.results, c.fn
                cw0, ww0 = pt(), pc()
                for i in idx.tolist():
                    u0 = pt()
                    t0 = pc()
                    out = fn(i)
                    t1 = pc()
                    u1 = pt()
                    lat[i] = t1 - t0
                    cpu[i] = u1 - u0
                    res[i] = out
                ww1, cw1 = pc(), pt()
                if was:
                    gc.enable()
                c.wall_total_ns += ww1 - ww0
                c.cpu_total_ns += cw1 - cw0
            if tick:
                tick(f"round {r + 1}/{rounds} timed")
    finally:
        if was:
            gc.enable()


def noise_probe(questions: Sequence[str], repeats: int) -> dict[str, Any]:
    """Time a fixed workload (``two_row`` over 30 fixed question pairs)
    ``repeats`` times; median/min/max in ms and coefficient of variation."""
    pairs = [(questions[i], questions[(i * 7 + 3) % len(questions)]) for i in range(min(30, len(questions)))]
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter_ns()
        for a, b in pairs:
            two_row(a, b)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    t = np.asarray(times)
    return {
        "workload": f"two_row on {len(pairs)} fixed question pairs",
        "repeats": len(times),
        "median_ms": _g(float(np.median(t))),
        "min_ms": _g(float(t.min())),
        "max_ms": _g(float(t.max())),
        "cv": round(float(t.std() / t.mean()), 4) if t.mean() > 0 else 0.0,
    }


def outcome(utts: Sequence[Utterance], routed: Sequence[int]) -> dict[str, Any]:
    """Routing outcome shares.  Matched utterances (label >= 0): ``correct``
    (routed to their label), ``wrong`` (another question), ``none``
    (rejected).  Off-topic (label -1): ``rejected`` / ``false_route``.
    ``decision_accuracy`` = (correct + rejected off-topic) / all."""
    c = w = no = rej = fr = 0
    for u, r in zip(utts, routed, strict=True):
        if u.canonical >= 0:
            if r == u.canonical:
                c += 1
            elif r < 0:
                no += 1
            else:
                w += 1
        elif r < 0:
            rej += 1
        else:
            fr += 1
    m, o = c + w + no, rej + fr
    return {
        "matched": m,
        "off_topic": o,
        "correct": round(c / m, 4) if m else None,
        "wrong": round(w / m, 4) if m else None,
        "none": round(no / m, 4) if m else None,
        "off_topic_rejected": round(rej / o, 4) if o else None,
        "off_topic_false_route": round(fr / o, 4) if o else None,
        "decision_accuracy": round((c + rej) / (m + o), 4) if m + o else None,
        "counts": {"correct": c, "wrong": w, "none": no, "off_topic_rejected": rej, "off_topic_false_route": fr},
    }


def _lru_hit_rate(keys: Sequence[str], capacity: int) -> float:
    d: OrderedDict[str, None] = OrderedDict()
    hits = 0
    for k in keys:
        if k in d:
            hits += 1
            d.move_to_end(k)
        else:
            d[k] = None
            if len(d) > capacity:
                d.popitem(last=False)
    return hits / len(keys) if keys else 0.0


def key_cardinality(
    questions: Sequence[str],
    n: int,
    rng: np.random.Generator,
    threshold: float | int,
    zipf_s: float,
    capacities: Sequence[int],
    gen_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Cache keys a stream of ``n`` utterances produces, popularity Zipf
    (``weight_k ~ 1/(k+1)^zipf_s``), three ways: the raw text, ``normalize(text)``,
    and routed (the canonical question when routed, else ``normalize(text)``).
    Reports distinct keys, the repeat rate ``1 - distinct/n`` (hit rate of an
    unbounded cache) and the hit rate of an LRU of each capacity."""
    w = 1.0 / np.arange(1, len(questions) + 1) ** zipf_s
    utts = make_utterances(questions, n, rng, weights=w, **gen_kwargs)
    raw = [u.text for u in utts]
    norm = [normalize(t) for t in raw]
    routed = []
    for t, k in zip(raw, norm, strict=True):
        i, _ = route(t, questions, "rapidfuzz", threshold)
        routed.append(questions[i] if i >= 0 else k)
    canon = [questions[u.canonical] if u.canonical >= 0 else normalize(u.text) for u in utts]
    out: dict[str, Any] = {
        "questions": len(questions),
        "utterances": n,
        "zipf_s": zipf_s,
        "threshold": threshold,
        "capacities": list(capacities),
    }
    for name, keys in (("raw_text", raw), ("normalized", norm), ("routed", routed), ("ideal_canonical", canon)):
        distinct = len(set(keys))
        out[name] = {
            "distinct_keys": distinct,
            "unbounded_hit_rate": round(1 - distinct / n, 4) if n else 0.0,
            "lru_hit_rate": {str(c): round(_lru_hit_rate(keys, c), 4) for c in capacities},
        }
    return out


# --------------------------------------------------------------------------
# the harness


def _law_entry(f: dict[str, float], **extra: Any) -> dict[str, Any]:
    """A fitted ``a + b * cells`` law as the calibration file writes it."""
    return {
        "a_ms": _g(f["a"]),
        "b_ms_per_cell": _g(f["b"]),
        "ns_per_cell": _g(f["b"] * 1e6),
        "r2": round(f["r2"], 4),
        **extra,
    }


def _impl_fits(
    ix: str, records: list[dict[str, Any]], per_utt: list[tuple[float, float]], per_utt_cpu: list[tuple[float, float]]
) -> dict[str, Any]:
    """One implementation's laws over the set sizes (mean, headline percentiles, CPU time) and
    over every timed call pooled."""
    recs = sorted((r for r in records if r["impl"] == ix), key=lambda r: r["questions"])
    x = [r["mean_cells"] for r in recs]
    entry: dict[str, Any] = {"impl": ix, "law": LAW, "questions": [r["questions"] for r in recs], "x": x}
    for key in ("mean_ms", *HEADLINE):
        f = fit_law(x, [r[key] for r in recs])
        entry[key] = _law_entry(f, max_rel_err=round(f["max_rel_err"], 4))
    f = fit_law(x, [r["cpu_time"]["mean_ms"] for r in recs])
    entry["cpu_time_mean_ms"] = _law_entry(f, max_rel_err=round(f["max_rel_err"], 4))
    pu = np.asarray(per_utt)
    entry["per_utterance_pooled"] = _law_entry(
        fit_law(pu[:, 0], pu[:, 1]),
        points=int(pu.shape[0]),
        note="every timed call, unscaled, x against the set it was timed on",
    )
    pc = np.asarray(per_utt_cpu)
    entry["per_utterance_pooled_cpu_time"] = _law_entry(fit_law(pc[:, 0], pc[:, 1]), points=int(pc.shape[0]))
    return entry


def _normalize_cost(texts: list[str]) -> dict[str, Any]:
    """What ``normalize()`` alone costs (part of every routed call)."""
    nl, _, _ = time_calls(lambda i: normalize(texts[i], placeholder=""), len(texts))
    return {"calls": len(texts), "mean_us": _g(float(nl.mean() * 1e3)), "p50_us": _g(float(np.median(nl) * 1e3))}


def _typo_sweep(
    canon: list[str],
    typo_rates: Sequence[float],
    n_utterances: int,
    seed: int,
    threshold: float | int,
    gen_kwargs: dict[str, Any],
) -> dict[str, Any]:
    """Routing outcome at each typo rate, on ``canon`` (the largest set): the file's ``typo_sweep``."""
    out = []
    for tr in typo_rates:
        kw = dict(gen_kwargs, typo_rate=tr)
        us = make_utterances(canon, n_utterances, np.random.default_rng([seed, 3, int(tr * 1e6)]), **kw)
        o = outcome(us, [route(u.text, canon, "rapidfuzz", threshold)[0] for u in us])
        o.pop("counts")
        out.append({"typo_rate": tr, **o})
    return {"questions": len(canon), "utterances": n_utterances, "threshold": threshold, "results": out}


def _questions(
    impls: Sequence[str], questions_path: str | os.PathLike[str], sizes: Sequence[int], seed: int
) -> tuple[list[str], list[int], list[str]]:
    """The questions file's questions, the set sizes (sorted, checked against it) and the questions
    in a seeded order (each size is a prefix); refuses an unknown impl."""
    for ix in impls:
        if ix not in IMPLS:
            raise ValueError(f"impl {ix!r} is not one of {', '.join(IMPLS)}")
    all_q = load_questions(str(questions_path))
    sorted_sizes = sorted({int(s) for s in sizes})
    if not sorted_sizes or sorted_sizes[0] < 1 or sorted_sizes[-1] > len(all_q):
        raise ValueError(f"sizes must be in 1..{len(all_q)} (questions in {questions_path})")
    order = np.random.default_rng([seed, 0]).permutation(len(all_q))
    return all_q, sorted_sizes, [all_q[int(i)] for i in order]


def _noise_doc(probe_start: dict[str, Any], probe_end: dict[str, Any]) -> dict[str, Any]:
    """The file's ``noise``: the probe before and after, and how far it drifted."""
    return {
        "probe_start": probe_start,
        "probe_end": probe_end,
        "probe_drift_end_over_start": round(probe_end["median_ms"] / probe_start["median_ms"], 4)
        if probe_start["median_ms"] > 0
        else None,
        "note": "cpu_share per record = process CPU time / wall time over its timed loop; "
        "below 1 means the process waited for the CPU (another process running)",
    }


def _scaling_check(ix: str, n: int, chk: TimedConfig, c: TimedConfig, scale: float) -> dict[str, Any]:
    """A slow implementation timed on the whole set of ``n`` (``chk``) against its subsample
    estimate (``c``'s first calls scaled by ``scale``)."""
    full = chk.lat_ms()
    est = c.lat_ms()[: chk.n_calls] * scale
    return {
        "impl": ix,
        "questions": n,
        "utterances": chk.n_calls,
        "measured_full_mean_ms": _g(float(full.mean())),
        "scaled_estimate_mean_ms": _g(float(est.mean())),
        "ratio_measured_to_estimate": round(float(full.mean() / est.mean()), 4),
        "measured_full_cpu_mean_ms": _g(float(chk.cpu_ms().mean())),
        "scaled_estimate_cpu_mean_ms": _g(float(c.cpu_ms()[: chk.n_calls].mean() * scale)),
    }


def _by_threshold(utts: list[Any], texts: list[str], canon: list[str], thresholds: Sequence[float]) -> list[dict]:
    """The routing outcome at each threshold (from every utterance's nearest question)."""
    near = [nearest(t, canon) for t in texts]
    return [
        {
            "threshold": t,
            **{k: v for k, v in outcome(utts, [i if s <= t else -1 for i, _, s in near]).items() if k != "counts"},
        }
        for t in thresholds
    ]


@dataclass(frozen=True)
class _Timing:
    """How the routing calls are timed: the threshold, the seed, the utterances per set and how
    they are generated, rapidfuzz's passes, the slow implementations' subsample, the rounds."""

    threshold: float | int
    seed: int
    n_utterances: int
    gen_kwargs: dict[str, Any]
    rapidfuzz_passes: int
    slow_max_questions: int
    slow_utterances: int
    rounds: int


@dataclass(frozen=True)
class _QuestionSet:
    """One canonical-question set of the calibration: its questions (the first N of the
    shuffle), their total length, the utterances generated from them, the utterances' text
    and normalised lengths."""

    canon: list[str]
    sum_q: int
    utts: list[Utterance]
    texts: list[str]
    len_u: np.ndarray


def _timed_configs(
    sizes: list[int],
    shuffled: list[str],
    impls: Sequence[str],
    timing: _Timing,
    scaling_check_size: int | None,
    check_utts: dict[str, int],
) -> tuple[list[TimedConfig], dict[int, _QuestionSet]]:
    """Every timed configuration (one per implementation and set size, plus the slow ones'
    whole-set checks) and, per size, its questions and generated utterances.  rapidfuzz is
    timed on the whole set, the slow implementations on a seeded subsample."""
    threshold, seed, n_utterances, gen_kwargs = timing.threshold, timing.seed, timing.n_utterances, timing.gen_kwargs
    rapidfuzz_passes, slow_max_questions = timing.rapidfuzz_passes, timing.slow_max_questions
    slow_utterances = timing.slow_utterances
    configs: list[TimedConfig] = []
    sets: dict[int, _QuestionSet] = {}
    for n in sizes:
        canon = shuffled[:n]
        sum_q = sum(len(q) for q in canon)
        utts = make_utterances(canon, n_utterances, np.random.default_rng([seed, 1, n]), **gen_kwargs)
        texts = [u.text for u in utts]
        len_u = np.array([len(normalize(t, placeholder="")) for t in texts], dtype=float)
        sets[n] = _QuestionSet(canon, sum_q, utts, texts, len_u)
        for ix in impls:
            if ix.startswith("rapidfuzz"):
                passes = max(rapidfuzz_passes, 1)
                configs.append(
                    TimedConfig(
                        key=("main", ix, n),
                        n_calls=passes * n_utterances,
                        fn=lambda i, _t=texts, _c=canon, _m=n_utterances, _ix=ix: route(_t[i % _m], _c, _ix, threshold),  # type: ignore[misc]  # mypy cannot type default-bound lambdas
                        targets=canon,
                        timed_questions=n,
                    )
                )
            else:
                k = min(n, slow_max_questions)
                sub_idx = np.sort(np.random.default_rng([seed, 2, n]).choice(n, size=k, replace=False))
                sub = [canon[int(i)] for i in sub_idx]
                nu = min(n_utterances, slow_utterances)
                configs.append(
                    TimedConfig(
                        key=("main", ix, n),
                        n_calls=nu,
                        fn=lambda i, _t=texts, _s=sub, _ix=ix: route(_t[i], _s, _ix, threshold),  # type: ignore[misc]  # mypy cannot type default-bound lambdas
                        targets=sub,
                        timed_questions=k,
                    )
                )
                if scaling_check_size == n and k < n and check_utts.get(ix, 0) > 0:
                    configs.append(
                        TimedConfig(
                            key=("check", ix, n),
                            n_calls=min(check_utts[ix], nu),
                            fn=lambda i, _t=texts, _c=canon, _ix=ix: route(_t[i], _c, _ix, threshold),  # type: ignore[misc]  # mypy cannot type default-bound lambdas
                            targets=canon,
                            timed_questions=n,
                        )
                    )
    return configs, sets


def _settings(
    sizes: list[int], impls: Sequence[str], questions_path: str | os.PathLike[str], n_questions: int, timing: _Timing
) -> dict[str, Any]:
    """The calibration file's ``settings``: what was measured, and how."""
    return {
        "sizes": sizes,
        "utterances": timing.n_utterances,
        "impls": list(impls),
        "threshold": timing.threshold,
        "threshold_rule": "float: accept argmin_q d/max(len(u),len(q)) if <= threshold; "
        "int: accept argmin_q d if d <= threshold",
        "seed": timing.seed,
        "questions_file": Path(questions_path).name,
        "questions_available": n_questions,
        "question_sets": "first N of a seeded shuffle (nested sets); utterances generated from those N",
        "generator": dict(timing.gen_kwargs),
        "slow_max_questions": timing.slow_max_questions,
        "slow_utterances": timing.slow_utterances,
        "rapidfuzz_passes": timing.rapidfuzz_passes,
        "rounds": timing.rounds,
        "schedule": "every (impl, size) configuration's calls split into `rounds` chunks; chunks run "
        "round by round, configurations in a seeded random order each round, 1 untimed warm-up call "
        "per chunk -- so CPU contention from other processes spreads over all sizes",
        "timer": "time.perf_counter_ns around one route() call (normalize + scan), gc disabled, "
        f"{WARMUP} untimed warm-up calls per configuration; per-call process CPU time also recorded "
        "(cpu_time: robust to being descheduled)",
    }


def _impl_record(
    c: TimedConfig,
    ix: str,
    S: _QuestionSet,
    base: dict[str, Any],
    n_utterances: int,
    threshold: float | int,
    per_utt: list[tuple[float, float]],
    per_utt_cpu: list[tuple[float, float]],
) -> tuple[dict[str, Any], float]:
    """The calibration record of implementation ``ix`` on one question set ``S`` (its timed
    configuration ``c``, scaled to the whole set), and the scale; every timed call goes to
    ``per_utt`` / ``per_utt_cpu`` (x = cells, latency) for the pooled law."""
    n, sum_q, texts, len_u = len(S.canon), S.sum_q, S.texts, S.len_u
    lat, cpu_lat = c.lat_ms(), c.cpu_ms()
    sum_t = sum(len(q) for q in c.targets)
    scale = sum_q / sum_t
    x_t = len_u[np.arange(c.n_calls) % n_utterances] * sum_t
    per_utt.extend(zip(x_t.tolist(), lat.tolist()))
    per_utt_cpu.extend(zip(x_t.tolist(), cpu_lat.tolist()))
    u_fit = fit_law(x_t, lat)
    rec: dict[str, Any] = {
        "impl": ix,
        **base,
        "timed_questions": c.timed_questions,
        "timed_utterances": min(c.n_calls, n_utterances),
        "timed_calls": c.n_calls,
        "scale_factor": _g(scale),
    }
    if ix.startswith("rapidfuzz"):
        m = n_utterances
        rec["pass_mean_ms"] = [_g(float(lat[p * m : (p + 1) * m].mean())) for p in range(c.n_calls // m)]
    if ix != "rapidfuzz":
        ref = [route(texts[i % n_utterances], c.targets, "rapidfuzz", threshold) for i in range(c.n_calls)]
        rec["scale_rule"] = (
            "latency x sum len(q) over the set / over the timed subsample"
            if c.timed_questions < n
            else "not scaled (timed on the whole set)"
        )
        rec["agreement_with_rapidfuzz"] = round(
            sum(1 for a, b in zip(c.results, ref, strict=True) if a == b) / c.n_calls, 4
        )
        rec["unscaled_mean_ms"] = _g(float(lat.mean()))
    rec["cpu_share"] = round(c.cpu_share(), 3)
    rec.update(_summary(lat * scale))
    rec["cpu_time"] = {k: _g(float(np.quantile(cpu_lat * scale, p))) for k, p in HEADLINE.items()}
    rec["cpu_time"]["mean_ms"] = _g(float(cpu_lat.mean() * scale))
    rec["per_utterance_fit"] = _law_entry(u_fit)
    return rec, scale


@dataclass
class _PerSize:
    """What the timed runs give per set size: every implementation's records, every timed call
    (x = cells, latency; wall and CPU time) per implementation for the pooled laws, the scaling
    checks, the routing accuracy and the threshold sweep."""

    records: list[dict[str, Any]]
    per_utt: dict[str, list[tuple[float, float]]]
    per_utt_cpu: dict[str, list[tuple[float, float]]]
    accuracy: list[dict[str, Any]]
    sweeps: list[dict[str, Any]]
    scaling_check: list[dict[str, Any]]


def _per_size_results(
    sizes: Sequence[int],
    impls: Sequence[str],
    sets: dict[int, _QuestionSet],
    by_key: dict[tuple[str, str, int], TimedConfig],
    n_utterances: int,
    threshold: float | int,
    threshold_sweep: Sequence[float],
    tick: Callable[[str], None],
) -> _PerSize:
    """Per canonical-set size: every implementation's timing record, the scaling
    checks, routing accuracy and the threshold sweep (from the timed runs)."""
    records: list[dict[str, Any]] = []
    per_utt: dict[str, list[tuple[float, float]]] = {ix: [] for ix in impls}
    per_utt_cpu: dict[str, list[tuple[float, float]]] = {ix: [] for ix in impls}
    accuracy: list[dict[str, Any]] = []
    sweeps: list[dict[str, Any]] = []
    scaling_check: list[dict[str, Any]] = []
    for n in sizes:
        S = sets[n]
        canon, sum_q, utts, texts, len_u = S.canon, S.sum_q, S.utts, S.texts, S.len_u
        cells = len_u * sum_q
        base = {
            "questions": n,
            "utterances": n_utterances,
            "mean_len_u": _g(float(len_u.mean())),
            "mean_len_q": _g(sum_q / n),
            "sum_len_q": sum_q,
            "mean_cells": _g(float(cells.mean())),
        }
        routed_full: list[int] | None = None
        for ix in impls:
            c = by_key[("main", ix, n)]
            rec, scale = _impl_record(c, ix, S, base, n_utterances, threshold, per_utt[ix], per_utt_cpu[ix])
            if ix == "rapidfuzz":
                routed_full = [r[0] for r in c.results[:n_utterances]]
            records.append(rec)
            tick(
                f"N={n} {ix}: mean {rec['mean_ms']} ms, p95 {rec['p95']} ms (timed on {rec['timed_questions']} q, "
                f"cpu share {rec['cpu_share']})"
            )
            chk = by_key.get(("check", ix, n))
            if chk is not None:
                scaling_check.append(_scaling_check(ix, n, chk, c, scale))
        if routed_full is None:
            routed_full = [route(t, canon, "rapidfuzz", threshold)[0] for t in texts]
        accuracy.append({"questions": n, "threshold": threshold, **outcome(utts, routed_full)})
        sweeps.append({"questions": n, "by_threshold": _by_threshold(utts, texts, canon, threshold_sweep)})
    return _PerSize(records, per_utt, per_utt_cpu, accuracy, sweeps, scaling_check)


def run_routing_calibration(
    sizes: Sequence[int] = (50, 100, 200, 400),
    n_utterances: int = 300,
    impls: Sequence[str] = IMPLS,
    threshold: float | int = DEFAULT_THRESHOLD,
    seed: int = 20250607,
    questions_path: str | os.PathLike[str] = DEFAULT_QUESTIONS,
    typo_rate: float = 0.03,
    order_number_share: float = 0.3,
    noise_share: float = 0.3,
    unmatched_share: float = 0.1,
    slow_max_questions: int = 40,
    slow_utterances: int = 150,
    rapidfuzz_passes: int = 3,
    scaling_check_size: int | None = 100,
    scaling_check_utterances: dict[str, int] | None = None,
    threshold_sweep: Sequence[float] = DEFAULT_SWEEP,
    typo_sweep: Sequence[float] = DEFAULT_TYPO_SWEEP,
    typo_sweep_utterances: int = 1000,
    cache_utterances: int = 2000,
    cache_questions: int = 100,
    cache_zipf_s: float = 1.0,
    cache_capacities: Sequence[int] = (20, 50),
    noise_probe_repeats: int = 15,
    rounds: int = 10,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure routing latency per (impl, size) and routing outcome; return
    the calibration as a JSON-ready dict (see the module docstring)."""
    tick = progress or (lambda msg: None)
    started = _dt.datetime.now(_dt.timezone.utc)
    load_start = loadavg()
    all_q, sizes, shuffled = _questions(impls, questions_path, sizes, seed)
    gen_kwargs: dict[str, Any] = {
        "typo_rate": typo_rate,
        "order_number_share": order_number_share,
        "noise_share": noise_share,
        "unmatched_share": unmatched_share,
    }
    check_utts = scaling_check_utterances or {"two_row": 30, "numpy_table": 8}

    probe_start = noise_probe(all_q, noise_probe_repeats)
    tick(f"noise probe: median {probe_start['median_ms']} ms, cv {probe_start['cv']}")

    # ---- build every timed configuration first, then time them interleaved
    timing = _Timing(
        threshold, seed, n_utterances, gen_kwargs, rapidfuzz_passes, slow_max_questions, slow_utterances, rounds
    )
    configs, sets = _timed_configs(sizes, shuffled, impls, timing, scaling_check_size, check_utts)
    time_interleaved(configs, rounds, np.random.default_rng([seed, 5]), tick)
    by_key = {c.key: c for c in configs}

    per_size = _per_size_results(sizes, impls, sets, by_key, n_utterances, threshold, threshold_sweep, tick)
    records = per_size.records

    # cost of normalize() alone (part of every routed call)
    normalize_cost = _normalize_cost([t for n in sizes for t in sets[n].texts])

    # typo-rate sweep at the largest size
    typo = _typo_sweep(shuffled[: sizes[-1]], typo_sweep, typo_sweep_utterances, seed, threshold, gen_kwargs)
    tick("typo sweep done")

    cache_q, cache_rng = shuffled[: min(cache_questions, len(shuffled))], np.random.default_rng([seed, 4])
    cache = key_cardinality(cache_q, cache_utterances, cache_rng, threshold, cache_zipf_s, cache_capacities, gen_kwargs)
    tick("cache key cardinality done")

    fits = [_impl_fits(ix, records, per_size.per_utt[ix], per_size.per_utt_cpu[ix]) for ix in impls]

    probe_end = noise_probe(all_q, noise_probe_repeats)
    return {
        **run_header(
            KIND, VERSION, started, load_start, " ".join(sys.argv) if sys.argv else None, machine_description()
        ),
        "settings": _settings(sizes, impls, questions_path, len(all_q), timing),
        "noise": _noise_doc(probe_start, probe_end),
        "probs": list(PROBS),
        "records": records,
        "fits": fits,
        "scaling_check": per_size.scaling_check,
        "normalize_cost": normalize_cost,
        "routing_accuracy": per_size.accuracy,
        "threshold_sweep": per_size.sweeps,
        "typo_sweep": typo,
        "cache_keys": cache,
    }


def write_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``data`` as indented JSON, whole or not at all (:func:`sim.files.atomic_write_text`)."""
    p = Path(path)
    atomic_write_text(p, json.dumps(data, indent=1, allow_nan=False) + "\n")
    return p
