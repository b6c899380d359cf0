"""Pure GPU formulas: hand-computed values, and closed forms against brute-force loops."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.llm.kv import DecodeBlocks
from sim.physics import gpu as gm
from sim.physics.gpu import StepCost
from sim.spec.schema import LLMConfig

ARTICLE = dict(layers=8, kv_heads=32, head_dim=128, kv_dtype_bytes=2)


# --------------------------------------------------------------------------- bytes


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (1_024, 134_217_728),  # 2 * 8 * 32 * 128 * 2 = 131,072 B/token; x 1,024 = 128 MiB (article: 8.4 MB)
        (8_192, 1_073_741_824),  # 1 GiB
        (32_768, 4_294_967_296),  # 4 GiB
    ],
)
def test_article_model_kv_bytes(tokens, expected):
    assert tokens * gm.kv_bytes_per_token(**ARTICLE) == expected


def test_article_catalog_model_kv_per_token():
    cfg = LLMConfig(model="article-8l")
    assert cfg.kv_bytes_per_token == 131_072
    assert cfg.kv_bytes_per_token * 32_768 == 4_294_967_296


def test_70_layer_mha_model_at_32k():
    # 2 * 70 * 64 * 128 * 2 * 32,768 = 75,161,927,680 bytes = 75.16 GB (the article says 47.2 GB)
    assert 32_768 * gm.kv_bytes_per_token(layers=70, kv_heads=64, head_dim=128, kv_dtype_bytes=2) == 75_161_927_680


def test_gqa_mqa_and_fp8_kv_shrink_the_cache():
    mha = gm.kv_bytes_per_token(32, 32, 128, 2)  # 2*32*32*128*2 = 524,288
    gqa = gm.kv_bytes_per_token(32, 8, 128, 2)  # Llama-3-8B: 131,072
    mqa = gm.kv_bytes_per_token(32, 1, 128, 2)  # 16,384
    fp8 = gm.kv_bytes_per_token(32, 8, 128, 1)  # 65,536
    assert (mha, gqa, mqa, fp8) == (524_288, 131_072, 16_384, 65_536)


def test_kv_heads_per_gpu_split_and_replicate():
    assert gm.kv_heads_per_gpu(8, 1) == 8
    assert gm.kv_heads_per_gpu(8, 4) == 2
    assert gm.kv_heads_per_gpu(8, 8) == 1
    assert gm.kv_heads_per_gpu(1, 8) == 1  # MQA: the one head is replicated
    assert gm.kv_bytes_per_token_per_gpu(32, 8, 128, 2, 4) == 32_768


def test_kv_blocks_and_blocks_for_tokens():
    # 1 GB budget / (131,072 B x 16 tokens) = 476.8 -> 476 blocks
    assert gm.kv_blocks(1e9, 131_072, 16) == 476
    assert gm.kv_blocks(-5.0, 131_072, 16) == 0
    assert [gm.blocks_for_tokens(t, 16) for t in (0, 1, 16, 17, 32, 33)] == [0, 1, 1, 2, 2, 3]


def test_weights_bytes():
    assert gm.weights_bytes(8_030_261_248, 2) == 16_060_522_496


def test_attention_flops_and_ridge_point():
    assert gm.attention_flops(8, 32, 128, 1024) == 68_786_585_600
    # H100 SXM: 989 TFLOPS / 3,350 GB/s = 295.2 FLOP per byte
    assert gm.ridge_point_flops_per_byte(989, 3350) == pytest.approx(295.2239, rel=1e-6)
    assert gm.arithmetic_intensity(100.0, 50.0) == 2.0


def test_tensor_parallel_allreduce():
    # One ring all-reduce of 1e9 bytes over 4 GPUs at 100 GB/s: 2 * 3/4 * 1e9 / 1e11 = 15 ms.
    assert gm.ring_allreduce_time_s(1e9, 4, 100) == pytest.approx(0.015)
    # A step of 10 tokens, 2 layers, hidden 1000, fp16, tp 2 at 100 GB/s:
    # 2 layers x 2 all-reduces x (2 * 1/2 * 10*1000*2 B / 1e11) = 4 x 2e-7 = 8e-7 s
    assert gm.tp_allreduce_time_s(10, 2, 1000, 2, 2, 100) == pytest.approx(8e-7)
    assert gm.tp_allreduce_time_s(10, 2, 1000, 2, 1, None) == 0.0


# --------------------------------------------------------------------------- step cost


def _cfg(**kw) -> LLMConfig:
    return LLMConfig(**{"efficiency": "custom", "model": "article-8l", "gpu": "h100-sxm", **kw})


def test_decode_step_batch_1_empty_cache_is_weights_over_bandwidth():
    cfg = _cfg(bw_efficiency=1.0, step_overhead_ms=0)
    cost = StepCost(cfg)
    # 1,881,214,976 params x 2 bytes / 3.35e12 B/s = 1.12311 ms
    assert cost.time(1, 0, 0) == pytest.approx(1_881_214_976 * 2 / 3.35e12, rel=1e-12)
    assert cost.memory_bound(1, 0, 0)


def test_step_cost_with_tensor_parallel_splits_work_and_adds_allreduce():
    one = StepCost(_cfg(model="llama-3-70b", tensor_parallel=4, bw_efficiency=1.0, mfu=1.0, step_overhead_ms=0))
    w = 70_553_706_496 * 2
    # per GPU: weights / 4 at 3,350 GB/s, plus 2 x 80 all-reduces of 8192 x 2 bytes over 4 GPUs at 450 GB/s
    mem = w / 4 / 3.35e12
    comm = 2 * 80 * (2 * 3 / 4 * 8192 * 2 / 450e9)
    assert one.time(1, 0, 0) == pytest.approx(mem + comm, rel=1e-12)


def test_fp8_kv_makes_long_context_decode_faster():
    fp16 = StepCost(_cfg(model="llama-3-8b"))
    fp8 = StepCost(_cfg(model="llama-3-8b", kv_dtype_bytes=1))
    assert fp8.kv_per_token == fp16.kv_per_token / 2
    assert fp8.time(64, 64 * 8000, 64 * 8000) < fp16.time(64, 64 * 8000, 64 * 8000)
    assert _cfg(model="llama-3-8b", kv_dtype_bytes=1).kv_blocks == pytest.approx(
        2 * _cfg(model="llama-3-8b").kv_blocks, abs=1
    )


costs = st.builds(
    lambda eff, mfu, ovh, model: StepCost(_cfg(model=model, bw_efficiency=eff, mfu=mfu, step_overhead_ms=ovh)),
    st.floats(0.1, 1.0),
    st.floats(0.1, 1.0),
    st.floats(0.0, 5.0),
    st.sampled_from(["article-8l", "llama-3-8b", "mistral-7b"]),
)


@settings(max_examples=60, deadline=None)
@given(
    cost=costs, batch=st.integers(1, 512), ctx=st.integers(0, 200_000), db=st.integers(0, 64), dc=st.integers(0, 50_000)
)
def test_step_time_never_falls_when_batch_or_context_grows(cost, batch, ctx, db, dc):
    # a decode step of `batch` sequences reading `ctx` tokens: new = batch, pairs = ctx
    t = cost.time(batch, ctx, ctx)
    assert cost.time(batch + db, ctx, ctx) >= t
    assert cost.time(batch, ctx + dc, ctx + dc) >= t
    assert cost.time(batch + db, ctx + dc, ctx + dc) >= t


# --------------------------------------------------------------------------- closed forms


lines = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(a1=lines, b1=lines, a2=lines, b2=lines, k=st.integers(0, 300))
def test_sum_max_linear_equals_brute_force(a1, b1, a2, b2, k):
    brute = sum(max(a1 + b1 * s, a2 + b2 * s) for s in range(k))
    scale = sum(abs(a1) + abs(a2) + (abs(b1) + abs(b2)) * s for s in range(k)) + 1.0
    assert gm.sum_max_linear(a1, b1, a2, b2, k) == pytest.approx(brute, abs=1e-9 * scale)


@settings(max_examples=100, deadline=None)
@given(cost=costs, batch=st.integers(1, 300), ctx0=st.integers(1, 500_000), k=st.integers(0, 400))
def test_decode_epoch_closed_form_equals_step_loop(cost, batch, ctx0, k):
    lines_ = cost.decode_lines(batch, ctx0)
    loop = sum(cost.time(batch, ctx0 + batch * j, ctx0 + batch * j) for j in range(k))
    assert cost.epoch_time(lines_, k) == pytest.approx(loop, rel=1e-9, abs=1e-15)
    mem_loop = sum(cost.memory_bound(batch, ctx0 + batch * j, ctx0 + batch * j) for j in range(k))
    assert cost.memory_bound_steps(lines_, k) == mem_loop


@settings(max_examples=150, deadline=None)
@given(
    block=st.integers(1, 32),
    e=st.lists(st.integers(-200, 400), min_size=1, max_size=40),
    x0=st.integers(0, 300),
    extra=st.integers(0, 2000),
)
def test_decode_blocks_closed_form_equals_brute_force(block, e, x0, extra):
    # each sequence holds e_i + x private tokens at decode clock x (never negative here)
    x0 = max(x0, -min(e))
    dec = DecodeBlocks(block)
    for ei in e:
        dec.add(ei + block - 1)

    def brute(x):
        return sum(math.ceil((ei + x) / block) for ei in e)

    for x in range(x0, x0 + 3 * block + 2):
        assert dec.blocks(x) == brute(x)
    cap = brute(x0) + extra
    # the step-by-step loop: advance while the next clock still fits
    x = x0
    while brute(x + 1) <= cap:
        x += 1
    assert dec.max_clock(cap) == x
    # removing a sequence restores the sum without it
    dec.remove(e[0] + block - 1)
    assert dec.blocks(x0) == brute(x0) - math.ceil((e[0] + x0) / block)


# --------------------------------------------------------------------------- KV pool and engine reserve


def test_profile_activation_by_hand():
    # Llama-3-8B, bf16, 8,192 tokens, 3 live copies: 3 * 2 * (4,096 + 14,336) * 8,192 = 905,969,664 B
    assert gm.profile_activation_bytes(8192, 4096, 14336, 2.0, 3.0) == 905_969_664
    assert gm.profile_activation_bytes(0, 4096, 14336, 2.0, 3.0) == 0


def test_engine_reserve_adds_nccl_only_under_tensor_parallelism():
    gib = 2**30
    # 1 GiB activation + 0.25 GiB non-torch + 1.85 GiB NCCL at tp 2 = 3.1 GiB; at tp 1 the NCCL term drops
    assert gm.engine_reserve_bytes(gib, 0.25 * gib, 1.85 * gib, 2) == pytest.approx(3.1 * gib)
    assert gm.engine_reserve_bytes(gib, 0.25 * gib, 1.85 * gib, 1) == pytest.approx(1.25 * gib)
    assert gm.engine_reserve_bytes(gib, 0.0, 0.0, 1, cuda_graph_bytes=0.5 * gib) == pytest.approx(1.5 * gib)


def test_kv_pool_by_hand():
    gib = 2**30
    # an H100 exposes 79.19 GiB: 79.19 * 0.9 - 14.96 - 1.2 = 55.111 GiB
    assert gm.kv_pool_bytes(79.19 * gib, 0.9, 14.96 * gib, 1.2 * gib) == pytest.approx(55.111 * gib)
    # vLLM's own sum for Llama-3.1-8B at tp 2 (llm-d-planner's v0.19.0 terms): 75.23 - 7.51 - 1.89 - 2.07
    assert gm.kv_pool_bytes(79.19 * gib, 0.95, 7.51 * gib, 3.96 * gib) / gib == pytest.approx(63.7605)
    # TensorRT-LLM's fraction is of what the weights and the reserve leave: 0.9 * (79.19 - 14.96 - 1.2)
    assert gm.kv_pool_bytes_of_free(79.19 * gib, 0.9, 14.96 * gib, 1.2 * gib) / gib == pytest.approx(56.727)


def test_the_schema_llm_config_is_a_replica_config():
    """Every field the step-cost models read (sim.physics.replica_config) is a field or property of
    the schema's LLMConfig, its model and its GPU, with the type the protocol gives (mypy checks the
    same where the engine passes an LLMConfig in)."""
    import inspect
    import typing

    from sim.physics import replica_config as rc

    cfg = LLMConfig(model="deepseek-v3", gpu="h200", tensor_parallel=8, weights_dtype="fp8")
    for proto, obj in ((rc.ReplicaConfig, cfg), (rc.ModelShape, cfg.model), (rc.GPUFigures, cfg.gpu)):
        members = {n: m for n, m in inspect.getmembers(proto) if isinstance(m, property)}
        assert len(members) >= 2
        for name, prop in members.items():
            want = typing.get_type_hints(prop.fget, vars(rc))["return"]
            got = getattr(obj, name)
            if want in (int, float):
                assert isinstance(got, (int, float)) and not isinstance(got, bool), (proto.__name__, name, got)
            elif name not in ("model", "gpu"):  # X | None
                allowed = tuple(typing.get_origin(a) or a for a in typing.get_args(want) if a is not type(None))
                assert got is None or isinstance(got, allowed), (name, got)
