"""Fit each engine's step-cost parameters to its measured serving runs, held out by (model, GPU).

For each engine (vllm, trtllm, sglang) the rows of ``silicon_sample.csv`` capsim replays
(:mod:`sim.spec.silicon`) are replayed exactly as ``capsim validate`` replays them
(:mod:`sim.run.validate`), with the engine's scheduler defaults (:mod:`sim.spec.engines`) and
candidate step-cost parameters (``bw_efficiency``, ``mfu``, ``step_overhead_ms``,
``step_overhead_per_seq_ms``; the all-reduce latency stays the published fit's).  The fit is
robust least squares (soft L1, scale 20 %) on ``log(predicted / measured)`` of TPOT and of TTFT,
every row weighted alike, over a fixed subset of each (model, GPU) group's rows
(:func:`fit_subset`: up to :data:`PER_GROUP` rows spread over its concurrencies and lengths), since
every candidate means replaying the rows.

**Per-operation step costs.**  Where aiconfigurator's kernel timings cover a row
(:mod:`sim.physics.perop`), a scenario with ``llm.engine`` is costed from them, so each engine has
a second fit on the rows they cover: ``perop_overhead_ms``, ``perop_overhead_per_seq_ms``,
``perop_prefill_scale`` and, beside them, a frontend time (:func:`perop_space`), judged on TPOT
and TTFT over up to :data:`PEROP_PER_GROUP` rows per group, held out the same way (``perop`` in
each engine's block).  TPOT alone cannot place the prefill scale (a step's prompt work is a small
share of a decoder's time) and TTFT alone cannot tell the prefill from the time before the first
step, so the four are fitted together; the frontend a scenario gets is still the engine-wide fit
of ``--fit-frontend``.  ``--perop-only`` keeps the shipped roofline fit.

**Held out.**  For every (model, GPU) group of an engine the fit is repeated without that group's
rows, and *all* the group's rows are replayed with those parameters: the errors reported as the
engine's accuracy are these, never the in-sample ones.  An engine with a single group has no
held-out figure.  The parameters a scenario gets (``llm.engine``) are the fit on all groups.
"""

from __future__ import annotations

import concurrent.futures as cf
import datetime as _dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from sim.physics.perop import dtype_key, lookup
from sim.run.validate import _stats, replay
from sim.spec.engines import ENGINES, FITTED, FITTED_PEROP, SCHEDULER, allreduce_latency_us
from sim.spec.engines import preset as engine_preset
from sim.spec.silicon import AICONFIGURATOR_VERSION, SiliconRow

PER_GROUP = 6
#: Rows per (model, GPU) group in the per-operation fit (its replays are cheaper than the roofline's).
PEROP_PER_GROUP = 12
LOWER = np.array([0.2, 0.05, 0.0, 0.0])
UPPER = np.array([1.0, 1.0, 20.0, 2.0])
START = np.array([0.7, 0.5, 0.5, 0.05])
SCALE = np.array([0.1, 0.1, 1.0, 0.05])
MAX_NFEV = 8


def group(r: SiliconRow) -> str:
    return f"{r.model}@{r.gpu}"


def fit_subset(rows: Sequence[SiliconRow], per_group: int = PER_GROUP) -> list[SiliconRow]:
    """Up to ``per_group`` rows of each (model, GPU) group, evenly spaced over the group sorted by
    (concurrency, isl, osl, id): every load level and length the group has, deterministically."""
    out: list[SiliconRow] = []
    for g in sorted({group(r) for r in rows}):
        rs = sorted((r for r in rows if group(r) == g), key=lambda r: (r.concurrency, r.isl, r.osl, r.id))
        if len(rs) > per_group:
            idx = np.unique(np.linspace(0, len(rs) - 1, per_group).round().astype(int))
            rs = [rs[i] for i in idx]
        out += rs
    return out


