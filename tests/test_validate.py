"""capsim validate: measured serving runs replayed as scenarios."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

import sim.run.validate as V
from sim.physics.gpu import StepCost, attention_pairs
from sim.spec.schema import LLMConfig
from sim.spec.silicon import SiliconRow, load_rows, representable
from tests.helpers import invoke as run_cli
from tests.test_engine_fit import SAMPLE, SLACK


def row(**kw) -> SiliconRow:
    base = dict(
        id="r1",
        engine="vllm",
        engine_version="",
        model_path="meta-llama/Llama-3.1-8B-Instruct",
        system="h100_sxm",
        precision="bf16",
        mode="agg",
        isl=1000,
        osl=100,
        concurrency=8,
        concurrency_stated=True,
        tensor_parallel=1,
        measured_ttft_ms=50.0,
        measured_tpot_ms=10.0,
        model="llama-3-8b",
        gpu="h100-sxm",
        reasons=(),
    )
    base.update(kw)
    return SiliconRow(**base)


def test_bands():
    assert [V.band(c) for c in (1, 4, 5, 16, 17, 64, 65, 256, 257, 512)] == [
        "1-4",
        "1-4",
        "5-16",
        "5-16",
        "17-64",
        "17-64",
        "65-256",
        "65-256",
        "257+",
        "257+",
    ]


def test_lifetime_is_osl_steady_steps():
    r = row()
    llm = V.llm_block(r)
    cost = StepCost(LLMConfig.model_validate(llm))
    # 8 users, isl 1,000, osl 100: 8 decode + 80 prefill tokens a step, mid context 8 x 1,050,
    # attention pairs: the context plus 8 / 100 of one prompt's 500,500 pairs
    step = cost.time(88.0, 8400.0, 8400.0 + 0.08 * 500_500, 8)
    assert attention_pairs(1000) == 500_500
    assert V.lifetime_s(r, llm) == pytest.approx(100 * step, rel=1e-12)


def test_scenario_is_the_aiperf_concurrency_mode():
    r = row(concurrency=300, precision="fp8", tensor_parallel=2)
    scn = V.scenario(r)
    w = scn.workload
    assert (w.mode, w.users, scn.run.replications) == ("closed", 300, 1)
    assert not scn.cache.enabled and not scn.retrieval.enabled and scn.llm.enabled
    llm = scn.llm
    assert (llm.tensor_parallel, llm.dtype_bytes, llm.compute_dtype, llm.kv_dtype_bytes) == (2, 1.0, "fp8", 1.0)
    # aiconfigurator's benchmark rule: max_num_batched_tokens = max_batch_size + isl + 1500
    assert llm.max_batch == 300 and llm.max_batched_tokens == 300 + 1000 + 1500 and not llm.prefix_caching_enabled
    life = V.lifetime_s(r, V.llm_block(r))
    assert scn.run.warmup_s == pytest.approx(2 * life)
    assert scn.run.duration_s == pytest.approx(8 * life)
    spread = V.scenario(r, start="spread").workload
    assert spread.users is None and spread.profile is not None


@pytest.mark.parametrize(
    ("engine", "batch", "want"),
    [
        # vLLM: max_batch_size + isl + 1500 = 64 + 4,096 + 1,500, chunked prefill on
        ("vllm", 64, {"max_batch": 64, "max_batched_tokens": 5660, "chunked_prefill": True}),
        # TensorRT-LLM: the same rounded up to 32-token blocks (5,660 -> 5,664), whole prompts
        (
            "trtllm",
            64,
            {
                "max_batch": 64,
                "max_batched_tokens": 5664,
                "chunked_prefill": False,
                "prefill_steps": "mixed",
                "kv_block_tokens": 32,
                "gpu_memory_utilization": 0.8,
                "memory_fraction_of": "free",
            },
        ),
        # SGLang: max_prefill_tokens = isl + 1500 = 5,596 (under its 8,192 chunk) beside the decodes
        ("sglang", 64, {"max_batch": 64, "max_batched_tokens": 64 + 5596, "chunked_prefill": True}),
        # a batch size under the concurrency (per GPU in some rows): the concurrency
        ("vllm", 16, {"max_batch": 64, "max_batched_tokens": 5660, "chunked_prefill": True}),
    ],
)
def test_replay_uses_the_benchmark_launch_settings(engine, batch, want):
    r = row(engine=engine, isl=4096, osl=128, concurrency=64, batch_size=batch)
    assert V.benchmark_scheduler(r) == want
    llm = V.llm_block(r)
    assert {k: llm[k] for k in want} == want
    # SGLang's chunk caps a long prompt's share: 16,000 + 1,500 > 8,192
    assert V.benchmark_scheduler(row(engine="sglang", isl=16000, concurrency=8))["max_batched_tokens"] == 8 + 8192


def test_engine_filter_keeps_one_engines_rows():
    rows = [row(id=f"{e}{i}", engine=e) for i, e in enumerate(("vllm", "sglang", "trtllm", "sglang"))]
    assert [r.id for r in V.validation_rows(rows, "sglang")] == ["sglang1", "sglang3"]
    assert len(V.validation_rows(rows)) == 4
    with pytest.raises(ValueError, match="engine: expected one of vllm, trtllm, sglang"):
        V.validation_rows(rows, "tgi")


def test_one_user_is_one_prefill_then_decode_steps():
    """c = 1: TTFT is the prompt's prefill step, TPOT the mean decode step over the growing context."""
    r = row(concurrency=1, isl=512, osl=64)
    res = V.replay(r)
    cost = StepCost(LLMConfig.model_validate(V.llm_block(r)))
    prefill = cost.time(512, 512, attention_pairs(512), 1)
    assert res["ttft_ms"] == pytest.approx(1e3 * prefill, rel=1e-9)
    # the first token comes with the prefill; 63 decode steps follow, reading 513..575 tokens
    decode = sum(cost.decode_time(1, 512 + j) for j in range(1, 64))
    assert res["tpot_ms"] == pytest.approx(1e3 * decode / 63, rel=1e-6)
    assert res["error"] == "" and res["requests"] >= 1


