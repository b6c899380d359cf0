"""Exact timestamps through every stage, with constant distributions.

Toy GPU (1,000 GB/s, 1,000 TFLOPS) and toy model (1e9 params, fp16, 1 layer,
1 KV head of 128): weights 2e9 bytes, KV 512 bytes per token.  With
bw_efficiency = mfu = 1 and no step overhead, a step that reads C context
tokens takes (2e9 + 512 C) / 1e12 s, unless its FLOPs take longer.
"""

import numpy as np
import pytest

import sim
from sim.engine.cache import LRUCache
from sim.engine.pipeline import run_replication
from tests.helpers import exact_scenario

MS = 1e-3


def step_ms(ctx_tokens: int) -> float:
    return (2e9 + 512 * ctx_tokens) / 1e12 / MS


def records(**over):
    scn = sim.load_scenario(exact_scenario(**over))
    return run_replication(scn, 0, records=True).records


def test_first_request_walks_every_stage_exactly():
    rec = records()
    # user thinks 1 s, cache lookup 1 ms (miss), search 10 ms, then the LLM:
    # prefill step reads 100 prompt tokens: FLOPs 2e9*100 = 2e11 -> 0.2 ms < memory 2.0000512 ms.
    prefill = step_ms(100)
    decode = step_ms(101) + step_ms(102)  # two more tokens, context 101 then 102
    assert rec["arrival_s"][0] == pytest.approx(1.0, abs=1e-12)
    assert not rec["cache_hit"][0]
    assert rec["cache_ms"][0] == pytest.approx(1.0)
    assert rec["retrieval_wait_ms"][0] == pytest.approx(0.0)
    assert rec["retrieval_service_ms"][0] == pytest.approx(10.0)
    assert rec["llm_wait_ms"][0] == pytest.approx(0.0, abs=1e-9)
    assert rec["prefill_ms"][0] == pytest.approx(prefill, rel=1e-9)
    assert rec["decode_ms"][0] == pytest.approx(decode, rel=1e-9)
    assert rec["ttft_ms"][0] == pytest.approx(1 + 10 + prefill, rel=1e-9)
    assert rec["e2e_ms"][0] == pytest.approx(1 + 10 + prefill + decode, rel=1e-9)


def test_second_request_hits_cache_and_skips_retrieval():
    rec = records()
    first_end_s = 1.0 + rec["e2e_ms"][0] * MS
    assert rec["arrival_s"][1] == pytest.approx(first_end_s + 1.0, rel=1e-12)
    assert rec["cache_hit"][1]
    assert rec["retrieval_service_ms"][1] == 0.0
    assert rec["e2e_ms"][1] == pytest.approx(1 + step_ms(100) + step_ms(101) + step_ms(102), rel=1e-9)


def test_closed_loop_count_is_exact():
    rec = records()
    # cycle = 1 s think + e2e; first request 11 ms of cache+search, then hits only.
    e2e_hit_s = (1 + step_ms(100) + step_ms(101) + step_ms(102)) * MS
    e2e_miss_s = e2e_hit_s + 10 * MS
    t, n = 1.0 + e2e_miss_s, 1
    while t + 1.0 < 10.0:
        t += 1.0 + e2e_hit_s
        n += 1
    assert len(rec["e2e_ms"]) == n


def test_compute_bound_prefill_uses_flops():
    # 4,000-token prompt: FLOPs 2e9*4000 = 8e12 plus attention 4*128*4000*4001/2 = 4.1e9
    # -> 8.0041e12 / 1e15 = 8.0041 ms, above memory (2e9 + 512*4000)/1e12 = 2.002 ms.
    rec = records(llm__prompt_tokens=4000, llm__output_tokens=1)
    expected = (2e9 * 4000 + 4 * 128 * 4000 * 4001 / 2) / 1e15 / MS
    assert rec["prefill_ms"][0] == pytest.approx(expected, rel=1e-9)
    assert rec["decode_ms"][0] == pytest.approx(0.0, abs=1e-9)


