"""The LLM stage: a router in front of ``llm.replicas`` GPU replicas (or of those an
autoscaler, :mod:`sim.engine.llm.autoscale`, holds ready)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

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

    def submit(self, prompt: int, output: int, req: object = None) -> simpy.Event:
        done = self.env.event()
        self._pick().submit(Generation(prompt, output, done, req))
        return done