def test_a_row_capsim_refuses_says_why():
    res = V.replay(row(model="llama-3-70b", concurrency=1, tensor_parallel=1))  # 141 GB of BF16 on one H100
    assert "do not fit" in res["error"] and "ttft_ms" not in res


def test_stats_and_errors_by_hand():
    assert V._stats([0.1, -0.3, 0.2]) == {"n": 3, "mape_pct": 20.0, "signed_pct": 0.0}
    r = row()
    recs = V.per_row(
        [r], [{"id": "r1", "ttft_ms": 60.0, "tpot_ms": 9.0, "error": ""}], {"r1": {"ttft_ms": 40.0, "tpot_ms": 12.0}}
    )
    assert recs[0]["capsim_ttft_err"] == pytest.approx(0.2) and recs[0]["capsim_tpot_err"] == pytest.approx(-0.1)
    assert recs[0]["aic_ttft_err"] == pytest.approx(-0.2) and recs[0]["aic_tpot_err"] == pytest.approx(0.2)
    doc = V.summarize(recs)
    assert doc["all"]["capsim"]["tpot"] == {"n": 1, "mape_pct": 10.0, "signed_pct": -10.0}
    assert doc["by"]["engine"]["vllm"]["aiconfigurator"]["ttft"]["signed_pct"] == -20.0


def test_sample_is_stratified_and_fixed():
    rows = representable(load_rows())
    s = V.stratified_sample(rows)
    strata = {(r.engine, r.gpu, r.model, r.precision) for r in rows}
    assert {(r.engine, r.gpu, r.model, r.precision) for r in s} == strata
    assert 60 <= len(s) <= 110 and s == V.stratified_sample(rows)
    low = {(r.engine, r.gpu, r.model, r.precision) for r in rows if r.concurrency <= 64}
    assert all(r.concurrency <= 64 for r in s if (r.engine, r.gpu, r.model, r.precision) in low)


def test_cache_makes_a_rerun_free(tmp_path, monkeypatch):
    rows = [row(id="a", concurrency=2, isl=256, osl=32), row(id="b", concurrency=4, isl=256, osl=32)]
    first = V.replay_rows(rows, jobs=1, cache=tmp_path)
    assert len(list(tmp_path.rglob("*.json"))) == 2

    def boom(*a, **k):
        raise AssertionError("replayed although cached")

    monkeypatch.setattr(V, "replay", boom)
    assert V.replay_rows(rows, jobs=1, cache=tmp_path) == first
    # another fingerprint (changed code, or another preset) replays afresh
    with pytest.raises(AssertionError, match="replayed"):
        V.replay_rows(rows, jobs=1, cache=tmp_path, key="other")


