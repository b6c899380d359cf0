"""The LLM stage: exact timelines worked by hand, paged KV and preemption, routing.

Toy GPU and model with round numbers (bw_efficiency = mfu = 1, no overhead):

* weights 1e9 params x 2 bytes = 2e9 bytes -> 2 ms at 1,000 GB/s;
* KV 2 x 1 layer x 1 head x 250,000 x 2 bytes = 1e6 bytes per token -> 1 us per token read;
* linear FLOPs 2e9 per token -> 20 us per token at 100 TFLOPS;
* attention 4 x 250,000 = 1e6 FLOPs per (query, key) pair -> 10 ns per pair.

The toy card exposes exactly ``memory_gb * 1e9`` bytes and the engine keeps no
reserve (``engine_reserve: none``), so its KV pool is ``memory_gb * 1e9 * util - 2e9``.

So a step that processes N new tokens, holds C context tokens after the step
and has P attention pairs takes ``max((2e9 + 1e6 C) / 1e12, (2e9 N + 1e6 P) / 1e14)``.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy
from typer.testing import CliRunner

import sim
from sim.engine.llm.replica import Replica
from sim.engine.llm.stage import LLMStage
from sim.errors import ConfigError
from sim.registry import ROUTERS
from sim.spec.schema import LLMConfig


def Router(replicas, policy, rng):
    return ROUTERS.load(policy)(replicas, rng)


GPU = {"name": "toy", "hbm_bandwidth_gbps": 1000, "memory_gb": 100, "peak_tflops": 100, "interconnect_gbps": 100}
MODEL = {
    "name": "toy",
    "layers": 1,
    "hidden": 1000,
    "heads": 1,
    "kv_heads": 1,
    "head_dim": 250_000,
    "vocab": 1,
    "params": 1e9,
}
MS = 1e-3


def step_s(new: int, ctx: int, pairs: float) -> float:
    return max((2e9 + 1e6 * ctx) / 1e12, (2e9 * new + 1e6 * pairs) / 1e14)


def toy_gpu(gpu: dict) -> dict:
    """A toy card that exposes exactly ``memory_gb * 1e9`` bytes."""
    return {**gpu, "memory_exposed_gib": gpu["memory_gb"] * 1e9 / 2**30} if isinstance(gpu, dict) else gpu


def cfg(**kw) -> LLMConfig:
    base = dict(
        engine_reserve="none",
        efficiency="custom",
        model=MODEL,
        gpu=GPU,
        bw_efficiency=1.0,
        mfu=1.0,
        step_overhead_ms=0,
        max_batch=8,
        max_batched_tokens=128,
    )
    base.update(kw)
    base["gpu"] = toy_gpu(base["gpu"])
    return LLMConfig(**base)


def run(c: LLMConfig, arrivals, window=(0.0, 1e9), seed=0):
    """Submit (time_s, prompt, output) requests; return finished sequences (in submit order) and the stage."""
    env = simpy.Environment()
    stage = LLMStage(env, c, np.random.default_rng(seed), window)
    events = []

    def source():
        for t, p, o in arrivals:
            if t > env.now:
                yield env.timeout(t - env.now)
            events.append(stage.submit(p, o))

    env.process(source())
    env.run()
    assert all(ev.triggered for ev in events), "every request finishes"
    return [ev.value for ev in events], stage


# --------------------------------------------------------------------------- exact timelines


def test_single_request_exact_timestamps_decode_is_weights_plus_kv_over_bandwidth():
    (a,), _ = run(cfg(max_batched_tokens=512), [(0.0, 200, 3)])
    # prefill 200 tokens: memory (2e9 + 2e8)/1e12 = 2.2 ms < compute (4e11 + 1e6 * 200*201/2)/1e14 = 4.201 ms
    t1 = 4.201 * MS
    # decode steps: 2 ms of weights + 1 us per context token (201, then 202); compute is 100x less
    t2 = t1 + 2e9 / 1e12 + 201e-6
    t3 = t2 + 2e9 / 1e12 + 202e-6
    assert a.t_first == pytest.approx(t1, rel=1e-12)
    assert a.t_last == pytest.approx(t3, rel=1e-12)
    assert a.preemptions == 0


def test_pipeline_decode_step_is_weights_over_bandwidth_exactly():
    # One user, constant think time, no cache or retrieval, article-8l on H100 with
    # bw_efficiency 1 and no overhead, and a KV cache that weighs (almost) nothing: each
    # step reads only the weights, 1,881,214,976 x 2 B / 3.35e12 B/s = 1.123113 ms.
    from sim.engine.pipeline import run_replication

    scn = sim.load_scenario(
        {
            "run": {"duration_s": 3, "warmup_s": 0, "replications": 1, "drain_s": 1},
            "workload": {"mode": "closed", "users": 1, "think_s": 1.0},
            "cache": {"enabled": False},
            "retrieval": {"enabled": False},
            "llm": {
                "model": "article-8l",
                "gpu": "h100-sxm",
                "efficiency": "custom",
                "bw_efficiency": 1.0,
                "step_overhead_ms": 0,
                "kv_dtype_bytes": 1e-9,
                "prompt_tokens": 16,
                "output_tokens": 2,
            },
        }
    )
    rec = run_replication(scn, 0, records=True).records
    w_ms = 1_881_214_976 * 2 / 3.35e12 * 1e3
    assert len(rec["e2e_ms"]) == 2
    # the 16-token prefill is memory-bound too (FLOPs 16 x 2 x 1.88e9 / 494.5e12 = 0.12 ms)
    assert rec["prefill_ms"][0] == pytest.approx(w_ms, rel=1e-9)
    assert rec["decode_ms"][0] == pytest.approx(w_ms, rel=1e-9)
    assert rec["arrival_s"][1] == pytest.approx(1.0 + 2 * w_ms / 1e3 + 1.0, rel=1e-12)


A_B = [(0.0, 100, 3), (0.0, 40, 2)]  # two requests at t = 0, max_batched_tokens = 128


def test_chunked_prefill_exact_timeline():
    a, b = run(cfg(chunked_prefill=True), A_B)[0]
    # step 1: A's whole prompt (100) + B's first chunk (28) = 128 tokens;
    #   C = 128, P = 100*101/2 + 28*29/2 = 5,456: compute 2.61456 ms > memory 2.128 ms.  A's first token.
    t1 = step_s(128, 128, 5050 + 406)
    assert t1 == pytest.approx(2.61456 * MS)
    # step 2: A decodes (context 101, 101 pairs) + B's last chunk of 12 (28 past: 12*28 + 12*13/2 = 414 pairs)
    #   N = 13, C = 141: memory 2.141 ms.  B's first token; A has 2.
    t2 = t1 + step_s(13, 141, 101 + 414)
    assert t2 - t1 == pytest.approx(2.141 * MS)
    # step 3: both decode, C = 102 + 41 = 143: 2.143 ms.  A has 3 tokens, B 2: both done.
    t3 = t2 + step_s(2, 143, 143)
    assert (a.t_first, b.t_first) == (pytest.approx(t1, rel=1e-12), pytest.approx(t2, rel=1e-12))
    assert (a.t_last, b.t_last) == (pytest.approx(t3, rel=1e-12), pytest.approx(t3, rel=1e-12))


def test_non_chunked_prefill_exact_timeline():
    a, b = run(cfg(chunked_prefill=False), A_B)[0]
    # step 1: A's prompt alone (100 + 40 > 128): memory 2.1 ms > compute 2.0505 ms.
    t1 = step_s(100, 100, 5050)
    assert t1 == pytest.approx(2.1 * MS)
    # step 2: B's prompt alone; prefills go first, A does not decode: memory 2.04 ms.
    t2 = t1 + step_s(40, 40, 820)
    assert t2 - t1 == pytest.approx(2.04 * MS)
    # step 3: both decode (101 + 41 = 142): 2.142 ms.  B done (2 tokens).  step 4: A alone, 102: 2.102 ms.
    t3 = t2 + step_s(2, 142, 142)
    t4 = t3 + step_s(1, 102, 102)
    assert (a.t_first, b.t_first) == (pytest.approx(t1, rel=1e-12), pytest.approx(t2, rel=1e-12))
    assert b.t_last == pytest.approx(t3, rel=1e-12)
    assert a.t_last == pytest.approx(t4, rel=1e-12)


def test_whole_prompts_beside_decodes_exact_timeline():
    """vLLM V1 with chunked prefill off: decodes first, then whole prompts that fit the budget."""
    c = cfg(chunked_prefill=False, prefill_steps="mixed")
    assert c.scheduler == "mixed_whole"
    a, b = run(c, A_B)[0]
    # step 1: A's prompt (100); B's 40 > the 28 left, so B waits: memory 2.1 ms.  A's first token.
    t1 = step_s(100, 100, 5050)
    assert t1 == pytest.approx(2.1 * MS)
    # step 2: A decodes (context 101) + B's whole prompt (40 <= 127): N 41, C 141: memory 2.141 ms.
    t2 = t1 + step_s(41, 141, 101 + 820)
    assert t2 - t1 == pytest.approx(2.141 * MS)
    # step 3: both decode, C = 102 + 41 = 143: 2.143 ms.  A has 3 tokens, B 2: both done.
    t3 = t2 + step_s(2, 143, 143)
    assert t3 - t2 == pytest.approx(2.143 * MS)
    assert (a.t_first, b.t_first) == (pytest.approx(t1, rel=1e-12), pytest.approx(t2, rel=1e-12))
    assert (a.t_last, b.t_last) == (pytest.approx(t3, rel=1e-12), pytest.approx(t3, rel=1e-12))


def test_whole_prompts_a_shorter_prompt_goes_past_one_that_does_not_fit():
    """V1 skips a waiting prompt that does not fit the budget left and admits a later one; the
    skipped one keeps its place at the head for the next step."""
    a, b, c = run(cfg(chunked_prefill=False, prefill_steps="mixed"), [(0.0, 100, 3), (0.0, 60, 2), (0.0, 20, 2)])[0]
    # step 1: A (100) + C (20) = 120 <= 128; B (60) > the 28 left waits.
    #   compute (2e9 x 120 + 1e6 x (5,050 + 210)) / 1e14 = 2.4526 ms > memory 2.12 ms.
    t1 = step_s(120, 120, 5050 + 210)
    assert t1 == pytest.approx(2.4526 * MS)
    # step 2: A and C decode + B's whole prompt: N 62, C 101 + 21 + 60 = 182: memory 2.182 ms.  C done.
    t2 = t1 + step_s(62, 182, 101 + 21 + 60 * 61 / 2)
    assert t2 - t1 == pytest.approx(2.182 * MS)
    # step 3: A (102) and B (61) decode: 2.163 ms.  A has 3 tokens, B 2.
    t3 = t2 + step_s(2, 163, 163)
    assert (a.t_first, b.t_first, c.t_first) == tuple(pytest.approx(t, rel=1e-12) for t in (t1, t2, t1))
    assert (a.t_last, b.t_last, c.t_last) == tuple(pytest.approx(t, rel=1e-12) for t in (t3, t3, t2))


def test_a_prompt_longer_than_the_budget_runs_alone_without_chunking():
    # 200 > 128: it waits for a step with nothing else in it (B, admitted first, has finished).
    b, a = run(cfg(chunked_prefill=False, prefill_steps="mixed"), [(0.0, 40, 2), (0.0, 200, 2)])[0]
    t1 = step_s(40, 40, 820)  # B's prompt: memory 2.04 ms
    t2 = t1 + step_s(1, 41, 41)  # B decodes its second token (A's 200 never fits beside it): done
    t3 = t2 + step_s(200, 200, 20100)  # A alone: compute (4e11 + 2.01e10) / 1e14 = 4.201 ms
    assert t3 - t2 == pytest.approx(4.201 * MS)
    assert b.t_last == pytest.approx(t2, rel=1e-12) and a.t_first == pytest.approx(t3, rel=1e-12)


@pytest.mark.parametrize(
    ("engine", "steps", "want"),
    [
        (None, None, "whole"),
        ("sglang", None, "whole"),
        ("vllm", None, "mixed_whole"),
        ("trtllm", None, "mixed_whole"),
        (None, "mixed", "mixed_whole"),
        ("vllm", "separate", "whole"),
    ],
)
def test_prefill_steps_default_follows_the_engine(engine, steps, want):
    c = LLMConfig(chunked_prefill=False, engine=engine, prefill_steps=steps)
    assert c.scheduler == want
    assert LLMConfig(chunked_prefill=True, engine=engine, prefill_steps=steps).scheduler == "chunked"


def test_arrival_mid_epoch_is_admitted_at_the_next_step_boundary():
    # A (prompt 200, 10 tokens) decodes from 4.201 ms in steps of 2.201, 2.202, ... ms;
    # B arrives at 6 ms, inside A's first decode step (4.201 .. 6.402 ms), and joins at 6.402 ms.
    _a, b = run(cfg(max_batched_tokens=512), [(0.0, 200, 10), (6.0 * MS, 50, 2)])[0]
    t1 = 4.201 * MS
    t2 = t1 + step_s(1, 201, 201)
    assert b.t_admitted == pytest.approx(t2, rel=1e-12)
    # step 3: A decodes (202) + B's prompt (50): N 51, C 252, P 202 + 1,275 -> memory 2.252 ms
    t3 = t2 + step_s(51, 252, 202 + 50 * 51 / 2)
    assert b.t_first == pytest.approx(t3, rel=1e-12)


def test_prefix_caching_skips_the_system_prompt_and_shares_its_blocks():
    comp = {"system_tokens": 256, "doc_tokens": 0, "question_tokens": 44}
    c = cfg(prompt_tokens=comp, max_batched_tokens=512)
    assert c.prefix_caching_enabled and c.prefix_tokens == 256
    (a, b), stage = run(c, [(0.0, 300, 1), (1.0, 300, 1)])
    # A computes all 300 tokens: compute (6e11 + 1e6 * 300*301/2)/1e14 = 6.4515 ms
    assert a.t_first == pytest.approx(6.4515 * MS, rel=1e-12)
    # B skips the 256 cached tokens: 44 new tokens over 256 past, 44*256 + 44*45/2 = 12,254 pairs:
    #   compute 1.00254 ms < memory (2e9 + 1e6 * 300)/1e12 = 2.3 ms
    assert b.t_first - 1.0 == pytest.approx(2.3 * MS, rel=1e-9)
    rep = stage.replicas[0]
    # the prefix stays cached, once; with no request running its blocks are free (evictable)
    assert rep.prefix_cached() == 256 // 16 and rep.pinned == 0 and rep.blocks_used() == 0
    # without prefix caching B pays the whole prefill again
    (_, b2), _ = run(
        cfg(prompt_tokens=comp, max_batched_tokens=512, prefix_caching=False), [(0.0, 300, 1), (1.0, 300, 1)]
    )
    assert b2.t_first - 1.0 == pytest.approx(6.4515 * MS, rel=1e-9)


def test_prefix_blocks_are_counted_once_across_running_sequences():
    comp = {"system_tokens": 64, "question_tokens": 36}
    # A computes the prefix; B and C arrive after A's prefill and share it.
    arrivals = [(0.0, 100, 200), (0.01, 100, 200), (0.01, 100, 200)]
    used = {}
    for name, on in (("on", True), ("off", False)):
        env = simpy.Environment()
        stage = LLMStage(env, cfg(prompt_tokens=comp, prefix_caching=on), np.random.default_rng(0), (0.0, 1e9))
        for t, p, o in arrivals:
            env.run(until=t) if t > env.now else None
            stage.submit(p, o)
        env.run(until=0.1)  # all three are decoding by now
        rep = stage.replicas[0]
        ctx = [s.base + rep.D for s in rep.order]  # tokens with KV, per sequence
        assert rep.dec.n == 3  # (a snapshot at the start of the epoch in progress)
        used[name] = rep.blocks_used()
        if on:  # the 64-token prefix is 4 blocks held once; each sequence holds its own tail
            assert used[name] == 4 + sum(-(-(c - 64) // 16) for c in ctx)
        else:
            assert used[name] == sum(-(-c // 16) for c in ctx)
    assert used["off"] - used["on"] == 2 * 4


# --------------------------------------------------------------------------- paged KV, preemption


def tight(**kw) -> LLMConfig:
    # KV for 10 blocks of 16 tokens: (2.17e9 - 2e9) / (1e6 * 16) = 10.6 -> 10 blocks (160 tokens)
    return cfg(gpu={**GPU, "memory_gb": 2.17}, gpu_memory_utilization=1.0, **kw)


def test_kv_blocks_from_memory_left_after_weights():
    assert tight().kv_blocks == 10
    assert cfg().kv_blocks == int((100e9 * 0.9 - 2e9) // 16e6)


def test_blocks_are_taken_as_sequences_grow():
    env = simpy.Environment()
    stage = LLMStage(env, cfg(), np.random.default_rng(0), (0.0, 1e9))
    stage.submit(20, 100)
    rep = stage.replicas[0]
    env.run(until=0.001)
    assert rep.blocks_used() == 2  # prefill step in progress: 20 tokens -> 2 blocks, not 120 tokens' 8
    env.run(until=0.2)
    ctx = 20 + rep.D  # tokens with KV after D decode steps
    assert rep.blocks_used() in (-(-ctx // 16), -(-(ctx + 1) // 16))


@pytest.mark.parametrize("chunked", [True, False])
def test_saturated_replica_preempts_and_finishes_every_request(chunked):
    # 6 requests that each end with 30 + 40 - 1 = 69 tokens (5 blocks): 30 blocks of demand for 10.
    arrivals = [(0.0, 30, 40)] * 6
    c = tight(chunked_prefill=chunked)
    env = simpy.Environment()
    stage = LLMStage(env, c, np.random.default_rng(0), (0.0, 1e9))
    rep = stage.replicas[0]
    events = [stage.submit(p, o) for _, p, o in arrivals]
    peak = []

    def watch():  # blocks in use never exceed the blocks there are
        while not all(e.triggered for e in events):
            peak.append(rep.blocks_used())
            yield env.timeout(1e-4)

    env.process(watch())
    env.run()
    seqs = [e.value for e in events]
    assert max(peak) <= c.kv_blocks == 10
    assert all(s.t_last > s.t_first > 0 for s in seqs)
    assert sum(s.preemptions for s in seqs) == rep.preemptions > 0
    assert seqs[0].preemptions == 0  # the oldest is never the victim
    assert rep.blocks_used() == 0 and not rep.order and not rep.waiting


def test_request_that_can_never_fit_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"needs 11 KV blocks of 16 tokens but a replica holds 9"):
        run(tight(), [(0.0, 150, 20)])
    import yaml

    from sim.cli import app

    path = tmp_path / "big.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "run": {"duration_s": 20, "warmup_s": 1, "replications": 2},
                "workload": {"mode": "open", "rate_per_s": 2},
                "retrieval": {"enabled": False},
                "llm": {"model": "article-8l", "gpu_memory_utilization": 0.057, "prompt_tokens": 4000},
            }
        )
    )
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 2 and "needs 257 KV blocks of 16 tokens but a replica holds 34" in res.output


@pytest.mark.parametrize(
    "chunked, system, caching",
    [
        (True, 0, None),
        (False, 0, None),
        ("mixed", 0, None),
        (True, 40, None),
        (False, 40, None),
        ("mixed", 40, None),
        (True, 0, True),
        (False, 0, True),
        ("mixed", 0, True),
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_epochs_equal_a_step_by_step_loop(monkeypatch, chunked, system, caching, seed):
    rng = np.random.default_rng(seed)
    n = 60
    t = np.cumsum(rng.exponential(0.004, n))
    arrivals = [(float(t[i]), system + int(rng.integers(5, 90)), int(rng.integers(1, 60))) for i in range(n)]
    prompt = {"system_tokens": system, "question_tokens": 50} if system else 100
    c = cfg(
        gpu={**GPU, "memory_gb": 2.25},
        gpu_memory_utilization=1.0,
        chunked_prefill=chunked is True,
        prefill_steps="mixed" if chunked == "mixed" else "separate",
        max_batch=6,
        max_batched_tokens=64,
        prompt_tokens=prompt,
        prefix_caching=caching,
    )  # 15 blocks (14 usable): preemptions happen; with caching, preempted requests hit their own blocks
    assert c.prefix_tokens == (32 if system else 0)
    fast, stage = run(c, arrivals)
    monkeypatch.setattr(Replica, "epoch_cap", 1)
    slow, stage1 = run(c, arrivals)
    assert stage.replicas[0].preemptions > 0
    assert stage.replicas[0].preemptions == stage1.replicas[0].preemptions
    for f, s in zip(fast, slow):
        assert f.preemptions == s.preemptions
        assert f.t_first == pytest.approx(s.t_first, rel=1e-9)
        assert f.t_last == pytest.approx(s.t_last, rel=1e-9)
    assert stage.replicas[0].steps == pytest.approx(stage1.replicas[0].steps)
    assert stage.replicas[0].steps_memory_bound == pytest.approx(stage1.replicas[0].steps_memory_bound)


# --------------------------------------------------------------------------- tensor parallel, GQA


def test_tensor_parallel_splits_weights_and_kv():
    # 131.4 GiB of Llama-3-70B weights do not fit one H200 (141 GiB x 0.98988 exposed x 0.9 = 125.6 GiB);
    # on four each GPU holds 32.85 GiB of weights and 2 of the 8 KV heads.
    with pytest.raises(Exception, match="raise llm.tensor_parallel"):
        LLMConfig(model="llama-3-70b", gpu="h200")
    two = LLMConfig(model="llama-3-70b", gpu="h200", tensor_parallel=2)
    four = LLMConfig(model="llama-3-70b", gpu="h200", tensor_parallel=4)
    assert four.kv_bytes_per_token_per_gpu == 2 * 80 * 2 * 128 * 2
    # reserve: MLP peak 3 x 2 B x (8,192 + 28,672) x 8,192 tokens + 0.25 GiB non-torch + 1.85 GiB NCCL
    reserve = 3 * 2 * (8192 + 28672) * 8192 + (0.25 + 1.85) * 2**30
    assert four.reserve_bytes == pytest.approx(reserve)
    exposed = 141 * 2**30 * 79.19 / 80
    assert four.kv_budget_bytes == pytest.approx(exposed * 0.9 - 70_553_706_496 * 2 / 4 - reserve)
    assert four.kv_blocks == int(four.kv_budget_bytes // (2 * 80 * 2 * 128 * 2 * 16))
    assert four.kv_blocks > 2 * two.kv_blocks  # twice the GPUs for the KV, and less weight on each


def test_model_that_does_not_fit_names_tensor_parallel():
    with pytest.raises(Exception, match=r"llm.tensor_parallel"):
        LLMConfig(model="llama-3-70b", gpu="h100-sxm")
    assert LLMConfig(model="llama-3-70b", gpu="h100-sxm", tensor_parallel=4).kv_blocks > 0


def test_gqa_holds_more_sequences_than_mha():
    mha = LLMConfig(model={**MODEL, "heads": 8, "kv_heads": 8, "head_dim": 128, "hidden": 1024}, gpu="h100-sxm")
    gqa = LLMConfig(model={**MODEL, "heads": 8, "kv_heads": 2, "head_dim": 128, "hidden": 1024}, gpu="h100-sxm")
    mqa = LLMConfig(model={**MODEL, "heads": 8, "kv_heads": 1, "head_dim": 128, "hidden": 1024}, gpu="h100-sxm")
    assert gqa.kv_blocks == pytest.approx(4 * mha.kv_blocks, abs=4)
    assert mqa.kv_blocks == pytest.approx(8 * mha.kv_blocks, abs=8)


# --------------------------------------------------------------------------- routing


class _Stub:
    def __init__(self, n):
        self.n = n

    def outstanding(self):
        return self.n


def test_router_policies():
    reps = [_Stub(3), _Stub(1), _Stub(2)]
    rr = Router(reps, "round_robin", np.random.default_rng(0))
    assert [reps.index(rr.pick()) for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    lo = Router(reps, "least_outstanding", np.random.default_rng(0))
    assert lo.pick() is reps[1]
    ra = Router(reps, "random", np.random.default_rng(0))
    picks = [reps.index(ra.pick()) for _ in range(300)]
    assert set(picks) == {0, 1, 2} and max(np.bincount(picks)) < 150
    ra2 = Router(reps, "random", np.random.default_rng(0))
    assert [reps.index(ra2.pick()) for _ in range(300)] == picks  # seeded: reproducible


def test_least_outstanding_balances_replicas_in_the_stage():
    seqs, _stage = run(cfg(replicas=2, router="least_outstanding"), [(0.0, 50, 20)] * 4)
    assert sorted(s.replica for s in seqs) == [0, 0, 1, 1]
    seqs, _ = run(cfg(replicas=3, router="round_robin"), [(0.0, 50, 5)] * 6)
    assert [s.replica for s in seqs] == [0, 1, 2, 0, 1, 2]


# --------------------------------------------------------------------------- through the pipeline


def _open(replicas: int, seed: int = 5) -> dict:
    return {
        "name": "open",
        "run": {"duration_s": 400, "warmup_s": 40, "replications": 1, "seed": seed},
        "workload": {"mode": "open", "rate_per_s": 30},
        "cache": {"enabled": False},
        "retrieval": {"enabled": False},
        "llm": {
            "model": "article-8l",
            "gpu": "h100-sxm",
            "replicas": replicas,
            "router": "least_outstanding",
            "prompt_tokens": {"dist": "uniform", "low": 200, "high": 1200},
            "output_tokens": {"dist": "gamma", "mean": 120, "cv": 0.8},
        },
    }


def test_more_replicas_never_raise_p95_at_fixed_load():
    # Same arrivals and tokens (common random numbers); one replica runs at ~60% busy.
    p95 = {}
    for r in (1, 2):
        pt = sim.simulate(_open(r), jobs=1).points[0].summary
        p95[r] = pt["metrics"]["e2e_ms"]["p95"]
        assert pt["stability"]["stable"]
    assert p95[2] < p95[1]


def test_summary_reports_gpu_figures_and_preemptions_column():
    scn = _open(1)
    scn["run"]["duration_s"] = 60
    scn["run"]["warmup_s"] = 5
    scn["llm"]["gpu_memory_utilization"] = 0.06  # 4.8 GB - 3.76 GB of weights = 1.04 GB of KV: 496 blocks
    res = sim.simulate(scn, jobs=1, keep_records=True)
    g = res.points[0].summary["gpu"]
    for k in ("memory_bound_share", "mean_batch", "kv_occupancy", "preemptions", "tpot_ms"):
        assert g[k] is not None
    assert 0 < g["kv_occupancy"] <= 1 and 0 <= g["memory_bound_share"] <= 1 and g["mean_batch"] >= 1
    assert g["preemptions"] > 0 and set(g["tpot_ms"]) == {"p50", "p90", "p95", "p99"}
    rec = res.records
    assert "preemptions" in rec and rec["preemptions"].sum() >= g["preemptions"]


# --------------------------------------------------------------------------- bad input through the CLI


@pytest.mark.parametrize(
    "llm, expected",
    [
        ({"model": "llama-3-70b", "gpu": "h100-sxm"}, "raise llm.tensor_parallel"),
        ({"model": "llama-3-70b", "gpu": "h100-sxm", "tensor_parallel": 3}, "llm: tensor_parallel (3) must divide"),
        (
            {"model": {**MODEL, "heads": 32, "kv_heads": 5}, "gpu": GPU},
            "llm.model: kv_heads (5) must divide heads (32)",
        ),
        ({"max_batch": 512, "max_batched_tokens": 256}, "raise llm.max_batched_tokens"),
    ],
)
def test_bad_gpu_settings_exit_2_with_one_line(tmp_path, llm, expected):
    import yaml

    from sim.cli import app

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"workload": {"mode": "open", "rate_per_s": 1}, "llm": llm}))
    res = CliRunner().invoke(app, ["run", str(path)])
    assert res.exit_code == 2, res.output
    out = res.output.strip()
    assert expected in out and "\n" not in out and "Traceback" not in out


def test_kv_occupancy_divides_by_the_blocks_requests_can_hold():
    """vLLM's ``BlockPool.get_usage`` divides by ``num_gpu_blocks - 1`` (the null block is
    never given to a request); the summary does the same.  By hand: 11 blocks per replica,
    10 usable, 2 replicas over 100 s = 2,000 block-seconds; 500 held -> 0.25 (not 500/2,200)."""
    import pathlib

    from sim.analysis.summary import _gpu_entry
    from sim.spec.scenario import load_scenario

    scn = load_scenario(pathlib.Path(__file__).parent / "data" / "rag_small.yaml")
    c0 = [
        {
            "gpu_steps": 4,
            "gpu_steps_memory_bound": 3,
            "gpu_batch_step_sum": 8,
            "gpu_kv_block_seconds": 500.0,
            "gpu_kv_blocks": 11,
            "gpu_replicas": 2,
            "gpu_preemptions": 0,
        }
    ]
    g = _gpu_entry(scn, c0, [100.0], [], [], 10, {}, 0.0)
    assert g["kv_occupancy"] == pytest.approx(0.25, rel=1e-12)
    assert g["kv_blocks"] == 11 and g["mean_batch"] == 2 and g["memory_bound_share"] == 0.75
