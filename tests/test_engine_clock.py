"""The engine's timers (sim.engine.clock) fire exactly as SimPy Timeouts would."""

from __future__ import annotations

import inspect

import pytest
import simpy
from simpy.events import NORMAL

from sim.engine.clock import Later, later

LAYOUT = (
    "sim/engine/clock.py pushes (time, priority, event id, event) onto Environment._queue, "
    "with ids from Environment._eid and the time from Environment._now"
)


def test_laters_and_timeouts_fire_in_time_then_scheduling_order():
    """Hand-built: equal times fire in the order they were scheduled, whichever kind;
    the clock reads each one's time when it fires."""
    env = simpy.Environment()
    fired: list[tuple[str, float]] = []
    later(env, 2.0, lambda a: fired.append((a, env.now)), "later-2a")
    env.timeout(2.0).callbacks.append(lambda ev: fired.append(("timeout-2", env.now)))
    later(env, 1.0, lambda a: fired.append((a, env.now)), "later-1")
    later(env, 2.0, lambda a: fired.append((a, env.now)), "later-2b")
    env.timeout(0.5).callbacks.append(lambda ev: fired.append(("timeout-0.5", env.now)))
    env.run()
    assert fired == [("timeout-0.5", 0.5), ("later-1", 1.0), ("later-2a", 2.0), ("timeout-2", 2.0), ("later-2b", 2.0)]


def test_a_later_scheduled_from_a_callback_and_run_until():
    env = simpy.Environment()
    seen: list[float] = []

    def tick(n: int) -> None:
        seen.append(env.now)
        if n:
            later(env, 1.5, tick, n - 1)

    later(env, 0.0, tick, 5)
    env.run(until=4.0)
    assert seen == [0.0, 1.5, 3.0]
    env.run(until=10.0)
    assert seen == [0.0, 1.5, 3.0, 4.5, 6.0, 7.5]


def test_a_negative_delay_is_refused():
    with pytest.raises(ValueError):
        later(simpy.Environment(), -1e-9, print)


def test_simpy_keeps_the_event_queue_layout_later_writes_into():
    """The internals sim.engine.clock relies on (simpy is pinned below 5 for them): a
    scheduled event sits on ``Environment._queue``, a heap list, as ``(time, priority, id,
    event)`` with ``id`` drawn from ``Environment._eid``, and ``step`` takes the event's
    ``callbacks`` and reads its ``_ok``.  A release that moves them fails here, by name."""
    env = simpy.Environment(initial_time=1.0)
    why = f"simpy {simpy.__version__} changed its event queue: {LAYOUT}"
    assert isinstance(getattr(env, "_queue", None), list), why
    assert getattr(env, "_now", None) == 1.0, why
    assert isinstance(next(getattr(env, "_eid", iter(())), None), int), why
    timeout = env.timeout(2.5)
    assert len(env._queue) == 1 and isinstance(env._queue[0], tuple) and len(env._queue[0]) == 4, why
    t, priority, eid, event = env._queue[0]
    assert (t, priority, event) == (3.5, NORMAL, timeout) and isinstance(eid, int), why
    later(env, 0.5, print)
    mine = min(env._queue)
    assert mine[:2] == (1.5, NORMAL) and mine[2] == eid + 1 and isinstance(mine[3], Later), why
    step = inspect.getsource(simpy.Environment.step)
    assert "heappop(self._queue)" in step and "event.callbacks" in step and "event._ok" in step, why


def test_a_calendar_fires_its_timers_as_laters_would():
    """Timers through a Calendar (narrow buckets, so most wait in one) fire in the order and at
    the times the same timers fire through later(), mixed with plain timers and Timeouts."""
    import random

    from sim.engine.clock import Calendar

    def run(use_calendar: bool) -> list[tuple[int, float]]:
        env = simpy.Environment()
        rnd = random.Random(7)
        cal = Calendar(env, 0.37) if use_calendar else None
        fired: list[tuple[int, float]] = []

        def fire(i: int) -> None:
            fired.append((i, env.now))
            if len(fired) < 3000:
                # whole-ish delays make exact ties between calendar timers and plain ones
                delay = rnd.choice([0.0, 1.0, 2.5, rnd.expovariate(0.5)])
                if cal is not None and i % 2:
                    cal.later(delay, fire, i + 2)
                else:
                    later(env, delay, fire, i + 2)
                if i % 7 == 0:
                    env.timeout(1.0).callbacks.append(lambda ev, i=i: fired.append((-i, env.now)))

        for i in range(40):
            later(env, rnd.uniform(0, 3), fire, i)
        env.run(until=200.0)
        return fired

    plain, calendared = run(False), run(True)
    assert len(plain) > 3000 and calendared == plain


