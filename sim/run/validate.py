"""Replay measured serving runs as capsim scenarios and measure how far capsim's answers are.

The measured runs are aiconfigurator's ``silicon_sample.csv`` (:mod:`sim.spec.silicon`): each row
is an engine serving one model on one GPU system, measured with aiperf at a fixed concurrency
``c`` with constant input / output lengths, and reports the mean TTFT and mean TPOT over its
requests.

**How a row is replayed.**  aiperf's concurrency mode keeps ``c`` requests in flight: it sends
``c`` at once, and each time one finishes it sends the next, with no pause.  That is capsim's
closed loop with ``users = c`` and ``think_s = 0``, every user starting at t = 0: LLM stage only
(no cache, no retrieval), one replica of the row's tensor parallelism (and, for a MoE model, its
expert parallelism) on the row's GPU and model, the row's weight precision (FP8 computes at the
GPU's FP8 peak, NVFP4 at its FP4 peak on Blackwell), ``prompt_tokens = isl`` and
``output_tokens = osl`` constant, no shared prefix.  The run lasts :data:`WARMUP_LIFETIMES` +
:data:`MEASURED_LIFETIMES` request lifetimes (a lifetime estimated from the step cost,
:func:`lifetime_s`); the first :data:`WARMUP_LIFETIMES` are cut, as aiperf's warm-up requests
are not counted, and TTFT (arrival to first token, queueing in the engine included, as aiperf
times it from the send) and TPOT (``decode_ms / (output_tokens - 1)``, aiperf's inter-token
latency) are averaged over the requests that arrive after the cut and before the end.  Arrivals
stop at the end and the requests in flight finish (they are not counted).  The model has no
randomness here (constant token counts, no think time), so one replication is the answer.

Started together, ``c`` identical requests stay in step for ever in a model without noise: they
finish on the same step and their successors prefill together, so every TTFT includes the whole
wave's prefill.  A real engine drifts out of step a little; ``start="spread"`` brings the users in
one by one over one lifetime instead (inside the warm-up cut), the other extreme, where each
prompt is prefilled beside decoders at random phases.  The measured TTFT lies between the two.
``start="burst"`` replays a benchmark that starts on an idle engine and counts from its first
request: ``c`` sent at once, the first :data:`BURST_REQUESTS` ``x c`` sent averaged, the first
wave's queueing for prefill included (the file does not record how many requests each run sent).

**Held out.**  The engine-preset figures use, for each row, the parameters fitted without its
(model, GPU) group (:mod:`sim.run.engine_fit`); a group the fit never saw (a model or GPU added
after it) gets the fit's own parameters, which are held out from it by construction.

**Errors** are ``predicted / measured - 1``; the summary gives their mean absolute value (MAPE)
and their mean (signed: + is capsim too slow) per engine, GPU, model, precision, isl/osl and
concurrency band, with aiconfigurator 0.12.0's own predictions for the same rows beside them
(``sim/data/silicon/aiconfigurator_predictions.csv``, computed once with its package).

**Speed.**  Rows run in parallel over the cores (processes); each result is cached under
``~/.cache/capsim/validate/<fingerprint>/``, where the fingerprint is a hash of the model code
(``sim/physics``, ``sim/engine``, ``sim/spec``, this module) and of the data it reads (catalogs,
fitted parameters), so a rerun with unchanged code costs nothing and a changed model is replayed
afresh.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from sim.engine.pipeline import run_replication
from sim.files import atomic_write_text, data_path, to_json
from sim.physics.gpu import StepCost, attention_pairs
from sim.spec.engines import FITTED, FITTED_PEROP
from sim.spec.engines import fit_document as engine_fit_document
from sim.spec.engines import preset as engine_preset
from sim.spec.schema import LLMConfig, Scenario
from sim.spec.silicon import (
    AICONFIGURATOR_VERSION,
    SiliconRow,
    load_rows,
    reason_counts,
    representable_disaggregated,
)

#: Request lifetimes cut at the start (the synchronised first wave) and measured after it.
WARMUP_LIFETIMES = 2.0
MEASURED_LIFETIMES = 6.0
#: How the ``c`` users start: "spread" (one by one over a lifetime), "together" (all at t = 0, the
#: start cut as warm-up) or "burst" (all at t = 0, counted from the start).
START = "together"
#: Requests per user a ``burst`` replay counts: the benchmark sends ``BURST_REQUESTS x c`` prompts
#: with at most ``c`` in flight, the first ``c`` at once to an idle engine.
BURST_REQUESTS = 10
#: The concurrency bands of the summary (upper bounds, inclusive).
BANDS: tuple[tuple[str, int], ...] = (("1-4", 4), ("5-16", 16), ("17-64", 64), ("65-256", 256), ("257+", 1 << 30))
#: Where a summary says what it groups by.
GROUPS: tuple[str, ...] = ("engine", "gpu", "model", "precision", "isl_osl", "concurrency_band")

SIM = Path(__file__).resolve().parents[1]


def band(concurrency: int) -> str:
    """The summary's concurrency band of ``concurrency`` (3 -> "1-4", 64 -> "17-64")."""
    return next(name for name, top in BANDS if concurrency <= top)


