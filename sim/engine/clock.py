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
events against ``Timeout``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import heappush
from typing import Any

import simpy
from simpy.events import NORMAL


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
