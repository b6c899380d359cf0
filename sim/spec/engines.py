"""Serving engines as scenario presets: ``llm.engine: vllm | trtllm | sglang``.

An engine preset fills the ``llm`` keys a scenario leaves unset with what that engine does by
default on an 80-141 GB Hopper GPU, each with its source:

* **scheduler**: the running-sequence limit (``max_batch``), the token budget of a step
  (``max_batched_tokens``) and whether a step mixes prompt chunks with decodes
  (``chunked_prefill``);
* **memory**: the fraction of the card it sizes its pools from (``gpu_memory_utilization``);
* **step cost**: ``bw_efficiency``, ``mfu``, ``step_overhead_ms`` and
  ``step_overhead_per_seq_ms`` fitted to that engine's measured serving runs
  (``sim/data/silicon/engine_fit.json``, written by ``capsim validate --fit-engines``, which
  also measures the error held out by (model, GPU) group);
* **per-operation step cost**: where aiconfigurator's kernel timings cover the GPU, the engine,
  the model, its tensor parallelism and dtype (:mod:`sim.physics.perop`), a step is the sum of
  those kernels plus ``perop_overhead_ms``, ``perop_overhead_per_seq_ms`` and the prefill scale
  ``perop_prefill_scale``, fitted to the engine's measured runs those tables cover (the fit's
  ``perop`` block); the roofline parameters above cost the rest;
* **all-reduce latency**: ``allreduce_latency_us`` from the engine's own all-reduce kernel timed in
  isolation (aiconfigurator's per-operation table, ``sim/data/silicon/custom_allreduce_perf.csv``):
  the median, over H100, H200 and B200 at 2, 4 and 8 GPUs, of the smallest message's latency
  under CUDA graphs, as a decode step runs it (:func:`allreduce_latency_us`).

An engine with no fitted parameters (none now) keeps the ``efficiency`` preset's step cost, and
an ``engine_version`` the measured runs do not include keeps the engine's fit: both say so in
``capsim estimate`` (:func:`provenance`).  Keys the scenario sets itself win over the preset,
and so does an ``efficiency`` the scenario names (its step-cost parameters replace the fit's).
"""

from __future__ import annotations

import csv
import functools
import json
from typing import Any

from sim.files import data_path

ENGINES: tuple[str, ...] = ("vllm", "trtllm", "sglang")
#: The step-cost keys the fit fills.
FITTED: tuple[str, ...] = ("bw_efficiency", "mfu", "step_overhead_ms", "step_overhead_per_seq_ms")
#: The keys the per-operation fit fills (what the kernels timed alone leave out of a step).
FITTED_PEROP: tuple[str, ...] = ("perop_overhead_ms", "perop_overhead_per_seq_ms", "perop_prefill_scale")
#: The key the frontend fit fills (a request's time outside the GPU steps, from TTFT).
FITTED_FRONTEND: tuple[str, ...] = ("frontend_ms",)

#: Scheduler and memory defaults per engine, with where each comes from.
SCHEDULER: dict[str, dict[str, Any]] = {
    "vllm": {
        "max_batch": 1024,
        "max_batched_tokens": 8192,
        "chunked_prefill": True,
        "gpu_memory_utilization": 0.9,
        "sources": {
            "max_batch": "vLLM vllm/engine/arg_utils.py get_batch_defaults: max_num_seqs 1024 for the OpenAI "
            "server on GPUs with >= 70 GiB that are not A100s (H100, H200), https://github.com/vllm-project/vllm",
            "max_batched_tokens": "same function: max_num_batched_tokens 8192 for the OpenAI server on those GPUs",
            "chunked_prefill": "vLLM V1 schedules prompt chunks beside decodes in one token budget (always on)",
            "gpu_memory_utilization": "vLLM EngineArgs gpu_memory_utilization default 0.9",
        },
    },
    "trtllm": {
        "max_batch": 2048,
        "max_batched_tokens": 8192,
        "chunked_prefill": True,
        "gpu_memory_utilization": 0.9,
        "sources": {
            "max_batch": "TensorRT-LLM tensorrt_llm/llmapi/llm_args.py max_batch_size default 2048 "
            "(trtllm-serve), https://github.com/NVIDIA/TensorRT-LLM",
            "max_batched_tokens": "same file: max_num_tokens default 8192",
            "chunked_prefill": "in-flight batching runs context (prompt) and generation requests in one step; "
            "with enable_chunked_prefill off (its default) whole prompts fit the 8192-token budget for the "
            "measured lengths, which capsim's mixed scheduler gives",
            "gpu_memory_utilization": "KvCacheConfig free_gpu_memory_fraction default 0.9 (of the memory free "
            "after the weights; capsim's reserve model stands in for the rest)",
        },
    },
    "sglang": {
        "max_batch": 1024,
        "max_batched_tokens": 8192,
        "chunked_prefill": False,
        "gpu_memory_utilization": 0.88,
        "sources": {
            "max_batch": "SGLang sizes max_running_requests from the KV pool; 1024 does not bind at the "
            "measured concurrencies (<= 512)",
            "max_batched_tokens": "SGLang python/sglang/srt/server_args.py: chunked_prefill_size 8192 on "
            "H100/A100 (< 90 GiB) and H20/H200 (< 160 GiB), https://github.com/sgl-project/sglang",
            "chunked_prefill": "same file: enable_mixed_chunk default False: a prefill step runs instead of a "
            "decode step, capsim's whole-prompt scheduler",
            "gpu_memory_utilization": "same file: mem_fraction_static 0.88 at tp 1 (0.87 at tp 2, 0.85 at tp >= 4)",
        },
    },
}


