"""The per-operation step cost: its formulas against hand-computed values, the shipped tables
against the aiconfigurator timings they were read from, and where it applies."""

from __future__ import annotations

import json

import pytest

from sim.files import data_path
from sim.physics import perop
from sim.physics.perop import PerOpCost, PerOpTable
from sim.physics.steptable import step_cost
from sim.spec.schema import LLMConfig

# A made-up entry small enough to compute by hand: GEMM timed at 1 and 100 tokens.
ENTRY = {
    "m": [1, 100],
    "gemm": {
        "qkv": [0.1, 0.2],
        "o": [0.1, 0.2],
        "gate_up": [0.2, 0.4],
        "down": [0.1, 0.2],
        "lm_head": [0.5, 1.0],
    },
    "allreduce": [0.01, 0.05],
    "gen": [0.02, 0.01, 1e-6, 1e-4],
    "ctx": [0.03, 1e-7],
}


def _cfg(**kw: object) -> LLMConfig:
    base: dict[str, object] = {"model": "llama-3-8b", "gpu": "h200", "engine": "vllm"}
    base.update(kw)
    return LLMConfig.model_validate(base)


def _cost(**kw: object) -> PerOpCost:
    cfg = _cfg(perop_overhead_ms=1.0, perop_overhead_per_seq_ms=0.01, perop_prefill_scale=0.5, **kw)
    return PerOpCost(cfg, PerOpTable.from_entry(ENTRY))


def test_curve_is_linear_between_knots_flat_below_and_proportional_above() -> None:
    t = PerOpTable.from_entry(ENTRY)
    # one layer: GEMMs 0.5 + 2 all-reduces 0.02 = 0.52 at m=1; 1.0 + 0.1 = 1.1 at m=100
    assert t.curve(t.layer, 1) == pytest.approx(0.52)
    assert t.curve(t.layer, 100) == pytest.approx(1.1)
    assert t.curve(t.layer, 50.5) == pytest.approx((0.52 + 1.1) / 2)
    assert t.curve(t.layer, 0.5) == pytest.approx(0.52)
    assert t.curve(t.layer, 200) == pytest.approx(2.2)


def test_decode_step_by_hand() -> None:
    c = _cost()
    # batch 10 at 5,000 KV tokens: layer(10) = 0.52 + 0.58 * 9/99; attention max(0.02, 0.01 + 0.005 + 0.001)
    layer = 0.52 + (1.1 - 0.52) * 9 / 99
    attn = max(0.02, 0.01 + 1e-6 * 5000 + 1e-4 * 10)
    lm = 0.5 + 0.5 * 9 / 99
    want = 32 * (layer + attn) + lm + 1.0 + 0.01 * 10
    assert c.decode_time(10, 5000) * 1e3 == pytest.approx(want)
    assert c.time(10, 5000, 5000, 10) * 1e3 == pytest.approx(want)


def test_prefill_step_by_hand() -> None:
    c = _cost()
    # one prompt of 100 tokens from empty: 100 KV tokens, 5,050 pairs, 1 sequence
    base = 0.52 + max(0.02, 0.01 + 1e-6 * 100 + 1e-4)
    more = (1.1 - 0.52) + 0.03 + 1e-7 * (5050 - 100)
    want = 32 * (base + 0.5 * more) + 0.5 + 1.0 + 0.01
    assert c.time(100, 100, 5050, 1) * 1e3 == pytest.approx(want)


def test_decode_epoch_closed_form_equals_the_sum_of_its_steps() -> None:
    c = _cost()
    for batch, ctx0, k in ((4, 10.0, 7), (64, 20_000.0, 50), (8, 100_000.0, 300)):
        lines = c.decode_lines(batch, ctx0)
        direct = sum(c.decode_time(batch, ctx0 + batch * j) for j in range(k))
        assert c.epoch_time(lines, k) == pytest.approx(direct, rel=1e-12)


def test_shipped_table_holds_the_measured_timing() -> None:
    """aiconfigurator 0.12.0, h200_sxm/gemm/vllm/0.24.0/gemm_perf.parquet: m=1, n=4096, k=4096,
    bfloat16 (torch.nn.functional.linear) took 0.0125573 ms; Llama-3-8B's output projection at
    tensor parallelism 1 is exactly that shape, so the shipped entry carries it unchanged."""
    doc = json.loads(data_path("silicon/perop/h200.json").read_text())
    e = doc["engines"]["vllm"]["entries"]["llama-3-8b|tp1|bf16"]
    assert e["m"][0] == 1
    assert e["gemm"]["o"][0] == pytest.approx(0.0125573, rel=1e-5)
    assert doc["engines"]["vllm"]["versions"]["gemm"] == "0.24.0"
    assert e["allreduce"] == [0.0] * len(e["m"])  # no all-reduce at TP 1


