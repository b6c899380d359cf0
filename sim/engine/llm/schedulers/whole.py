"""Whole prompts (vLLM's default V0 policy): a step either prefills whole prompts
of newly admitted requests, or decodes; prefills go first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.physics.gpu import blocks_for_tokens

if TYPE_CHECKING:  # annotations only
    from sim.engine.llm.replica import Generation, Replica

#: Decoders wait while a step prefills.
DECODES_WITH_PREFILL = False


def plan(rep: Replica, now: float) -> list[tuple[Generation, int, int]] | None:
    """Work of the next step without chunked prefill: whole prompts, or None to decode."""
    if not rep.waiting:
        return None
    B, dec = rep.B, rep.dec
    free = rep.num_blocks - rep.pinned - rep.prefill_blocks - dec.blocks(rep.D)
    work: list[tuple[Generation, int, int]] = []
    tokens = 0
    waiting, order = rep.waiting, rep.order
    while waiting and len(order) < rep.max_batch:
        head = waiting[0]
        shared, own = rep.hits_for(head)
        chunk = head.target - shared - own
        nb = blocks_for_tokens(head.target - shared, B) - own // B
        rep.check_fits(head, shared)
        touched = rep.touched_blocks(shared)
        if (work and tokens + chunk > rep.budget_tokens) or own // B + nb + touched > free:
            break
        rep.admit(head, shared, own, now)
        work.append((head, chunk, nb))
        free -= touched + own // B + nb
        rep.cached.evict_to(free)
        tokens += chunk
    return work or None
