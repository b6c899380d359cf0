"""capsim's replica against vLLM V1's scheduler, step by step, on tiny cases worked by hand.

Each test states what vLLM does (the file and function of vLLM 0.32.0, the version the verify
environment pins) and follows capsim's step log (:class:`sim.engine.llm.replica.StepLine`, one
line per step with ``Replica.epoch_cap = 1``): the tokens each running sequence computes, the KV
blocks held and the sequences preempted.

Toy card and model as in ``tests/test_llm_stage.py``: 1e6 KV bytes a token, blocks of 16 tokens
(16e6 bytes), 2e9 bytes of weights, so ``memory_gb`` 2.17 at utilisation 1 is a pool of
``(2.17e9 - 2e9) // 16e6 = 10`` blocks, of which 9 are usable beside vLLM's null block.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy

import sim
from sim.engine.llm.kv import CachedFree
from sim.engine.llm.replica import Replica
from sim.engine.llm.stage import LLMStage
from sim.errors import ConfigError
from sim.spec.schema import LLMConfig
from tests.test_llm_stage import GPU, MODEL  # the toy of test_llm_stage, whose docstring works its steps


def cfg(memory_gb: float = 100, **kw) -> LLMConfig:
    gpu = {**GPU, "memory_gb": memory_gb, "memory_exposed_gib": memory_gb * 1e9 / 2**30}
    base = dict(
        engine_reserve="none",
        efficiency="custom",
        model=MODEL,
        gpu=gpu,
        gpu_memory_utilization=1.0,
        bw_efficiency=1.0,
        mfu=1.0,
        step_overhead_ms=0,
        max_batch=8,
        max_batched_tokens=128,
        chunked_prefill=True,
    )
    return LLMConfig(**{**base, **kw})


def play(c: LLMConfig, arrivals, monkeypatch):
    """Submit ``(time_s, name, prompt, output)`` requests to one replica run step by step;
    return the finished sequences by name and the step log as ``(tokens, blocks, preempted)``."""
    monkeypatch.setattr(Replica, "epoch_cap", 1)
    env = simpy.Environment()
    stage = LLMStage(env, c, np.random.default_rng(0), (0.0, 1e9))
    rep = stage.replicas[0]
    rep.step_log = []
    events = {}

    def source():
        for t, name, p, o in arrivals:
            if t > env.now:
                yield env.timeout(t - env.now)
            events[name] = stage.submit(p, o, name)

    env.process(source())
    env.run()
    assert all(ev.triggered for ev in events.values()), "every request finishes"
    assert all(line.steps == 1 for line in rep.step_log)
    log = [(line.tokens, line.blocks, line.preempted) for line in rep.step_log]
    return {k: ev.value for k, ev in events.items()}, log, rep


TIGHT = 2.17  # memory_gb: 10 blocks, 9 usable


def test_the_null_block_is_not_usable(monkeypatch):
    """vLLM V1 (``vllm/v1/core/block_pool.py``, ``BlockPool.__init__``) takes block 0 of the pool
    as ``null_block``, never given to a request; the logged ``num_gpu_blocks`` counts it and
    ``BlockPool.get_usage`` divides by ``num_gpu_blocks - 1``.  A pool of 10 blocks holds a
    request of 9 blocks (134 + 11 tokens: 144 with KV, the last token's is never written) and
    refuses one of 10 (150 + 11: 160)."""
    c = cfg(TIGHT)
    assert (c.kv_blocks, c.kv_blocks_usable) == (10, 9)
    _, log, rep = play(c, [(0.0, "A", 134, 11)], monkeypatch)
    assert rep.num_blocks == 9 and max(b for _, b, _ in log) == 9
    with pytest.raises(ConfigError, match=r"needs 10 KV blocks of 16 tokens but a replica holds 9;"):
        play(c, [(0.0, "A", 150, 11)], monkeypatch)
    # the scenario's own check of the longest request (constant token counts) says the same
    scn = {"workload": {"mode": "open", "rate_per_s": 1}, "retrieval": {"enabled": False}}
    llm = {**c.model_dump(mode="json", exclude_unset=True), "prompt_tokens": 150, "output_tokens": 11}
    with pytest.raises(Exception, match=r"needs 10 KV blocks of 16 tokens but a replica holds 9;"):
        sim.load_scenario({**scn, "llm": llm})
    sim.load_scenario({**scn, "llm": {**llm, "prompt_tokens": 134}})
    # a pool of one block (2.024e9 - 2e9 = 1.5 blocks) is the null block alone
    with pytest.raises(Exception, match=r"leave no room for one KV block"):
        cfg(2.024)
    assert cfg(2.04).kv_blocks_usable == 1


def test_admission_needs_room_for_the_whole_prompt_not_only_its_first_chunk(monkeypatch):
    """vLLM V1 admits a waiting request only when the free blocks hold its whole prompt, though
    it allocates only the scheduled chunk's blocks: ``Scheduler.schedule`` passes
    ``full_sequence_must_fit=self.scheduler_reserve_full_isl`` (``SchedulerConfig.
    scheduler_reserve_full_isl``, True by default) to ``KVCacheManager.allocate_slots``
    (``vllm/v1/core/kv_cache_manager.py``), which returns None when ``cdiv(request.num_tokens,
    block_size)`` blocks (less prefix-cache hits) are not free; a waiting request that gets
    None ends the step's admissions (``break``).

    9 usable blocks of 16, budget 64.  A (100 prompt, 3 output) and B (60, 2) at t = 0:
      1. A's first chunk, 64 tokens: 4 blocks.  B not admitted: no budget left.
      2. A's last 36 (7 blocks for 100 tokens); 28 tokens of budget are left and B's first 28
         would fit the 2 free blocks, but its 60 need 4: B waits.  A's first token.
      3-4. A decodes (101, 102 tokens: 7 blocks); A has 3 tokens: done, its blocks freed.
      5. B's 60 tokens: 4 blocks.  6. B decodes: 2 tokens, done.
    (Admitting on the first chunk alone, B would take the 2 blocks in step 2 and need 2 more in
    step 3, and be preempted.)"""
    seqs, log, _ = play(cfg(TIGHT, max_batched_tokens=64), [(0.0, "A", 100, 3), (0.0, "B", 60, 2)], monkeypatch)
    assert log == [
        ({"A": 64}, 4, ()),
        ({"A": 36}, 7, ()),
        ({"A": 1}, 7, ()),
        ({"A": 1}, 7, ()),
        ({"B": 60}, 4, ()),
        ({"B": 1}, 4, ()),
    ]
    assert seqs["A"].preemptions == seqs["B"].preemptions == 0


@pytest.mark.parametrize("caching", [False, True])
def test_a_sequence_that_cannot_grow_preempts_the_last_admitted_which_recomputes_later(monkeypatch, caching):
    """vLLM V1, ``Scheduler.schedule`` (``vllm/v1/core/sched/scheduler.py``): the running
    requests are scheduled first, in order; when ``allocate_slots`` finds no block for one, the
    last of ``self.running`` is popped (``preempted_req = self.running.pop()`` under FCFS) and
    ``_preempt_request`` frees its blocks, sets ``num_computed_tokens = 0`` and puts it at the
    front of the waiting queue (``self.waiting.prepend_request``); a step that preempted admits
    no waiting request (``if not preempted_reqs``).  Readmitted, its prefill computes
    ``request.num_tokens``: the prompt and every token generated so far.  Later admissions go
    through the whole-prompt check of the test above.

    9 usable blocks of 16, budget 128.  A, B, C (40 prompt, 12 output) at t = 0:
      1. all three prompts (120 tokens), 3 blocks each: 9.  First tokens.
      2-9. decode steps 1-8: contexts 41..48 fit the 3 blocks each (48 tokens).
      10. decode step 9 needs a 4th block each and none is free: C, the last admitted, is
          preempted (its 3 blocks freed: 9 tokens generated, 48 with KV); A and B take one
          each: 8 blocks.  C is not readmitted in this step.
      11-12. A and B decode (50, 51 tokens: 4 blocks each); C's 49 tokens need 4 blocks and
          1 is free: C waits.  A and B have 12 tokens: done.
      13. C recomputes its 40 + 9 = 49 tokens: 4 blocks, its 10th token.
      14-15. C decodes (50, 51 tokens): 12 tokens, done.
    With prefix caching on (``enable_prefix_caching``), C's 3 full blocks stay cached when freed
    (``vllm/v1/core/block_pool.py``, ``BlockPool.free_blocks`` appends hashed blocks to the
    back of the free queue; ``SingleTypeKVCacheManager.free`` frees them last block first) and
    A and B take the front in step 10 (``BlockPool.get_new_blocks``): C's last two blocks.  In
    step 13 the prefix-cache lookup (``KVCacheManager.get_computed_blocks``) finds C's first
    block: C computes 49 - 16 = 33 tokens."""
    arrivals = [(0.0, n, 40, 12) for n in "ABC"]
    seqs, log, rep = play(cfg(TIGHT, prefix_caching=caching), arrivals, monkeypatch)
    all3, two = {"A": 1, "B": 1, "C": 1}, {"A": 1, "B": 1}
    assert log == [
        ({"A": 40, "B": 40, "C": 40}, 9, ()),
        *[(all3, 9, ())] * 8,
        (two, 8, ("C",)),
        (two, 8, ()),
        (two, 8, ()),
        ({"C": 33 if caching else 49}, 4, ()),
        ({"C": 1}, 4, ()),
        ({"C": 1}, 4, ()),
    ]
    assert [seqs[n].preemptions for n in "ABC"] == [0, 0, 1] and rep.preemptions == 1
    assert seqs["C"].t_first < seqs["A"].t_last  # its first token came before the preemption


@pytest.mark.parametrize("caching", [False, True])
def test_the_last_running_request_preempts_itself_when_its_chunk_finds_no_block(monkeypatch, caching):
    """vLLM V1, ``Scheduler.schedule``: the victim is always ``self.running[-1]``, which may be
    the request being scheduled: ``if preempted_req == request: break`` (no other left to
    preempt), then ``if new_blocks is None: break``: it is not scheduled, the requests before it
    are, and the step admits nobody (``if not preempted_reqs``).

    9 usable blocks of 16, budget 64.  A (63 prompt, 4 output) at t = 0, B (80, 2) during
    A's prefill:
      1. A's 63: 4 blocks.
      2. A decodes (64 tokens, 4 blocks); B's whole 80 need 5 of the 5 free: admitted, its
         first 63 (4 blocks): 8.
      3. A's 65th token needs a 5th block and B's last 17 a 5th: 2 needed, 1 free.  B, the
         last running request, preempts itself; A decodes alone: 5 blocks.
      4. A decodes (66, 5 blocks): 4 tokens, done.  B's 80 need 5 blocks, 4 free: it waits.
      5. B computes its 80 tokens again, 64 then 16 (6), or with prefix caching only the 32
         after its 3 full blocks (48 tokens), still cached: nothing evicted them.
      then B decodes (81 tokens: 6 blocks): 2 tokens, done."""
    arrivals = [(0.0, "A", 63, 4), (1e-6, "B", 80, 2)]
    _, log, _ = play(cfg(TIGHT, max_batched_tokens=64, prefix_caching=caching), arrivals, monkeypatch)
    again = [({"B": 32}, 5, ())] if caching else [({"B": 64}, 4, ()), ({"B": 16}, 5, ())]
    assert log == [
        ({"A": 63}, 4, ()),
        ({"A": 1, "B": 63}, 8, ()),
        ({"A": 1}, 5, ("B",)),
        ({"A": 1}, 5, ()),
        *again,
        ({"B": 1}, 6, ()),
    ]


def test_decodes_take_the_budget_first_then_partial_prefills_then_admissions(monkeypatch):
    """vLLM V1, ``Scheduler.schedule``: the running requests in order, each given
    ``min(num_tokens_with_spec - num_computed_tokens, token_budget)`` tokens (1 for a decode, the
    next chunk for a partial prefill), then waiting requests while budget is left, the last one
    cut to a chunk (``num_new_tokens = min(num_new_tokens, request_token_budget)``).  A partial
    prefill is always the last running request (its chunk used up the budget), so decodes
    come first.

    Budget 64, blocks plenty.  A (20 prompt, 10 output) at t = 0; B (100) and C (30) arrive
    during A's prefill:
      1. A's 20.   2. A decodes, B's first 63.   3. A decodes, B's last 37, C's first 26.
      4. A and B decode, C's last 4 (B has its 2 tokens).   5. A and C decode."""
    arrivals = [(0.0, "A", 20, 10), (1e-6, "B", 100, 2), (1e-6, "C", 30, 2)]
    _, log, _ = play(cfg(max_batched_tokens=64), arrivals, monkeypatch)
    tokens = [t for t, _, _ in log]
    assert tokens[:5] == [
        {"A": 20},
        {"A": 1, "B": 63},
        {"A": 1, "B": 37, "C": 26},
        {"A": 1, "B": 1, "C": 4},
        {"A": 1, "C": 1},
    ]


def test_cached_blocks_freed_longest_ago_are_evicted_first(monkeypatch):
    """vLLM V1's free block queue (``vllm/v1/core/block_pool.py``): ``BlockPool.free_blocks``
    puts freed blocks without a hash at the front and hashed (full, cached) ones at the back, so
    ``BlockPool.get_new_blocks``, taking from the front, uses the never-cached free blocks first
    and then evicts the cached blocks freed longest ago.

    As the preemption test above with prefix caching on, with 11 usable blocks (``memory_gb``
    2.2: ``0.2e9 // 16e6 = 12`` blocks) and X (32 prompt, 1 output) served first:
      1. X's 32 tokens: 2 blocks; X is done, its 2 full blocks stay cached (free).
      2. A, B, C (40 prompt, 12 output) at 10 ms: 9 blocks, all from the 9 never-cached ones.
      3-10. decode steps 1-8: 9 blocks.
      11. decode step 9: 3 blocks needed, 2 free (X's): C is preempted and its 3 blocks are
          cached behind X's; A and B take X's, the oldest.
      12-13. A and B decode to 12 tokens, done.
      14. C finds its 3 blocks (48 tokens) cached and computes its 49th only.
      15-16. C decodes: 12 tokens, done."""
    arrivals = [(0.0, "X", 32, 1), *[(0.01, n, 40, 12) for n in "ABC"]]
    c = cfg(2.2, prefix_caching=True)
    assert c.kv_blocks_usable == 11
    seqs, log, rep = play(c, arrivals, monkeypatch)
    all3, two = {"A": 1, "B": 1, "C": 1}, {"A": 1, "B": 1}
    assert log == [
        ({"X": 32}, 2, ()),
        ({"A": 40, "B": 40, "C": 40}, 9, ()),
        *[(all3, 9, ())] * 8,
        (two, 8, ("C",)),
        (two, 8, ()),
        (two, 8, ()),
        ({"C": 1}, 4, ()),
        ({"C": 1}, 4, ()),
        ({"C": 1}, 4, ()),
    ]
    assert seqs["C"].preemptions == 1
    # A and B left 3 full blocks each cached; C's 51 tokens, 3 full: 9 of the 11 blocks
    assert rep.blocks_used() == 0 and rep.cached.blocks == 9


def test_the_system_prompt_stays_cached_while_free_and_is_taken_back(monkeypatch):
    """vLLM V1 keeps a freed block's KV until the block is taken for another request
    (``BlockPool.get_new_blocks`` evicts it then); meanwhile it counts as free
    (``BlockPool.get_num_free_blocks``) and a request whose prompt starts with it takes it back
    (``BlockPool.touch``); the admission check counts such blocks as ones to allocate
    (``SingleTypeKVCacheManager.get_num_blocks_to_allocate``: ``num_evictable_blocks``).

    11 usable blocks of 16; a 32-token system prompt (2 blocks) on every prompt.
      1. S (48 prompt, 1 output) computes it all: 3 blocks.  Done: nothing held, 3 cached.
      2. T (48, 1) at 10 ms takes the 2 system-prompt blocks back and computes 16 tokens.
      3. U (160, 1) at 20 ms: its 8 private blocks and the prompt's 2 make 10 of the 11 free;
         7 are never-cached blocks, the 8th evicts the oldest cached one (S's third block).
    Once U is done every block is free and cached: S's or T's third, U's 8 and the prompt's 2."""
    comp = {"system_tokens": 32, "question_tokens": 16}
    arrivals = [(0.0, "S", 48, 1), (0.01, "T", 48, 1), (0.02, "U", 160, 1)]
    c = cfg(2.2, prompt_tokens=comp)
    assert c.prefix_tokens == 32 and c.kv_blocks_usable == 11
    _, log, rep = play(c, arrivals, monkeypatch)
    assert log == [({"S": 48}, 3, ()), ({"T": 16}, 3, ()), ({"U": 128}, 10, ())]
    assert rep.blocks_used() == 0 and rep.pinned == 0
    assert rep.prefix_cached() == 2 and rep.cached.blocks == 11


def test_cached_free_blocks_evict_the_oldest_run_from_its_end():
    """:class:`CachedFree`'s docstring example: runs ``a: 2, b: 3``; 2 free blocks left evict
    all of ``a`` and one block of ``b``, which keeps its first 2; a run nobody can hit merges."""
    c = CachedFree()
    c.push("a", 2)
    c.push("b", 3)
    c.evict_to(2)
    assert (c.blocks, c.held_by("a"), c.held_by("b")) == (2, 0, 2)
    c.push(None, 4)
    c.push(None, 1)
    assert len(c.runs) == 2 and c.blocks == 7
    assert c.take("b") == 2 and c.blocks == 5 and c.held_by("b") == 0
    c.evict_to(0)
    assert c.blocks == 0 and not c.runs


def test_the_estimate_fits_requests_in_the_usable_blocks():
    """capsim estimate's requests in memory count the pool less the null block: 10 blocks hold
    one request of 5 blocks (70 + 10 tokens of 16-token blocks) beside the null block, not two."""
    from sim.analysis.estimate import _sequences_in_memory

    c = cfg(TIGHT)
    assert (c.kv_blocks, c.kv_blocks_usable) == (10, 9)
    assert _sequences_in_memory(c, 70, 10) == 1
    assert _sequences_in_memory(c, 38, 10) == 3  # 3 blocks each: 9 // 3