def test_retrieval_queue_is_fifo_with_exact_waits():
    # Two users, one worker, LLM off, cache off: both ask at t=1, the second waits 10 ms.
    scn = sim.load_scenario(exact_scenario(workload__users=2, cache__enabled=False, llm__enabled=False))
    rec = run_replication(scn, 0, records=True).records
    first_two = sorted(rec["retrieval_wait_ms"][:2])
    assert first_two == pytest.approx([0.0, 10.0])
    assert sorted(rec["e2e_ms"][:2]) == pytest.approx([10.0, 20.0])


def test_lru_evicts_least_recently_used():
    c = LRUCache(2)
    assert not c.lookup(1)
    c.insert(1)
    c.insert(2)
    assert c.lookup(1)  # 1 is now most recent
    c.insert(3)  # evicts 2
    assert 2 not in c and 1 in c and 3 in c
    assert not c.lookup(2)
    assert len(c) == 2
    c.insert(4)  # 1 was used before 3: 1 goes
    assert 1 not in c and 3 in c and 4 in c


def test_lru_capacity_zero_never_hits():
    c = LRUCache(0)
    c.insert(5)
    assert not c.lookup(5) and len(c) == 0


def test_cache_hit_rate_emerges_from_capacity():
    # Uniform popularity over 1,000 keys: an LRU of 100 entries hits about 10 %.
    base = {
        "name": "lru",
        "run": {"duration_s": 2000, "warmup_s": 200, "replications": 1, "seed": 1},
        "workload": {
            "mode": "open",
            "rate_per_s": 50,
            "queries": {"distinct": 1000, "hot_fraction": 0, "hot_keys": 0, "zipf_s": 0},
        },
        "cache": {"capacity": 100, "lookup_ms": 0},
        "retrieval": {"workers": 50, "service_ms": 1},
        "llm": {"enabled": False},
    }
    res = sim.simulate(base)
    assert res.summary["points"][0]["cache_hit_rate"] == pytest.approx(0.10, abs=0.01)


def test_monitor_sees_kv_grow_inside_a_decode_epoch():
    # One user, a 100-token prompt and 2,000 output tokens: one decode epoch of ~4 s
    # (2 ms steps) in which the replica's own state does not move.  The sampled KV
    # tokens must still grow with the steps done: 16-token blocks, one more every 32 ms.
    scn = sim.load_scenario(exact_scenario(llm__output_tokens=2000, cache__enabled=False, retrieval__enabled=False))
    rep = run_replication(scn, 0, records=True)
    t = rep.timeseries["t_s"]
    kv = rep.timeseries["kv_tokens"][:, 0]
    start = rep.records["arrival_s"][0]
    inside = (t > start + 0.1) & (t < start + 3.9)
    assert inside.sum() > 50
    assert np.all(np.diff(kv[inside]) > 0)
    # at time t the context is 100 + steps done; blocks are 16 tokens
    steps_done = np.floor((t[inside] - start - step_ms(100) * MS) / (2.0 * MS))
    expected = -(-(100 + steps_done) // 16) * 16
    assert np.all(np.abs(kv[inside] - expected) <= 16)


def test_engine_frontend_time_delays_the_request_before_its_queue():
    """llm.frontend_ms: 25 ms outside the GPU steps, counted in the LLM wait, TTFT and end to end."""
    rec = records(llm__frontend_ms=25)
    prefill = step_ms(100)
    decode = step_ms(101) + step_ms(102)
    assert rec["llm_wait_ms"][0] == pytest.approx(25.0, rel=1e-9)
    assert rec["prefill_ms"][0] == pytest.approx(prefill, rel=1e-9)
    assert rec["ttft_ms"][0] == pytest.approx(1 + 10 + 25 + prefill, rel=1e-9)
    assert rec["e2e_ms"][0] == pytest.approx(1 + 10 + 25 + prefill + decode, rel=1e-9)
