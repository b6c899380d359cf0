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
        "representable": 2614,
        "disaggregated: worker counts not recorded": 1306,
        "attention not modelled": 459,
        "tensor parallel over more than 8 GPUs": 269,
        "prefill: attention data parallel": 185,
        "attention data parallel": 169,
        "INT4 weight-only": 90,
        "representable (disaggregated)": 75,
        "experts split over both tensor and expert parallel groups": 40,
        "decode: attention data parallel": 11,
        "decode: tensor parallel over more than 8 GPUs": 3,
    }
    agg = [r for r in rows if r.mode == "agg"]
    assert len(agg) == 3619  # 72 % of the aggregated rows are replayed


def test_counts_by_every_reason(rows):
    every = Counter(x for r in rows for x in r.reasons)
    assert every["INT4 weight-only"] == 90
    assert every["attention data parallel"] == 169
    assert every["attention not modelled (Qwen/Qwen3.5-397B-A17B: linear-attention (Gated DeltaNet) layers)"] == 351
    assert every["attention not modelled (zhipuai/GLM-5: DeepSeek sparse attention)"] == 108  # 86 aggregated


def test_what_capsim_replays(rows):
    rep = representable(rows)
    assert len(rep) == 2614
    assert Counter(r.engine for r in rep) == {"vllm": 1122, "trtllm": 1113, "sglang": 379}
    assert Counter(r.gpu for r in rep) == {"b200": 1110, "h100-sxm": 791, "h200": 567, "b300": 124, "gb200": 22}
    assert Counter(r.model for r in rep) == {
        "minimax-m2.5": 456,
        "llama-3-70b": 441,
        "gpt-oss-120b": 386,
        "qwen3-32b": 378,
        "deepseek-r1": 315,
        "llama-3-8b": 244,
        "qwen3-235b-a22b": 181,
        "deepseek-v3": 146,
        "kimi-k2.5": 67,
    }
    assert Counter((r.precision, r.compute_dtype) for r in rep) == {
        ("fp8", "fp8"): 1328,
        ("fp4", "fp4"): 714,  # NVFP4 on Blackwell
        ("bf16", "bf16"): 366,
        ("fp4", "bf16"): 206,  # gpt-oss's FP4 experts on Hopper: weight-only
    }
    assert Counter(r.expert_parallel for r in rep) == {1: 2359, 4: 138, 8: 98, 2: 19}
    assert all(r.model in catalog.model_names() and r.gpu in catalog.gpu_names() for r in rep)


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
    assert r.representable and (r.model, r.gpu, r.tensor_parallel, r.expert_parallel) == ("minimax-m2.5", "b300", 4, 1)

    r = by_id(rows, "kimik2_5_gb200_trtllm_fp4_disagg_1024x1024_c4_cfg759")
    assert r.reasons == (
        "prefill: attention data parallel",
        "prefill: experts split over both tensor and expert parallel groups",
    )
    # a disaggregated row's pools: 1 prefill worker of tp 4, 4 decode workers of tp 8 at 141 each
    r = by_id(rows, "dsr1_gb200_trtllm_fp4_disagg_1024x1024_c564_cfg237")
    assert r.representable and r.disaggregated and r.model == "deepseek-v3"
    assert (r.prefill_workers, r.prefill_tp, r.decode_workers, r.tensor_parallel, r.decode_batch) == (1, 4, 4, 8, 141)
    assert r.concurrency == 564 == r.decode_workers * r.decode_batch
    assert (r.expert_parallel, r.prefill_expert_parallel) == (8, 4)


def test_a_broken_file_names_its_line(tmp_path):
    text = silicon_path().read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], text[1].replace(",8192,1024,", ",many,1024,", 1)]) + "\n")
    with pytest.raises(ConfigError, match="bad.csv line 2"):
        load_rows(bad)
