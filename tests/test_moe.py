"""Mixture-of-experts and latent-attention step costs, FP8/FP4 precisions: formulas by hand."""

from __future__ import annotations

import numpy as np
import pytest

from sim.physics import gpu as gm
from sim.physics.gpu import StepCost
from sim.spec.schema import LLMConfig

CUSTOM = dict(efficiency="custom", bw_efficiency=0.8, mfu=0.5, step_overhead_ms=1.0)


def _llm(**kw) -> LLMConfig:
    return LLMConfig(**{**CUSTOM, **kw})


# --- formulas -------------------------------------------------------------------------------


def test_expected_distinct_experts_by_hand():
    assert gm.expected_distinct_experts(256, 8, 1.0) == pytest.approx(8.0)
    assert gm.expected_distinct_experts(256, 8, 0.0) == 0.0
    assert gm.expected_distinct_experts(4, 2, 2.0) == pytest.approx(4 * (1 - 0.5**2)) == 3.0
    assert gm.expected_distinct_experts(256, 8, 32.0) == pytest.approx(256 * (1 - (31 / 32) ** 32))
    assert gm.expected_distinct_experts(256, 8, 32.0) == pytest.approx(163.3138, abs=1e-4)
    arr = gm.expected_distinct_experts(256, 8, np.array([1.0, 4096.0]))
    assert arr[0] == pytest.approx(8.0) and arr[1] == pytest.approx(256.0)


def test_moe_weights_bytes_by_hand():
    # dense 100 B + 10 B per expert x 3 experts expected (4 experts, 2 per token, 2 tokens)
    assert gm.moe_weights_bytes(100.0, 10.0, 4, 2, 2.0) == pytest.approx(130.0)


def test_all_to_all_by_hand():
    # 2 * 8 * 7168 * 2 * 7 / 64 / 450e9 = 55.75 ns
    assert gm.expert_all_to_all_time_s(1.0, 7168, 2.0, 8, 8, 450.0) == pytest.approx(25_088 / 450e9, rel=1e-12)
    assert 2 * 8 * 7168 * 2 * 7 / 64 == 25_088
    assert gm.expert_all_to_all_time_s(100.0, 7168, 2.0, 8, 1, 450.0) == 0.0


def test_mla_kv_and_attention_by_hand():
    assert gm.mla_kv_bytes_per_token(61, 512, 64, 2.0) == 61 * 576 * 2 == 70_272
    assert gm.mla_kv_bytes_per_token(61, 512, 64, 1.0) == 35_136  # FP8 KV halves it
    assert gm.attention_flops_per_pair(61, 128, 128, 512, 64) == 2 * 61 * 128 * (576 + 512) == 16_990_208
    assert gm.attention_flops_per_pair(8, 32, 128) == 4.0 * 8 * 32 * 128


def test_nvfp4_bytes_per_weight():
    assert gm.WEIGHT_DTYPE_BYTES == {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}


# --- the scenario keys ----------------------------------------------------------------------


def test_weights_dtype_sets_dtype_bytes_and_keeps_activations_bf16():
    fp4 = _llm(model="llama-3.1-70b", gpu="b200", weights_dtype="fp4")
    assert fp4.dtype_bytes == 0.5625 and fp4.activation_bytes == 2.0
    assert fp4.weights_bytes == 70_553_706_496 * 0.5625
    legacy = _llm(model="llama-3-8b", gpu="h100-sxm", dtype_bytes=1.0)
    assert legacy.weights_dtype is None and legacy.activation_bytes == 1.0
    assert _llm(model="llama-3-8b", weights_dtype="fp8", dtype_bytes=1).dtype_bytes == 1.0


def test_weights_dtype_disagreeing_with_dtype_bytes_is_refused():
    with pytest.raises(ValueError, match="weights_dtype fp8 is 1 bytes per weight but dtype_bytes is 2"):
        _llm(model="llama-3-8b", weights_dtype="fp8", dtype_bytes=2)


def test_fp4_compute_needs_a_gpu_with_fp4_tflops():
    with pytest.raises(ValueError, match="compute_dtype fp4 needs llm.gpu.fp4_tflops; h200 has none"):
        _llm(model="llama-3-8b", gpu="h200", compute_dtype="fp4")
    assert _llm(model="llama-3-8b", gpu="b200", compute_dtype="fp4").peak_tflops == 9000
    assert _llm(model="llama-3-8b", gpu="b200", compute_dtype="fp8").peak_tflops == 4500
    assert _llm(model="llama-3-8b", gpu="b200").peak_tflops == 2250


def test_fp8_kv_cache_halves_kv_bytes_and_doubles_tokens():
    a = _llm(model="llama-3.1-8b", gpu="h100-sxm")
    b = _llm(model="llama-3.1-8b", gpu="h100-sxm", kv_dtype_bytes=1)
    assert b.kv_bytes_per_token == a.kv_bytes_per_token / 2 == 2 * 32 * 8 * 128
    assert b.kv_blocks == pytest.approx(2 * a.kv_blocks, abs=1)


def test_mla_kv_is_the_latent_on_every_gpu():
    c = _llm(model="deepseek-r1", gpu="h200", tensor_parallel=8, weights_dtype="fp8", compute_dtype="fp8")
    assert c.kv_bytes_per_token == c.kv_bytes_per_token_per_gpu == 70_272  # not split by tensor_parallel


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(model="llama-3-8b", expert_parallel=2, tensor_parallel=2), "the model has no experts"),
        (dict(model="gpt-oss-120b", expert_parallel=4, tensor_parallel=2), "must divide tensor_parallel"),
    ],
)
def test_expert_parallel_checks(kw, message):
    with pytest.raises(ValueError, match=message):
        _llm(gpu="h200", **kw)


