"""Disaggregated prefill and decode: two pools of replicas with the KV cache handed between them.

Picture ``llm.disaggregated`` with 2 prefill replicas and 3 decode replicas, as Splitwise,
DistServe and NVIDIA Dynamo serve a model::

    request ─▶ router ─▶ prefill replica ──KV over the link──▶ router ─▶ decode replica ─▶ answer
                         (prompt only)     (transfer_s)                  (token by token)

* **Prefill.**  A prefill replica is a :class:`~sim.engine.llm.replica.Replica` of the prefill
  pool's configuration (its GPU, tensor parallelism, ``max_batch`` and token budget) serving each
  request as a one-token generation: its scheduler admits prompts while the KV blocks and the
  budget allow and runs prefill-only steps; the prompt's blocks are freed when its step ends.
* **Hand-off.**  The prompt's KV moves to a decode replica over the link
  (:func:`sim.physics.handoff.transfer_s`: every decode GPU receives its share over its own link).
  The link is not a queue: hand-offs overlap one another and the GPUs' steps.
* **Decode.**  The request joins a decode replica's queue with its prompt's KV present but one
  token: as vLLM does for a request whose whole prompt was received from a remote prefill
  (``vllm/v1/core/sched/scheduler.py``, ``Scheduler._update_waiting_for_remote_kv``: "on a full
  prompt hit, we need to re-compute the last token in order to be able to sample the next token"),
  its first step computes the prompt's last token and samples the first output token; admission
  takes the whole prompt's blocks (the scheduler's rule), and every later step decodes as on any
  replica.  A decode replica that preempts the request recomputes it there.

So the first token reaches the user after the prefill queue, the prefill step, the hand-off, the
decode queue and the first decode step: the TTFT that Dynamo's disaggregated serving reports,
where the decode worker streams every token (the prefill worker's own sampled token is not
returned).  In a request's record ``llm_wait`` is its wait for a prefill replica and
``prefill_ms`` runs from its prefill admission to its first token (prefill, hand-off, decode
queue, first decode step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from sim.engine.clock import Then
from sim.engine.llm.replica import Generation, Replica
from sim.physics.handoff import transfer_s
from sim.physics.steptable import step_cost
from sim.registry import ROUTERS
from sim.spec.schema import LLMConfig


class DisaggStage:
    """The LLM stage of a disaggregated deployment: a prefill pool, the link and a decode pool.

    ``replicas`` lists the prefill replicas (indices ``0 .. P-1``) then the decode replicas
    (``P .. P+D-1``), so the run's GPU counters cover both pools."""

    autoscaler = None

    def __init__(self, env: simpy.Environment, cfg: LLMConfig, rng: np.random.Generator, window: tuple[float, float]):
        d = cfg.disaggregated
        assert d is not None, "DisaggStage needs llm.disaggregated"
        self.env = env
        self.prefill_cfg, self.decode_cfg = pc, dc = cfg.pool("prefill"), cfg.pool("decode")
        self.prefill = [Replica(env, i, pc, step_cost(pc), window) for i in range(pc.replicas)]
        n = pc.replicas
        dcost = step_cost(dc)
        self.decode = [Replica(env, n + i, dc, dcost, window) for i in range(dc.replicas)]
        self.replicas = self.prefill + self.decode
        router = ROUTERS.load(cfg.router)
        self._pick_prefill = self._picker(router, self.prefill, rng)
        self._pick_decode = self._picker(router, self.decode, rng)
        self.link_bytes_per_s = cfg.link_bytes_per_s
        self.latency_s = d.latency_us / 1e6
        self.kv_bytes_per_token_per_gpu = dc.kv_bytes_per_token_per_gpu
        blocks = pc.kv_blocks * pc.replicas + dc.kv_blocks * dc.replicas
        self.kv_blocks = blocks / len(self.replicas)  # the mean: the summary multiplies by the replicas
        self.kv_capacity_tokens = dc.kv_blocks * dc.kv_block_tokens  # a decode replica's, where KV stays
        self.frontend_s = cfg.frontend_ms / 1e3
        self.handoffs = 0

    @staticmethod
    def _picker(router: Any, pool: list[Replica], rng: np.random.Generator) -> Callable[[], Replica]:
        if len(pool) == 1:
            only = pool[0]
            return lambda: only
        pick: Callable[[], Replica] = router(pool, rng).pick
        return pick

    def transfer_s(self, tokens: int) -> float:
        """Seconds to hand ``tokens`` tokens of KV to a decode replica."""
        return transfer_s(tokens, self.kv_bytes_per_token_per_gpu, self.link_bytes_per_s, self.latency_s)

    def submit(
        self, prompt: int, output: int, req: object = None, then: Callable[[Generation], object] | None = None
    ) -> simpy.Event | Then:
        """As :meth:`sim.engine.llm.stage.LLMStage.submit`, through a prefill then a decode replica."""
        env = self.env
        done: simpy.Event | Then = env.event() if then is None else Then(env, then)
        h = _Handoff(self, Generation(prompt, output, env.event(), req), done, env.now)
        first = Generation(prompt, 1, env.event(), h)
        assert isinstance(first.done, simpy.Event)  # its own event: the stage waits on it
        first.done.callbacks.append(h.prefilled)
        if self.frontend_s > 0.0:
            env.timeout(self.frontend_s).callbacks.append(h.enqueue(first))
        else:
            self._pick_prefill().submit(first)
        return done


class _Handoff:
    """One request's way through the two pools: its prefill generation, then its decode one."""

    __slots__ = ("arrived", "decode", "done", "prefill", "stage")

    def __init__(self, stage: DisaggStage, decode: Generation, done: simpy.Event | Then, arrived: float):
        self.stage, self.decode, self.done, self.arrived = stage, decode, done, arrived
        self.prefill: Generation | None = None

    def enqueue(self, first: Generation) -> Callable[[object], None]:
        def go(_event: object) -> None:
            self.stage._pick_prefill().submit(first)
            first.t_queued = self.arrived

        return go

    def prefilled(self, event: simpy.Event) -> None:
        """The prompt is computed: hand its KV over, then queue the request on a decode replica."""
        self.prefill = event.value
        stage = self.stage
        seq = self.decode
        seq.kv_in = seq.prompt - 1  # the last prompt token is recomputed to sample the first output token
        assert isinstance(seq.done, simpy.Event)
        seq.done.callbacks.append(self.decoded)
        stage.handoffs += 1
        stage.env.timeout(stage.transfer_s(seq.prompt)).callbacks.append(self.arrive)

    def arrive(self, _event: object) -> None:
        self.stage._pick_decode().submit(self.decode)

    def decoded(self, _event: object) -> None:
        """The answer is complete: its wait and admission are the prefill replica's."""
        seq = self.decode
        p = self.prefill
        assert p is not None
        seq.t_queued, seq.t_admitted = p.t_queued, p.t_admitted
        seq.preemptions += p.preemptions
        self.done.succeed(seq)
