"""What a paged-attention engine keeps outside its KV pool, per engine and version, each term sourced.

vLLM sizes its KV pool at start-up (``determine_num_available_blocks`` in
``vllm/worker/worker.py``, later ``determine_available_memory`` in
``vllm/v1/worker/gpu_worker.py``)::

    kv_pool = total * gpu_memory_utilization - (weights + peak activation + non-torch memory)

``total`` is what the card exposes (``torch.cuda.mem_get_info``), the peak
activation is measured by one profiling forward pass of ``max_num_batched_tokens``
tokens (plus, in newer versions, a sampler warm-up over ``max_num_seqs``
sequences), and non-torch memory is what was allocated outside PyTorch (CUDA
context, cuBLAS workspace, and under tensor parallelism the NCCL buffers).
CUDA graphs are captured *after* the pool is sized in every version here, so they
take memory beyond ``gpu_memory_utilization`` but never shrink the pool
(``cuda_graph_gib`` is 0 for every preset; see its source).

capsim models each term (:func:`sim.physics.gpu.engine_reserve_bytes`)::

    activation = max(tokens_factor * dtype_bytes * (hidden + intermediate) * max_batched_tokens,
                     vocab_factor * 4 * vocab * max_batch)
    reserve    = activation + non_torch + [tp > 1] * nccl + cuda_graph

The first activation term is the forward pass's MLP peak (a few live copies of
the residual and the gate/up output per token); the second the fp32 logits of
the sampler warm-up, which is the larger one in vLLM V1 (its logged activation
tracks the vocabulary, not the model size: 1.89 GiB for Llama-3.1-8B and 1.97 GiB
for Llama-3.3-70B, both 128k vocabulary; 2.21-2.29 GiB for 152k-vocabulary Qwen
7B-72B).  The factors and GiB figures below were read from vLLM start-up logs
(``sim/data/published/vllm_kv_logs.csv``, where ``tests/test_kv_logs.py`` checks the
whole KV capacity against every log).  Where a version's term was not logged, the
preset borrows the nearest version's figure and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DEFAULT_RESERVE", "RESERVE_PRESETS", "EngineReserve", "reserve_preset"]

_PR2031 = "https://github.com/vllm-project/vllm/pull/2031"
_I10517 = "https://github.com/vllm-project/vllm/issues/10517"
_I13061 = "https://github.com/vllm-project/vllm/issues/13061"
_I16570 = "https://github.com/vllm-project/vllm/issues/16570"
_LLMD = "https://github.com/llm-d-incubation/llm-d-planner/blob/main/accuracy/accuracy_report.md"
_LLMD_LOGS = "https://github.com/llm-d-incubation/llm-d-planner/blob/main/accuracy/results/v0.19.0/logs/"
_GRAPHS = (
    "CUDA graphs are captured after the KV pool is sized (llm-d-planner accuracy report, 'CUDA Graph Memory': "
    f"{_LLMD}); in V0 they took memory beyond gpu_memory_utilization "
    "(https://github.com/vllm-project/vllm/issues/7553: 2,464 MiB more per RTX 4090 without --enforce-eager)"
)


@dataclass(frozen=True)
class EngineReserve:
    """One engine version's reserve terms (GiB per GPU, or dimensionless factors) and their sources."""

    engine: str
    versions: str
    tokens_factor: float
    vocab_factor: float
    non_torch_gib: float
    nccl_gib: float
    cuda_graph_gib: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)


