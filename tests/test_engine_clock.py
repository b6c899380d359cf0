"""The engine's timers (sim.engine.clock) fire exactly as SimPy Timeouts would."""

from __future__ import annotations

import pytest
import simpy

from sim.engine.clock import later


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
