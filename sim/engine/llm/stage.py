"""The LLM stage: a router in front of ``llm.replicas`` GPU replicas (or of those an
autoscaler, :mod:`sim.engine.llm.autoscale`, holds ready)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from sim.engine.clock import Then
from sim.engine.llm.autoscale import Autoscaler
from sim.engine.llm.replica import Generation, Replica
from sim.physics.steptable import step_cost
from sim.registry import ROUTERS
from sim.spec.schema import LLMConfig


class LLMStage:
    def __init__(self, env: simpy.Environment, cfg: LLMConfig, rng: np.random.Generator, window: tuple[float, float]):
        self.env = env
        self.cost = step_cost(cfg)
        slots = cfg.autoscale.max_replicas if cfg.autoscale is not None else cfg.replicas
        self.replicas = [Replica(env, i, cfg, self.cost, window) for i in range(slots)]
        self.router: Any
        self._pick: Callable[[], Replica]
        self.autoscaler: Autoscaler | None = None
        if cfg.autoscale is not None:  # it builds the router over the replicas it holds ready
            self.autoscaler = Autoscaler(env, self, cfg, rng)
        else:
            self.router = ROUTERS.load(cfg.router)(self.replicas, rng)
            self._pick = self.router.pick if len(self.replicas) > 1 else (lambda: self.replicas[0])
        self.kv_blocks = cfg.kv_blocks
        self.kv_capacity_tokens = cfg.kv_blocks * cfg.kv_block_tokens
        self.frontend_s = cfg.frontend_ms / 1e3

    def submit(
        self, prompt: int, output: int, req: object = None, then: Callable[[Generation], object] | None = None
    ) -> simpy.Event | Then:
        """Queue a request; what it returns succeeds with the finished :class:`Generation`
        (``then``: a callback that gets it, at that instant, instead of an event to wait on)."""
        done: simpy.Event | Then = self.env.event() if then is None else Then(self.env, then)
        seq = Generation(prompt, output, done, req)
        if self.frontend_s > 0.0:  # the engine's frontend first, then a replica's queue
            self.env.timeout(self.frontend_s).callbacks.append(_Enqueue(self, seq, self.env.now))
        else:
            self._pick().submit(seq)
        return done


class _Enqueue:
    """Hands a request to a replica once the engine's frontend is done with it; its queue wait
    counts from its arrival at the stage, so the frontend time is part of the LLM wait."""

    __slots__ = ("seq", "since", "stage")

    def __init__(self, stage: LLMStage, seq: Generation, since: float):
        self.stage, self.seq, self.since = stage, seq, since

    def __call__(self, _event: object) -> None:
        self.stage._pick().submit(self.seq)
        self.seq.t_queued = self.since
