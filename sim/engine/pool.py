"""Retrieval: a pool of CPU workers with one FIFO queue in front.

A request that misses the cache waits for a free worker, then holds it for
one search (its service time drawn from the configured or calibrated
distribution, plus per-request overhead outside the search).

When more workers than CPU cores are configured (``cpu_cores < workers``),
busy workers share the cores: a search started while ``b`` workers are busy
runs ``max(1, b / cpu_cores)`` times slower.  This is the processor-sharing
slowdown seen at the moment the search starts, a first-order model that is
exact when the pool stays saturated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import simpy

from sim.engine.records import Bins


class WorkerPool:
    """``workers`` servers, one FIFO queue.

    ``acquire(then, arg)`` calls ``then(arg)`` as soon as a worker is free: at once if
    one is idle, else when a release hands it over (no event, no process: the caller
    schedules its own service time).  ``release`` hands the worker straight to the
    head of the queue.
    """

    __slots__ = ("_queue", "busy", "busy_bins", "cpu_cores", "env", "workers")

    def __init__(self, env: simpy.Environment, workers: int, cpu_cores: int | None, window: tuple[float, float]):
        self.env = env
        self.workers = workers
        self.cpu_cores = cpu_cores or workers
        self.busy = 0
        self._queue: deque[tuple[Callable[[Any], None], Any]] = deque()
        self.busy_bins = Bins(*window)  # busy worker-seconds over time

    def acquire(self, then: Callable[[Any], None], arg: Any) -> None:
        if self.busy < self.workers:
            self.busy += 1
            then(arg)
        else:
            self._queue.append((then, arg))

    def slowdown(self) -> float:
        """Factor by which a search started now is stretched by core sharing."""
        busy = self.busy
        return 1.0 if busy <= self.cpu_cores else busy / self.cpu_cores

    def release(self, start_s: float, end_s: float) -> None:
        self.busy_bins.add(start_s, end_s, end_s - start_s)
        if self._queue:
            then, arg = self._queue.popleft()  # hand the worker straight over
            then(arg)
        else:
            self.busy -= 1

    @property
    def busy_s(self) -> float:
        """Busy worker-seconds inside the measurement window."""
        return self.busy_bins.total

    def queue_length(self) -> int:
        return len(self._queue)