def test_decode_attention_slope_is_the_kv_bytes_over_a_plausible_bandwidth() -> None:
    """Decode attention reads each cached token's K and V: Llama-3-8B at TP 1 keeps 8 KV heads of
    128 values, 2 bytes each, K and V: 4,096 bytes per token and layer.  The fitted slope (ms per
    token) must put that at 50-100 % of H200's 4,800 GB/s."""
    doc = json.loads(data_path("silicon/perop/h200.json").read_text())
    slope_ms = doc["engines"]["vllm"]["entries"]["llama-3-8b|tp1|bf16"]["gen"][2]
    bandwidth = 4096 / (slope_ms / 1e3) / 1e9
    assert 0.5 * 4800 < bandwidth < 1.0 * 4800


def test_covered_replica_uses_the_per_operation_sum_and_others_fall_back() -> None:
    assert isinstance(step_cost(_cfg()), PerOpCost)
    assert _cfg().perop_entry is not None
    roof = _cfg(step_cost="roofline")
    assert roof.perop_entry is None and not isinstance(step_cost(roof), PerOpCost)
    no_engine = LLMConfig.model_validate({"model": "llama-3-8b", "gpu": "h200"})
    assert no_engine.perop_entry is None
    l4 = _cfg(gpu="l4", model="llama-2-7b")
    assert l4.perop_entry is None
    assert "no per-operation tables for GPU l4" in perop.coverage("l4", "vllm", "llama-2-7b", 1, "bf16")
    assert perop.coverage("h200", None, "llama-3-8b", 1, "bf16") == "no llm.engine set"


def test_fp8_weights_pick_the_fp8_tables() -> None:
    assert _cfg(weights_dtype="fp8").perop_dtype == "fp8"
    assert _cfg(compute_dtype="fp8", dtype_bytes=1.0).perop_dtype == "fp8"
    assert _cfg().perop_dtype == "bf16"


def test_step_cost_perop_where_uncovered_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="step_cost perop: no per-operation tables for GPU l4"):
        _cfg(gpu="l4", model="llama-2-7b", step_cost="perop")


def test_moe_layout_without_tables_falls_back_to_the_roofline() -> None:
    # DeepSeek-R1 under vLLM on H200: no measured run of that layout, so no per-operation entry
    cfg = _cfg(model="deepseek-r1", gpu="h200", tensor_parallel=8, weights_dtype="fp8", compute_dtype="fp8")
    assert cfg.perop_entry is None and not isinstance(step_cost(cfg), PerOpCost)
    why = perop.coverage("h200", "vllm", "deepseek-r1", 8, "fp8", 8)
    assert "experts over 8 GPUs" in why and "mixture-of-experts layouts of the measured serving runs" in why


# A made-up mixture-of-experts entry: the whole layer curve and MLA's per-token prefill term.
MOE_ENTRY = {
    "m": [1, 100],
    "layer": [0.3, 0.9],
    "lm_head": [0.05, 0.1],
    "gen": [0.02, 0.01, 1e-6, 1e-4],
    "ctx": [0.03, 1e-7, 2e-4],
}


def test_moe_entry_step_by_hand() -> None:
    t = PerOpTable.from_entry(MOE_ENTRY)
    assert t.curve(t.layer, 1) == pytest.approx(0.3) and t.ctx == (0.03, 1e-7, 2e-4)
    cfg = _cfg(perop_overhead_ms=1.0, perop_overhead_per_seq_ms=0.01, perop_prefill_scale=0.5)
    c = PerOpCost(cfg, t)  # 32 layers (llama-3-8b), the entry's curves
    # decode, batch 10 at 5,000 KV tokens
    layer = 0.3 + 0.6 * 9 / 99
    attn = max(0.02, 0.01 + 1e-6 * 5000 + 1e-4 * 10)
    want = 32 * (layer + attn) + (0.05 + 0.05 * 9 / 99) + 1.0 + 0.01 * 10
    assert c.decode_time(10, 5000) * 1e3 == pytest.approx(want)
    # one prompt of 100 tokens: the per-token term adds 2e-4 * (100 - 1) per layer
    base = 0.3 + max(0.02, 0.01 + 1e-6 * 100 + 1e-4)
    more = (0.9 - 0.3) + 0.03 + 1e-7 * (5050 - 100) + 2e-4 * 99
    assert c.time(100, 100, 5050, 1) * 1e3 == pytest.approx(32 * (base + 0.5 * more) + 0.05 + 1.0 + 0.01)


