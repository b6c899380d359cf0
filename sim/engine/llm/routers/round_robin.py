"""Round robin: replica 0, 1, ..., n-1, 0, ..."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np


class RoundRobin:
    def __init__(self, replicas: list[Any], rng: np.random.Generator):
        self.replicas = replicas
        self._next = itertools.cycle(range(len(replicas)))

    def pick(self) -> Any:
        return self.replicas[next(self._next)]
