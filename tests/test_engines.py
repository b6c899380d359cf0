"""Engine presets (llm.engine): scheduler defaults with sources, fitted step costs, visible fallbacks."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sim.analysis.estimate import estimate
from sim.spec import engines
from sim.spec.descriptions import FIELD_DESCRIPTIONS
from sim.spec.schema import LLMConfig, Scenario
from tests.helpers import small_scenario


def test_every_default_names_its_source():
    for name, s in engines.SCHEDULER.items():
        keys = set(s) - {"sources"}
        assert keys == set(s["sources"]), name
        assert all(len(v) > 30 for v in s["sources"].values())
    assert {"engine", "engine_version"} <= set(FIELD_DESCRIPTIONS["LLMConfig"])


@pytest.mark.parametrize("engine", engines.ENGINES)
def test_preset_fills_unset_keys_only(engine):
    cfg = LLMConfig.model_validate({"engine": engine, "model": "llama-3-8b"})
    s = engines.SCHEDULER[engine]
    assert (cfg.max_batch, cfg.max_batched_tokens, cfg.chunked_prefill) == (
        s["max_batch"],
        s["max_batched_tokens"],
        s["chunked_prefill"],
    )
    assert cfg.gpu_memory_utilization == s["gpu_memory_utilization"]
    fitted = engines.fitted_parameters(engine)
    for k, v in fitted.items():
        assert getattr(cfg, k) == v
    own = LLMConfig.model_validate({"engine": engine, "model": "llama-3-8b", "max_batch": 64, "mfu": 0.33})
    assert own.max_batch == 64 and own.mfu == 0.33


def test_a_named_efficiency_beats_the_engine_fit():
    cfg = LLMConfig.model_validate({"engine": "vllm", "efficiency": "published-slow", "model": "llama-3-8b"})
    from sim.spec.efficiency import preset_parameters

    assert cfg.mfu == preset_parameters("published-slow")["mfu"] and cfg.max_batch == 1024


def test_unknown_engine_is_refused():
    with pytest.raises(ValidationError, match="'vllm', 'trtllm' or 'sglang'"):
        LLMConfig.model_validate({"engine": "tgi"})


def test_estimate_says_where_the_engine_step_costs_come_from():
    scn = Scenario.model_validate(
        small_scenario(llm={"model": "llama-3-8b", "engine": "trtllm", "engine_version": "0.1"})
    )
    sc = estimate(scn)["step_cost"]
    assert sc["engine"] == "trtllm" and sc["engine_version"] == "0.1"
    src = sc["source"]
    if engines.fitted_parameters("trtllm"):
        assert "fitted to" in src and "held out by" in src and "version 0.1 was not measured" in src
    else:
        assert "fall back to llm.efficiency published" in src


def test_an_engine_without_a_fit_falls_back_visibly(monkeypatch):
    monkeypatch.setattr(engines, "fit_document", lambda: {})
    assert engines.fitted_parameters("sglang") == {}
    assert "fall back to llm.efficiency published" in engines.provenance("sglang", None, False)
    assert "scheduler defaults only" in engines.provenance("sglang", None, True)


def test_allreduce_latency_is_the_median_of_the_engines_own_kernel_timed_alone():
    """aiconfigurator's isolated timings of each engine's all-reduce under CUDA graphs, smallest
    message (128 elements), H100 / H200 / B200 at 2, 4 and 8 GPUs, in µs:
    vllm 0.24.0   4.29 4.59 4.71 | 4.38 4.43 4.71 | 6.59 6.86 7.42  -> median 4.71
    trtllm 1.3.0rc20 2.66 2.80 3.23 | 2.64 2.79 3.05 | 4.58 4.76 5.04 -> median 3.05
    sglang 0.5.14 2.43 2.80 4.82 | 2.58 3.35 3.47 | 3.81 4.76 7.00  -> median 3.47"""
    assert engines.allreduce_latency_us("vllm") == pytest.approx(4.71, abs=0.005)
    assert engines.allreduce_latency_us("trtllm") == pytest.approx(3.05, abs=0.005)
    assert engines.allreduce_latency_us("sglang") == pytest.approx(3.47, abs=0.005)
    assert engines.preset("vllm")["allreduce_latency_us"] == engines.allreduce_latency_us("vllm")
    assert "allreduce_latency_us" not in engines.preset("vllm", with_step_cost=False)


def test_trtllm_memory_fraction_is_of_the_memory_left_free():
    """TensorRT-LLM's free_gpu_memory_fraction: the KV pool is the fraction of what the weights and
    the reserve leave, where vLLM's gpu_memory_utilization is a fraction of the whole card."""
    from sim.physics import gpu as gm
    from sim.spec.schema import LLMConfig

    v = LLMConfig(model="llama-3-8b", gpu="h100-sxm", engine="vllm", gpu_memory_utilization=0.8)
    t = LLMConfig(model="llama-3-8b", gpu="h100-sxm", engine="trtllm", gpu_memory_utilization=0.8)
    for c in (v, t):
        w = c.weights_bytes / c.tensor_parallel
        whole = c.memory_exposed_bytes * 0.8 - w - c.reserve_bytes
        free = 0.8 * (c.memory_exposed_bytes - w - c.reserve_bytes)
        assert c.kv_budget_bytes == pytest.approx(free if c.engine == "trtllm" else whole, rel=1e-12)
    assert gm.kv_pool_bytes_of_free(100.0, 0.5, 40.0, 10.0) == 25.0
    # the key says it outright, whatever the engine
    assert LLMConfig(model="llama-3-8b", gpu="h100-sxm", memory_fraction_of="free").fraction_of_free
    assert not LLMConfig(
        model="llama-3-8b", gpu="h100-sxm", engine="trtllm", memory_fraction_of="card"
    ).fraction_of_free