def test_cli_sample_writes_rows_and_summary(tmp_path):
    res = run_cli("validate", "--sample", "--no-cache", "--jobs", "1", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "capsim TTFT" in res.output and "aiconfigurator TPOT" in res.output
    doc = json.loads((tmp_path / "summary.json").read_text())
    rows = list(csv.DictReader((tmp_path / "rows.csv").open()))
    assert doc["sample"] and doc["all"]["rows"] == len(rows) >= 25
    assert set(doc["by"]) == set(V.GROUPS)
    assert doc["rows_by_reason"]["representable"] == 2614
    ok = [r for r in rows if not r["capsim_error"]]
    assert ok and all(math.isfinite(float(r["capsim_tpot_ms"])) for r in ok)
    errs = np.array([float(r["capsim_tpot_err"]) for r in ok])
    assert doc["all"]["capsim"]["tpot"]["mape_pct"] == pytest.approx(100 * np.mean(np.abs(errs)), abs=0.06)
    # each engine preset, held out, replays the sample no worse than pinned
    for engine, (tpot, ttft) in SAMPLE.items():
        ho = doc["by"]["engine"][engine]["engine_preset_held_out"]
        assert ho["tpot"]["mape_pct"] <= tpot + SLACK and ho["ttft"]["mape_pct"] <= ttft + SLACK, engine


def test_cli_bad_flags_exit_2():
    res = run_cli("validate", "--start", "sideways")
    assert res.exit_code == 2 and "--start" in res.output
    res = run_cli("validate", "--engine", "tgi")
    assert res.exit_code == 2 and "--engine: expected vllm, trtllm or sglang, got 'tgi'" in res.output
    res = run_cli("validate", "--list-reasons")
    assert res.exit_code == 0 and "2614  representable" in res.output


def test_burst_counts_the_first_requests_sent_and_only_when_all_of_them_finished() -> None:
    """``--start burst``: the first n sent, by send time; None when one of them never finished."""
    import numpy as np

    from sim.run.validate import _first_sent

    rec = {"arrival_s": np.array([0.3, 0.0, 0.2, 0.1]), "ttft_ms": np.array([1.0, 2.0, 3.0, 4.0])}
    assert _first_sent(rec, 3).tolist() == [False, True, True, True]
    rec["ttft_ms"][2] = np.nan  # the third sent (0.2 s) never finished: a later one may not stand in
    assert _first_sent(rec, 3) is None
    assert _first_sent(rec, 4) is None  # fewer finished than asked


def test_bad_frontend_time_and_replay_start_are_one_line_errors(tmp_path) -> None:
    """llm.frontend_ms below 0 and an unknown --start: one line naming the key, exit 2, nothing written."""
    from pathlib import Path

    from tests.helpers import invoke

    root = Path(__file__).resolve().parents[1]
    res = invoke(
        "run", root / "scenarios" / "order_support.yaml", "--set", "llm.frontend_ms=-1", "--out", tmp_path / "o"
    )
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: llm.frontend_ms: input should be greater than or equal to 0, got -1"
    assert not (tmp_path / "o").exists()
    res = invoke("validate", "--start", "sideways", "--out", tmp_path / "v")
    assert res.exit_code == 2
    assert res.stderr.strip() == "error: --start: expected together, spread or burst, got 'sideways'"
    assert not (tmp_path / "v").exists()


def test_rows_csv_quotes_a_refusal_that_holds_commas():
    rec = {c: "" for c in V.ROW_COLUMNS}
    rec.update(
        id="r1", capsim_error="weights do not fit; raise llm.tensor_parallel, use a bigger GPU", capsim_tpot_ms=1.5
    )
    back = list(csv.DictReader(V.rows_csv([rec]).splitlines()))
    assert len(back) == 1 and back[0]["capsim_error"] == rec["capsim_error"] and back[0]["capsim_tpot_ms"] == "1.5000"
