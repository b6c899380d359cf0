"""Retrieval as a service's threads on one core, under Linux's EEVDF scheduler.

:class:`sim.engine.pool.WorkerPool` shares work: ``n`` searches in service each
run at ``1 / n`` of the core.  A real search service is an event loop thread
(parsing each request, writing each answer) and ``workers`` search threads,
all on the cores the service is pinned to, and the kernel does not share
work: it runs one thread at a time for a slice and decides who is next.  On
the project's 2-core VM (one core for the service) that difference is what
the shared pool got wrong: a search that started alone absorbs a newcomer's
whole search before the newcomer runs, and an answer waits behind a running
search (README, "Threads on one core, scheduled" and "The scheduled pool").

This pool schedules the threads themselves, as Linux 6.6+ does with equal
weights (EEVDF, ``kernel/sched/fair.c``):

* each thread on the run queue has a virtual runtime ``v`` (its CPU time,
  all weights equal) and a virtual deadline ``d = v + slice``;
* a thread is *eligible* when ``v`` is at most the queue's mean ``V``; the
  eligible thread with the earliest deadline runs;
* the running thread's deadline is renewed (``d = v + slice``) at the first
  timer tick after ``v`` passed it, and the choice is made again then;
  nothing else preempts it but a waking thread that now wins the choice;
* a waking thread is placed at ``v = V`` (its lag is not kept across sleep);
* a thread that sleeps ahead of ``V`` (negative lag) stays on the queue,
  counting in ``V``, until it would be picked (the kernel's DELAY_DEQUEUE);
* no run-to-parity protection (the choice at a tick or a wake-up is made
  afresh).

A request's way through it: half the time off the service's cores
(``off_core_s``: the client and the wire), the event loop's parse (half of
``loop_cpu_s``), a free search thread (or the FIFO queue for one), the search
(the sampled time alone less ``loop_cpu_s`` and ``off_core_s``: the probe's
searches are whole requests alone), the event loop's answer (the other half),
the other half off the core.  A request that arrives while the core is idle
does ``wakeup_s`` more search work (as in ``WorkerPool``), and searches in
progress at once are each ``contention(m)`` slower than alone (memory and
caches; measured at 1.0 on one core).

These rules are the ones that fitted live runs on that VM (README, "The
scheduled pool": the three loads of five earlier ``make verify`` runs
re-simulated, two runs predicted with it, and the ablations: the loop off the
core, run-to-parity, other slices and ticks each moved the tails 7-25 %).
It models one core; with more, Linux keeps a queue per core and balances
them, which is not modelled (the schema refuses it).

Hand-computed (``tests/test_engine_sched.py``): one request alone with loop
CPU 1 ms, off-core 0.5 ms and a 4-ms search takes ``0.25 + 0.5 + 4 + 0.5 +
0.25 = 5.5`` ms.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from sim.engine.clock import later
from sim.engine.records import Bins
from sim.physics.sharing import contention_at, wakeup_after

if TYPE_CHECKING:
    from sim.spec.schema import SchedulerSpec

_EPS = 1e-12


class _Thread:
    """One schedulable thread: the event loop (``tasks``) or a search thread (``job``)."""

    __slots__ = ("d", "delayed", "job", "left", "on_rq", "tasks", "v")

    def __init__(self) -> None:
        self.v = 0.0  # virtual runtime, s
        self.d = 0.0  # virtual deadline, s
        self.on_rq = False
        self.delayed = False  # asleep but still queued (negative lag)
        self.left = 0.0  # CPU time left of the piece of work in hand, s (a search's: work-alone)
        self.job: tuple[Callable[[Any], None], Any] | None = None  # a search thread's request
        self.tasks: deque[tuple[bool, Callable[[Any], None], Any]] = deque()  # the loop's: (parse?, cb, arg)


class SchedulerPool:
    """``workers`` search threads and one event loop on one core; the interface of
    :class:`sim.engine.pool.WorkerPool` (``acquire``, ``serve``, ``release``).

    ``acquire(then, arg)``: the request leaves the client; ``then(arg)`` runs when a search
    thread takes it (after the way in and the loop's parse, and any queue).  ``serve(work_s,
    done, arg)``, called from ``then``: ``work_s`` is the request's time alone;
    ``done(arg)`` runs when its answer is back at the client.
    """

    __slots__ = (
        "_armed",
        "_assign",
        "_curr",
        "_idle_since",
        "_loop",
        "_queue",
        "_rq",
        "_searching",
        "_t",
        "_threads",
        "_version",
        "busy",
        "busy_bins",
        "contention",
        "env",
        "loop_cpu_s",
        "off_core_s",
        "slice_s",
        "tick_phase_s",
        "tick_s",
        "wakeup_s",
        "workers",
    )

    def __init__(
        self,
        env: simpy.Environment,
        workers: int,
        window: tuple[float, float],
        loop_cpu_s: float,
        off_core_s: float,
        slice_s: float,
        tick_s: float,
        rng: np.random.Generator,
        contention: Sequence[float] = (),
        wakeup_s: float | Sequence[tuple[float, float]] = 0.0,
    ):
        self.env = env
        self.workers = workers
        self.loop_cpu_s, self.off_core_s = loop_cpu_s, off_core_s
        self.slice_s, self.tick_s = slice_s, tick_s
        self.tick_phase_s = float(rng.uniform(0.0, tick_s))  # where the timer ticks fall
        # slowdown of a search with m searches in progress at once, m = 0..workers
        self.contention = [1.0] + [contention_at(m, contention) for m in range(1, workers + 1)]
        self.wakeup_s = wakeup_s
        self.busy = 0  # search threads holding a request
        self.busy_bins = Bins(*window)
        self._loop = _Thread()
        self._threads = [_Thread() for _ in range(workers)]
        self._rq: list[_Thread] = []
        self._curr: _Thread | None = None
        self._queue: deque[tuple[Callable[[Any], None], Any, float]] = deque()  # waiting for a thread
        self._assign: tuple[_Thread, float] | None = None  # the thread (and wake-up work) serve() gets
        self._searching = 0  # search threads with a search in progress
        self._t = 0.0  # when the running thread's time was last counted
        self._version = 0  # the armed timer that is still valid
        self._armed: tuple[_Thread, float, bool] | None = None  # its thread, time, and whether a tick
        self._idle_since = -math.inf

    # -- the request's path -------------------------------------------------------------

    def acquire(self, then: Callable[[Any], None], arg: Any) -> None:
        later(self.env, self.off_core_s / 2, self._arrive, (then, arg))

    def serve(self, work_s: float, done: Callable[[Any], None], arg: Any) -> None:
        assert self._assign is not None, "serve() is called from the then() that acquire() ran"
        x, wake = self._assign
        self._assign = None
        x.job = (done, arg)
        x.left = max(0.0, work_s - self.loop_cpu_s - self.off_core_s) + wake
        self._searching += 1
        if x is not self._curr and not (x.on_rq and not x.delayed):
            self._wakeup(x)

    def release(self, start_s: float, end_s: float) -> None:
        self.busy_bins.add(start_s, end_s, end_s - start_s)

    @property
    def busy_s(self) -> float:
        """Busy thread-seconds inside the measurement window."""
        return self.busy_bins.total

    def queue_length(self) -> int:
        return len(self._queue)

    def _arrive(self, item: tuple[Callable[[Any], None], Any]) -> None:
        self._account()
        wake = 0.0
        if self._curr is None and self.wakeup_s:
            wake = wakeup_after(self.wakeup_s, self.env.now - self._idle_since)
        self._give_loop(True, item[0], (item[1], wake))
        self._arm()

    def _take(self, x: _Thread, then: Callable[[Any], None], arg: Any, wake: float) -> None:
        """Search thread ``x`` takes a request: ``then(arg)`` calls :meth:`serve`."""
        self.busy += 1
        self._assign = (x, wake)
        then(arg)

    def _give_loop(self, parse: bool, cb: Callable[[Any], None], arg: Any) -> None:
        e = self._loop
        idle = not e.tasks
        e.tasks.append((parse, cb, arg))
        if idle:
            e.left = self.loop_cpu_s / 2
            self._wakeup(e)

    # -- the scheduler ------------------------------------------------------------------

    def _factor(self, x: _Thread) -> float:
        return 1.0 if x is self._loop else self.contention[self._searching]

    def _account(self) -> None:
        """Charge the running thread for the time since the last count."""
        now = self.env.now
        x = self._curr
        if x is not None and now > self._t:
            dt = now - self._t
            x.v += dt
            x.left -= dt / self._factor(x)
        self._t = now

    def _mean_v(self) -> float:
        rq = self._rq
        if rq:
            total = 0.0
            for x in rq:
                total += x.v
            return total / len(rq)
        return self._curr.v if self._curr is not None else 0.0

    def _pick(self) -> _Thread | None:
        rq = self._rq
        if not rq:
            return None
        vv = self._mean_v() + _EPS
        curr = self._curr
        best = None
        for x in rq:  # in the order they woke; the running thread loses a tie (the kernel's pick_eevdf)
            if x.v <= vv and (best is None or x.d < best.d - _EPS or (best is curr and x.d <= best.d + _EPS)):
                best = x
        return best if best is not None else min(rq, key=lambda x: x.d)

    def _switch(self) -> None:
        while True:
            n = self._pick()
            if n is not None and n.delayed:  # a sleeper's delayed dequeue completes
                self._rq.remove(n)
                n.on_rq = n.delayed = False
                continue
            break
        if n is not None and n.v >= n.d:
            n.d = n.v + self.slice_s
        self._curr = n

    def _wakeup(self, x: _Thread) -> None:
        if x.on_rq:
            x.delayed = False
        else:
            x.v = self._mean_v()
            x.d = x.v + self.slice_s
            x.on_rq = True
            self._rq.append(x)
        if self._curr is None or self._pick() is not self._curr:
            self._switch()

    def _sleep(self, x: _Thread) -> None:
        if x.v > self._mean_v():  # negative lag: stays queued until picked
            x.delayed = True
        else:
            self._rq.remove(x)
            x.on_rq = False
        if self._curr is x:
            self._curr = None
        self._switch()

    def _arm(self) -> None:
        """One timer, for the running thread's end of work or for the tick that renews its
        deadline, whichever comes first; timers armed before are void, unless this is the
        same one (a thread running on through an event that did not touch it)."""
        x = self._curr
        if x is None:
            if self._armed is not None:
                self._version += 1
                self._armed = None
            return
        now = self.env.now
        t_done = now + max(0.0, x.left) * self._factor(x)
        t_due = now + max(0.0, x.d - x.v)
        tick, phase = self.tick_s, self.tick_phase_s
        t_tick = phase + math.ceil((t_due - phase) / tick - 1e-9) * tick
        is_tick = t_tick < t_done
        t = max(now, t_tick) if is_tick else t_done
        armed = self._armed
        if armed is not None and armed[0] is x and armed[2] == is_tick and abs(armed[1] - t) <= _EPS:
            return
        self._version += 1
        self._armed = (x, t, is_tick)
        later(self.env, t - now, self._tick if is_tick else self._done, self._version)

    def _fired(self, version: int) -> _Thread | None:
        """The running thread, its time counted, if the timer of ``version`` is still valid."""
        if version != self._version:
            return None
        self._armed = None
        self._account()
        assert self._curr is not None
        return self._curr

    def _tick(self, version: int) -> None:
        x = self._fired(version)
        if x is None:
            return
        if x.v >= x.d - 1e-9:
            x.d = x.v + self.slice_s
            if sum(1 for y in self._rq if not y.delayed) > 1 and self._pick() is not x:
                self._switch()
        self._arm()

    def _done(self, version: int) -> None:
        x = self._fired(version)
        if x is None:
            return
        x.left = 0.0
        if x is self._loop:
            parse, cb, arg = x.tasks.popleft()
            if parse:  # to a free search thread, or the queue
                item, wake = arg
                free = next((t for t in self._threads if t.job is None), None)
                if free is not None:
                    self._take(free, cb, item, wake)
                else:
                    self._queue.append((cb, item, wake))
            else:  # the answer leaves
                later(self.env, self.off_core_s / 2, cb, arg)
            if x.tasks:
                x.left = self.loop_cpu_s / 2  # each of its pieces: half the loop's CPU
            else:
                self._sleep(x)
        else:
            assert x.job is not None
            done, arg = x.job
            x.job = None
            self._searching -= 1
            self.busy -= 1
            if self._queue:
                then, item, wake = self._queue.popleft()
                self._take(x, then, item, wake)
            else:
                self._sleep(x)
            self._give_loop(False, done, arg)
        if self._curr is None:
            self._idle_since = self.env.now
        self._arm()


def scheduler_pool(
    env: simpy.Environment,
    workers: int,
    window: tuple[float, float],
    spec: SchedulerSpec,
    rng: np.random.Generator,
    contention: Sequence[float] = (),
    wakeup_s: float | Sequence[tuple[float, float]] = 0.0,
) -> SchedulerPool:
    """The pool ``retrieval.scheduler`` (``spec``, in ms) asks for: the scenario's, or verify's
    pair model's."""
    return SchedulerPool(
        env,
        workers,
        window,
        spec.loop_cpu_ms / 1e3,
        spec.off_core_ms / 1e3,
        spec.slice_ms / 1e3,
        spec.tick_ms / 1e3,
        rng,
        contention,
        wakeup_s,
    )
