"""Whole prompts beside decodes (vLLM V1 with chunked prefill off; TensorRT-LLM's in-flight
batching without chunked context).

Every running sequence first gets its decode token; then waiting prompts are admitted, each
whole, while it fits what is left of ``max_batched_tokens``.  A prompt that does not fit the
budget left is skipped, and a later, shorter one may go in its place; the skipped ones keep
their place at the head of the queue for the next step.  When the step's blocks do not fit,
the newest sequence is preempted and the step planned again, and no request is admitted in a
step that preempted.  A prompt longer than the whole budget runs alone, in a step with nothing
else in it (vLLM refuses to start with a budget under its longest request instead).

This is vLLM V1's ``Scheduler.schedule`` (0.32.0, ``vllm/v1/core/sched/scheduler.py``) with
``chunked_prefill_enabled`` false: for a waiting request, ``if not
self.scheduler_config.chunked_prefill_enabled and num_new_tokens > token_budget``, it is popped
to ``skipped_waiting_requests`` and the loop goes on; the skipped requests are put back at the
head of ``waiting`` after the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.engine.llm.schedulers.chunked import make_room
from sim.physics.gpu import blocks_for_tokens

if TYPE_CHECKING:  # annotations only
    from sim.engine.llm.replica import Generation, Replica

#: Decoders advance by one token in every step this scheduler plans.
DECODES_WITH_PREFILL = True
#: A shorter request may be admitted past a waiting one, so an arrival can end a decode epoch
#: even when requests are waiting.
ADMITS_PAST_WAITING = True


def plan(rep: Replica, now: float) -> list[tuple[Generation, int, int]] | None:
    """Work of the next step: whole prompts that fit the budget the decodes leave, or None for a
    decode-only step."""
    if not rep.prefilling and not rep.waiting:
        return None  # the decode epoch makes its own room
    work, budget, free, preempted = make_room(rep)
    if preempted:
        return work or None
    B, waiting, order = rep.B, rep.waiting, rep.order
    skipped: list[Generation] = []
    while waiting and budget > 0 and len(order) < rep.max_batch:
        head = waiting[0]
        shared, own = rep.hits_for(head)
        rep.check_fits(head, shared)
        new = head.target - shared - own
        if new > budget and not (new > rep.budget_tokens and not work and not rep.dec.n):
            skipped.append(waiting.popleft())  # the whole prompt or nothing
            continue
        touched = rep.touched_blocks(shared)
        if blocks_for_tokens(head.target - shared, B) + touched > free:
            break
        rep.admit(head, shared, own, now)
        chunk = head.target - head.ctx
        nb = blocks_for_tokens(head.target - shared, B) - head.held
        work.append((head, chunk, nb))
        free -= touched + head.held + nb
        rep.cached.evict_to(free)
        budget -= chunk
    waiting.extendleft(reversed(skipped))
    return work or None