def test_moe_layout_of_a_measured_run_uses_its_per_operation_entry() -> None:
    """DeepSeek-R1 FP8 on 8 H200s under TensorRT-LLM, experts spread whole (ep 8) and split (ep 1):
    two entries of the shipped tables, composed by aiconfigurator from its per-operation timings."""
    kw = dict(model="deepseek-r1", gpu="h200", tensor_parallel=8, weights_dtype="fp8", compute_dtype="fp8")
    spread = _cfg(engine="trtllm", step_cost="perop", **kw)
    split = _cfg(engine="trtllm", expert_parallel=1, step_cost="perop", **kw)
    assert spread.perop_ep == 8 and split.perop_ep == 1
    assert spread.perop_entry is not None and split.perop_entry is not None
    assert "per-op composition" in spread.perop_entry["source"]
    cost = step_cost(spread)
    assert isinstance(cost, PerOpCost)
    # a decode step of 8 sequences at 1,000 tokens each: 61 layers of a few tenths of a ms
    t = cost.decode_time(8, 8000) * 1e3
    assert 61 * 0.05 < t < 61 * 0.5
    assert _cfg().perop_ep is None  # a dense model's entry has no expert layout
    # step_cost auto keeps a MoE model on the roofline, and the estimate says why
    auto = _cfg(engine="trtllm", **kw)
    assert auto.perop_entry is None and not isinstance(step_cost(auto), PerOpCost)
    from sim.analysis.estimate import step_cost_figures

    assert step_cost_figures(auto)["perop_not_used"] == perop.MOE_AUTO
    assert "per-op composition" in step_cost_figures(spread)["model"]


def test_fp4_picks_the_nvfp4_tables_on_blackwell_and_weight_only_fp4_the_roofline() -> None:
    assert perop.dtype_key("fp4", "fp4") == "fp4"
    b200 = _cfg(gpu="b200", model="llama-3-70b", weights_dtype="fp4", compute_dtype="fp4")
    assert b200.perop_dtype == "fp4" and b200.perop_entry is not None
    hopper = _cfg(gpu="h200", model="llama-3-70b", weights_dtype="fp4", compute_dtype="bf16")
    assert hopper.perop_entry is None  # a weight-only FP4 kernel the tables do not time


def test_an_fp8_kv_cache_reads_the_fp8_decode_attention_law() -> None:
    e = {**ENTRY, "gen_fp8_kv": [0.02, 0.01, 4e-7, 1e-4]}
    assert PerOpTable.from_entry(e).gen[2] == 1e-6
    assert PerOpTable.from_entry(e, fp8_kv=True).gen[2] == 4e-7
    # not timed with an FP8 cache: the BF16 law with half the bytes per token
    assert PerOpTable.from_entry(ENTRY, fp8_kv=True).gen == (0.02, 0.01, 5e-7, 1e-4)
    cfg = _cfg(kv_dtype_bytes=1.0)
    cost = step_cost(cfg)
    assert isinstance(cost, PerOpCost)
    assert cost.table.gen == tuple(cfg.perop_entry["gen_fp8_kv"])  # type: ignore[index]


def test_a_moe_model_under_an_engine_preset_keeps_the_published_roofline() -> None:
    """The engine presets' roofline parameters were fitted on dense models only: a MoE model gets
    the engine's scheduler, its per-operation overheads, and the efficiency preset's roofline where
    no per-operation entry covers it; the estimate says so."""
    from sim.analysis.estimate import _step_cost_source
    from sim.spec.efficiency import preset_parameters
    from sim.spec.engines import fitted_parameters

    moe = _cfg(model="qwen3-235b-a22b", tensor_parallel=4, weights_dtype="fp8", compute_dtype="fp8")
    published = preset_parameters("published")
    assert moe.mfu == published["mfu"] and moe.bw_efficiency == published["bw_efficiency"]
    assert moe.perop_overhead_ms == fitted_parameters("vllm")["perop_overhead_ms"]
    assert moe.max_batch == 1024  # vLLM's scheduler default stays
    dense = _cfg()
    assert dense.mfu != published["mfu"]  # the engine's fit
    assert "roofline fit saw dense models only" in _step_cost_source(moe)
