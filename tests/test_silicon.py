"""The measured serving runs (aiconfigurator 0.12.0's silicon_sample.csv) and what capsim replays of them."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from sim.errors import ConfigError
from sim.spec import catalog
from sim.spec.silicon import load_rows, reason_counts, representable, silicon_path


@pytest.fixture(scope="module")
def rows():
    return load_rows()


def by_id(rows, row_id):
    (row,) = [r for r in rows if r.id == row_id]
    return row


def test_the_file_is_the_pinned_release_unchanged():
    digest = hashlib.sha256(silicon_path().read_bytes()).hexdigest()
    assert digest == "4240bfaf555b6f8b2c62512074e5efbb7791cdbb0344b068408f397588499adb"
    folder = silicon_path().parent
    assert "Apache License" in (folder / "LICENSE").read_text()
    assert "aiconfigurator 0.12.0" in (folder / "README.md").read_text()


def test_counts_by_first_reason(rows):
    assert len(rows) == 5221
    assert reason_counts(rows) == {
        "MoE model": 2556,
        "disaggregated prefill/decode": 1602,
        "representable": 925,
        "FP4 weights": 138,
    }


def test_counts_by_every_reason(rows):
    every = Counter(x for r in rows for x in r.reasons if not x.startswith("MoE model"))
    assert every["FP4 weights"] == 1978
    assert every["INT4 weight-only"] == 90
    assert every["attention data parallel"] == 169
    assert every["b300_sxm (Blackwell) not in the GPU catalog"] == 381
    assert sum(v for k, v in every.items() if "(Blackwell)" in k) == 381 + 277  # B200 and GB200 are catalogued


def test_what_capsim_replays(rows):
    rep = representable(rows)
    assert len(rep) == 925
    assert Counter(r.engine for r in rep) == {"trtllm": 516, "vllm": 279, "sglang": 130}
    assert Counter(r.gpu for r in rep) == {"h100-sxm": 579, "h200": 199, "b200": 132, "gb200": 15}
    assert Counter(r.model for r in rep) == {"qwen3-32b": 372, "llama-3-8b": 244, "llama-3-70b": 309}
    assert {r.precision for r in rep} == {"fp8", "bf16"}
    assert all(r.model in catalog.model_names() and r.gpu in catalog.gpu_names() for r in rep)
    assert sum(not r.concurrency_stated for r in rep) == 7


def test_hand_checked_rows(rows):
    r = by_id(rows, "2026_04_06_llama_3_1_70b_h100_sxm_vllm_fp8_agg_1024x1024_c4_tp2_ep1_738")
    assert r.representable and r.reason == ""
    assert (r.engine, r.engine_version, r.model, r.gpu, r.precision) == ("vllm", "", "llama-3-70b", "h100-sxm", "fp8")
    assert (r.isl, r.osl, r.concurrency, r.tensor_parallel) == (1024, 1024, 4, 2)
    assert (r.dtype_bytes, r.compute_dtype) == (1.0, "fp8")
    assert r.measured_ttft_ms == pytest.approx(121.3077, abs=1e-4)
    assert r.measured_tpot_ms == pytest.approx(17.4072, abs=1e-4)

    # no precision, no GEMM quantisation: the BF16 checkpoint as named
    r = by_id(
        rows,
        "meta_llama_llama_3_1_8b_instruct_meta_llama_llama_3_1_8b_instruct_h100_sxm_trtllm_agg_1024x128_c8_tp1_epnone_1",
    )
    assert r.representable and (r.precision, r.dtype_bytes, r.compute_dtype) == ("bf16", 2.0, "bf16")
    assert (r.concurrency, r.measured_tpot_ms) == (8, pytest.approx(7.9436, abs=1e-4))

    # no silicon_concurrency recorded: the batch size stands for it
    r = by_id(rows, "qwen3_32b_qwen3_32b_h100_sxm_trtllm_agg_4000x1000_c_tp2_epnone_1")
    assert r.representable and not r.concurrency_stated and r.concurrency == 64

    r = by_id(rows, "qwen_qwen3_32b_qwen_qwen3_32b_gb200_trtllm_agg_2000x500_c288_tp2_epnone_1")
    assert r.representable and (r.gpu, r.precision, r.concurrency, r.tensor_parallel) == ("gb200", "bf16", 288, 2)

    r = by_id(rows, "minimaxm2_5_b300_vllm_fp8_agg_8192x1024_c128_cfg733")
    assert r.reasons == ("MoE model (MiniMaxAI/MiniMax-M2.5)", "b300_sxm (Blackwell) not in the GPU catalog")
    assert r.gpu is None

    r = by_id(rows, "kimik2_5_gb200_trtllm_fp4_disagg_1024x1024_c4_cfg759")
    assert r.reasons == (
        "disaggregated prefill/decode",
        "MoE model (moonshotai/Kimi-K2.5)",
        "FP4 weights",
    )


def test_a_broken_file_names_its_line(tmp_path):
    text = silicon_path().read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], text[1].replace(",8192,1024,", ",many,1024,", 1)]) + "\n")
    with pytest.raises(ConfigError, match="bad.csv line 2"):
        load_rows(bad)
