"""The step-cost defaults rest on published measurements, and stay where they were fitted.

The fit (``sim.calibrate.published``) is re-run here on the shipped dataset and
must reproduce the shipped ``fit.json``: its central parameters and its
held-out (leave-one-source-out) errors.  The held-out errors are also pinned
as ceilings, so a change to the model or the data that worsens them fails.
The new step-cost terms are checked against hand-computed values.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from sim.calibrate.published import KEPT_OUT_GPUS, NAMES, by_group, errors, fit, held_out, read_rows
from sim.physics.gpu import StepCost
from sim.spec.efficiency import fit_document, preset_parameters, provenance
from sim.spec.schema import LLMConfig
from tests.conftest import LONG
from tests.helpers import invoke


@pytest.fixture(scope="module")
def rows():
    return read_rows()[0]


@pytest.fixture(scope="module")
def central(rows):
    return fit(rows)


def test_fit_reproduces_the_shipped_parameters(central) -> None:
    shipped = fit_document()["presets"]["published"]
    for name, value in zip(NAMES, central):
        assert value == pytest.approx(shipped[name], rel=2e-3, abs=2e-3), name


def test_fit_removes_the_bias_of_the_old_assumptions(rows, central) -> None:
    ins = by_group(errors(central, rows), rows)
    before = fit_document()["assumed_before"]
    assert abs(ins["decode"]["signed_mean_pct"]) <= 3  # was -22.6 %: too fast, the planner under-bought
    assert before["decode"]["signed_mean_pct"] < -20
    assert ins["decode"]["mape_pct"] <= 20


def test_held_out_errors_are_what_the_shipped_file_says_and_no_worse(rows) -> None:
    err, _ = held_out(rows)
    ho = by_group(err, rows)
    shipped = fit_document()["held_out"]
    for g in ("decode", "prefill"):
        assert ho[g]["mape_pct"] == pytest.approx(shipped[g]["mape_pct"], abs=0.3), g
    # Ceilings: the targets are 10 % / 20 %; the data (engines 2-4x apart on the same
    # GPU) do not reach them. Any change must not make them worse (they were 36 % / 31 % with
    # the first 7 sources; the Argonne benchmark and TensorRT-LLM 0.9.0 brought them here).
    assert ho["decode"]["mape_pct"] <= 26.5
    assert ho["prefill"]["mape_pct"] <= 27.5
    assert abs(ho["decode"]["signed_mean_pct"]) <= 7.0


def test_every_row_has_a_source_and_fp8_rows_use_the_fp8_peak(rows) -> None:
    assert len(rows) >= 400 and len({r.source for r in rows}) >= 9
    fp8 = [r for r in rows if r.cfg.compute_dtype == "fp8"]
    assert fp8 and all(r.cfg.gpu.fp8_tflops for r in fp8)


def test_rocm_rows_stay_out_of_the_fit_and_are_slower_than_it(central) -> None:
    kept = [s for s in read_rows()[1] if s["gpu"] in KEPT_OUT_GPUS]
    assert len(kept) >= 100 and all(s["row"].cfg.gpu.name == "mi300x" for s in kept)
    shipped = fit_document()["kept_out_gpus_under_the_fit"]["mi300x"]["throughput"]
    err = errors(central, [s["row"] for s in kept if s["row"].group == "throughput"])
    assert float(np.mean(err)) * 100 == pytest.approx(shipped["signed_mean_pct"], abs=0.5)
    assert shipped["signed_mean_pct"] < -40  # vLLM 0.6.1 on ROCm: far slower than the CUDA engines' fit


def test_run_seconds_rows_predict_the_whole_static_run(rows, central) -> None:
    # a run_s row is the static_run prediction of the same batch, compared in milliseconds
    run = next(r for r in rows if r.conversion == "run_s" and r.batch > 1)

    as_static = replace(run, conversion="static_run")
    assert run.predict_ms(central) == pytest.approx(as_static.predict_ms(central))
    assert run.group == "throughput"


def test_new_step_terms_by_hand() -> None:
    # article-8l on 2 x H100 SXM, efficiencies 1 and no fixed overhead: per-sequence 0.1 ms
    # and an all-reduce latency of 50 us, 2 x 8 layers of them per step = 0.8 ms.
    cfg = LLMConfig.model_validate(
        {
            "efficiency": "custom",
            "model": "article-8l",
            "gpu": "h100-sxm",
            "tensor_parallel": 2,
            "bw_efficiency": 1.0,
            "mfu": 1.0,
            "step_overhead_ms": 0,
            "step_overhead_per_seq_ms": 0.1,
            "allreduce_latency_us": 50,
        }
    )
    cost = StepCost(cfg)
    base = StepCost(cfg, step_overhead_per_seq_ms=0.0, allreduce_latency_us=0.0)
    assert cost.time(4, 400, 400, 4) - base.time(4, 400, 400, 4) == pytest.approx(4 * 0.1e-3 + 16 * 50e-6)
    single = LLMConfig.model_validate({**cfg.model_dump(), "tensor_parallel": 1})
    assert StepCost(single).overhead_s == 0.0  # no all-reduce on one GPU
    # a decode epoch charges the same per-sequence term on every step
    lines = cost.decode_lines(4, 400.0)
    assert cost.epoch_time(lines, 3) == pytest.approx(sum(cost.time(4, 400 + 4 * j, 400 + 4 * j, 4) for j in range(3)))


def test_fp8_compute_uses_the_fp8_peak() -> None:
    kw = {"efficiency": "custom", "model": "llama-3-8b", "gpu": "h100-sxm", "mfu": 1.0}
    bf16 = StepCost(LLMConfig.model_validate(kw))
    fp8 = StepCost(LLMConfig.model_validate({**kw, "compute_dtype": "fp8", "dtype_bytes": 1}))
    assert bf16.inv_peak / fp8.inv_peak == pytest.approx(1979 / 989)
    with pytest.raises(ValueError, match="fp8_tflops"):
        LLMConfig.model_validate({**kw, "gpu": "a100-80gb", "compute_dtype": "fp8"})


def test_presets_fill_what_the_scenario_leaves_unset() -> None:
    default = LLMConfig()
    assert default.efficiency == "published"
    for k, v in preset_parameters("published").items():
        assert getattr(default, k) == v
    assert LLMConfig(bw_efficiency=0.9).bw_efficiency == 0.9  # an explicit value wins
    custom = LLMConfig(efficiency="custom")
    assert (custom.bw_efficiency, custom.mfu, custom.step_overhead_ms) == (0.8, 0.5, 1.0)
    slow, fast = (StepCost(LLMConfig(efficiency=p)) for p in ("published-slow", "published-fast"))
    mid = StepCost(default)
    step = [c.time(32, 32 * 1024, 32 * 1024, 32) for c in (fast, mid, slow)]
    assert step == sorted(step) and not math.isclose(step[0], step[2])


def test_estimate_says_where_its_step_costs_come_from() -> None:
    line = provenance("published")
    assert "published points" in line and "held-out" in line and "MAPE" in line
    r = invoke("estimate", "scenarios/order_support.yaml")
    assert r.exit_code == 0 and "llm.efficiency published: fitted to" in r.output


@pytest.mark.skipif(not LONG, reason="long form only (CAPSIM_LONG=1): 10 s; the held-out test re-runs the fit itself")
def test_calibrate_published_writes_a_fit(tmp_path) -> None:
    out = tmp_path / "fit.json"
    r = invoke("calibrate", "published", "--resamples", "2", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "held out" in r.output and out.is_file()
    assert np.isfinite([v for v in fit_document()["reference_step_ms"].values()]).all()
