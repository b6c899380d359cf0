"""The scheduled retrieval pool (sim.engine.sched): hand-computed timelines of an event loop
and search threads on one core, its equivalence with the plain pool where nothing is
scheduled, its scenario keys' one-line errors, and the host figures verify reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import simpy

from sim.engine.sched import SchedulerPool
from sim.run.sweep import simulate
from sim.spec.scenario import load_scenario
from sim.verify.host import base_slice_ms, config_hz
from tests.helpers import invoke

SMALL = Path(__file__).parent / "data" / "rag_small.yaml"


def _latencies(
    sends_ms, alone_ms, loop_ms=1.0, off_ms=0.5, workers=2, slice_ms=1.5, tick_ms=4.0, contention=(), wake_ms=0.0
):
    """Requests sent at ``sends_ms``, each ``alone_ms`` alone; ticks at 0, tick_ms, ...: ms."""
    env = simpy.Environment()
    pool = SchedulerPool(
        env,
        workers,
        (0.0, 1e9),
        loop_ms / 1e3,
        off_ms / 1e3,
        slice_ms / 1e3,
        tick_ms / 1e3,
        np.random.default_rng(0),
        contention,
        wake_ms / 1e3,
    )
    pool.tick_phase_s = 0.0
    got: dict[int, float] = {}

    def one(i: int):
        yield env.timeout(sends_ms[i] / 1e3)
        t0, done = env.now, env.event()
        pool.acquire(lambda a: pool.serve(alone_ms / 1e3, lambda _a: done.succeed(), a), i)
        yield done
        pool.release(t0, env.now)
        got[i] = (env.now - t0) * 1e3

    for i in range(len(sends_ms)):
        env.process(one(i))
    env.run()
    return [got[i] for i in range(len(sends_ms))]


def test_a_request_alone_is_its_phases_in_a_row():
    """Loop CPU 1 ms, 0.5 ms off the core, 5.5 ms alone: the search is 4 ms; 0.25 in, 0.5
    parse, 4 search, 0.5 answer, 0.25 out = 5.5.  A 0.5-ms wake-up (the core was idle) is
    0.5 ms more search: 6.0."""
    assert _latencies([0.0], 5.5) == pytest.approx([5.5])
    assert _latencies([0.0], 5.5, wake_ms=0.5) == pytest.approx([6.0])


def test_two_requests_sent_together_as_hand_computed():
    """Both arrive at 0.25.  The loop parses the first (0.25-0.75, v 0.5); thread S0 wakes at
    the mean (v 0.5, deadline 2.0) and the loop, deadline 1.5, runs on: the second's parse
    (0.75-1.25).  S1 wakes at the mean 0.75 (deadline 2.25); S0 (v 0.5, deadline 2.0) is
    eligible and earliest and runs from 1.25; the loop, ahead of the mean, sleeps queued.
    At the 4-ms tick S0 (v 3.25) is past its deadline: renewed to 4.75, and the earliest
    eligible is now the queued loop (dequeued, nothing to do) and then S1 (v 0.75), which
    runs from 4 to its end at 8.  S0's last 1.25 ms then take it to 9.25; the loop answers
    the second (9.25-9.75, out at 10.0: 10.0 after it was sent) and the first (9.75-10.25,
    out at 10.5)."""
    assert _latencies([0.0, 0.0], 5.5) == pytest.approx([10.5, 10.0])


def test_two_requests_2_ms_apart_as_hand_computed():
    """S0 runs from 0.75 (deadline reached at 2.25).  The second arrives at 2.25: the loop
    wakes at S0's v (2.0) with deadline 3.5, but S0's deadline 2.0 is earlier, and not
    renewed until the 4-ms tick; then the loop parses (4.0-4.5), S1 wakes at the mean 3.125
    and runs from 4.5 to the 8-ms tick (v 6.625, renewed to 8.125); S0 (v 3.75) runs its
    last 0.75 ms to 8.75.  The loop wakes for the first's answer at S1's v with S1's very
    deadline, and the running thread loses a tie: answer 8.75-9.25, out at 9.5.  S1's last
    0.5 ms end at 9.75, the second's answer 9.75-10.25, out at 10.5: 8.5 after it was sent."""
    assert _latencies([0.0, 2.0], 5.5) == pytest.approx([9.5, 8.5])


def test_one_thread_and_no_loop_is_a_fifo_queue():
    """One search thread, no loop CPU, nothing off the core: three 4-ms searches sent at
    once end at 4, 8 and 12 (the queue is first come, first served)."""
    assert _latencies([0.0, 0.0, 0.0], 4.0, loop_ms=0.0, off_ms=0.0, workers=1) == pytest.approx([4.0, 8.0, 12.0])


def test_contention_slows_only_searches_in_progress_together():
    """Two 4-ms searches sent together, no loop CPU or off-core time, a 1-ms slice and tick,
    each search twice as slow while both are in progress.  S0 runs alone 0-1 (3 ms of work
    left); from then the threads alternate at every tick, each slice doing 0.5 ms of work: S0
    ends at 13 (6 shared slices), S1 has 1 ms left, run alone 13-14.  The first's answer
    wakes the loop behind S1's earlier deadline and leaves with the second's: 14 and 14.
    Without contention S0 ends at 7 and S1 at 8, and the first's answer again waits: 8, 8."""
    two = _latencies([0.0, 0.0], 4.0, loop_ms=0.0, off_ms=0.0, slice_ms=1.0, tick_ms=1.0, contention=(1.0, 2.0))
    assert two == pytest.approx([14.0, 14.0])
    assert _latencies([0.0, 0.0], 4.0, loop_ms=0.0, off_ms=0.0, slice_ms=1.0, tick_ms=1.0) == pytest.approx([8.0, 8.0])


