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
        "perop_overlap": True,
        "sources": {
            "max_batch": "SGLang sizes max_running_requests from the KV pool; 1024 does not bind at the "
            "measured concurrencies (<= 512)",
            "max_batched_tokens": "SGLang python/sglang/srt/server_args.py: chunked_prefill_size 8192 on "
            "H100/A100 (< 90 GiB) and H20/H200 (< 160 GiB), https://github.com/sgl-project/sglang",
            "chunked_prefill": "same file: enable_mixed_chunk default False: a prefill step runs instead of a "
            "decode step, capsim's whole-prompt scheduler",
            "gpu_memory_utilization": "same file: mem_fraction_static 0.88 at tp 1 (0.87 at tp 2, 0.85 at tp >= 4)",
            "perop_overlap": "SGLang's overlap scheduler (on by default since 0.4; disable_overlap_schedule off): "
            "'the scheduler runs one batch ahead and prepares all the metadata required for the next batch', "
            "https://lmsys.org/blog/2024-12-04-sglang-v0-4/#zero-overhead-batch-scheduler",
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


# --------------------------------------------------------------------------- SGLang's launch-time sizing

#: Where SGLang sizes its prefill chunk and its static memory from the GPU's memory.
SGLANG_MEMORY_SOURCE = (
    "SGLang python/sglang/srt/server_args.py ServerArgs._handle_gpu_memory_settings "
    "(https://github.com/sgl-project/sglang/pull/10975)"
)
#: ``chunked_prefill_size`` by GPU memory (MiB, exclusive upper bounds) in that function: 2k below
#: 35 GiB, 4k below 60 GiB (A100 40GB, L40), 8k below 160 GiB (H100, A100 80GB, H20, H200), 16k above
#: (B200, MI300).
SGLANG_CHUNK_BUCKETS: tuple[tuple[float, int], ...] = ((35 * 1024, 2048), (60 * 1024, 4096), (160 * 1024, 8192))
SGLANG_CHUNK_LARGEST = 16384
#: The first version of the file's SGLang rows that sizes its memory so: 0.5.6 onwards; 0.5.1.post1
#: (the file's one earlier version) predates that pull request and uses the table below.
SGLANG_HEURISTIC_FROM = (0, 5, 6)
#: ``mem_fraction_static`` by tensor parallelism before that pull request (same file, then
#: ``ServerArgs.__post_init__``): 0.79 at tp >= 16, 0.81 at >= 8, 0.85 at >= 4, 0.87 at >= 2, else 0.88;
#: and ``chunked_prefill_size`` 2048 below 25,000 MiB, else 8192.
SGLANG_OLD_FRACTIONS: tuple[tuple[int, float], ...] = ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88))


def _sglang_version(version: str) -> tuple[int, ...] | None:
    """``"0.5.1.post1"`` -> (0, 5, 1); None for what is not a release number ("", "nightly-dev")."""
    parts = []
    for p in version.split(".")[:3]:
        if not p.isdigit():
            return None
        parts.append(int(p))
    return tuple(parts) if len(parts) == 3 else None


def sglang_sizes_by_memory(version: str) -> bool:
    """Whether SGLang ``version`` sizes its chunk and memory fraction from the GPU's memory (0.5.6 and
    later, and the unnumbered nightly builds); else by the tensor-parallel table."""
    v = _sglang_version(version)
    return v is None or v >= SGLANG_HEURISTIC_FROM


def sglang_chunked_prefill_size(gpu_mem_mib: float, version: str = "") -> int:
    """SGLang's default ``chunked_prefill_size`` on a GPU with ``gpu_mem_mib`` MiB: 8,192 on an H100
    (81,090 MiB) or H200, 16,384 on a B200 (:data:`SGLANG_CHUNK_BUCKETS`); before 0.5.6, 8,192 from
    25,000 MiB up."""
    if not sglang_sizes_by_memory(version):
        return 2048 if gpu_mem_mib < 25_000 else 8192
    return next((size for top, size in SGLANG_CHUNK_BUCKETS if gpu_mem_mib < top), SGLANG_CHUNK_LARGEST)


def sglang_mem_fraction_static(
    gpu_mem_mib: float, tensor_parallel: int, chunk: int, cuda_graph_max_bs: int, version: str = ""
) -> float:
    """SGLang's default ``mem_fraction_static``: the share of the GPU its weights and KV pool take.

    From 0.5.6 (:data:`SGLANG_MEMORY_SOURCE`): ``round((gpu_mem - reserved) / gpu_mem, 3)`` with
    ``reserved = 512 + 1.5 * max(chunk, 2048) + 2 * cuda_graph_max_bs + tp / 8 * 1024`` MiB, at least
    10,240 MiB on a GPU over 60 GiB (no DP attention, no speculative decoding).  An H100 (81,090 MiB)
    at tp 1 with an 8,192 chunk and CUDA graphs to batch 16: 512 + 12,288 + 32 + 128 = 12,960 MiB
    reserved, 0.840.  Before 0.5.6, :data:`SGLANG_OLD_FRACTIONS` by tensor parallelism."""
    if not sglang_sizes_by_memory(version):
        return next(f for tp, f in SGLANG_OLD_FRACTIONS if tensor_parallel >= tp)
    reserved = 512 + 1.5 * max(chunk, 2048) + 2 * cuda_graph_max_bs + tensor_parallel / 8 * 1024
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)
