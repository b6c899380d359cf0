"""Chunked prefill (vLLM's chunked-prefill policy).

Every running sequence first gets its decode token, then partial prefills and
newly admitted prompts share what is left of ``max_batched_tokens``, a chunk
each; when the step's blocks do not fit, the newest sequence is preempted and
the step planned again, and no request is admitted in a step that preempted.
A request is admitted only when the free blocks hold its whole prompt (less
the shared prefix), though it takes only its chunk's blocks.

This is vLLM V1's ``Scheduler.schedule`` (0.32.0, ``vllm/v1/core/sched/scheduler.py``)
under FCFS: running requests first, in admission order (a partial prefill is
always the last of them: its chunk used up the budget), then waiting ones;
when ``allocate_slots`` fails the last running request is preempted
(``self.running.pop()``) until it fits; admission goes through
``allocate_slots(..., full_sequence_must_fit=scheduler_reserve_full_isl)``.
Preempting from the tail until the prefix fits, request by request as vLLM
does, removes the same requests as preempting from the tail until the whole
step fits, which is what :func:`plan` does.  (vLLM's requests ahead of the
one that preempted have taken their blocks before the victim's partial last
block is freed; here they may take that block instead of the oldest cached
one: one cached block more or less at most, per preemption.)

An admitted request takes back its cached blocks (the system prompt's, and
after a preemption its own that are not evicted yet) and computes the rest;
the running sequences' new blocks are taken, evicting cached ones, before the
waiting requests look theirs up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.physics.gpu import blocks_for_tokens

if TYPE_CHECKING:  # annotations only
    from sim.engine.llm.replica import Generation, Replica

#: Decoders advance by one token in every step this scheduler plans.
DECODES_WITH_PREFILL = True


def make_room(rep: Replica) -> tuple[list[tuple[Generation, int, int]], int, int, bool]:
    """The running sequences' part of the next step: every decoder's token and the partial
    prefills' chunks, preempting the newest sequence until their blocks fit.  Returns that work,
    the token budget and the free blocks left, and whether it preempted (then nothing is admitted)."""
    B, dec = rep.B, rep.dec
    preempted = False
    while True:
        held = dec.blocks(rep.D)
        free = rep.num_blocks - rep.pinned - rep.prefill_blocks - held
        need = dec.blocks(rep.D + 1) - held if dec.n else 0
        budget = rep.budget_tokens - dec.n
        work = []
        for seq in rep.prefilling:  # partial prefills, oldest first
            chunk = min(seq.target - seq.ctx, budget)
            if chunk <= 0:
                break
            nb = blocks_for_tokens(seq.ctx + chunk - seq.shared, B) - seq.held
            need += nb
            budget -= chunk
            work.append((seq, chunk, nb))
        if need <= free:
            break
        rep.preempt_newest()
        preempted = True
    rep.replan = preempted
    free -= need
    rep.cached.evict_to(free)  # the running sequences' new blocks come off the free queue first
    return work, budget, free, preempted


def plan(rep: Replica, now: float) -> list[tuple[Generation, int, int]] | None:
    """Work of the next step with chunked prefill, or None for a decode-only step."""
    if not rep.prefilling and not rep.waiting:
        return None  # the decode epoch makes its own room
    work, budget, free, preempted = make_room(rep)
    if not preempted:
        B, waiting, order = rep.B, rep.waiting, rep.order
        while waiting and budget > 0 and len(order) < rep.max_batch:
            head = waiting[0]
            shared, own = rep.hits_for(head)
            rep.check_fits(head, shared)
            touched = rep.touched_blocks(shared)
            if blocks_for_tokens(head.target - shared, B) + touched > free:
                break  # the whole prompt must fit, not only the first chunk
            rep.admit(head, shared, own, now)
            chunk = min(head.target - head.ctx, budget)
            nb = blocks_for_tokens(head.ctx + chunk - shared, B) - head.held
            work.append((head, chunk, nb))
            free -= touched + head.held + nb
            rep.cached.evict_to(free)
            budget -= chunk
    return work or None