def _small(**retrieval):
    over = {
        "llm.enabled": False,
        "cache.enabled": False,
        "run.duration_s": 60,
        "run.warmup_s": 5,
        "run.replications": 2,
        "run.target_precision": None,
        "workload.mode": "closed",
        "workload.users": 3,
        "workload.think_s": {"dist": "exponential", "mean": 0.02},
        "retrieval.service_ms": {"dist": "lognormal", "mean": 4.0, "cv": 0.3},
    }
    return load_scenario(SMALL, {**over, **{f"retrieval.{k}": v for k, v in retrieval.items()}})


def test_one_user_has_nothing_to_schedule_so_the_pools_agree_exactly():
    """One closed-loop user: a request never meets another, so its way through the loop and
    a thread is its time alone, as in the plain pool: every percentile is the plain pool's.
    (With two users they differ: an answer waits for the loop's turn on the core.)"""
    sched = {"loop_cpu_ms": 0.8, "off_core_ms": 0.3}
    for users, same in ((1, True), (2, False)):
        plain = simulate(_small(workers=2, cpu_cores=1), {"workload.users": users}, jobs=1)
        got = simulate(_small(workers=2, cpu_cores=1, scheduler=sched), {"workload.users": users}, jobs=1)
        a, b = (x.points[0].summary.to_dict()["metrics"]["e2e_ms"] for x in (plain, got))
        assert all((b[st] == pytest.approx(a[st], rel=1e-9)) == same for st in ("p50", "p95", "mean")), (a, b)


def test_the_scheduled_pool_runs_in_a_scenario_and_the_loop_costs_time():
    """Two threads on one core with a 0.8-ms loop and 0.3 ms off the core, against the same
    alone time as shared work: the run completes, and with the loop's CPU queueing beside
    the searches the median is above the alone time."""
    sched = {"loop_cpu_ms": 0.8, "off_core_ms": 0.3}
    m = simulate(_small(workers=2, cpu_cores=1, scheduler=sched), {}, jobs=1).points[0].summary.to_dict()
    assert m["metrics"]["e2e_ms"]["n"] > 1000
    assert m["metrics"]["e2e_ms"]["p50"] > 4.0


@pytest.mark.parametrize(
    "retrieval, needle",
    [
        ("{scheduler: {loop_cpu_ms: 0.5}}", "retrieval: scheduler: needs cpu_cores: 1, got none"),
        ("{cpu_cores: 2, scheduler: {loop_cpu_ms: 0.5}}", "needs cpu_cores: 1, got 2"),
        ("{cpu_cores: 1, scheduler: {loop_cpu_ms: 0.5}, handback_ms: 1.0}", "not with handback_ms"),
        ("{cpu_cores: 1, scheduler: {loop_cpu_ms: -1}}", "retrieval.scheduler.loop_cpu_ms"),
        ("{cpu_cores: 1, scheduler: {loop_cpu_ms: 1, tick_ms: 0}}", "retrieval.scheduler.tick_ms"),
        ("{cpu_cores: 1, scheduler: {off_core_ms: 1}}", "retrieval.scheduler.loop_cpu_ms"),
        ("{cpu_cores: 1, scheduler: {loop_cpu_ms: 1, slices: 2}}", "retrieval.scheduler.slices"),
    ],
)
def test_bad_scheduler_keys_are_one_line_exit_2(tmp_path, retrieval, needle):
    f = tmp_path / "s.yaml"
    f.write_text(f"extends: {SMALL}\nretrieval: {retrieval}\n")
    r = invoke("run", str(f), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and needle in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    assert not (tmp_path / "out").exists()


def test_the_hosts_slice_and_tick_by_hand():
    """0.75 ms x (1 + log2 of the CPUs, at most 8); CONFIG_HZ from a kernel config's text."""
    assert [base_slice_ms(c) for c in (1, 2, 3, 4, 8, 64)] == [0.75, 1.5, 1.5, 2.25, 3.0, 3.0]
    assert config_hz(["# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"]) == 250
    assert config_hz(["CONFIG_HZ=1000"]) == 1000
    assert config_hz(["CONFIG_NO_HZ=y\n"]) is None and config_hz([]) is None


def test_estimate_counts_only_the_scheduled_services_time_on_its_core():
    """5 ms alone, 1 ms of it off the core, two threads on one core: the core's demand is
    4 ms a search, so it saturates at 250 searches/s (200 as shared work)."""
    from sim.analysis.estimate import estimate  # deferred: only this test needs it

    base: dict = {"llm": {"enabled": False}, "cache": {"enabled": False}}
    base["workload"] = {"mode": "open", "rate_per_s": 10}
    base["retrieval"] = {"service_ms": {"dist": "constant", "value": 5}, "workers": 2, "cpu_cores": 1}
    assert estimate(load_scenario(base))["saturation"]["rate_per_s"] == pytest.approx(200.0)
    base["retrieval"]["scheduler"] = {"loop_cpu_ms": 0.5, "off_core_ms": 1.0}
    got = estimate(load_scenario(base))
    assert got["demand_ms"]["retrieval"] == pytest.approx(4.0)
    assert got["saturation"]["rate_per_s"] == pytest.approx(250.0)
