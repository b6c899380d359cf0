"""``capsim estimate``: the cost model on paper, checked against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from sim.analysis.estimate import estimate, estimate_points, lru_hit_ratio
from sim.cli import app
from sim.physics import queueing as analytic
from sim.spec.scenario import load_scenario

W = 1_881_214_976 * 2  # article-8l weights, fp16
KV = 131_072  # article-8l KV bytes per token, fp16


def scenario(**llm) -> dict:
    return {
        "name": "est",
        "workload": {"mode": "open", "rate_per_s": 10},
        "cache": {"enabled": False},
        "retrieval": {"workers": 4, "service_ms": 20},
        "llm": {
            "model": "article-8l",
            "gpu": "h100-sxm",
            "efficiency": "custom",
            "bw_efficiency": 1.0,
            "mfu": 1.0,
            "step_overhead_ms": 0,
            "prompt_tokens": 1024,
            "output_tokens": 100,
            "max_batch": 64,
            **llm,
        },
    }


def est(**llm) -> dict:
    return estimate(load_scenario(scenario(**llm)))


def test_memory_figures_by_hand():
    e = est()
    assert e["weights_bytes"] == W
    assert e["kv_bytes_per_token"] == KV
    assert e["kv_bytes_per_request"] == KV * (1024 + 100)
    # The H100 exposes 79.19 GiB = 85,029,615,042.56 B; x 0.9 = 76,526,653,538.3 B. The engine
    # (vllm-v0.17) keeps the profiling pass's MLP peak, 3 x 2 B x (4,096 + 11,008) x 8,192 tokens =
    # 742,391,808 B (the sampler's 3.84 x 4 B x 32,000 x 64 = 31,457,280 B is smaller), and
    # 0.25 GiB = 268,435,456 B outside PyTorch: KV pool 71,753,396,322 B -> / (131,072 * 16) =
    # 34,214 blocks; a request ends with 1,124 tokens = 71 blocks -> 481 of them fit.
    reserve = 742_391_808 + 268_435_456
    assert e["engine_reserve_bytes_per_gpu"] == reserve
    assert e["memory_exposed_bytes_per_gpu"] == pytest.approx(85_029_615_042.56)
    assert e["kv_blocks"] == int((79.19 * 2**30 * 0.9 - W - reserve) // (KV * 16)) == 34_214
    assert e["kv_capacity_tokens"] == 34_214 * 16
    assert e["max_sequences_in_memory"] == 34_214 // 71 == 481
    assert e["batch_that_fits"] == 64


def test_step_times_and_verdicts_by_hand():
    e = est()
    # decode at batch b, every sequence at 1,024 + 50 tokens (+1 for the token being written):
    # memory (W + 131,072 * b * 1,075) / 3.35e12 beats compute on H100 at mfu = 1.
    for b in (1, 8, 32, 64):
        assert e["decode_step_ms"][str(b)] == pytest.approx((W + KV * b * 1075) / 3.35e12 * 1e3, rel=1e-12)
    assert set(e["decode_step_ms"]) == {"1", "8", "32", "64", "128"}
    assert e["decode_fits"]["128"] is True
    # prefill of 1,024 tokens: compute (2 * 1.88e9 * 1024 + 68,786,585,600) / 989e12 = 3.9651 ms
    assert e["prefill_ms"] == pytest.approx((2 * 1_881_214_976 * 1024 + 68_786_585_600) / 989e12 * 1e3, rel=1e-12)
    assert e["prefill_bound"] == "compute-bound"
    assert e["attention_flops"] == 68_786_585_600
    assert e["bound"] == {"batch_1": "memory-bound", "max_batch": "memory-bound"}
    # batch 1: FLOPs 2 * 1.88e9 + 4*8*32*128*1075 over bytes W + 131,072 * 1075: about 1 FLOP/B
    ai1 = (2 * 1_881_214_976 + 4 * 8 * 32 * 128 * 1075) / (W + KV * 1075)
    assert e["arithmetic_intensity"]["batch_1"] == pytest.approx(ai1, rel=1e-12)
    assert e["ridge_point_flops_per_byte"] == pytest.approx(989 / 3.35)
    # a low mfu lowers the effective ridge point below the big batch's intensity
    low = est(mfu=0.05, max_batch=256, max_batched_tokens=8192)
    assert low["bound"] == {"batch_1": "memory-bound", "max_batch": "compute-bound"}


def test_gqa_fp8_and_tensor_parallel_change_the_figures():
    base = est(model="llama-3-8b")
    fp8 = est(model="llama-3-8b", kv_dtype_bytes=1)
    assert fp8["kv_bytes_per_token"] == base["kv_bytes_per_token"] / 2 == 65_536
    assert fp8["max_sequences_in_memory"] >= 2 * base["max_sequences_in_memory"] - 1
    assert fp8["decode_step_ms"]["64"] < base["decode_step_ms"]["64"]
    tp2 = est(model="llama-3-8b", tensor_parallel=2)
    assert tp2["weights_bytes_per_gpu"] == base["weights_bytes"] / 2
    assert tp2["decode_step_ms"]["1"] < base["decode_step_ms"]["1"]


def test_prefix_caching_shortens_the_prefill():
    comp = {"system_tokens": 512, "question_tokens": 512}
    on, off = est(prompt_tokens=comp), est(prompt_tokens=comp, prefix_caching=False)
    assert on["prefix_cached_tokens"] == 512 and off["prefix_cached_tokens"] == 0
    assert on["prefill_ms"] < off["prefill_ms"] == pytest.approx(on["prefill_ms_uncached"])


def test_open_utilisation_and_saturation_by_hand():
    e = est()
    # retrieval: 10/s x 20 ms / 4 workers = 5%
    assert e["retrieval_service_ms"] == pytest.approx(20.0)
    assert e["utilization"]["retrieval"] == pytest.approx(0.05)
    # GPU: a request costs its prefill plus 99 decode steps shared by the batch of 64
    step64 = (W + KV * 64 * 1075) / 3.35e12
    gpu_s = e["prefill_ms"] / 1e3 + 99 * step64 / 64
    assert e["demand_ms"]["gpu"] == pytest.approx(gpu_s * 1e3, rel=1e-12)
    assert e["utilization"]["gpu"] == pytest.approx(10 * gpu_s, rel=1e-12)
    first = min(("retrieval", 4 / 0.02), ("gpu", 1 / gpu_s), key=lambda kv: kv[1])
    assert e["saturation"] == {"stage": first[0], "rate_per_s": pytest.approx(first[1])}


def test_closed_load_uses_mva():
    d = scenario()
    d["workload"] = {"mode": "closed", "users": 50, "think_s": {"dist": "exponential", "mean": 2.0}}
    scn = load_scenario(d)
    e = estimate(scn)
    assert "MVA" in e["utilization_method"]
    names = list(e["demand_ms"])
    demands = [e["demand_ms"][k] / 1e3 for k in names]
    servers = [e["servers"][k] for k in names]
    think = 2.0 + 99 * e["decode_step_ms"]["1"] / 1e3  # think + the decode time of a lone request
    x = analytic.mva(50, think, demands, servers).throughput_per_s
    assert e["load_rate_per_s"] == pytest.approx(x)
    for k, dem, s in zip(names, demands, servers):
        assert e["utilization"][k] == pytest.approx(x * dem / s)
    assert e["saturation"]["users"] == pytest.approx(analytic.closed_saturation_users(think, demands, servers))


def test_engine_frontend_is_part_of_the_closed_loops_delay_station():
    """llm.frontend_ms adds to the delay every request spends outside the queues: the MVA's
    think time is think + lone decode + frontend, and its response includes it."""
    d = scenario(frontend_ms=250)
    d["workload"] = {"mode": "closed", "users": 50, "think_s": {"dist": "exponential", "mean": 2.0}}
    e = estimate(load_scenario(d))
    names = list(e["demand_ms"])
    demands = [e["demand_ms"][k] / 1e3 for k in names]
    servers = [e["servers"][k] for k in names]
    think = 2.0 + 99 * e["decode_step_ms"]["1"] / 1e3 + 0.25
    x = analytic.mva(50, think, demands, servers)
    assert e["load_rate_per_s"] == pytest.approx(x.throughput_per_s)
    assert e["response_ms"] == pytest.approx((x.response_s + 99 * e["decode_step_ms"]["1"] / 1e3 + 0.25) * 1e3)


def test_lru_hit_ratio_che():
    # uniform popularity: T solves n (1 - exp(-T/n)) = C, so the hit ratio is C / n exactly
    assert lru_hit_ratio(np.full(100, 0.01), 30) == pytest.approx(0.3)
    assert lru_hit_ratio(np.full(10, 0.1), 10) == 1.0 and lru_hit_ratio(np.full(10, 0.1), 0) == 0.0
    skew = np.arange(1, 1001, dtype=float) ** -1.0
    assert lru_hit_ratio(skew / skew.sum(), 100) > 0.5  # Zipf: a small cache catches most requests


def test_sweep_estimates_every_point():
    d = scenario()
    d["sweep"] = {"llm.replicas": [1, 2]}
    pts = estimate_points(d)
    assert [p["params"] for p in pts] == [{"llm.replicas": 1}, {"llm.replicas": 2}]
    assert pts[1]["utilization"]["gpu"] == pytest.approx(pts[0]["utilization"]["gpu"] / 2)


# --------------------------------------------------------------------------- CLI


def write(tmp_path, d: dict):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_cli_json_keys(tmp_path):
    d = scenario()
    d["sweep"] = {"llm.replicas": [1, 2]}
    res = CliRunner().invoke(app, ["estimate", str(write(tmp_path, d)), "--json", "--set", "llm.max_batch=32"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for key in (
        "weights_bytes",
        "kv_bytes_per_token",
        "kv_bytes_per_request",
        "max_sequences_in_memory",
        "prefill_ms",
        "decode_step_ms",
        "bound",
        "attention_flops",
        "utilization",
        "saturation",
    ):
        assert key in doc, key
    assert set(doc["decode_step_ms"]) == {"1", "8", "32", "128"}
    assert len(doc["points"]) == 2 and doc["points"][0]["params"] == {"llm.replicas": 1}


def test_cli_table(tmp_path):
    res = CliRunner().invoke(app, ["estimate", str(write(tmp_path, scenario()))])
    assert res.exit_code == 0, res.output
    for text in ("decode step at batch 64", "memory-bound", "first to saturate", "utilisation: gpu"):
        assert text in res.stdout


@pytest.mark.parametrize(
    "llm, expected",
    [
        ({"model": "llama-3-70b"}, "raise llm.tensor_parallel"),
        (
            {
                "model": {
                    "layers": 2,
                    "hidden": 64,
                    "heads": 8,
                    "kv_heads": 3,
                    "head_dim": 8,
                    "vocab": 10,
                    "params": 1e6,
                }
            },
            "llm.model: kv_heads (3) must divide heads (8)",
        ),
    ],
)
def test_cli_bad_input_one_line_exit_2(tmp_path, llm, expected):
    res = CliRunner().invoke(app, ["estimate", str(write(tmp_path, scenario(**llm)))])
    assert res.exit_code == 2
    assert expected in res.output and res.output.strip().count("\n") == 0


def test_chunked_prefill_attention_pairs_by_hand():
    """10 tokens after 5 cached, chunks of 4: pairs 4*5+4*5/2 = 30, 4*9+10 = 46, 2*13+3 = 29
    (the one attention-pairs formula, :func:`sim.physics.gpu.attention_pairs`)."""
    from sim.analysis.estimate import _prefill
    from sim.physics.gpu import StepCost
    from sim.spec.schema import LLMConfig

    cost = StepCost(LLMConfig(model="article-8l", gpu="h100-sxm"))
    t, flops, _ = _prefill(cost, 10, 5, 4)
    steps = [(4, 9, 30.0), (4, 13, 46.0), (2, 15, 29.0)]
    assert t == pytest.approx(sum(cost.time(n, c, p, 1) for n, c, p in steps), rel=1e-12)
    assert flops == pytest.approx(sum(cost.work(n, c, p)[0] for n, c, p in steps), rel=1e-12)
