"""The cost model on paper: what a scenario needs, instantly, without simulating.

``capsim estimate`` answers the questions one asks before running anything:
how big are the weights and the KV cache, how many sequences fit, how long
does a prefill and a decode step take at a given batch, is a step memory- or
compute-bound, and at what load does the first stage saturate.

Every figure comes from the same pure formulas the simulator uses
(:mod:`sim.physics.gpu`, :class:`sim.engine.llm.replica.StepCost`), per GPU of a
``tensor_parallel`` replica.  Means stand in for distributions:

* prompt = ``system_tokens + top_k * mean(doc_tokens) + mean(question_tokens)``
  (or the mean of ``prompt_tokens``), output = mean of ``output_tokens``;
* a decode step at batch ``b`` has every sequence at the mean prompt plus
  half the mean output;
* the cache hit ratio of the LRU is Che's approximation over the query
  popularity: ``T`` solves ``sum_i (1 - exp(-p_i T)) = capacity`` and
  ``hit = sum_i p_i (1 - exp(-p_i T))``.

Capacity of the stages, per request:

* retrieval: ``miss ratio * mean search time`` on ``min(workers, cpu_cores)``
  servers (with ``retrieval.scheduler``, less the part off the core, which
  every miss spends as a delay);
* GPU: a replica runs at the batch that fits, ``b = min(max_batch, sequences
  that fit in KV memory)``; a request costs the GPU its prefill plus its share
  of the decode steps, ``prefill + (output - 1) * step(b) / b`` seconds, so a
  replica serves ``1 / that`` requests per second.  In the closed-network
  model the GPU is a station of ``replicas`` servers with that demand, plus a
  pure delay of ``(output - 1) * step(1)`` (the decode time a request takes
  even alone on a replica) added to the think time.

Utilisation at the scenario's load: open, ``rate * demand / servers``;
closed, exact MVA (:func:`sim.physics.queueing.mva`) over those stations with the
think time (plus the cache lookup and the GPU's delay) as the delay station.  Saturation: the
stage with the largest ``demand / servers`` saturates first, at
``servers / demand`` requests per second; closed, at Kleinrock's ``N*`` users
(:func:`sim.physics.queueing.closed_saturation_users`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from sim.engine.pipeline import retrieval_service_distribution
from sim.engine.workload import Popularity
from sim.errors import ConfigError
from sim.physics import gpu as gm
from sim.physics import perop
from sim.physics import queueing as analytic
from sim.physics.gpu import StepCost
from sim.physics.handoff import transfer_s
from sim.physics.sharing import contention_at
from sim.physics.steptable import step_cost
from sim.spec import catalog
from sim.spec.efficiency import provenance
from sim.spec.engines import provenance as engine_provenance
from sim.spec.scenario import expand
from sim.spec.schema import LLMConfig, PromptComposition, Scenario, build_distribution

DECODE_BATCHES = (1, 8, 32, 128)
MVA_MAX_USERS = 20_000


def mean_prompt_tokens(scn: Scenario) -> float:
    p = scn.llm.prompt_tokens
    if isinstance(p, PromptComposition):
        top_k = scn.retrieval.top_k if scn.retrieval.enabled else 0
        return (
            p.system_tokens + top_k * build_distribution(p.doc_tokens).mean + build_distribution(p.question_tokens).mean
        )
    return build_distribution(p).mean


def mean_output_tokens(scn: Scenario) -> float:
    return build_distribution(scn.llm.output_tokens).mean


def lru_hit_ratio(probabilities: np.ndarray, capacity: int) -> float:
    """Che's approximation of an LRU cache's hit ratio under independent requests.

    The characteristic time ``T`` solves ``sum_i (1 - exp(-p_i T)) = C``;
    then ``hit = sum_i p_i (1 - exp(-p_i T))``.  ``C >= keys`` gives 1 (every
    key stays), ``C = 0`` gives 0.
    """
    p = np.asarray(probabilities, dtype=float)
    p = p[p > 0]
    if capacity <= 0 or p.size == 0:
        return 0.0
    if capacity >= p.size:
        return 1.0

    def filled(t: float) -> float:
        return float(np.sum(-np.expm1(-p * t))) - capacity

    hi = 1.0
    while filled(hi) < 0:
        hi *= 2.0
    from scipy.optimize import brentq  # deferred: scipy.optimize is slow to import

    t = brentq(filled, 0.0, hi, xtol=1e-12 * hi, rtol=1e-12)
    return float(np.sum(p * -np.expm1(-p * t)))


def _decode_step(cost: StepCost, batch: int, ctx_per_seq: float) -> tuple[float, float, float, bool]:
    """(seconds, flops, bytes, memory-bound) of one decode step, per GPU."""
    ctx = batch * (ctx_per_seq + 1)
    flops, n_bytes = cost.work(batch, ctx, ctx)
    return cost.decode_time(batch, ctx), flops, n_bytes, cost.memory_bound(batch, ctx, ctx)


def _prefill(cost: StepCost, tokens: float, past: float, budget: int) -> tuple[float, float, float]:
    """(seconds, flops, bytes) of prefilling ``tokens`` after ``past`` cached ones, in chunks of ``budget``."""
    t = flops = n_bytes = 0.0
    done = 0.0
    while done < tokens:
        chunk = min(budget, tokens - done)
        c0 = past + done
        pairs = gm.attention_pairs(chunk, c0)
        ctx = c0 + chunk
        t += cost.time(chunk, ctx, pairs, 1)
        f, b = cost.work(chunk, ctx, pairs)
        flops += f
        n_bytes += b
        done += chunk
    return t, flops, n_bytes


def _verdict(memory_bound: bool) -> str:
    return "memory-bound" if memory_bound else "compute-bound"


def _sequences_in_memory(llm: LLMConfig, prompt: float, output: float) -> int:
    """Mean requests whose KV fits one replica beside the shared prefix's blocks."""
    B, prefix = llm.kv_block_tokens, llm.prefix_tokens
    room = llm.kv_blocks_usable - prefix // B  # vLLM V1 keeps one block as its null block
    return int(room // max(1, gm.blocks_for_tokens(math.ceil(prompt + output - prefix), B)))


class ReplicaCapacity(TypedDict):
    """What one replica delivers at a full batch (:func:`replica_capacity`)."""

    batch: int
    decode_step_ms: float
    requests_per_s: float
    output_tokens_per_s: float
    gpu_ms_per_request: float


def _replica_capacity(
    cost: StepCost, batch: int, prefill_s: float, ctx: float, output: float
) -> ReplicaCapacity | None:
    """What one replica delivers at a full ``batch``: a request costs its prefill plus its
    share of ``output - 1`` decode steps of the batch (None when no request fits)."""
    if batch < 1:
        return None
    step_b = _decode_step(cost, batch, ctx)[0]
    gpu_s = prefill_s + max(output - 1.0, 0.0) * step_b / batch  # GPU time one request costs
    return {
        "batch": batch,
        "decode_step_ms": step_b * 1e3,
        "requests_per_s": 1.0 / gpu_s,
        "output_tokens_per_s": output / gpu_s,
        "gpu_ms_per_request": gpu_s * 1e3,
    }


def replica_capacity(scn: Scenario) -> ReplicaCapacity | None:
    """:func:`estimate`'s ``replica_capacity`` alone (the summary's GPU load uses it per point)."""
    llm = scn.llm
    if not llm.enabled:
        return None
    cost = step_cost(llm)
    prompt, output = mean_prompt_tokens(scn), mean_output_tokens(scn)
    batch = min(llm.max_batch, _sequences_in_memory(llm, prompt, output))
    p_s = _prefill(cost, prompt - llm.prefix_tokens, llm.prefix_tokens, llm.max_batched_tokens)[0]
    return _replica_capacity(cost, batch, p_s, prompt + output / 2.0, output)


def estimate(scn: Scenario) -> dict[str, Any]:
    """Every figure of ``capsim estimate --json`` for one (non-sweep) scenario."""
    if scn.workload.time_varying:
        raise ConfigError(
            "workload: capsim estimate assumes one steady load; a profile or trace changes over time "
            "(use capsim run, whose timeline gives results per window)"
        )
    out: dict[str, Any] = {"scenario": scn.name}
    notes: list[str] = []
    stations: dict[str, tuple[float, int]] = {}  # name -> (demand s per request, servers)
    cache_s = _cache_and_retrieval(scn, out, stations)
    # closed model: decode time a request spends even alone on a replica
    gpu_delay_s = 0.0
    if scn.llm.enabled:
        figures = _gpu_figures if scn.llm.disaggregated is None else _disaggregated_figures
        gpu_delay_s = figures(scn, out, notes, stations)
    _load(scn, out, stations, cache_s, gpu_delay_s)
    out["notes"] = notes
    return out


def retrieval_station(scn: Scenario) -> tuple[tuple[float, int] | None, float]:
    """The retrieval station :func:`estimate` uses, ``(demand s per request, servers)`` (None when
    disabled), and the delay every request spends in the cache lookup, s."""
    stations: dict[str, tuple[float, int]] = {}
    cache_s = _cache_and_retrieval(scn, {}, stations)
    return stations.get("retrieval"), cache_s


def gpu_station(scn: Scenario) -> tuple[tuple[float, int] | None, float]:
    """The GPU station :func:`estimate` uses, ``(demand s per request, replicas)`` (None when the
    stage is disabled or a mean request does not fit one replica), and a lone request's decode time, s."""
    stations: dict[str, tuple[float, int]] = {}
    delay_s = _gpu_figures(scn, {}, [], stations) if scn.llm.enabled else 0.0
    return stations.get("gpu"), delay_s


def gpu_stations(scn: Scenario) -> tuple[dict[str, tuple[float, int]] | None, float]:
    """The GPU stations :func:`estimate` uses (``gpu``; a disaggregated deployment's
    ``gpu_prefill`` and ``gpu_decode``), None when a mean request does not fit a replica, and the
    delay every request spends besides (a lone request's decode, the hand-off), s."""
    if not scn.llm.enabled:
        return {}, 0.0
    stations: dict[str, tuple[float, int]] = {}
    figures = _gpu_figures if scn.llm.disaggregated is None else _disaggregated_figures
    delay_s = figures(scn, {}, [], stations)
    want = 1 if scn.llm.disaggregated is None else 2
    return (stations if len(stations) == want else None), delay_s


def _disaggregated_figures(
    scn: Scenario, out: dict[str, Any], notes: list[str], stations: dict[str, tuple[float, int]]
) -> float:
    """A disaggregated deployment's figures: the decode pool's memory and steps in the usual keys,
    and under ``disaggregated`` each pool's capacity and the KV hand-off.  Two stations:

    * ``gpu_prefill``: a request costs a prefill replica its prompt's prefill, shared by the
      ``k = min(max_batch, max_batched_tokens // prompt)`` prompts one step holds:
      ``step(k prompts) / k``; servers: the prefill replicas;
    * ``gpu_decode``: a request costs a decode replica its share of ``output`` steps at the batch
      that fits (the first one computes the prompt's last token, then ``output - 1`` decode):
      ``output * step(b) / b``; servers: the decode replicas.

    The delay besides is the hand-off (:func:`sim.physics.handoff.transfer_s`), ``output`` decode
    steps alone and the engine's frontend time."""
    llm = scn.llm
    pc, dc = llm.pool("prefill"), llm.pool("decode")
    dscn = scn.model_copy(update={"llm": dc})
    _gpu_figures(dscn, out, notes, {})  # the decode pool's memory, decode steps and batch
    out.pop("replica_capacity", None)  # an aggregated replica's: each pool's is below
    prompt, output = mean_prompt_tokens(scn), mean_output_tokens(scn)
    ctx = prompt + output / 2.0
    k, p_s = _prefill_pool(pc, prompt)
    # decode pool
    dcost = step_cost(dc)
    fit = _sequences_in_memory(dc, prompt, output)
    batch = int(min(dc.max_batch, fit))
    cap = _replica_capacity(dcost, batch, 0.0, ctx, output + 1.0)  # output steps, the first the prompt's last token
    d = llm.disaggregated
    assert d is not None
    link_s = transfer_s(prompt, dc.kv_bytes_per_token_per_gpu, llm.link_bytes_per_s, d.latency_us / 1e6)
    lone_s = output * _decode_step(dcost, 1, ctx)[0]
    out["disaggregated"] = {
        "prefill": {
            "replicas": pc.replicas,
            "gpu": pc.gpu.name,
            "tensor_parallel": pc.tensor_parallel,
            "prompts_per_step": k,
            "prefill_ms": p_s * 1e3,
            "requests_per_s": 1.0 / p_s,
        },
        "decode": {
            "replicas": dc.replicas,
            "gpu": dc.gpu.name,
            "tensor_parallel": dc.tensor_parallel,
            "batch": batch,
            "decode_step_ms": cap["decode_step_ms"] if cap else None,
            "requests_per_s": cap["requests_per_s"] if cap else None,
        },
        "link": d.link if d.link_gbps is None else "link_gbps",
        "link_gbps": llm.link_bytes_per_s / 1e9,
        "handoff_bytes": prompt * llm.kv_bytes_per_token,
        "handoff_bytes_per_gpu": prompt * dc.kv_bytes_per_token_per_gpu,
        "handoff_ms": link_s * 1e3,
    }
    stations["gpu_prefill"] = (p_s, pc.replicas)
    if cap is not None:
        stations["gpu_decode"] = (cap["gpu_ms_per_request"] / 1e3, dc.replicas)
    return link_s + lone_s + llm.frontend_ms / 1e3


def _prefill_pool(pc: LLMConfig, prompt: float) -> tuple[int, float]:
    """A prefill replica's prompts a step (``k = min(max_batch, max_batched_tokens // prompt)``,
    at least 1) and its time per prompt, s: ``step(k prompts) / k``."""
    pcost = step_cost(pc)
    n = max(prompt - pc.prefix_tokens, 1.0)
    k = int(max(1, min(pc.max_batch, pc.max_batched_tokens // max(1, math.ceil(n)))))
    if k == 1:
        return 1, _prefill(pcost, n, pc.prefix_tokens, pc.max_batched_tokens)[0]
    pairs = k * gm.attention_pairs(n, pc.prefix_tokens)  # k whole prompts in one step
    return k, pcost.time(k * n, k * (n + pc.prefix_tokens), pairs, k) / k


def _cache_and_retrieval(scn: Scenario, out: dict[str, Any], stations: dict[str, tuple[float, int]]) -> float:
    """The cache's hit ratio and the retrieval station into ``out`` / ``stations``; returns
    the mean cache lookup, seconds (a delay every request spends)."""
    miss = 1.0
    if scn.cache.enabled:
        hit = lru_hit_ratio(Popularity(scn.workload.queries).probabilities(), scn.cache.capacity)
        miss = 1.0 - hit
        out["cache_hit_ratio"] = hit
        cache_s = build_distribution(scn.cache.lookup_ms).mean / 1e3
    else:
        out["cache_hit_ratio"] = None
        cache_s = 0.0
    if scn.retrieval.enabled:
        dist, info = retrieval_service_distribution(scn)
        r = scn.retrieval
        out["retrieval_service_ms"] = dist.mean * 1e3
        out["retrieval_source"] = info.get("source")
        workers = min(r.workers, r.cpu_cores or r.workers)
        on_core_s = dist.mean
        if r.scheduler is not None:  # threads on one core: the part off the core is a delay, not its work
            off_s = min(dist.mean, r.scheduler.off_core_ms / 1e3)
            on_core_s -= off_s
            cache_s += miss * off_s
        # all workers busy: each search stretched by the contention of `workers` running at once
        stations["retrieval"] = (miss * on_core_s * contention_at(workers, info["contention"]), workers)
    else:
        out["retrieval_service_ms"] = None
    return cache_s


def _gpu_figures(scn: Scenario, out: dict[str, Any], notes: list[str], stations: dict[str, tuple[float, int]]) -> float:
    """Memory, step times, roofline verdicts and the replica's capacity into ``out``, the GPU
    station into ``stations``; returns the decode time a request spends even alone on a replica."""
    llm = scn.llm
    cost = step_cost(llm)
    out["step_model"] = f"table {llm.step_table}" if llm.step_table else "roofline"
    out["step_cost_figures"] = step_cost_figures(llm)
    m = llm.model
    prompt, output = mean_prompt_tokens(scn), mean_output_tokens(scn)
    prefix = llm.prefix_tokens
    out.update(_memory_figures(llm, prompt, output))
    fit = _sequences_in_memory(llm, prompt, output)
    out["max_sequences_in_memory"] = int(fit)
    batch = int(min(llm.max_batch, fit))
    out["batch_that_fits"] = batch
    out["max_batch"] = llm.max_batch
    if fit < 1:
        notes.append("a mean request does not fit in the KV cache of one replica")
    elif fit < llm.max_batch:
        notes.append(f"KV memory, not max_batch ({llm.max_batch}), limits the batch to {fit}")

    p_s, p_flops, p_bytes = _prefill(cost, prompt - prefix, prefix, llm.max_batched_tokens)
    out["prefill_ms"] = p_s * 1e3
    out["prefill_ms_uncached"] = _prefill(cost, prompt, 0.0, llm.max_batched_tokens)[0] * 1e3
    # a measured step cost says nothing about which bound a step hits: name where it comes from
    measured = "measured (table)" if llm.step_table else "kernels timed alone" if llm.perop_entry else None
    out["prefill_bound"] = measured or _verdict(p_bytes * cost.inv_bw >= p_flops * cost.inv_peak)

    ctx = prompt + output / 2.0
    sizes = sorted(set(DECODE_BATCHES) | {llm.max_batch})
    steps = {b: _decode_step(cost, b, ctx) for b in sizes}
    out["decode_context_tokens"] = ctx
    out["decode_step_ms"] = {str(b): steps[b][0] * 1e3 for b in sizes}
    out["decode_tokens_per_s"] = {str(b): b / steps[b][0] for b in sizes}
    out["decode_fits"] = {str(b): b <= fit for b in sizes}

    hw_ridge = gm.ridge_point_flops_per_byte(llm.peak_tflops, llm.gpu.hbm_bandwidth_gbps)
    eff_ridge = gm.ridge_point_flops_per_byte(llm.peak_tflops, llm.gpu.hbm_bandwidth_gbps, llm.mfu, llm.bw_efficiency)
    ends = {"batch_1": steps[1], "max_batch": steps[llm.max_batch]}
    out["ridge_point_flops_per_byte"] = hw_ridge
    out["effective_ridge_flops_per_byte"] = eff_ridge
    out["arithmetic_intensity"] = {k: gm.arithmetic_intensity(v[1], v[2]) for k, v in ends.items()}
    out["bound"] = {k: (measured or _verdict(v[3])) for k, v in ends.items()}
    if m.kv_lora_rank:  # latent attention: its own FLOPs per (query, key) pair
        per_pair = gm.attention_flops_per_pair(m.layers, m.heads, m.head_dim, m.kv_lora_rank, m.qk_rope_head_dim)
        out["attention_flops"] = per_pair * gm.attention_pairs(prompt)
    else:
        out["attention_flops"] = gm.attention_flops(m.layers, m.heads, m.head_dim, prompt)

    out["replica_capacity"] = cap = _replica_capacity(cost, batch, p_s, ctx, output)
    if cap is None:
        return 0.0
    stations["gpu"] = (cap["gpu_ms_per_request"] / 1e3, llm.replicas)
    return max(output - 1.0, 0.0) * steps[1][0] + llm.frontend_ms / 1e3  # the engine's frontend: a pure delay


def step_cost_figures(llm: LLMConfig) -> dict[str, Any]:
    """Which figures the step cost is built from: the GPU's bandwidth, the peak at the compute
    precision and the interconnect (with their catalog sources), the bytes per weight and per KV
    element, and for a MoE model the active parameters and the experts a step reads."""
    g, m = llm.gpu, llm.model
    peak_field = {"fp4": "fp4_tflops", "fp8": "fp8_tflops"}.get(llm.compute_dtype, "peak_tflops")
    if getattr(g, peak_field) is None:
        peak_field = "peak_tflops"
    used = ("hbm_bandwidth_gbps", peak_field, "interconnect_gbps")
    try:
        sources = catalog.gpu_entry(g.name)["sources"] if g.name else {}
    except ConfigError:  # an inline GPU under a name the catalog does not know
        sources = {}
    model = _step_model(llm)
    doc: dict[str, Any] = {
        "model": model,
        "gpu": g.name,
        "hbm_bandwidth_gbps": g.hbm_bandwidth_gbps,
        "compute_dtype": llm.compute_dtype,
        "peak_field": peak_field,
        "peak_tflops": llm.peak_tflops,
        "interconnect_gbps": g.interconnect_gbps,
        "weights_dtype": llm.weights_dtype,
        "dtype_bytes": llm.dtype_bytes,
        "activation_bytes": llm.activation_bytes,
        "kv_dtype_bytes": llm.kv_dtype_bytes,
        "sources": {k: sources[k] for k in used if k in sources} or "inline figures from the scenario",
    }
    if model == "roofline":
        doc["perop_not_used"] = (
            "llm.step_cost roofline"
            if llm.step_cost == "roofline"
            else perop.MOE_AUTO
            if llm.model.experts and llm.engine and llm.step_cost == "auto"
            else perop.coverage(
                llm.gpu.name, llm.engine, llm.model.name, llm.tensor_parallel, llm.perop_dtype, llm.perop_ep
            )
        )
    if m.kv_lora_rank:
        doc["attention"] = f"MLA: {m.kv_lora_rank} + {m.qk_rope_head_dim} cached values per token and layer"
    if m.experts:
        doc["moe"] = _moe_figures(llm)
    return doc


def _step_model(llm: LLMConfig) -> str:
    """Where the step times come from: a measured table, a per-operation sum (which database) or the roofline."""
    entry = llm.perop_entry
    if llm.step_table:
        return f"table {llm.step_table}"
    if entry is not None and "layer" in entry:  # a mixture-of-experts layout: the package's composition
        return f"per-operation sum ({entry['source']}, {llm.engine})"
    if entry is not None:
        v = entry["versions"]
        return (
            f"per-operation sum (kernels timed alone: {llm.engine} GEMM {v['gemm']}, attention {v['attention']}"
            + (f", all-reduce {v['allreduce']}" if v.get("allreduce") and llm.tensor_parallel > 1 else "")
            + "; aiconfigurator 0.12.0 database)"
        )
    return "roofline"


def _moe_figures(llm: LLMConfig) -> dict[str, Any]:
    """A mixture-of-experts model's parameters, experts and the distinct experts a decode step reads by batch."""
    m = llm.model
    assert m.experts is not None  # only asked of a MoE model
    return {
        "params": m.param_count,
        "active_params": m.active_param_count,
        "experts": m.experts,
        "experts_per_token": m.experts_per_token,
        "expert_parallel": llm.expert_parallel_size,
        "experts_read_at_batch": {
            str(b): float(gm.expected_distinct_experts(m.experts, m.experts_per_token, float(b)))
            for b in sorted(set(DECODE_BATCHES) | {llm.max_batch})
        },
    }


def _step_cost_source(llm: LLMConfig) -> str:
    """Where the step costs come from: the efficiency preset, or the engine preset and any fallback."""
    if llm.engine is None:
        return provenance(llm.efficiency)
    named = "efficiency" in llm.model_fields_set
    moe = bool(llm.model.experts)
    line = engine_provenance(llm.engine, llm.engine_version, named, moe)
    return line if not (named or moe) else f"{line}: {provenance(llm.efficiency)}"


def _memory_figures(llm: LLMConfig, prompt: float, output: float) -> dict[str, Any]:
    """The model, the GPU, the step-cost settings and where each byte of a GPU's memory goes."""
    m, tp, B, prefix = llm.model, llm.tensor_parallel, llm.kv_block_tokens, llm.prefix_tokens
    return dict(
        model=m.name,
        gpu=llm.gpu.name,
        tensor_parallel=tp,
        step_cost={
            "efficiency": llm.efficiency,
            "bw_efficiency": llm.bw_efficiency,
            "mfu": llm.mfu,
            "step_overhead_ms": llm.step_overhead_ms,
            "step_overhead_per_seq_ms": llm.step_overhead_per_seq_ms,
            "allreduce_latency_us": llm.allreduce_latency_us,
            "perop": llm.perop_entry is not None,
            "perop_overhead_ms": llm.perop_overhead_ms,
            "perop_overhead_per_seq_ms": llm.perop_overhead_per_seq_ms,
            "perop_prefill_scale": llm.perop_prefill_scale,
            "source": _step_cost_source(llm),
            **({"engine": llm.engine, "engine_version": llm.engine_version} if llm.engine else {}),
        },
        mean_prompt_tokens=prompt,
        mean_output_tokens=output,
        weights_bytes=llm.weights_bytes,
        weights_bytes_per_gpu=llm.weights_bytes / tp,
        kv_bytes_per_token=llm.kv_bytes_per_token,
        kv_bytes_per_token_per_gpu=llm.kv_bytes_per_token_per_gpu,
        kv_bytes_per_request=llm.kv_bytes_per_token * (prompt + output),
        memory_exposed_bytes_per_gpu=llm.memory_exposed_bytes,
        gpu_memory_utilization=llm.gpu_memory_utilization,
        engine_reserve=_reserve_doc(llm),
        engine_reserve_bytes_per_gpu=llm.reserve_bytes,
        kv_budget_bytes_per_gpu=llm.kv_budget_bytes,
        kv_block_tokens=B,
        kv_blocks=llm.kv_blocks,
        kv_capacity_tokens=llm.kv_tokens,
        prefix_cached_tokens=prefix,
    )


def _load(
    scn: Scenario, out: dict[str, Any], stations: dict[str, tuple[float, int]], cache_s: float, gpu_delay_s: float
) -> None:
    """Load, utilisation and the first stage to saturate; a closed loop's delay station is the
    think time plus ``cache_s`` (the lookup) and ``gpu_delay_s`` (a lone request's decode and the
    engine's frontend time)."""
    names = list(stations)
    demands = [stations[k][0] for k in names]
    servers = [stations[k][1] for k in names]
    out["demand_ms"] = {k: d * 1e3 for k, d in zip(names, demands)}
    out["servers"] = dict(zip(names, servers))
    w = scn.workload
    if not names:
        out.update(utilization={}, saturation=None, utilization_method=None)
    elif w.mode == "open":
        rate = w.rate_per_s
        assert rate is not None  # WorkloadConfig requires rate_per_s in open mode
        out["utilization_method"] = "open: rate x demand / servers"
        out["load_rate_per_s"] = rate
        out["utilization"] = {k: analytic.utilization(rate, d, s) for k, d, s in zip(names, demands, servers)}
        caps = {k: analytic.saturation_rate_per_s(d, s) for k, d, s in zip(names, demands, servers)}
        first = min(caps, key=caps.__getitem__)
        out["saturation"] = {"stage": first, "rate_per_s": caps[first]}
    else:
        users = w.users
        assert users is not None  # WorkloadConfig requires users in closed mode
        think = build_distribution(w.think_s).mean + cache_s + gpu_delay_s
        q_demands, q_servers = demands, servers
        if users <= MVA_MAX_USERS:
            res = analytic.mva(users, think, q_demands, q_servers)
            x = res.throughput_per_s
            out["utilization_method"] = (
                "closed: exact MVA (think time + cache lookup + lone decode time as the delay station)"
            )
            out["response_ms"] = (res.response_s + cache_s + gpu_delay_s) * 1e3  # mean, think time excluded
        else:
            x = analytic.closed_throughput_bound(users, think, q_demands, q_servers)
            out["utilization_method"] = "closed: asymptotic throughput bound (too many users for MVA)"
        out["load_rate_per_s"] = x
        out["utilization"] = {k: x * d / s for k, d, s in zip(names, demands, servers)}
        caps = {k: analytic.saturation_rate_per_s(d, s) for k, d, s in zip(names, demands, servers)}
        first = min(caps, key=caps.__getitem__)
        out["saturation"] = {
            "stage": first,
            "rate_per_s": caps[first],
            "users": analytic.closed_saturation_users(think, q_demands, q_servers),
        }


def _reserve_doc(llm: Any) -> dict[str, Any]:
    """The engine reserve capsim assumed: preset (or a number), each term in bytes, and the sources."""
    preset = llm.reserve_preset
    return {
        "setting": llm.engine_reserve,
        "engine": preset.engine if preset else "user",
        "versions": preset.versions if preset else "a number of GiB per GPU from the scenario",
        "terms_bytes": llm.reserve_terms_bytes,
        "max_batched_tokens": llm.max_batched_tokens,
        "max_num_seqs": llm.max_batch,
        "sources": dict(preset.sources) if preset else {},
    }


def estimate_points(source: Any, overrides: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One estimate per sweep point (a scenario without a sweep is one point); ``params`` says which."""

    return [{"params": dict(p.params), **estimate(p.scenario)} for p in expand(source, overrides)]