def overrides(engine: str, theta: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """The ``llm`` keys a row is replayed with: the engine's scheduler, ``theta``'s roofline step cost
    (the per-operation tables stay off: no ``engine`` key)."""
    o = engine_preset(engine, with_step_cost=False)
    o.update({k: float(v) for k, v in zip(FITTED, theta)})
    o["efficiency"] = "custom"
    o["frontend_ms"] = 0.0  # the step-cost fits see the GPU steps alone; the frontend is fitted after them
    o["allreduce_latency_us"] = allreduce_latency_us(engine)
    return o


def perop_overrides(
    engine: str, theta: Sequence[float] | np.ndarray, roofline: Sequence[float] | np.ndarray
) -> dict[str, Any]:
    """The ``llm`` keys of the engine preset as a scenario gets it: the per-operation step cost with
    ``theta`` (:data:`FITTED_PEROP`) where its tables cover the row, the roofline with ``roofline``
    elsewhere."""
    o = overrides(engine, roofline)
    o["engine"] = engine
    o.update({k: float(v) for k, v in zip(FITTED_PEROP, theta)})
    return o


@dataclass(frozen=True)
class Space:
    """What a fit varies: names, bounds, start, scale, how a candidate becomes ``llm`` keys, and
    which errors it is judged on."""

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    start: np.ndarray
    scale: np.ndarray
    make: Callable[[str, np.ndarray], dict[str, Any]]
    metrics: tuple[str, ...] = ("tpot", "ttft")
    per_group: int = PER_GROUP


ROOFLINE = Space(FITTED, LOWER, UPPER, START, SCALE, overrides)


def perop_space(roofline: Sequence[float]) -> Space:
    """The per-operation fit: overhead per step and per sequence, the prefill scale (at least 0.5:
    kernels timed alone overstate a served step's prefill, not by more than twice) and a frontend
    time, judged on TPOT and TTFT."""
    n = len(FITTED_PEROP)

    def make(engine: str, th: np.ndarray) -> dict[str, Any]:
        return {**perop_overrides(engine, th[:n], roofline), "frontend_ms": float(th[n])}

    return Space(
        (*FITTED_PEROP, "frontend_ms"),
        np.array([0.0, 0.0, 0.5, 0.0]),
        np.array([20.0, 1.0, 2.0, 400.0]),
        np.array([1.0, 0.01, 0.75, 30.0]),
        np.array([1.0, 0.005, 0.1, 10.0]),
        make,
        ("tpot", "ttft"),
        PEROP_PER_GROUP,
    )


def _task(args: tuple[SiliconRow, dict[str, Any]]) -> dict[str, Any]:
    return replay(*args)


def predict(
    rows: Sequence[SiliconRow],
    engine: str,
    theta: Sequence[float] | np.ndarray,
    pool: cf.Executor | None,
    space: Space = ROOFLINE,
) -> list[dict[str, Any]]:
    tasks = [(r, space.make(engine, np.asarray(theta))) for r in rows]
    if pool is None:
        return [_task(t) for t in tasks]
    return list(pool.map(_task, tasks, chunksize=max(1, len(tasks) // 8)))


def _log_errors(rows: Sequence[SiliconRow], res: list[dict[str, Any]], metrics: tuple[str, ...]) -> np.ndarray:
    out = []
    for r, x in zip(rows, res):
        if x.get("error"):  # a refused scenario: a large, finite penalty so the fit moves away
            out += [3.0] * len(metrics)
            continue
        measured = {"tpot": r.measured_tpot_ms, "ttft": r.measured_ttft_ms}
        out += [math.log(x[f"{m}_ms"] / measured[m]) for m in metrics]
    return np.asarray(out)


def fit(
    rows: Sequence[SiliconRow],
    engine: str,
    pool: cf.Executor | None,
    x0: np.ndarray | None = None,
    space: Space = ROOFLINE,
) -> np.ndarray:
    """The parameters (in ``space.names`` order) that best replay ``rows``."""
    res = least_squares(
        lambda th: _log_errors(rows, predict(rows, engine, th, pool, space), space.metrics),
        x0=space.start if x0 is None else x0,
        bounds=(space.lower, space.upper),
        method="trf",
        loss="soft_l1",
        f_scale=0.2,
        x_scale=space.scale,
        diff_step=0.02,
        max_nfev=MAX_NFEV,
    )
    return np.asarray(res.x)


def _named(theta: Sequence[float] | np.ndarray, names: tuple[str, ...] = FITTED) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in zip(names, theta)}


def perop_covered(row: SiliconRow) -> bool:
    """Whether the engine preset costs ``row`` from the per-operation tables: a dense model whose GPU,
    engine, tensor parallelism and dtype they cover (a MoE model stays on the roofline under
    ``step_cost: auto``, :data:`sim.physics.perop.MOE_AUTO`)."""
    if row.moe:
        return False
    dtype = dtype_key(row.weights_dtype, row.compute_dtype)
    return lookup(row.gpu, row.engine, row.model, row.tensor_parallel, dtype) is not None


def _errors(rows: Sequence[SiliconRow], res: list[dict[str, Any]]) -> dict[str, list[float]]:
    ok = [(r, x) for r, x in zip(rows, res) if not x.get("error")]
    return {
        "tpot": [x["tpot_ms"] / r.measured_tpot_ms - 1.0 for r, x in ok],
        "ttft": [x["ttft_ms"] / r.measured_ttft_ms - 1.0 for r, x in ok],
    }


def fit_engine(
    rows: Sequence[SiliconRow],
    engine: str,
    pool: cf.Executor | None,
    say: Callable[[str], None] = lambda s: None,
    space: Space = ROOFLINE,
) -> dict[str, Any]:
    """One engine's fit, its held-out errors by (model, GPU) group and every row's held-out prediction."""
    rows = [r for r in rows if r.engine == engine]
    groups = sorted({group(r) for r in rows})
    sub = fit_subset(rows, space.per_group)
    say(f"{engine} ({', '.join(space.names)}): fitting on {len(sub)} of {len(rows)} rows ({len(groups)} groups)")
    theta = fit(sub, engine, pool, space=space)
    doc: dict[str, Any] = {
        "rows": len(rows),
        "versions": sorted({r.engine_version for r in rows if r.engine_version}),
        "groups": groups,
        "fit_rows": len(sub),
        "fitted_on": list(space.metrics),
        "parameters": _named(theta, space.names),
    }
    ins = _errors(rows, predict(rows, engine, theta, pool, space))
    doc["in_sample"] = {m: _stats(ins[m]) for m in ("tpot", "ttft")}
    if len(groups) < 2:
        doc["held_out"] = {"note": "a single (model, GPU) group: nothing to hold out"}
        return doc
    held: dict[str, list[float]] = {"tpot": [], "ttft": []}
    by_group: dict[str, Any] = {}
    params: dict[str, Any] = {}
    predictions: dict[str, dict[str, float]] = {}
    for g in groups:
        train = [r for r in sub if group(r) != g]
        test = [r for r in rows if group(r) == g]
        th = fit(train, engine, pool, space=space)  # from the same start as the fit on all groups, not from it
        params[g] = _named(th, space.names)
        res = predict(test, engine, th, pool, space)
        e = _errors(test, res)
        by_group[g] = {m: _stats(e[m]) for m in ("tpot", "ttft")}
        for m in ("tpot", "ttft"):
            held[m] += e[m]
        for r, x in zip(test, res):
            if not x.get("error"):
                predictions[r.id] = {"ttft_ms": round(x["ttft_ms"], 4), "tpot_ms": round(x["tpot_ms"], 4)}
        say(f"{engine}: held out {g}: TPOT {by_group[g]['tpot']} TTFT {by_group[g]['ttft']}")
    doc["held_out"] = {m: _stats(held[m]) for m in ("tpot", "ttft")}
    doc["held_out_by_group"] = by_group
    doc["held_out_parameters"] = params
    doc["held_out_predictions"] = predictions
    return doc


def fit_engine_perop(
    rows: Sequence[SiliconRow],
    engine: str,
    roofline: dict[str, float],
    pool: cf.Executor | None,
    say: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """The per-operation fit of one engine on the rows its tables cover (the roofline fit's
    parameters, ``roofline``, stand for the rest)."""
    covered = [r for r in rows if r.engine == engine and perop_covered(r)]
    if not covered:
        return {"note": f"no rows of {engine} covered by per-operation tables"}
    doc = fit_engine(covered, engine, pool, say, perop_space([roofline[k] for k in FITTED]))
    doc["data"] = "aiconfigurator per-operation tables (sim/data/silicon/perop), rows they cover"
    return doc


def run_engine_fit(
    rows: Sequence[SiliconRow],
    jobs: int | None = None,
    say: Callable[[str], None] = lambda s: None,
    keep_roofline: dict[str, Any] | None = None,
    engines: Sequence[str] = ENGINES,
    others: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole document ``sim/data/silicon/engine_fit.json`` holds: per engine the roofline fit
    (or ``keep_roofline``'s, unchanged) and the per-operation fit.  Only ``engines`` are fitted;
    the others keep their whole block (per-operation fit and frontend included) from ``others``."""
    doc: dict[str, Any] = {
        "kind": "capsim.engine_step_fit",
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": f"aiconfigurator {AICONFIGURATOR_VERSION} silicon_sample.csv, rows capsim replays",
        "method": "replayed as capsim validate does; robust least squares on log(predicted/measured) of TPOT "
        "and TTFT over fit_rows per engine; held out: each (model, GPU) group refitted without and predicted",
        "fitted": list(FITTED),
        "engines": {},
    }
    with cf.ProcessPoolExecutor(max_workers=jobs) if (jobs or 2) > 1 else _NoPool() as pool:
        ex = pool if isinstance(pool, cf.Executor) else None
        for engine in ENGINES:
            if engine not in engines:
                if others and engine in others.get("engines", {}):
                    doc["engines"][engine] = others["engines"][engine]
                    say(f"{engine}: kept from the shipped file")
                continue
            if keep_roofline and engine in keep_roofline.get("engines", {}):
                e = {k: v for k, v in keep_roofline["engines"][engine].items() if k != "perop"}
                say(f"{engine}: roofline fit kept from the shipped file")
            else:
                e = fit_engine(rows, engine, ex, say)
                e["scheduler"] = {k: v for k, v in SCHEDULER[engine].items() if k != "sources"}
            e["perop"] = fit_engine_perop(rows, engine, e["parameters"], ex, say)
            doc["engines"][engine] = e
    return doc


class _NoPool:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


def fit_frontend(records: Sequence[dict[str, Any]], engine: str) -> dict[str, Any]:
    """The engine's frontend time (``frontend_ms``): what a request spends in the engine outside
    its GPU steps, fitted to TTFT, held out by (model, GPU) group.

    ``records`` are ``capsim validate``'s rows (:func:`sim.run.validate.per_row`): the measured TTFT
    and the engine preset's replayed TTFT with the frontend time it was replayed with
    (``engine_frontend_ms``).  The frontend adds to every request's TTFT, so the fit minimises
    ``sum |replayed - frontend_used + f - measured| / measured`` over ``f >= 0``: the median of
    ``measured - (replayed - frontend_used)`` weighted by ``1 / measured`` (:func:`weighted_median`).
    For every group the same median without that group's rows is its held-out value."""
    rs = [
        x for x in records if x["engine"] == engine and math.isfinite(x["engine_ttft_ms"]) and x["measured_ttft_ms"] > 0
    ]
    if not rs:
        return {"note": f"no replayed rows of {engine}"}
    gap = np.array([x["measured_ttft_ms"] - (x["engine_ttft_ms"] - x["engine_frontend_ms"]) for x in rs])
    w = np.array([1.0 / x["measured_ttft_ms"] for x in rs])
    groups = np.array([f"{x['model']}@{x['gpu']}" for x in rs])

    def f(mask: np.ndarray) -> dict[str, float]:
        return {"frontend_ms": round(max(weighted_median(gap[mask], w[mask]), 0.0), 3)}

    every = np.ones(len(rs), bool)
    names = sorted(set(groups.tolist()))
    return {
        "parameters": f(every),
        "rows": len(rs),
        "groups": names,
        "held_out_parameters": {g: f(groups != g) for g in names if (groups != g).any()},
        "method": "median of measured TTFT - replayed TTFT without the frontend, weighted by 1/measured "
        "(least relative absolute error of an added constant); held out: the same without the group",
    }


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """The smallest ``x[i]`` at which the cumulative weight (in ``x``'s order) reaches half the total:
    a minimiser of ``sum w_i |x_i - m|``."""
    o = np.argsort(x, kind="stable")
    c = np.cumsum(w[o])
    return float(x[o][int(np.searchsorted(c, 0.5 * c[-1]))])
