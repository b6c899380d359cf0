"""Batching schedulers: what the next step of a replica processes.  One module per
policy, registered in :data:`sim.registry.SCHEDULERS`; each has ``plan(replica,
now)`` returning ``[(sequence, new tokens, new blocks), ...]`` for a step that
prefills, or None for a pure decode epoch, and ``DECODES_WITH_PREFILL``."""