@functools.cache
def fit_document() -> dict[str, Any]:
    """The shipped engine fit (empty when there is none)."""
    p = data_path("silicon/engine_fit.json")
    if not p.is_file():
        return {}
    doc: dict[str, Any] = json.loads(p.read_text())
    return doc


@functools.cache
def allreduce_latency_us(engine: str) -> float:
    """The engine's all-reduce latency, µs: the median over (GPU, GPUs) of the smallest message's
    latency in aiconfigurator's isolated timings of the engine's own all-reduce kernel."""
    with open(data_path("silicon/custom_allreduce_perf.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["engine"] == engine]
    smallest = min(int(r["message_size"]) for r in rows)
    lat = sorted(float(r["latency_ms"]) * 1000.0 for r in rows if int(r["message_size"]) == smallest)
    mid = len(lat) // 2
    return lat[mid] if len(lat) % 2 else (lat[mid - 1] + lat[mid]) / 2.0


def fitted_parameters(engine: str) -> dict[str, float]:
    """The engine's fitted step-cost parameters, roofline and per-operation (empty when it has none)."""
    e = fit_document().get("engines", {}).get(engine)
    if not e or "parameters" not in e:
        return {}
    out = {k: float(e["parameters"][k]) for k in FITTED}
    out.update({k: float(v) for k, v in e.get("perop", {}).get("parameters", {}).items() if k in FITTED_PEROP})
    out.update(frontend_parameters(engine))
    return out


def frontend_parameters(engine: str) -> dict[str, float]:
    """The engine's fitted frontend time (``frontend_ms``; empty when it has none)."""
    e = fit_document().get("engines", {}).get(engine, {})
    return {k: float(v) for k, v in e.get("frontend", {}).get("parameters", {}).items() if k in FITTED_FRONTEND}


def preset(engine: str, with_step_cost: bool = True, with_perop: bool | None = None) -> dict[str, Any]:
    """The ``llm`` keys ``engine`` fills (scheduler, memory and, when fitted, step cost: the roofline's
    and the per-operation overheads' with ``with_step_cost``, the latter alone with ``with_perop``)."""
    s = {k: v for k, v in SCHEDULER[engine].items() if k != "sources"}
    fitted = fitted_parameters(engine)
    if with_step_cost:
        s.update(fitted)
        s["allreduce_latency_us"] = allreduce_latency_us(engine)
    elif with_perop:
        s.update({k: v for k, v in fitted.items() if k in FITTED_PEROP})
    s.update(frontend_parameters(engine))  # the request path, not a step cost: whatever costs the steps
    return s


@functools.cache
def validation_summary() -> dict[str, Any]:
    """The shipped ``capsim validate`` summary of the measured serving runs (empty when none)."""
    p = data_path("silicon/validation/summary.json")
    doc: dict[str, Any] = json.loads(p.read_text()) if p.is_file() else {}
    return doc


def provenance(engine: str, version: str | None, efficiency_named: bool, moe: bool = False) -> str:
    """One line saying where an engine preset's step costs come from, and any fallback."""
    e = fit_document().get("engines", {}).get(engine)
    if efficiency_named:
        return f"llm.engine {engine}: scheduler defaults only; step costs from the llm.efficiency named"
    if moe:
        return (
            f"llm.engine {engine}: scheduler defaults and its per-operation overheads; a mixture-of-experts "
            "model's step is the per-operation sum where the tables cover its layout, elsewhere the "
            "llm.efficiency preset's roofline (the engine's roofline fit saw dense models only)"
        )
    if not e or "parameters" not in e:
        return f"llm.engine {engine}: no measured runs of it fitted; step costs fall back to llm.efficiency published"
    block = validation_summary().get("by", {}).get("engine", {}).get(engine, {})
    ho = block.get("engine_preset_held_out", {})
    versions = e.get("versions", [])
    p = e.get("perop", {})
    perop = (
        f"per-operation sum (kernels timed alone) where its tables cover the replica, its overheads fitted "
        f"to the {p['rows']} runs they cover; elsewhere the roofline "
        if "parameters" in p
        else ""
    )
    line = (
        f"llm.engine {engine}: {perop}step costs fitted to {e['rows']} measured serving runs of {engine} "
        f"(aiconfigurator silicon_sample.csv, versions {', '.join(versions) or 'unstated'}), all-reduce "
        f"{allreduce_latency_us(engine):.1f} us from its own kernel timed alone; held out by "
        f"(model, GPU): TPOT {ho.get('tpot', {}).get('mape_pct', float('nan')):.0f}% MAPE "
        f"(signed {ho.get('tpot', {}).get('signed_pct', float('nan')):+.0f}%), TTFT "
        f"{ho.get('ttft', {}).get('mape_pct', float('nan')):.0f}% "
        f"(signed {ho.get('ttft', {}).get('signed_pct', float('nan')):+.0f}%)"
    )
    fe = frontend_parameters(engine)
    if fe:
        line += f"; frontend {fe['frontend_ms']:.0f} ms per request, fitted to the runs' TTFT"
    if version and version not in versions:
        line += f"; version {version} was not measured: the engine's fit stands in"
    return line
