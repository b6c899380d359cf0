"""The shipped DeepSeek-R1 FP8 (8 x H200) and Llama-3.1-70B FP4 (B200) scenarios through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
DEEPSEEK = ROOT / "scenarios/deepseek_r1_fp8_h200.yaml"
LLAMA_FP4 = ROOT / "scenarios/llama70b_fp4_b200.yaml"


def _estimate(path: Path, *extra: str) -> dict:
    r = invoke("estimate", path, "--json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_deepseek_estimate_names_its_step_cost_figures():
    est = _estimate(DEEPSEEK)
    f = est["step_cost_figures"]
    assert f["model"] == "roofline" and f["gpu"] == "h200"
    assert (f["peak_field"], f["peak_tflops"], f["hbm_bandwidth_gbps"]) == ("fp8_tflops", 1979, 4800)
    assert f["dtype_bytes"] == 1.0 and f["weights_dtype"] == "fp8"
    assert set(f["sources"]) == {"hbm_bandwidth_gbps", "fp8_tflops", "interconnect_gbps"}
    moe = f["moe"]
    assert (moe["experts"], moe["experts_per_token"], moe["expert_parallel"]) == (256, 8, 8)
    assert moe["experts_read_at_batch"]["1"] == pytest.approx(8.0)
    assert moe["active_params"] == pytest.approx(37_552_282_624)
    assert "MLA: 512 + 64" in f["attention"]
    assert est["kv_bytes_per_token_per_gpu"] == 70_272
    assert est["weights_bytes_per_gpu"] == pytest.approx(671_026_404_352 / 8)
    # decode steps grow with the batch as more experts are read, far less than linearly
    steps = est["decode_step_ms"]
    assert steps["1"] < steps["32"] < steps["256"] < 256 * steps["1"] / 8


def test_deepseek_estimate_table_says_where_step_costs_come_from():
    r = invoke("estimate", DEEPSEEK)
    assert r.exit_code == 0, r.output
    out = " ".join(r.stdout.split())
    assert "roofline on h200: HBM 4,800 GB/s, fp8_tflops 1,979 TFLOPS (compute_dtype fp8)" in out
    assert "8 of 256 experts per token, expert_parallel 8" in out
    assert "GPU figures: hbm_bandwidth_gbps https://" in out


def test_llama_fp4_estimate_names_its_step_cost_figures():
    est = _estimate(LLAMA_FP4)
    f = est["step_cost_figures"]
    assert (f["gpu"], f["peak_field"], f["peak_tflops"], f["hbm_bandwidth_gbps"]) == ("b200", "fp4_tflops", 9000, 8000)
    assert (f["dtype_bytes"], f["kv_dtype_bytes"], f["activation_bytes"]) == (0.5625, 1.0, 2.0)
    assert "moe" not in f and "attention" not in f
    assert est["weights_bytes"] == pytest.approx(70_553_706_496 * 0.5625)
    assert est["kv_bytes_per_token"] == 2 * 80 * 8 * 128
    r = invoke("estimate", LLAMA_FP4)
    assert "roofline on b200: HBM 8,000 GB/s, fp4_tflops 9,000 TFLOPS (compute_dtype fp4)" in " ".join(r.stdout.split())


def test_fp4_on_a_gpu_without_fp4_is_one_line_exit_2():
    r = invoke("estimate", LLAMA_FP4, "--set", "llm.gpu=h200")
    assert r.exit_code == 2
    msg = r.output.strip()
    assert "\n" not in msg and "llm.gpu.fp4_tflops" in msg and "compute_dtype" in msg


@pytest.mark.parametrize(("path", "users"), [(DEEPSEEK, 64), (LLAMA_FP4, 32)], ids=["deepseek", "llama-fp4"])
def test_short_run_through_the_cli(path, users):
    r = invoke(
        "run", path, "--json", "--jobs", "1", "--replications", "1", "--set", "run.duration_s=10", "--set",
        "run.warmup_s=0",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    point = json.loads(r.stdout)["points"][0]
    assert point["completed"] > 0
    # the simulated time per output token sits between the estimate's lone decode step and a
    # few times its step at the batch the users make (prefills of new requests ride along)
    steps = _estimate(path, "--set", f"llm.max_batch={users}")["decode_step_ms"]
    tpot = point["metrics"]["tpot_ms"]["mean"]
    assert steps["1"] < tpot < 3 * steps[str(users)]
