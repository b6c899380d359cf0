"""Timers for the engine's callbacks, without a SimPy ``Timeout`` per wait.

A request waits about twice (an arrival gap or a think, a search). A
``simpy.Timeout`` per wait (``__init__`` plus ``Environment.schedule``) carrying
a callback object (``__init__`` plus ``__call__``) costs four Python frames.
:func:`later` puts one :class:`Later` straight on the environment's event queue
with the same key a ``Timeout`` gets (time, ``NORMAL`` priority, the next event
id), so the order of events, and every number, is what a Timeout gives; the Later is
its own callback: two frames per wait.

``simpy.Environment.step`` needs of an event only ``callbacks`` (a list it
takes and sets to None) and ``_ok`` (True: a timer never fails); this module
relies on that and on the queue's layout (``_queue``, ``_eid``, ``_now``), which
every simpy 4 release shares; ``tests/test_engine_clock.py`` holds the order of
events against ``Timeout``'s.  :func:`run_until` is ``Environment.run`` with
``step`` written into its loop, held against ``run`` there too.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from heapq import heappop, heappush
from typing import Any

import simpy
from simpy.events import NORMAL, URGENT


class Later:
    """A timer event that calls ``then(arg)`` when it fires."""

    __slots__ = ("arg", "callbacks", "then")
    _ok = True  # read by Environment.step: a timer never fails

    def __init__(self, then: Callable[[Any], object], arg: Any):
        self.then, self.arg = then, arg
        self.callbacks: list[Any] | None = [self]

    def __call__(self, _event: object) -> None:
        self.then(self.arg)


def later(env: simpy.Environment, delay: float, then: Callable[[Any], object], arg: Any = None) -> None:
    """``then(arg)`` after ``delay`` seconds of simulated time (``delay >= 0``)."""
    if delay < 0:
        raise ValueError(f"negative delay {delay}")
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), Later(then, arg)))  # type: ignore[misc]


class Then:
    """Where a SimPy event would stand that nothing waits on but one callback:
    ``succeed(value)`` calls ``then(value)`` at this instant, after what is due now already,
    under the queue key ``Event.succeed`` gives (the time, ``NORMAL``, the next event id):
    one :class:`Later` instead of an event, its scheduling and a callback object."""

    __slots__ = ("env", "then")

    def __init__(self, env: simpy.Environment, then: Callable[[Any], object]):
        self.env, self.then = env, then

    def succeed(self, value: Any = None) -> None:
        later(self.env, 0.0, self.then, value)


def run_until(env: simpy.Environment, until: float) -> None:
    """``env.run(until=until)``: every event due before ``until`` (events at ``until`` itself
    stay on the queue, as SimPy's stop event goes before them), then the clock at ``until``.
    SimPy's ``Environment.step`` is written into the loop (the model spends its run in it):
    pop the next event, set the clock, take the event's callbacks and call them, crash on a
    failed event nobody defused."""
    at = float(until)
    if at <= env._now:
        raise ValueError(f"until ({at}) must be greater than the current simulation time")
    stop = simpy.Event(env)  # what run() schedules: before every other event at `until`
    stop._ok = True
    stop._value = None
    env.schedule(stop, URGENT, at - env._now)
    queue = env._queue
    while True:  # the stop event is on the queue until it is popped
        env._now, _, _, event = heappop(queue)
        if event is stop:
            return
        callbacks, event.callbacks = event.callbacks, None  # type: ignore[assignment]
        for callback in callbacks:
            callback(event)
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc


class Sleep:
    """A timer a SimPy process waits on (``yield sleep(env, delay)``), as it would on
    ``env.timeout(delay)``: a process needs of what it yields only ``callbacks`` (it appends
    its resumption), ``_ok`` and ``_value`` (what ``yield`` returns: None)."""

    __slots__ = ("callbacks",)
    _ok = True
    _value = None

    def __init__(self) -> None:
        self.callbacks: list[Any] | None = []


#: A SimPy process that may also wait on a :class:`Sleep` (a process needs of what it yields only
#: ``callbacks``, ``_ok`` and ``_value``).
Waits = Generator["simpy.Event | Sleep", Any, Any]


def spawn(env: simpy.Environment, process: Waits) -> simpy.Process:
    """``env.process(process)`` for a process that may wait on a :class:`Sleep` (SimPy's stubs
    allow only its own events)."""
    return env.process(process)  # type: ignore[arg-type]


def sleep(env: simpy.Environment, delay: float) -> Sleep:
    """A :class:`Sleep` of ``delay`` seconds (``delay >= 0``), on the queue with the key a
    ``Timeout`` made now would get."""
    if delay < 0:
        raise ValueError(f"negative delay {delay}")
    ev = Sleep()
    heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), ev))  # type: ignore[misc]
    return ev


class Calendar:
    """Timers far ahead wait outside the event queue, in buckets of ``width_s`` seconds.

    A closed workload keeps one think timer per shopper on SimPy's event queue (a binary
    heap): with 100,000 shoppers every event of the run pays ~17 levels of a 100,000-entry
    heap, its entries scattered through memory, where a few thousand due soon would do.
    ``later(delay, then, arg)`` makes the very key :func:`later` makes (the time, ``NORMAL``,
    the next event id, taken now), so the order of events, and every number, is the same;
    only where it waits changes.  A timer due in a bucket not yet opened is appended to that
    bucket; a pump event at ``k * width_s`` pushes bucket ``k + 1`` onto the queue, a whole
    bucket before its first timer is due.  Pumps run while the environment runs: one event
    per ``width_s`` simulated seconds."""

    __slots__ = ("buckets", "env", "next_bucket", "width")

    def __init__(self, env: simpy.Environment, width_s: float):
        if not width_s > 0:
            raise ValueError(f"calendar bucket width {width_s} is not positive")
        self.env, self.width = env, float(width_s)
        self.buckets: dict[int, list[tuple[float, int, int, Later]]] = {}
        k = int(env.now // self.width)
        self.next_bucket = k + 1  # buckets before it go straight onto the queue
        later(env, 0.0, self._pump, k)

    def later(self, delay: float, then: Callable[[Any], object], arg: Any = None) -> None:
        """``then(arg)`` after ``delay`` seconds, exactly as :func:`later` would."""
        if delay < 0:
            raise ValueError(f"negative delay {delay}")
        env = self.env
        t = env._now + delay
        item = (t, NORMAL, next(env._eid), Later(then, arg))
        k = int(t // self.width)
        if k < self.next_bucket:
            heappush(env._queue, item)  # type: ignore[misc]
        else:
            bucket = self.buckets.get(k)
            if bucket is None:
                self.buckets[k] = [item]
            else:
                bucket.append(item)

    def _pump(self, k: int) -> None:
        queue = self.env._queue
        for item in self.buckets.pop(k + 1, ()):
            heappush(queue, item)  # type: ignore[misc]  # a Later among SimPy's Events, as in later()
        self.next_bucket = k + 2
        later(self.env, max(0.0, (k + 1) * self.width - self.env.now), self._pump, k + 1)
