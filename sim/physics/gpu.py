"""Pure formulas for an LLM on GPUs: bytes, FLOPs and the roofline step time.

Nothing here knows about SimPy.  Every function is a formula with its units in
its name, checked in ``tests/test_gpu_model.py`` against hand-computed values.

The cost of one forward step of a transformer decoder that processes
``new_tokens`` tokens (prompt tokens being prefilled plus one token for every
sequence being decoded) while attending over ``context_tokens`` cached tokens
is modelled by the roofline::

    bytes  = weights_bytes + kv_bytes_per_token * context_tokens
    flops  = 2 * params * new_tokens + attention_flops
    step_s = max(bytes / (hbm_bandwidth * bw_efficiency),
                 flops / (peak_flops * mfu)) + step_overhead_s

Decode steps (one new token per sequence) read every weight and every cached
KV byte to produce a handful of tokens, so they sit far left of the ridge point
and are memory-bound; prefill of a long prompt does ~``2 * params`` FLOPs per
token for one read of the weights and is compute-bound.

Bandwidths are in GB/s (10^9 bytes per second) as datasheets quote them, peak
compute in TFLOPS (10^12 FLOP/s), memory in GB (10^9 bytes) except where a name
says GiB (2^30 bytes): what a card exposes and what engines log is in GiB.

The KV pool of a paged-attention engine is what is left of the card's memory,
as the card exposes it, after the weights and the engine's reserve::

    kv_pool = exposed * gpu_memory_utilization - weights / tp - reserve
    reserve = activation(max_num_batched_tokens) + non_torch + [tp > 1] * nccl + cuda_graphs

(:func:`kv_pool_bytes`, :func:`engine_reserve_bytes`); the terms per engine
and version, each with its source, are in :mod:`sim.spec.reserve`.

Mixture-of-experts models read only the experts the step's tokens are routed to,
and do the FLOPs of the active parameters only (:func:`moe_weights_bytes`,
:func:`expected_distinct_experts`, :func:`expert_all_to_all_time_s`); models with
multi-head latent attention cache one compressed latent per token and layer
(:func:`mla_kv_bytes_per_token`).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np

from sim.physics.replica_config import ReplicaConfig

#: One step's figures as plain numbers, or many steps' as arrays (element-wise).
FloatOrArray = TypeVar("FloatOrArray", float, np.ndarray)
#: A decode epoch's step costs as lines, ``(a_mem, b_mem, a_comp, b_comp, const)``: step ``j``
#: costs ``max(a_mem + b_mem j, a_comp + b_comp j) + const`` (:meth:`StepCost.decode_lines`).
DecodeLines = tuple[float, float, float, float, float]

GB = 1e9
GIB = float(2**30)
TFLOP = 1e12


#: Bytes one weight takes in each named weight format (``llm.weights_dtype``).  NVFP4 stores
#: 4-bit E2M1 values with one FP8 (E4M3) scale per block of 16 values, so a weight costs
#: ``0.5 + 1 / 16 = 0.5625`` bytes (the per-tensor FP32 scale is negligible); NVIDIA's
#: description of the format: https://developer.nvidia.com/blog/introducing-nvfp4-for-efficient-and-accurate-low-precision-inference/
WEIGHT_DTYPE_BYTES: dict[str, float] = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5 + 1.0 / 16.0}

#: Bytes of one activation element the GPUs of a replica exchange when the weight format is
#: named: engines keep activations in bf16 between layers whatever the weights' format.
ACTIVATION_BYTES = 2.0


def weights_bytes(params: float, dtype_bytes: float) -> float:
    """Bytes of the weights: ``params * dtype_bytes``."""
    return float(params) * dtype_bytes


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, kv_dtype_bytes: float) -> float:
    """KV-cache bytes one token occupies: ``2 * layers * kv_heads * head_dim * kv_dtype_bytes``.

    The 2 is one key and one value vector per layer and KV head.  For the
    article's model (8 layers, 32 heads of 128, fp16) this is 131,072 bytes,
    so 1,024 tokens take 134,217,728 bytes (128 MiB), not the article's 8.4 MB.
    """
    return 2.0 * layers * kv_heads * head_dim * kv_dtype_bytes


def mla_kv_bytes_per_token(layers: int, kv_lora_rank: int, qk_rope_head_dim: int, kv_dtype_bytes: float) -> float:
    """KV-cache bytes of one token under multi-head latent attention (DeepSeek-V2/V3):
    ``layers * (kv_lora_rank + qk_rope_head_dim) * kv_dtype_bytes``.

    Each layer caches one compressed latent of ``kv_lora_rank`` values and one shared
    rotary key of ``qk_rope_head_dim`` values per token, for all heads at once: no
    factor 2 for keys and values, no head count.  The latent is not split by heads, so
    every GPU of a tensor-parallel replica holds all of it.  DeepSeek-V3 (61 layers,
    512 + 64, bf16): 61 * 576 * 2 = 70,272 bytes.
    """
    return float(layers) * (kv_lora_rank + qk_rope_head_dim) * kv_dtype_bytes


def attention_flops_per_pair(
    layers: int, heads: int, head_dim: int, kv_lora_rank: int = 0, qk_rope_head_dim: int = 0
) -> float:
    """FLOPs of one (query, key) pair over all layers: ``2 * layers * heads * (qk_dim + v_dim)``.

    Standard attention: ``qk_dim = v_dim = head_dim``, so ``4 * layers * heads * head_dim``
    (:func:`attention_flops`).  Multi-head latent attention (``kv_lora_rank > 0``) in the
    absorbed form its decode kernels run attends over the cached latent:
    ``qk_dim = kv_lora_rank + qk_rope_head_dim``, ``v_dim = kv_lora_rank``.  DeepSeek-V3
    (61 layers, 128 heads, 512 + 64): 2 * 61 * 128 * (576 + 512) = 16,990,208.
    """
    if kv_lora_rank:
        return 2.0 * layers * heads * ((kv_lora_rank + qk_rope_head_dim) + kv_lora_rank)
    return 4.0 * layers * heads * head_dim


def expected_distinct_experts(experts: int, experts_per_token: int, tokens: FloatOrArray) -> FloatOrArray:
    """Experts of one MoE layer that at least one of ``tokens`` tokens is routed to, on average:
    ``E * (1 - (1 - k / E) ** T)``.

    Assumes each token picks its ``k`` experts of ``E`` uniformly and independently of the
    other tokens, so a given expert is missed by one token with probability ``1 - k / E``
    and by all ``T`` with ``(1 - k / E) ** T``.  A router with favourite experts touches
    fewer.  256 experts, 8 per token: 8 at one token, 256 * (1 - (31/32) ** 32) = 163.31
    at 32 tokens, all 256 by a few thousand.  Works on numpy arrays.
    """
    distinct: FloatOrArray = experts * (1.0 - (1.0 - experts_per_token / experts) ** tokens)
    return distinct


def moe_weights_bytes(
    dense_bytes: float, expert_bytes: float, experts: int, experts_per_token: int, tokens: FloatOrArray
) -> FloatOrArray:
    """Weight bytes one step of ``tokens`` tokens reads from HBM in a mixture-of-experts model:
    ``dense_bytes + expert_bytes * expected_distinct_experts(E, k, T)``.

    ``dense_bytes``: everything every token uses (attention, embeddings, dense and shared
    MLPs, routers); ``expert_bytes``: one routed expert's weights over all MoE layers.
    Each expert touched is read once per step however many tokens it serves.
    """
    return dense_bytes + expert_bytes * expected_distinct_experts(experts, experts_per_token, tokens)


def expert_all_to_all_time_s(
    tokens: float,
    hidden: int,
    activation_bytes: float,
    experts_per_token: int,
    expert_parallel: int,
    interconnect_gbps: float,
) -> float:
    """Dispatch and combine of one MoE layer under expert parallelism, seconds:
    ``2 * T * k * hidden * bytes * (ep - 1) / ep**2 / bw``.

    Each of the ``ep`` GPUs owns ``T / ep`` of the step's tokens and sends each of them
    (``hidden * bytes``) to its ``k`` experts, of which ``(ep - 1) / ep`` live on other GPUs
    (experts spread evenly, routing uniform); the experts' outputs come back the same way
    (the 2).  All GPUs send at once, each at ``interconnect_gbps`` per direction.
    Bandwidth only.  One token of DeepSeek-V3 (7,168 wide, bf16, k = 8) over 8 GPUs at
    450 GB/s: 2 * 8 * 7168 * 2 * 7 / 64 / 450e9 = 55.75 ns.
    """
    if expert_parallel <= 1:
        return 0.0
    ep = expert_parallel
    return 2.0 * tokens * experts_per_token * hidden * activation_bytes * (ep - 1) / ep**2 / (interconnect_gbps * GB)


def kv_heads_per_gpu(kv_heads: int, tensor_parallel: int) -> int:
    """KV heads each GPU stores under tensor parallelism: ``ceil(kv_heads / tp)``.

    With ``tp <= kv_heads`` the heads are split (Llama-3-8B, 8 KV heads on 4
    GPUs: 2 each); with ``tp > kv_heads`` each head is replicated so every GPU
    still holds one (MQA on 8 GPUs: 1 each, the KV is not split at all).
    """
    return -(-kv_heads // tensor_parallel)


def kv_bytes_per_token_per_gpu(
    layers: int, kv_heads: int, head_dim: int, kv_dtype_bytes: float, tensor_parallel: int = 1
) -> float:
    """KV bytes one token occupies on each GPU: ``2 * layers * ceil(kv_heads / tp) * head_dim * kv_dtype_bytes``."""
    return kv_bytes_per_token(layers, kv_heads_per_gpu(kv_heads, tensor_parallel), head_dim, kv_dtype_bytes)


def kv_blocks(budget_bytes: float, kv_bytes_per_token: float, block_tokens: int) -> int:
    """Paged-KV blocks that fit: ``floor(budget_bytes / (kv_bytes_per_token * block_tokens))`` (0 if none).

    Per GPU budget and per GPU bytes give the replica's block count: every GPU
    of a tensor-parallel replica holds its shard of the same blocks.
    """
    if budget_bytes <= 0:
        return 0
    return int(budget_bytes // (kv_bytes_per_token * block_tokens))


def profile_activation_bytes(
    batched_tokens: int, hidden: int, intermediate: int, dtype_bytes: float, factor: float
) -> float:
    """Peak activation of an engine's profiling pass: ``factor * dtype_bytes * (hidden + intermediate) * tokens``.

    The engine runs one forward pass of ``max_num_batched_tokens`` tokens and keeps
    its peak.  The peak sits in the MLP, whose live tensors per token are a few
    copies of the residual (``hidden``) and the gate/up output (``intermediate``),
    so it grows with ``hidden + intermediate``; ``factor`` (copies alive at the
    peak) is measured per engine version.  It does not shrink with tensor
    parallelism (vLLM logs the same figure at tp 1, 2 and 4).  Llama-3-8B
    (4,096 + 14,336), bf16, 8,192 tokens, factor 3: 3 * 2 * 18,432 * 8,192 =
    905,969,664 bytes.
    """
    return factor * dtype_bytes * (hidden + intermediate) * batched_tokens


def engine_reserve_bytes(
    activation_bytes: float,
    non_torch_bytes: float,
    nccl_bytes: float,
    tensor_parallel: int,
    cuda_graph_bytes: float = 0.0,
) -> float:
    """What an engine keeps per GPU outside the KV pool, beside the weights.

    ``activation + non_torch + [tp > 1] * nccl + cuda_graph``: the profiling
    pass's peak activation, memory allocated outside PyTorch (CUDA context,
    cuBLAS workspace), the NCCL buffers a tensor-parallel group adds, and CUDA
    graph memory for engines that count it before sizing the pool.  1 GiB of
    activation, 0.25 GiB non-torch and 1.85 GiB NCCL at tp 2: 3.1 GiB.
    """
    return activation_bytes + non_torch_bytes + (nccl_bytes if tensor_parallel > 1 else 0.0) + cuda_graph_bytes


def kv_pool_bytes(
    exposed_bytes: float, gpu_memory_utilization: float, weights_bytes_per_gpu: float, reserve_bytes: float
) -> float:
    """KV pool of one GPU: ``exposed * gpu_memory_utilization - weights_per_gpu - reserve``.

    ``exposed`` is the memory the card reports (``torch.cuda.mem_get_info``'s
    total), not the datasheet figure: an "80 GB" H100 exposes 79.19 GiB.  At 0.9,
    14.96 GiB of weights and a 1.2 GiB reserve: 79.19 * 0.9 - 14.96 - 1.2 =
    55.111 GiB.
    """
    return exposed_bytes * gpu_memory_utilization - weights_bytes_per_gpu - reserve_bytes


def kv_pool_bytes_of_free(
    exposed_bytes: float, free_fraction: float, weights_bytes_per_gpu: float, reserve_bytes: float
) -> float:
    """KV pool of one GPU when the fraction applies to the memory left free after the weights
    and the engine's reserve, as TensorRT-LLM's ``free_gpu_memory_fraction`` does ("90% of free
    GPU memory", https://nvidia.github.io/TensorRT-LLM/examples/kvcacheconfig.html):
    ``free_fraction * (exposed - weights_per_gpu - reserve)``.  A card exposing 178.35 GiB with
    156.24 GiB of weights and a 3.49 GiB reserve, at 0.9: 0.9 * 18.62 = 16.758 GiB."""
    return free_fraction * (exposed_bytes - weights_bytes_per_gpu - reserve_bytes)


def blocks_for_tokens(tokens: int, block_tokens: int) -> int:
    """Blocks that hold ``tokens`` tokens: ``ceil(tokens / block_tokens)``."""
    return -(-tokens // block_tokens) if tokens > 0 else 0


def tp_allreduce_time_s(
    new_tokens: float,
    layers: int,
    hidden: int,
    dtype_bytes: float,
    tensor_parallel: int,
    interconnect_gbps: float | None,
) -> float:
    """Tensor-parallel communication of one step: ``2 * layers`` ring all-reduces.

    Megatron-style tensor parallelism all-reduces the attention output and the
    MLP output of every layer, each ``new_tokens * hidden * dtype_bytes``::

        2 * layers * ring_allreduce_time_s(new_tokens * hidden * dtype_bytes, tp, interconnect)

    Zero for ``tp == 1``.  Bandwidth only (no per-call latency), added to the
    step (not overlapped with compute).
    """
    if tensor_parallel <= 1:
        return 0.0
    if not interconnect_gbps:
        raise ValueError("tensor_parallel > 1 needs interconnect_gbps")
    return 2.0 * layers * ring_allreduce_time_s(new_tokens * hidden * dtype_bytes, tensor_parallel, interconnect_gbps)


def arithmetic_intensity(flops: float, n_bytes: float) -> float:
    """FLOPs per byte moved: ``flops / bytes``; compare with :func:`ridge_point_flops_per_byte`."""
    return flops / n_bytes if n_bytes > 0 else math.inf


def attention_flops(layers: int, heads: int, head_dim: int, new_tokens: float, past_tokens: float = 0.0) -> float:
    """FLOPs of attention scores and the weighted sum of values, causal.

    Each new token ``i`` attends to the ``past_tokens`` already cached plus the
    new tokens up to itself.  Per layer, per head and per attended position it
    does a q.k dot product and a p.v accumulation of ``head_dim`` multiply-adds
    each: 4 * head_dim FLOPs.  Summed::

        4 * layers * heads * head_dim * (new * past + new * (new + 1) / 2)

    A 1,024-token prompt on the article's model: 4*8*32*128*(1024*1025/2)
    = 68,786,585,600 FLOPs.
    """
    return 4.0 * layers * heads * head_dim * attention_pairs(new_tokens, past_tokens)


def attention_pairs(new_tokens: float, past_tokens: float = 0.0) -> float:
    """(query, key) pairs of a causal step: ``new * past + new * (new + 1) / 2``.

    Each of ``new_tokens`` tokens attends to the ``past_tokens`` already cached
    and to the new tokens up to itself.  4 new tokens after 10 cached:
    4*10 + 4*5/2 = 50.  Works on numpy arrays.
    """
    return new_tokens * past_tokens + new_tokens * (new_tokens + 1) / 2.0


def ring_allreduce_time_s(n_bytes: float, gpus: int, interconnect_gbps: float) -> float:
    """Ring all-reduce of ``n_bytes`` over ``gpus`` GPUs: ``2 (g - 1) / g * n_bytes / bw``.

    Each GPU sends and receives ``(g - 1) / g`` of the buffer twice (reduce-
    scatter then all-gather) at ``interconnect_gbps`` GB/s per direction.
    """
    if gpus <= 1:
        return 0.0
    return 2.0 * (gpus - 1) / gpus * n_bytes / (interconnect_gbps * GB)


def ridge_point_flops_per_byte(
    peak_tflops: float, hbm_bandwidth_gbps: float, mfu: float = 1.0, bw_efficiency: float = 1.0
) -> float:
    """Arithmetic intensity (FLOP/byte) above which a step is compute-bound."""
    return (peak_tflops * TFLOP * mfu) / (hbm_bandwidth_gbps * GB * bw_efficiency)


def sum_linear(a: float, b: float, s0: int, s1: int) -> float:
    """``sum(a + b*s for s in range(s0, s1))`` in closed form."""
    n = s1 - s0
    if n <= 0:
        return 0.0
    return n * a + b * (s0 + s1 - 1) * n / 2.0


def sum_max_linear(a1: float, b1: float, a2: float, b2: float, k: int) -> float:
    """``sum(max(a1 + b1*s, a2 + b2*s) for s in range(k))`` in closed form.

    The two lines cross at most once, so the range splits into one part where
    the first is larger and one where the second is, each an arithmetic sum.
    """
    if k <= 0:
        return 0.0
    if b1 == b2:
        return sum_linear(max(a1, a2), b1, 0, k)
    # line_split and the two sum_linear written out (the same operations): a decode epoch's
    # time is evaluated several times per event.
    x = min(max((a2 - a1) / (b1 - b2), -1.0), k + 1.0)
    if b1 > b2:  # line 2 up to the split, line 1 from it
        split = min(max(math.ceil(x), 0), k)
        a_lo, b_lo, a_hi, b_hi = a2, b2, a1, b1
    else:
        split = min(max(math.floor(x) + 1, 0), k)
        a_lo, b_lo, a_hi, b_hi = a1, b1, a2, b2
    n = k - split
    low = split * a_lo + b_lo * (split - 1) * split / 2.0 if split > 0 else 0.0
    high = n * a_hi + b_hi * (split + k - 1) * n / 2.0 if n > 0 else 0.0
    return low + high


def line_split(a1: float, b1: float, a2: float, b2: float, k: int) -> tuple[int, bool]:
    """Where two lines over the integer steps ``0..k-1`` cross (``b1 != b2``).

    Returns ``(split, late)``: with ``late`` True line 1 (``a1 + b1 s``) is at
    least line 2 exactly for ``s >= split``; with ``late`` False exactly for
    ``s < split``.  ``split`` is clamped to ``[0, k]``.  Lines ``1 + 2s`` and
    ``4 + s`` over 10 steps: line 1 wins from s = 3 on, so ``(3, True)``.
    """
    # d(s) = (a1 - a2) + (b1 - b2) s; line 1 wins where d >= 0.
    # Clamp before rounding: nearly parallel lines put the crossing at +-inf.
    x = min(max((a2 - a1) / (b1 - b2), -1.0), k + 1.0)
    if b1 > b2:  # line 1 wins for s >= x
        return min(max(math.ceil(x), 0), k), True
    return min(max(math.floor(x) + 1, 0), k), False  # line 1 wins for s <= x


def request_kv_blocks(prompt_tokens: int, output_tokens: int, shared_tokens: int, block_tokens: int) -> int:
    """Blocks a request holds at its last step: ``ceil((prompt + output - 1 - shared) / B)``.

    The last generated token's KV is never written, and the ``shared`` prefix
    tokens live in the replica's pinned blocks.  1,000 + 100 tokens, nothing
    shared, blocks of 16: ceil(1099 / 16) = 69.
    """
    return blocks_for_tokens(prompt_tokens + output_tokens - 1 - shared_tokens, block_tokens)


def kv_misfit(
    prompt_tokens: int,
    output_tokens: int,
    shared_tokens: int,
    prefix_tokens: int,
    kv_blocks_total: int,
    block_tokens: int,
    longest: bool = False,
) -> str | None:
    """None when a request can finish alone on a replica; else the one-line reason.

    The replica keeps ``prefix_tokens // B`` blocks for the shared system prompt;
    a request that needs more than the rest would be preempted and readmitted
    forever, so the scenario is refused instead.  ``longest``: the request is the
    longest the scenario's bounded token counts allow (the schema's check before running).
    """
    need = request_kv_blocks(prompt_tokens, output_tokens, shared_tokens, block_tokens)
    room = kv_blocks_total - prefix_tokens // block_tokens
    if need <= room:
        return None
    tokens = f"{prompt_tokens} prompt + {output_tokens} output tokens"
    request = f"the longest request ({tokens})" if longest else f"a request of {tokens}"
    return (
        f"llm: {request} needs {need} KV "
        f"blocks of {block_tokens} tokens but a replica holds {room}; raise llm.tensor_parallel or "
        f"llm.gpu_memory_utilization, use a bigger GPU or lower kv_dtype_bytes, or shorten "
        f"llm.prompt_tokens / llm.output_tokens"
    )


class StepCost:
    """Step-cost coefficients of one replica (per GPU), precomputed once.

    One step processing ``new_tokens`` for ``seqs`` sequences over ``ctx_tokens``
    cached tokens costs::

        max(bytes / (bandwidth * bw_efficiency), flops / (peak * mfu))
          + step_overhead + seqs * step_overhead_per_seq
          + [tp > 1] * 2 * layers * (allreduce_latency + ring all-reduce of new_tokens)

    The last two terms are what published measurements show the plain roofline
    lacks (see ``sim/data/published/``): per-sequence work (sampling, scheduling,
    small kernels) and a per-all-reduce latency under tensor parallelism that does
    not shrink with bytes.  ``time`` is one step; ``decode_lines`` gives the linear
    coefficients of a pure-decode step as a function of the step offset ``j`` in an
    epoch.  Efficiencies default to the configuration's; the keyword arguments
    override them (the published-data fit evaluates many candidates).

    A mixture-of-experts model (``model.experts > 0``) changes three terms, per GPU::

        bytes  = dense + expert * E * (1 - (1 - k/E) ** new_tokens) + kv * ctx
        flops  = 2 * active_params / tp * new_tokens + attention
        comm   = [ep > 1] * moe_layers * all-to-all(new_tokens), with the MoE layers'
                 all-reduce dropped (ep == 1: the experts are split like a dense MLP)

    (:func:`moe_weights_bytes`, :func:`expert_all_to_all_time_s`).  The weights read
    grow with the tokens of the step, so a decode epoch (fixed batch) still has
    one constant weight term and keeps its closed form.
    """

    def __init__(
        self,
        cfg: ReplicaConfig,
        bw_efficiency: float | None = None,
        mfu: float | None = None,
        step_overhead_ms: float | None = None,
        step_overhead_per_seq_ms: float | None = None,
        allreduce_latency_us: float | None = None,
    ):
        m, g = cfg.model, cfg.gpu
        tp = cfg.tensor_parallel
        bw_eff = cfg.bw_efficiency if bw_efficiency is None else bw_efficiency
        mfu_ = cfg.mfu if mfu is None else mfu
        per_seq_ms = cfg.step_overhead_per_seq_ms if step_overhead_per_seq_ms is None else step_overhead_per_seq_ms
        latency_us = cfg.allreduce_latency_us if allreduce_latency_us is None else allreduce_latency_us
        self.tp = tp
        self.params = m.param_count
        self.weights_bytes = cfg.weights_bytes / tp
        self.kv_per_token = cfg.kv_bytes_per_token_per_gpu
        self.inv_bw = 1.0 / (g.hbm_bandwidth_gbps * GB * bw_eff)
        self.inv_peak = 1.0 / (cfg.peak_tflops * TFLOP * mfu_)
        self.flops_per_token = 2.0 * self.params / tp
        attn = attention_flops_per_pair(m.layers, m.heads, m.head_dim, m.kv_lora_rank, m.qk_rope_head_dim)
        self.attn_coef = attn / tp
        sync_s = 2 * m.layers * latency_us * 1e-6 if tp > 1 else 0.0
        self.overhead_s = (cfg.step_overhead_ms if step_overhead_ms is None else step_overhead_ms) / 1e3 + sync_s
        self.per_seq_s = per_seq_ms / 1e3
        act = cfg.activation_bytes
        self.comm_per_token_s = tp_allreduce_time_s(1.0, m.layers, m.hidden, act, tp, g.interconnect_gbps)
        #: (dense bytes, one expert's bytes, experts, experts per token) per GPU; None for a dense model
        self.moe: tuple[float, float, int, int] | None = None
        if m.experts:
            ep = cfg.expert_parallel_size
            self.moe = (
                (m.param_count - m.routed_params) * cfg.dtype_bytes / tp,
                m.moe_layers * m.expert_params * cfg.dtype_bytes / tp,
                m.experts,
                m.experts_per_token,
            )
            self.flops_per_token = 2.0 * m.active_param_count / tp
            if ep > 1:  # the MoE layers' MLP all-reduce becomes a dispatch + combine all-to-all
                assert g.interconnect_gbps is not None  # the schema requires it with tensor_parallel > 1
                all_reduces = m.layers + m.dense_layers
                self.comm_per_token_s = all_reduces * ring_allreduce_time_s(
                    m.hidden * act, tp, g.interconnect_gbps
                ) + m.moe_layers * expert_all_to_all_time_s(
                    1.0, m.hidden, act, m.experts_per_token, ep, g.interconnect_gbps
                )

    def weights_read(self, new_tokens: FloatOrArray) -> FloatOrArray | float:
        """Weight bytes one GPU reads in a step of ``new_tokens`` tokens: all of its weights for a
        dense model; the dense part plus the experts the tokens touch for a MoE model
        (:func:`moe_weights_bytes`)."""
        if self.moe is None:
            return self.weights_bytes
        dense, expert, e, k = self.moe
        return moe_weights_bytes(dense, expert, e, k, new_tokens)

    def work(
        self, new_tokens: FloatOrArray, ctx_tokens: FloatOrArray, attn_pairs: FloatOrArray
    ) -> tuple[FloatOrArray, FloatOrArray]:
        """(FLOPs, bytes) one GPU of the replica does and moves in one step (or element-wise over arrays)."""
        weights = self.weights_bytes if self.moe is None else self.weights_read(new_tokens)
        return (
            self.flops_per_token * new_tokens + self.attn_coef * attn_pairs,
            weights + self.kv_per_token * ctx_tokens,
        )

    def terms(
        self, new_tokens: FloatOrArray, ctx_tokens: FloatOrArray, attn_pairs: FloatOrArray
    ) -> tuple[FloatOrArray, FloatOrArray]:
        """(memory time, compute time) of one step, seconds (or element-wise over arrays)."""
        flops, n_bytes = self.work(new_tokens, ctx_tokens, attn_pairs)
        return n_bytes * self.inv_bw, flops * self.inv_peak

    def time(
        self, new_tokens: float, ctx_tokens: float, attn_pairs: float, seqs: float = 1.0, decode_seqs: float = 0.0
    ) -> float:
        """One step of ``seqs`` sequences, seconds."""
        mem, comp = self.terms(new_tokens, ctx_tokens, attn_pairs)
        return (
            (mem if mem > comp else comp) + self.overhead_s + self.per_seq_s * seqs + self.comm_per_token_s * new_tokens
        )

    def decode_time(self, batch: int, ctx_tokens: float) -> float:
        """One pure decode step of ``batch`` sequences reading ``ctx_tokens`` KV tokens in all."""
        return self.time(batch, ctx_tokens, ctx_tokens, batch)

    def times(
        self, new_tokens: np.ndarray, ctx_tokens: np.ndarray, attn_pairs: np.ndarray, seqs: float | np.ndarray = 1.0
    ) -> np.ndarray:
        """:meth:`time` element-wise over arrays of steps."""
        mem, comp = self.terms(new_tokens, ctx_tokens, attn_pairs)
        step_s: np.ndarray = (
            np.maximum(mem, comp)
            + self.overhead_s
            + self.per_seq_s * np.asarray(seqs, float)
            + self.comm_per_token_s * np.asarray(new_tokens, float)
        )
        return step_s

    def memory_bound(self, new_tokens: float, ctx_tokens: float, attn_pairs: float) -> bool:
        mem, comp = self.terms(new_tokens, ctx_tokens, attn_pairs)
        return mem >= comp

    def decode_lines(self, batch: int, ctx0: float) -> DecodeLines:
        """(a_mem, b_mem, a_comp, b_comp, const): step j of a decode epoch costs
        max(a_mem + b_mem j, a_comp + b_comp j) + const, where ``ctx0`` is the
        batch's total context after step 0 (it grows by ``batch`` per step)."""
        weights = self.weights_bytes if self.moe is None else self.weights_read(float(batch))
        a_m = (weights + self.kv_per_token * ctx0) * self.inv_bw
        b_m = self.kv_per_token * batch * self.inv_bw
        a_c = (self.flops_per_token * batch + self.attn_coef * ctx0) * self.inv_peak
        b_c = self.attn_coef * batch * self.inv_peak
        return a_m, b_m, a_c, b_c, self.overhead_s + (self.per_seq_s + self.comm_per_token_s) * batch

    @staticmethod
    def epoch_time(lines: DecodeLines, k: int) -> float:
        a_m, b_m, a_c, b_c, const = lines
        return sum_max_linear(a_m, b_m, a_c, b_c, k) + const * k

    @staticmethod
    def memory_bound_steps(lines: DecodeLines, k: int) -> int:
        """How many of the first ``k`` decode steps are memory-bound."""
        a_m, b_m, a_c, b_c, _ = lines
        if k <= 0:
            return 0
        if b_m == b_c:
            return k if a_m >= a_c else 0
        split, late = line_split(a_m, b_m, a_c, b_c, k)
        return k - split if late else split