# --------------------------------------------------------------------------- one row


def llm_block(row: SiliconRow, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``llm`` section that replays ``row`` (``overrides`` on top: an engine preset's keys)."""
    llm: dict[str, Any] = {
        "model": row.model,
        "gpu": row.gpu,
        "tensor_parallel": row.tensor_parallel,
        "weights_dtype": row.weights_dtype,
        "dtype_bytes": row.dtype_bytes,
        "kv_dtype_bytes": row.kv_dtype_bytes,
        "compute_dtype": row.compute_dtype,
        **({"expert_parallel": row.expert_parallel} if row.moe else {}),
        "prompt_tokens": row.isl,
        "output_tokens": row.osl,
        "prefix_caching": False,
    }
    llm.update(overrides or {})
    per_replica = -(-row.concurrency // row.decode_workers) if row.disaggregated else row.concurrency
    llm["max_batch"] = max(int(llm.get("max_batch", 256)), per_replica)
    llm["max_batched_tokens"] = max(int(llm.get("max_batched_tokens", 8192)), llm["max_batch"])
    if row.disaggregated:
        prefill: dict[str, Any] = {"replicas": row.prefill_workers, "tensor_parallel": row.prefill_tp}
        if row.prefill_batch:  # the prompts a prefill worker takes in one step, as the row configured it
            prefill["max_batch"] = row.prefill_batch
        if row.moe:
            prefill["expert_parallel"] = row.prefill_expert_parallel
        llm["disaggregated"] = {
            "prefill": prefill,
            "decode": {"replicas": row.decode_workers},
            "link": disaggregated_link(row),
        }
    elif row.engine in BENCHMARK_ENGINES:
        llm.update(benchmark_scheduler(row))
    return llm


#: The engines whose benchmark launch settings :func:`benchmark_scheduler` knows.
BENCHMARK_ENGINES = ("vllm", "trtllm", "sglang")
#: Tokens aiconfigurator's benchmark rules add to the prompt length in the token budget.
BENCHMARK_SLACK = 1500
#: TensorRT-LLM's ``free_gpu_memory_fraction`` in aiconfigurator's engine template.
TRTLLM_FREE_FRACTION = 0.8
#: SGLang's ``chunked_prefill_size`` on H100 and H200 (``python/sglang/srt/server_args.py``).
SGLANG_CHUNK = 8192


def benchmark_scheduler(row: SiliconRow) -> dict[str, Any]:
    """The scheduler the measured run was launched with: aiconfigurator's benchmark rules
    (``aiconfigurator/generator/rule_plugin/benchmark/{vllm,trtllm,sglang}.rule`` in its 0.12.0
    package), which size the engine for the run's own lengths:

    * vLLM: ``max_num_batched_tokens = max_batch_size + isl + 1500`` (chunked prefill on, as V1
      always is), so a whole prompt fits beside every decode;
    * TensorRT-LLM: ``max_num_tokens`` the same rounded up to ``tokens_per_block = 32``, chunked
      prefill off and ``free_gpu_memory_fraction`` 0.80 (its template's defaults,
      ``generator/config/backend_templates/trtllm/extra_engine_args.*.yaml.j2``): whole prompts
      beside the decodes;
    * SGLang: ``max_prefill_tokens = isl + 1500`` and ``enable_mixed_chunk``: prompt chunks of at
      most ``chunked_prefill_size`` beside the decodes.

    ``max_batch_size`` is the row's batch size, or its concurrency where that is larger (the
    file's batch size is per GPU for some rows)."""
    batch = max(row.batch_size, row.concurrency)
    out: dict[str, Any] = {"max_batch": batch}
    if row.engine == "vllm":
        out.update(chunked_prefill=True, max_batched_tokens=batch + row.isl + BENCHMARK_SLACK)
    elif row.engine == "trtllm":
        block = 32
        tokens = -(-(batch + row.isl + BENCHMARK_SLACK) // block) * block
        out.update(chunked_prefill=False, prefill_steps="mixed", max_batched_tokens=tokens, kv_block_tokens=block)
        out.update(gpu_memory_utilization=TRTLLM_FREE_FRACTION, memory_fraction_of="free")
    else:
        prefill = min(row.isl + BENCHMARK_SLACK, SGLANG_CHUNK)
        out.update(chunked_prefill=True, max_batched_tokens=batch + prefill)
    return out


#: GPU systems whose racks are one NVLink domain (GB200 / GB300 NVL72): a disaggregated row's KV
#: moves over NVLink there; elsewhere (8-GPU servers) over InfiniBand NDR between servers.
NVLINK_RACKS: tuple[str, ...] = ("gb200", "gb300")


def disaggregated_link(row: SiliconRow) -> str:
    """The ``llm.disaggregated.link`` a disaggregated row is replayed with: the file does not
    record the fabric, so the system's: ``nvlink`` on an NVL72 rack, ``infiniband-ndr`` elsewhere."""
    return "nvlink" if row.system in NVLINK_RACKS else "infiniband-ndr"


def lifetime_s(row: SiliconRow, llm: dict[str, Any]) -> float:
    """A request's expected lifetime in the steady state, for sizing the run (not a result).

    Every step decodes ``c`` sequences and, on average, prefills ``c * isl / osl`` prompt
    tokens (each sequence's prompt spread over its ``osl`` steps), reading the mid-run context
    ``c * (isl + osl / 2)``: ``osl * step``.  8 users, isl 1,000, osl 100: steps of 88 new tokens.
    """
    cfg = LLMConfig.model_validate(llm)
    c, i, o = row.concurrency, row.isl, row.osl
    if cfg.disaggregated is not None:  # one decode replica's share of the users
        cfg = cfg.pool("decode")
        c = -(-c // cfg.replicas)
    cost = StepCost(cfg)
    new = c + c * i / o
    ctx = c * (i + o / 2.0)
    pairs = ctx + c / o * attention_pairs(i)
    return o * cost.time(new, ctx, pairs, c)


def scenario(
    row: SiliconRow, overrides: dict[str, Any] | None = None, scale: float = 1.0, start: str | None = None
) -> Scenario:
    """The capsim scenario that replays ``row`` (see the module docstring)."""
    llm = llm_block(row, overrides)
    life = lifetime_s(row, llm) * scale
    warm = WARMUP_LIFETIMES * life
    c = row.concurrency
    if (start or START) == "burst":  # an idle engine, c requests at once, BURST_REQUESTS x c counted from t = 0
        warm, measured = 0.0, BURST_REQUESTS + WARMUP_LIFETIMES
    else:
        measured = MEASURED_LIFETIMES
    if (start or START) == "spread" and c > 1:  # users join one by one over a lifetime: their phases spread out
        users: dict[str, Any] = {
            "profile": {"kind": "schedule", "steps": [{"at_s": 0, "value": 1}, {"at_s": 0, "value": c, "ramp_s": life}]}
        }
    else:
        users = {"users": c}
    return Scenario.model_validate(
        {
            "name": row.id,
            "run": {
                "duration_s": warm + measured * life,
                "warmup_s": warm,
                "replications": 1,
                "seed": 1,
                "drain_s": 3.0 * life,
            },
            "workload": {"mode": "closed", **users, "think_s": 0},
            "cache": {"enabled": False},
            "retrieval": {"enabled": False},
            "llm": llm,
        }
    )


def replay(row: SiliconRow, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """capsim's mean TTFT and TPOT (ms) for ``row``, or the reason it refuses the scenario.

    When fewer than ``c`` requests finish in the measured window (the lifetime estimate was
    short) the run is repeated four times as long.
    """
    try:
        scn = scenario(row, overrides)
    except ValidationError as e:  # the scenario's own refusal (does not fit, ...), kept per row
        msg = str(e.errors()[0]["msg"]).removeprefix("Value error, ")
        return {"id": row.id, "error": msg[:300]}
    for scale in (1.0, 4.0):
        if scale > 1.0:
            scn = scenario(row, overrides, scale)
        rec = run_replication(scn, 0, records=True).records
        if START == "burst":  # the first BURST_REQUESTS x c requests sent, all of which must finish
            sel = _first_sent(rec, BURST_REQUESTS * row.concurrency)
            if sel is not None or scale > 1.0:
                break
            continue
        lo, hi = scn.run.warmup_s, scn.run.duration_s
        assert isinstance(lo, float)
        sel = (rec["arrival_s"] >= lo) & (rec["arrival_s"] < hi) & np.isfinite(rec["ttft_ms"])
        if sel.sum() >= row.concurrency or scale > 1.0:
            break
    if sel is None:
        return {"id": row.id, "error": "the first requests did not finish in the run"}
    n = int(sel.sum())
    if n == 0:
        return {"id": row.id, "error": "no request finished in the measured window"}
    out = rec["output_tokens"][sel]
    tpot = rec["decode_ms"][sel] / np.maximum(out - 1, 1)
    return {
        "id": row.id,
        "ttft_ms": float(np.mean(rec["ttft_ms"][sel])),
        "tpot_ms": float(np.mean(tpot)),
        "requests": n,
        "preemptions": int(np.sum(rec["preemptions"][sel])),
        "error": "",
    }


def _first_sent(rec: dict[str, np.ndarray], n: int) -> np.ndarray | None:
    """The records of the first ``n`` requests sent, or None when fewer than ``n`` finished or one of
    the first ``n`` sent did not (a later request finishing in its place)."""
    done = np.isfinite(rec["ttft_ms"])
    if done.sum() < n:
        return None
    order = np.argsort(rec["arrival_s"], kind="stable")
    sel = np.zeros(len(done), bool)
    sel[order[:n]] = True
    return sel if bool(done[sel].all()) else None


# --------------------------------------------------------------------------- many rows, cached


def fingerprint(extra: str = "") -> str:
    """A hash of the model code and the data it reads: any change replays every row afresh."""
    h = hashlib.sha256(extra.encode())
    files: list[Path] = [Path(__file__)]
    for sub in ("physics", "engine", "spec"):
        files += sorted((SIM / sub).rglob("*.py")) + sorted((SIM / sub).rglob("*.yaml"))
    files += [data_path("published/fit.json")]
    for extra_file in ("silicon/engine_fit.json", "silicon/custom_allreduce_perf.csv"):
        if data_path(extra_file).is_file():
            files.append(data_path(extra_file))
    files += sorted(data_path("silicon/perop").glob("*.json"))
    for f in files:
        h.update(f.relative_to(SIM).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    """``$CAPSIM_CACHE/validate`` (default ``~/.cache/capsim/validate``), as every capsim cache."""
    return Path(os.environ.get("CAPSIM_CACHE") or Path.home() / ".cache" / "capsim") / "validate"


def _replay_task(task: tuple[SiliconRow, dict[str, Any] | bool | None]) -> dict[str, Any]:
    row, o = task
    if isinstance(o, bool):  # no parameters for this row under this predictor
        return {"id": row.id, "error": "no held-out parameters"}
    return replay(row, o)


def replay_rows(
    rows: Sequence[SiliconRow],
    overrides: Callable[[SiliconRow], dict[str, Any] | None] | None = None,
    jobs: int | None = None,
    cache: Path | None = None,
    key: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """:func:`replay` of every row (in row order), over ``jobs`` processes, cached.

    ``overrides(row)`` gives the ``llm`` keys a row is replayed with (an engine preset); ``key``
    names that choice in the cache.  ``cache`` None: no cache.
    """
    folder = (cache / fingerprint(key)) if cache is not None else None
    results: dict[str, dict[str, Any]] = {}
    todo: list[SiliconRow] = []
    for r in rows:
        f = folder / f"{hashlib.sha256(r.id.encode()).hexdigest()[:20]}.json" if folder else None
        if f is not None and f.is_file():
            results[r.id] = json.loads(f.read_text())
        else:
            todo.append(r)
    tasks: list[tuple[SiliconRow, dict[str, Any] | bool | None]] = []
    for r in todo:
        o = overrides(r) if overrides else None
        tasks.append((r, False if overrides and o is None else o))
    done = len(rows) - len(todo)

    def keep(res: dict[str, Any]) -> None:
        nonlocal done
        results[res["id"]] = res
        if folder is not None:
            atomic_write_text(folder / f"{hashlib.sha256(res['id'].encode()).hexdigest()[:20]}.json", to_json(res))
        done += 1
        if progress:
            progress(done, len(rows))

    jobs = jobs or max(1, len(os.sched_getaffinity(0)))
    if jobs <= 1 or len(tasks) <= 1:
        for t in tasks:
            keep(_replay_task(t))
    else:
        with cf.ProcessPoolExecutor(max_workers=jobs) as pool:
            for res in pool.map(_replay_task, tasks, chunksize=1):
                keep(res)
    return [results[r.id] for r in rows]


# --------------------------------------------------------------------------- the sample and the summary


def stratified_sample(rows: Sequence[SiliconRow], per_stratum: int = 2, max_concurrency: int = 64) -> list[SiliconRow]:
    """A few rows of every (engine, GPU, model, precision): the ``per_stratum`` rows nearest the
    stratum's median concurrency among those at most ``max_concurrency`` (fast to replay),
    ties broken by id.  Deterministic."""
    strata: dict[tuple[str, ...], list[SiliconRow]] = {}
    for r in rows:
        strata.setdefault((r.engine, str(r.gpu), str(r.model), r.precision), []).append(r)
    out: list[SiliconRow] = []
    for k in sorted(strata):
        pool = [r for r in strata[k] if r.concurrency <= max_concurrency] or strata[k]
        med = float(np.median([r.concurrency for r in pool]))
        pool.sort(key=lambda r: (abs(r.concurrency - med), r.isl * r.osl, r.id))
        out += pool[:per_stratum]
    return out


def aiconfigurator_predictions(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """aiconfigurator's committed predictions by row id (rows it refused have none)."""
    p = Path(path) if path else data_path("silicon/aiconfigurator_predictions.csv")
    if not p.is_file():
        return {}
    out = {}
    with open(p, newline="") as fh:
        for r in csv.DictReader(line for line in fh if not line.startswith("#")):
            if r["aic_ttft_ms"] and r["aic_tpot_ms"]:
                out[r["id"]] = {"ttft_ms": float(r["aic_ttft_ms"]), "tpot_ms": float(r["aic_tpot_ms"])}
    return out


def _stats(err: Iterable[float]) -> dict[str, Any]:
    e = np.asarray(list(err), dtype=float)
    if not len(e):
        return {"n": 0}
    return {
        "n": len(e),
        "mape_pct": round(float(np.mean(np.abs(e))) * 100, 1),
        "signed_pct": round(float(np.mean(e)) * 100, 1),
    }


def per_row(
    rows: Sequence[SiliconRow],
    results: Sequence[dict[str, Any]],
    aic: dict[str, dict[str, float]],
    engine: Sequence[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One flat record per row: its configuration, measured, capsim's and aiconfigurator's figures and errors."""
    out = []
    for i, (r, res) in enumerate(zip(rows, results)):
        a = aic.get(r.id, {})
        eng = engine[i] if engine is not None else {}
        rec: dict[str, Any] = {
            "id": r.id,
            "engine": r.engine,
            "engine_version": r.engine_version,
            "gpu": r.gpu,
            "model": r.model,
            "precision": r.precision,
            "isl": r.isl,
            "osl": r.osl,
            "isl_osl": f"{r.isl}/{r.osl}",
            "concurrency": r.concurrency,
            "concurrency_band": band(r.concurrency),
            "tensor_parallel": r.tensor_parallel,
            "measured_ttft_ms": r.measured_ttft_ms,
            "measured_tpot_ms": r.measured_tpot_ms,
            "capsim_ttft_ms": res.get("ttft_ms", math.nan),
            "capsim_tpot_ms": res.get("tpot_ms", math.nan),
            "capsim_requests": res.get("requests", 0),
            "capsim_preemptions": res.get("preemptions", 0),
            "capsim_error": res.get("error", ""),
            "aic_ttft_ms": a.get("ttft_ms", math.nan),
            "aic_tpot_ms": a.get("tpot_ms", math.nan),
            "engine_ttft_ms": eng.get("ttft_ms", math.nan),
            "engine_tpot_ms": eng.get("tpot_ms", math.nan),
            "engine_frontend_ms": frontend_used(r) if engine is not None else 0.0,
        }
        for who in ("capsim", "aic", "engine"):
            for m in ("ttft", "tpot"):
                rec[f"{who}_{m}_err"] = rec[f"{who}_{m}_ms"] / rec[f"measured_{m}_ms"] - 1.0
        out.append(rec)
    return out


def _block(recs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [x for x in recs if not x["capsim_error"]]
    both = [x for x in ok if math.isfinite(x["aic_ttft_err"])]
    return {
        "rows": len(recs),
        "capsim_refused": len(recs) - len(ok),
        "capsim": {m: _stats(x[f"capsim_{m}_err"] for x in ok) for m in ("ttft", "tpot")},
        "aiconfigurator": {m: _stats(x[f"aic_{m}_err"] for x in both) for m in ("ttft", "tpot")},
        "capsim_on_aiconfigurator_rows": {m: _stats(x[f"capsim_{m}_err"] for x in both) for m in ("ttft", "tpot")},
        "engine_preset_on_aiconfigurator_rows": {
            m: _stats(x[f"engine_{m}_err"] for x in both if math.isfinite(x[f"engine_{m}_err"]))
            for m in ("ttft", "tpot")
        },
        "engine_preset_held_out": {
            m: _stats(x[f"engine_{m}_err"] for x in recs if math.isfinite(x[f"engine_{m}_err"]))
            for m in ("ttft", "tpot")
        },
    }


def summarize(
    records: list[dict[str, Any]], label: str = "", groups: Sequence[str] = GROUPS, replay_line: str | None = None
) -> dict[str, Any]:
    """MAPE and signed mean error of TTFT and TPOT, overall and by each of ``groups``."""
    doc: dict[str, Any] = {
        "kind": "capsim.validation_summary",
        "predictor": label,
        "data": f"aiconfigurator {AICONFIGURATOR_VERSION} silicon_sample.csv (sim/data/silicon)",
        "error": "predicted / measured - 1; mape_pct = mean |error|, signed_pct = mean error (+: too slow)",
        "replay": replay_line
        or f"closed loop, users = concurrency, think 0; warm-up {WARMUP_LIFETIMES:g} request lifetimes cut, "
        f"{MEASURED_LIFETIMES:g} measured; each engine's scheduler as aiconfigurator's benchmark rules launch it "
        f"(token budget = max batch + isl + {BENCHMARK_SLACK})",
        "all": _block(records),
        "by": {},
    }
    for g in groups:
        keys = sorted({str(x[g]) for x in records}, key=lambda s: (len(s), s) if g == "concurrency_band" else (0, s))
        doc["by"][g] = {k: _block([x for x in records if str(x[g]) == k]) for k in keys}
    refused: dict[str, int] = {}
    for x in records:
        if x["capsim_error"]:
            refused[x["capsim_error"]] = refused.get(x["capsim_error"], 0) + 1
    doc["capsim_refusals"] = refused
    return doc


ROW_COLUMNS: tuple[str, ...] = (
    "id",
    "engine",
    "engine_version",
    "gpu",
    "model",
    "precision",
    "isl",
    "osl",
    "concurrency",
    "tensor_parallel",
    "measured_ttft_ms",
    "measured_tpot_ms",
    "capsim_ttft_ms",
    "capsim_tpot_ms",
    "capsim_ttft_err",
    "capsim_tpot_err",
    "aic_ttft_ms",
    "aic_tpot_ms",
    "aic_ttft_err",
    "aic_tpot_err",
    "engine_ttft_ms",
    "engine_tpot_ms",
    "engine_ttft_err",
    "engine_tpot_err",
    "engine_frontend_ms",
    "capsim_requests",
    "capsim_preemptions",
    "capsim_error",
)


def rows_csv(records: list[dict[str, Any]], columns: Sequence[str] = ROW_COLUMNS) -> str:
    """The per-row records as CSV text (numbers to 4 decimals; empty where there is none)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return "" if not math.isfinite(v) else f"{v:.4f}"
        return str(v)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")  # quoted where a field holds a comma (a refusal's text)
    w.writerow(columns)
    for x in records:
        w.writerow([fmt(x[c]) for c in columns])
    return buf.getvalue()


# --------------------------------------------------------------------------- the whole command


def held_out_overrides(row: SiliconRow) -> dict[str, Any] | None:
    """The engine preset with the step costs and the frontend time fitted *without* the row's
    (model, GPU) group, or None where there are none (no fit, or the engine's only group)."""
    # deferred: engine_fit imports scipy, which only the fit needs
    from sim.run.engine_fit import group, overrides, perop_overrides

    e = engine_fit_document().get("engines", {}).get(row.engine, {})
    g = group(row)
    out: dict[str, Any]
    if row.moe and "parameters" in e:
        # as a scenario gets it: the engine's scheduler and the published roofline (a MoE model
        # stays on the roofline under step_cost auto: sim.physics.perop.MOE_AUTO)
        out = {**engine_preset(row.engine, with_step_cost=False), "engine": row.engine}
    else:
        p = _held_out(e, g)
        if p is None:
            return None
        roofline = [p[k] for k in FITTED]
        q = _held_out(e.get("perop", {}), g)
        if q is None:  # no per-operation fit without this group: the roofline fit alone
            out = overrides(row.engine, roofline)
        else:
            out = perop_overrides(row.engine, [q[k] for k in FITTED_PEROP], roofline)
    fe = _held_out(e.get("frontend", {}), g)
    out["frontend_ms"] = fe["frontend_ms"] if fe is not None else 0.0
    return out


def frontend_used(row: SiliconRow) -> float:
    """The frontend time the engine-preset replay of ``row`` ran with (0 without a fit)."""
    o = held_out_overrides(row)
    return float(o.get("frontend_ms", 0.0)) if o is not None else 0.0


def _held_out(fit: dict[str, Any], g: str) -> dict[str, float] | None:
    """The parameters fitted without group ``g``: its own refit when the fit saw ``g``; the fit's
    parameters when it never saw ``g`` (held out by construction); None without a fit."""
    if "parameters" not in fit:
        return None
    if g in fit.get("groups", ()):
        p: dict[str, float] | None = fit.get("held_out_parameters", {}).get(g)
        return p
    return dict(fit["parameters"])


def _records(
    rows: Sequence[SiliconRow], jobs: int | None, use_cache: bool, progress: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    cache = cache_dir() if use_cache else None
    results = replay_rows(rows, None, jobs, cache, key=f"start={START}", progress=progress)
    engine = replay_rows(rows, held_out_overrides, jobs, cache, key=f"start={START};engine-held-out")
    return per_row(rows, results, aiconfigurator_predictions(), engine)


def validation_rows(rows: Sequence[SiliconRow], engine: str | None = None) -> list[SiliconRow]:
    """The aggregated rows capsim represents, of ``engine`` alone when given (``--engine``)."""
    if engine is not None and engine not in BENCHMARK_ENGINES:
        raise ValueError(f"engine: expected one of {', '.join(BENCHMARK_ENGINES)}, got {engine!r}")
    return [r for r in rows if r.representable and not r.disaggregated and engine in (None, r.engine)]


def validation_records(
    jobs: int | None = None, use_cache: bool = True, start: str | None = None, engine: str | None = None
) -> list[dict[str, Any]]:
    """Every representable row (of ``engine`` when given) replayed (published and engine preset held
    out), one record each."""
    global START
    if start is not None:
        START = start
    return _records(validation_rows(load_rows(), engine), jobs, use_cache)


def run_validation(
    sample: bool = False,
    out: Path | None = None,
    jobs: int | None = None,
    use_cache: bool = True,
    start: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """Replay every row capsim represents (``sample``: the stratified sample; ``engine``: that
    engine's rows alone), summarise, and write ``rows.csv`` and ``summary.json`` into ``out`` (when
    given).  Returns the summary."""
    global START
    all_rows = load_rows()
    rows = validation_rows(all_rows, engine)
    if sample:
        rows = stratified_sample(rows)
    if start is not None:
        if start not in ("spread", "together", "burst"):
            raise ValueError(f"start: expected together, spread or burst, got {start!r}")
        START = start  # the workers inherit it (fork) and the cache key names it
    records = _records(rows, jobs, use_cache, progress)
    doc = summarize(records, label=f"capsim, efficiency published (start: {START})")
    doc["rows_in_file"] = len(all_rows)
    doc["rows_by_reason"] = reason_counts(all_rows)
    doc["sample"] = sample
    if engine is not None:
        doc["engine_filter"] = engine
    if out is not None:
        atomic_write_text(out / "rows.csv", rows_csv(records))
        atomic_write_text(out / "summary.json", json.dumps(doc, indent=1) + "\n")
    return doc


# --------------------------------------------------------------------------- disaggregated rows

#: What the disaggregated summary groups by.
DISAGG_GROUPS: tuple[str, ...] = ("engine", "model_gpu", "isl_osl", "concurrency_band")
#: Columns of ``disaggregated/rows.csv``: the aggregated rows' and each row's pools and link.
DISAGG_COLUMNS: tuple[str, ...] = (
    *ROW_COLUMNS[:10],
    "prefill_workers",
    "prefill_tp",
    "decode_workers",
    "link",
    *ROW_COLUMNS[10:],
)


def disaggregated_records(
    rows: Sequence[SiliconRow], jobs: int | None = None, use_cache: bool = True
) -> list[dict[str, Any]]:
    """Each disaggregated row replayed as ``llm.disaggregated`` (published and engine preset held
    out), one record each with its pools and the link it was replayed over."""
    records = _records(rows, jobs, use_cache)
    for rec, r in zip(records, rows):
        rec.update(
            model_gpu=f"{r.model} on {r.gpu}",
            prefill_workers=r.prefill_workers,
            prefill_tp=r.prefill_tp,
            decode_workers=r.decode_workers,
            link=disaggregated_link(r),
        )
    return records


def run_disaggregated_validation(
    out: Path | None = None, jobs: int | None = None, use_cache: bool = True
) -> dict[str, Any]:
    """Replay every disaggregated row capsim represents (:func:`sim.spec.silicon.representable_disaggregated`),
    summarise by engine, (model, GPU), isl/osl and concurrency, and write ``rows.csv`` and
    ``summary.json`` into ``out`` (when given).  Returns the summary."""
    all_rows = load_rows()
    rows = representable_disaggregated(all_rows)
    records = disaggregated_records(rows, jobs, use_cache)
    doc = summarize(
        records,
        label=f"capsim, efficiency published (start: {START}), llm.disaggregated",
        groups=DISAGG_GROUPS,
        replay_line=f"llm.disaggregated with the row's prefill and decode workers and tensor parallelism, "
        f"closed loop, users = concurrency, think 0; the KV over NVLink on GB200 / GB300, InfiniBand NDR "
        f"elsewhere; warm-up {WARMUP_LIFETIMES:g} request lifetimes cut, {MEASURED_LIFETIMES:g} measured",
    )
    doc["rows_in_file"] = len(all_rows)
    doc["disaggregated_rows_in_file"] = sum(r.disaggregated for r in all_rows)
    doc["rows_by_reason"] = reason_counts(all_rows)
    doc["disaggregated_rows_by_reason"] = reason_counts([r for r in all_rows if r.disaggregated])
    if out is not None:
        text = rows_csv(records, DISAGG_COLUMNS)
        atomic_write_text(out / "rows.csv", text)
        atomic_write_text(out / "summary.json", json.dumps(doc, indent=1) + "\n")
    return doc