def test_a_calendar_refuses_what_a_later_refuses():
    from sim.engine.clock import Calendar

    env = simpy.Environment()
    with pytest.raises(ValueError):
        Calendar(env, 0.0)
    with pytest.raises(ValueError):
        Calendar(env, 1.0).later(-1.0, print)


def test_processes_sleeping_wake_as_they_would_on_timeouts():
    """Processes that yield sleep() resume in the order and at the times the same processes
    yielding env.timeout() resume, mixed with laters at equal times; the yield returns None."""
    from sim.engine.clock import sleep

    def run(use_sleep: bool) -> list[tuple[str, float]]:
        env = simpy.Environment()
        seen: list[tuple[str, float]] = []

        def proc(name: str, delays: list[float]):
            for d in delays:
                got = yield (sleep(env, d) if use_sleep else env.timeout(d))
                assert got is None
                seen.append((name, env.now))
                later(env, 0.0, lambda a: seen.append((a, env.now)), f"{name}-later")

        env.process(proc("a", [1.0, 0.5, 0.0, 2.0]))
        env.process(proc("b", [1.5, 0.0, 1.0, 0.5]))
        env.process(proc("c", [0.0, 1.5, 1.5]))
        env.run()
        return seen

    assert run(True) == run(False) and len(run(True)) == 22
    with pytest.raises(ValueError):
        sleep(simpy.Environment(), -1.0)


def test_run_until_processes_what_environment_run_processes():
    """run_until(env, t) fires the same events in the same order as env.run(until=t), leaves
    those at t itself for later (the clock reads t), and a run continued afterwards goes on the
    same; a failed event nobody handles crashes it as it crashes SimPy's run."""
    from sim.engine.clock import run_until, sleep

    def build(seen: list[tuple[str, float]]) -> simpy.Environment:
        env = simpy.Environment()

        def proc(name: str, delays: list[float]):
            for d in delays:
                yield sleep(env, d) if d < 1 else env.timeout(d)
                seen.append((name, env.now))
                later(env, 0.0, lambda a: seen.append((a, env.now)), f"{name}-then")

        env.process(proc("a", [1.0, 0.5, 0.5, 2.0]))  # one due exactly at 2.0, the stop
        env.process(proc("b", [2.0, 0.25, 1.0]))
        later(env, 2.0, lambda a: seen.append((a, env.now)), "at-stop")
        return env

    mine: list[tuple[str, float]] = []
    theirs: list[tuple[str, float]] = []
    env_m, env_t = build(mine), build(theirs)
    run_until(env_m, 2.0)
    env_t.run(until=2.0)
    assert mine == theirs and env_m.now == env_t.now == 2.0 and ("at-stop", 2.0) not in mine
    env_m.run(until=10.0)
    env_t.run(until=10.0)
    assert mine == theirs and ("at-stop", 2.0) in mine and len(mine) == 15

    env = simpy.Environment()
    env.event().fail(ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        run_until(env, 1.0)
    empty = simpy.Environment()
    run_until(empty, 1.0)  # nothing to do: the clock moves on, as with run(until=1.0)
    assert empty.now == 1.0
    with pytest.raises(ValueError):
        run_until(simpy.Environment(initial_time=3.0), 3.0)


def test_a_then_calls_back_where_a_succeeded_event_would():
    """Then.succeed(v) calls back with v at the place on the queue Event.succeed(v) gives its
    callbacks: after what is due at that instant already, before what is scheduled after."""
    from sim.engine.clock import Then

    def run(use_then: bool) -> list[tuple[str, float]]:
        env = simpy.Environment()
        seen: list[tuple[str, float]] = []

        def answer(at: float, name: str) -> None:
            later(env, 0.0, lambda a: seen.append((a, env.now)), f"before-{name}")
            if use_then:
                Then(env, lambda v: seen.append((v, env.now))).succeed(name)
            else:
                ev = env.event()
                ev.callbacks.append(lambda e: seen.append((e.value, env.now)))
                ev.succeed(name)
            later(env, 0.0, lambda a: seen.append((a, env.now)), f"after-{name}")

        for t, name in ((1.0, "x"), (1.0, "y"), (2.5, "z")):
            later(env, t, lambda n, t=t: answer(t, n), name)
        env.run()
        return seen

    assert run(True) == run(False) and len(run(True)) == 9