RESERVE_PRESETS: dict[str, EngineReserve] = {
    "vllm-v0.17": EngineReserve(
        engine="vLLM",
        versions="0.17 and later (V1 engine; checked against 0.17.0, 0.18.0, 0.19.0)",
        tokens_factor=3.0,
        vocab_factor=3.84,
        non_torch_gib=0.25,
        nccl_gib=1.85,
        sources={
            "tokens_factor": f"borrowed from vllm-v0.6 ({_I10517}); below the sampler term for every logged model",
            "vocab_factor": (
                f"{_LLMD}: torch peak increase 1.89 GiB (Llama-3.1-8B), 2.21 GiB (Qwen2.5-7B), 2.23 GiB "
                "(Qwen3-14B, v0.17.0) at max_num_seqs 1024: 3.86, 3.81, 3.85 copies of 4 * vocab * max_num_seqs; "
                "mean 3.84; checked on Llama-3.3-70B (not fitted): 1.96 / 1.97 GiB logged at tp 2 / 4, "
                "1.88 GiB predicted"
            ),
            "non_torch_gib": (
                f"{_LLMD}: non-torch forward increase 0.25 GiB at tp 1 (v0.18.0, v0.19.0; 0.13 at v0.17.0)"
            ),
            "nccl_gib": (
                f"{_LLMD}: non-torch 2.07 / 2.13 GiB (Llama-3.1-8B tp 2 / 4), 2.06 / 2.13 GiB (Qwen2.5-7B), "
                "mean 2.10 minus the tp-1 0.25"
            ),
            "cuda_graph_gib": _GRAPHS,
        },
    ),
    "vllm-v0.17-graphs": EngineReserve(
        engine="vLLM",
        versions=(
            "0.17 and later with VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1 (its logs say it becomes the default): "
            "the CUDA graph pool is deducted before sizing the KV pool"
        ),
        tokens_factor=3.0,
        vocab_factor=3.84,
        non_torch_gib=0.25,
        nccl_gib=1.85,
        cuda_graph_gib=1.04,
        sources={
            "tokens_factor": "as vllm-v0.17",
            "vocab_factor": "as vllm-v0.17",
            "non_torch_gib": "as vllm-v0.17",
            "nccl_gib": "as vllm-v0.17",
            "cuda_graph_gib": (
                f"{_LLMD}: CUDA graph pool 0.51-1.85 GiB, mean 1.04 GiB, over the v0.19.0 runs; vLLM 0.19.0 logs "
                f"'Estimated CUDA graph memory: 1.82 GiB total' for Llama-3.3-70B at tp 2 ({_LLMD_LOGS}"
                "fp8dyn-llama-3-3-70b--h100-80gb--tp2pp1dp1--8192.log); no start-up log with the flag on was found, "
                "so this preset is not checked against one"
            ),
        },
    ),
    "vllm-v0.15": EngineReserve(
        engine="vLLM",
        versions="0.15 and 0.16 (V1 engine, before 0.17 cut the profiled activation by ~60 %)",
        tokens_factor=3.0,
        vocab_factor=9.73,
        non_torch_gib=0.13,
        nccl_gib=1.85,
        sources={
            "tokens_factor": f"borrowed from vllm-v0.6 ({_I10517})",
            "vocab_factor": f"{_LLMD}: activation 5.64 GiB for Qwen3-14B at v0.15.0 and v0.16.0, max_num_seqs 1024",
            "non_torch_gib": f"{_LLMD}: non-torch 0.13 GiB for Qwen3-14B at v0.15.0 and v0.16.0",
            "nccl_gib": "not logged for these versions; borrowed from vllm-v0.17",
            "cuda_graph_gib": _GRAPHS,
        },
    ),
    "vllm-v0.6": EngineReserve(
        engine="vLLM",
        versions="0.6.4 to 0.9 (V0 engine, profiler of PRs #9352 and #10511)",
        tokens_factor=3.0,
        vocab_factor=0.0,
        non_torch_gib=0.35,
        nccl_gib=0.0,
        sources={
            "tokens_factor": (
                f"{_I10517}: peak torch memory 17.06 / 17.98 GiB at max_model_len 20,000 / 29,000 with 14.99 GiB of "
                "Llama-3.1-8B weights: 0.92 GiB per 9,000 tokens = 2.98 * 2 B * (4,096 + 14,336) per token"
            ),
            "vocab_factor": f"{_I10517}: the activation line extrapolates to 0.03 GiB at 0 tokens (no sampler term)",
            "non_torch_gib": f"{_I10517}: non_torch_memory 0.35 GiB (RTX 3090, tp 1)",
            "nccl_gib": (
                f"{_I13061}: non_torch 0.25 GiB at tp 2; {_I16570}: 0.34-0.43 GiB at tp 4: no more than at tp 1"
            ),
            "cuda_graph_gib": _GRAPHS,
        },
    ),
    "vllm-v0.2": EngineReserve(
        engine="vLLM",
        versions="0.2.4 to 0.6.3 (peak = total - free after profiling, PR #2031)",
        tokens_factor=3.0,
        vocab_factor=0.0,
        non_torch_gib=1.0,
        nccl_gib=11.9,
        sources={
            "tokens_factor": f"borrowed from vllm-v0.6 ({_I10517})",
            "vocab_factor": "borrowed from vllm-v0.6",
            "non_torch_gib": (
                f"{_PR2031}: Llama-2-7B, tp 1, 1xA100-80GB, 7,351 blocks: 79.25 GiB * 0.9 - 12.55 GiB weights - "
                "57.43 GiB KV - 0.35 GiB activation = 1.0 GiB (fitted to that one log)"
            ),
            "nccl_gib": (
                f"{_PR2031}: Llama-2-70B, tp 4, 4xA100-80GB, 20,865 blocks leave 12.9 GiB outside PyTorch per GPU, "
                "11.9 more than at tp 1 (fitted to that one log: this profiler counted every byte the 4 workers "
                "held outside PyTorch, NCCL included)"
            ),
            "cuda_graph_gib": _GRAPHS,
        },
    ),
    "none": EngineReserve(
        engine="none",
        versions="no reserve: the pool is exposed memory * gpu_memory_utilization - weights",
        tokens_factor=0.0,
        vocab_factor=0.0,
        non_torch_gib=0.0,
        nccl_gib=0.0,
        sources={"all": "an upper bound no engine reaches"},
    ),
}

#: The default: the newest vLLM behaviour measured.
DEFAULT_RESERVE = "vllm-v0.17"


def reserve_preset(name: str) -> EngineReserve:
    """The preset called ``name`` (a key of :data:`RESERVE_PRESETS`)."""
    return RESERVE_PRESETS[name]
