"""Uniformly random replica, drawn from the router's own stream."""

from __future__ import annotations

from typing import Any

import numpy as np


class Random:
    def __init__(self, replicas: list[Any], rng: np.random.Generator):
        self.replicas = replicas
        self._rng = rng

    def pick(self) -> Any:
        return self.replicas[int(self._rng.integers(len(self.replicas)))]
