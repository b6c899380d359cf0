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
step fits, which is what :func:`plan` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.physics.gpu import blocks_for_tokens

if TYPE_CHECKING:  # annotations only
    from sim.engine.llm.replica import Generation, Replica

#: Decoders advance by one token in every step this scheduler plans.
DECODES_WITH_PREFILL = True


def plan(rep: Replica, now: float) -> list[tuple[Generation, int, int]] | None:
    """Work of the next step with chunked prefill, or None for a decode-only step."""
    if not rep.prefilling and not rep.waiting:
        return None  # the decode epoch makes its own room
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
    if not preempted:
        free -= need
        waiting, order = rep.waiting, rep.order
        while waiting and budget > 0 and len(order) < rep.max_batch:
            head = waiting[0]
            shared = rep.shared_for(head)
            rep.check_fits(head, shared)
            if blocks_for_tokens(head.target - shared, B) > free:
                break  # the whole prompt must fit, not only the first chunk
            chunk = min(head.target - shared, budget)
            nb = blocks_for_tokens(chunk, B)
            rep.admit(head, shared, now)
            work.append((head, chunk, nb))
            free -= nb
            budget -= chunk
    return work or None
