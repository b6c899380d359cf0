"""Retrieval (and routing): a pool of CPU workers with one FIFO queue in front.

A request that misses the cache waits for a free worker, then holds it for
one search (its service time drawn from the configured or calibrated
distribution, plus per-request overhead outside the search).

Searches that run at the same time slow each other down
(:mod:`sim.physics.sharing`): with ``n`` in service each drains its work at
``1 / stretch(n)`` per second, where ``stretch`` counts time-slicing when
there are more busy workers than ``cpu_cores`` and the measured contention of
``m`` searches running at once.  The pool applies this exactly: a search's
finish time is recomputed whenever the number in service changes, so a
search slowed by a burst speeds up again when the burst ends.  The first
search after the pool sat idle does ``wakeup_s`` more work (a core waking
from sleep, caches cold).  A search that finishes while others still hold
every core hands its answer back ``handback()`` seconds later (an event loop
waiting for its slice of a core a running search holds: time, not work; the
others run on meanwhile).  With no
slowdown anywhere (cores for every worker, no contention) each search is one
plain timeout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import simpy

from sim.engine.clock import later
from sim.engine.records import Bins
from sim.physics.sharing import stretch_factors, wakeup_after


class WorkerPool:
    """``workers`` servers, one FIFO queue, searches that slow each other down.

    ``acquire(then, arg)`` calls ``then(arg)`` as soon as a worker is free: at once if
    one is idle, else when a release hands it over (no event, no process).  The holder
    then calls ``serve(work_s, done, arg)``: ``done(arg)`` runs when ``work_s`` seconds of
    work-alone are done at the speed the sharing allows.  ``release`` hands the worker
    straight to the head of the queue.
    """

    __slots__ = (
        "_idle_since",
        "_jobs",
        "_queue",
        "_t",
        "_version",
        "_wake_s",
        "busy",
        "busy_bins",
        "cores",
        "env",
        "handback",
        "stretch",
        "wakeup_s",
        "workers",
    )

    def __init__(
        self,
        env: simpy.Environment,
        workers: int,
        cpu_cores: int | None,
        window: tuple[float, float],
        contention: Sequence[float] = (),
        wakeup_s: float | Sequence[tuple[float, float]] = 0.0,
        handback: Callable[[], float] | None = None,
    ):
        self.env = env
        self.workers = workers
        self.cores = cpu_cores or workers
        self.handback = handback
        self.busy = 0
        self._queue: deque[tuple[Callable[[Any], None], Any]] = deque()
        self.busy_bins = Bins(*window)  # busy worker-seconds over time
        s = stretch_factors(workers, cpu_cores, contention)
        self.stretch: list[float] | None = None if all(x == 1.0 for x in s) else s
        self._jobs: list[list[Any]] = []  # [work left in seconds-alone, done, arg] of each search in service
        self._t = 0.0  # when _jobs' work was last brought up to date
        self._version = 0  # the one armed completion timer that is still valid
        # extra work of the first search after the pool sat idle: a constant, or (idle s, extra s)
        # points, linear between them and flat beyond (a longer sleep costs a longer wake-up)
        self.wakeup_s = wakeup_s
        self._wake_s = 0.0  # the extra work of the search whose worker just found the pool idle
        self._idle_since = -float("inf")

    def acquire(self, then: Callable[[Any], None], arg: Any) -> None:
        if self.busy < self.workers:
            if self.busy == 0 and self.wakeup_s:
                self._wake_s = wakeup_after(self.wakeup_s, self.env.now - self._idle_since)
            self.busy += 1
            then(arg)
        else:
            self._queue.append((then, arg))

    def serve(self, work_s: float, done: Callable[[Any], None], arg: Any) -> None:
        """Run ``work_s`` seconds of work-alone for the holder of a worker; then ``done(arg)``.

        The first search after the pool sat idle does ``wakeup_s`` more (a sleeping core and
        cold caches: measured by ``capsim verify`` as idle-gap probes over back-to-back ones)."""
        if self._wake_s:
            work_s += self._wake_s
            self._wake_s = 0.0
        if self.stretch is None:
            later(self.env, work_s, done, arg)
            return
        self._catch_up()
        self._jobs.append([work_s, done, arg])
        self._arm()

    def _catch_up(self) -> None:
        now = self.env.now
        jobs = self._jobs
        if jobs and now > self._t:
            assert self.stretch is not None
            drained = (now - self._t) / self.stretch[len(jobs)]
            for j in jobs:
                j[0] -= drained
        self._t = now

    def _arm(self) -> None:
        """One timer, for the search that will finish first at the current speed."""
        self._version += 1
        jobs = self._jobs
        if not jobs:
            return
        assert self.stretch is not None
        first = min(jobs, key=lambda j: j[0])
        later(self.env, max(0.0, first[0]) * self.stretch[len(jobs)], self._finish, (self._version, first))

    def _finish(self, armed: tuple[int, list[Any]]) -> None:
        version, first = armed
        if version != self._version:
            return  # the number in service changed after this timer was set
        self._catch_up()
        # the armed search, and any other whose work is done too (floating-point ties)
        done = [j for j in self._jobs if j is first or j[0] <= 1e-12]
        self._jobs = [j for j in self._jobs if not (j is first or j[0] <= 1e-12)]
        self._arm()
        # Still every core held by a search: the answers wait for a slice of one.
        late = self.handback if self.handback is not None and len(self._jobs) >= self.cores else None
        for _w, then, arg in done:
            if late is None:
                then(arg)
            else:
                later(self.env, late(), then, arg)

    def release(self, start_s: float, end_s: float) -> None:
        self.busy_bins.add(start_s, end_s, end_s - start_s)
        if self._queue:
            then, arg = self._queue.popleft()  # hand the worker straight over
            then(arg)
        else:
            self.busy -= 1
            if self.busy == 0:
                self._idle_since = end_s

    @property
    def busy_s(self) -> float:
        """Busy worker-seconds inside the measurement window."""
        return self.busy_bins.total

    def queue_length(self) -> int:
        return len(self._queue)
