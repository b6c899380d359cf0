"""Least outstanding requests (waiting + running); ties go to the lowest index."""

from __future__ import annotations

from typing import Any

import numpy as np


class LeastOutstanding:
    def __init__(self, replicas: list[Any], rng: np.random.Generator):
        self.replicas = replicas

    def pick(self) -> Any:
        return min(self.replicas, key=lambda r: r.outstanding())