def test_expert_parallel_defaults_to_tensor_parallel_for_moe_only():
    assert _llm(model="gpt-oss-120b", gpu="h200", tensor_parallel=2).expert_parallel_size == 2
    assert _llm(model="gpt-oss-120b", gpu="h200", tensor_parallel=2, expert_parallel=1).expert_parallel_size == 1
    assert _llm(model="llama-3-8b", gpu="h200", tensor_parallel=2).expert_parallel_size == 1


def test_inline_moe_model_needs_expert_width():
    shape = dict(layers=2, hidden=64, heads=4, kv_heads=4, head_dim=16, vocab=100, intermediate=128)
    with pytest.raises(ValueError, match="needs expert_intermediate"):
        _llm(model={**shape, "experts": 4, "experts_per_token": 2})
    with pytest.raises(ValueError, match="need experts > 0"):
        _llm(model={**shape, "experts_per_token": 2})


# --- the MoE step cost ----------------------------------------------------------------------


def _deepseek() -> LLMConfig:
    return _llm(model="deepseek-r1", gpu="h200", tensor_parallel=8, weights_dtype="fp8", compute_dtype="fp8")


def test_deepseek_decode_step_by_hand():
    cost = StepCost(_deepseek())
    expert = 3 * 7168 * 2048  # 44,040,192 parameters
    routed = 58 * 256 * expert  # 653,908,770,816
    dense = 671_026_404_352 - routed  # 17,117,633,536: attention, embeddings, 3 dense MLPs, shared experts
    assert cost.moe == (dense / 8, 58 * expert / 8, 256, 8)
    # batch 1: 8 experts read per layer; 2,000 tokens of context
    n_bytes = dense / 8 + 8 * 58 * expert / 8 + 70_272 * 2000
    active = 671_026_404_352 - 58 * (256 - 8) * expert  # 37,552,282,624
    flops = 2 * active / 8 + 2 * 61 * 128 * (576 + 512) / 8 * 2000
    mem_s = n_bytes / (4800e9 * 0.8)
    assert flops / (1979e12 * 0.5) < mem_s
    # the MoE layers' all-to-all replaces their all-reduce: 64 all-reduces and 58 all-to-alls
    comm = 64 * 2 * 7 / 8 * 7168 * 2 / 450e9 + 58 * 2 * 8 * 7168 * 2 * 7 / 64 / 450e9
    assert cost.comm_per_token_s == pytest.approx(comm, rel=1e-12)
    assert cost.decode_time(1, 2000) == pytest.approx(mem_s + 1e-3 + comm, rel=1e-12)


def test_more_tokens_read_more_experts_until_all_are_read():
    cost = StepCost(_deepseek())
    weights = [cost.weights_read(float(t)) for t in (1, 8, 64, 4096)]
    assert weights == sorted(weights)
    dense, expert, e, k = cost.moe  # type: ignore[misc]
    assert weights[0] == pytest.approx(dense + k * expert)
    assert weights[-1] == pytest.approx(dense + e * expert, rel=1e-9)  # every expert by 4,096 tokens
    assert weights[-1] == pytest.approx(_deepseek().weights_bytes / 8)


def test_expert_parallel_one_keeps_the_all_reduce():
    c = _llm(
        model="deepseek-r1", gpu="h200", tensor_parallel=8, weights_dtype="fp8", compute_dtype="fp8", expert_parallel=1
    )
    cost = StepCost(c)
    assert cost.comm_per_token_s == pytest.approx(2 * 61 * 2 * 7 / 8 * 7168 * 2 / 450e9, rel=1e-12)


def test_moe_decode_epoch_closed_form_matches_step_sum():
    cost = StepCost(_deepseek())
    batch, ctx0, k = 16, 16 * 1500.0, 40
    lines = cost.decode_lines(batch, ctx0)
    by_step = sum(cost.decode_time(batch, ctx0 + batch * j) for j in range(k))
    assert cost.epoch_time(lines, k) == pytest.approx(by_step, rel=1e-12)


def test_moe_arrays_match_scalars():
    cost = StepCost(_deepseek())
    new = np.array([1.0, 8.0, 512.0])
    ctx = np.array([100.0, 800.0, 512.0])
    pairs = np.array([100.0, 800.0, 131_328.0])
    got = cost.times(new, ctx, pairs, new)
    want = [cost.time(float(a), float(b), float(c), float(a)) for a, b, c in zip(new, ctx, pairs)]
    assert got == pytest.approx(want, rel=1e-12)


def test_dense_step_cost_has_no_moe_terms():
    cost = StepCost(_llm(model="llama-3-8b", gpu="h100-sxm"))
    assert cost.moe is None
    assert cost.weights_read(123.0) == cost.weights_bytes == 8_030_261_248 * 2
    assert cost.attn_coef == 4.0 * 32 * 32 * 128


def test_fp4_llama70b_decode_by_hand():
    c = _llm(model="llama-3.1-70b", gpu="b200", weights_dtype="fp4", compute_dtype="fp4", kv_dtype_bytes=1)
    cost = StepCost(c)
    n_bytes = 70_553_706_496 * 0.5625 + 2 * 80 * 8 * 128 * 1 * 4000
    assert cost.decode_time(2, 4000) == pytest.approx(n_bytes / (8000e9 * 0.8) + 1e-3, rel=1e-12)
    assert cost.inv_peak == pytest.approx(1 / (9000e12 * 0.5))
