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
