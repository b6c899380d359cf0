"""Searches that slow each other down (sim.physics.sharing, the pool in sim.engine.pool):
the formulas by hand, the pool's exact re-scaling on hand-made timelines, processor
sharing against its closed form, and contention read from a calibration file."""

from __future__ import annotations

from pathlib import Path

import pytest
import simpy

import sim
from sim import distributions as D
from sim.engine.clock import later
from sim.engine.pool import WorkerPool
from sim.physics.retrieval import load_calibration
from sim.physics.sharing import (
    check_contention,
    contention_at,
    contention_from_stretch,
    stretch_factors,
    wakeup_after,
)
from sim.spec.scenario import load_scenario
from tests.helpers import invoke

SMALL = Path(__file__).parent / "data" / "rag_small.yaml"


def test_contention_and_stretch_by_hand():
    assert [contention_at(m, (1.0, 1.2)) for m in (1, 2, 3, 4)] == pytest.approx([1.0, 1.2, 1.4, 1.6])
    assert contention_at(3, (1.0,)) == 1.0 and contention_at(5, ()) == 1.0
    assert contention_at(4, (1.0, 1.3, 1.2)) == pytest.approx(1.2)  # a falling last segment is held flat
    assert stretch_factors(4, 2) == [1.0, 1.0, 1.0, 1.5, 2.0]
    assert stretch_factors(4, 2, (1.0, 1.2)) == pytest.approx([1.0, 1.0, 1.2, 1.8, 2.4])
    assert stretch_factors(3, None, (1.0, 1.1)) == pytest.approx([1.0, 1.0, 1.1, 1.2])
    # two threads on one core taking 2.3x alone: 15 % beyond the time slices, then held
    assert stretch_factors(2, 1, (1.0, 1.15)) == pytest.approx([1.0, 1.0, 2.3])
    assert stretch_factors(3, 1, (1.0, 1.15)) == pytest.approx([1.0, 1.0, 2.3, 3.45])
    assert contention_from_stretch((1.0, 2.3), 1) == pytest.approx((1.0, 1.15))
    assert contention_from_stretch((1.0, 1.1, 0.9), 4) == pytest.approx((1.0, 1.1, 1.0))  # noise below 1 -> 1
    with pytest.raises(ValueError):
        contention_at(0, (1.0,))
    assert check_contention((1.0, 1.5), "k") is None
    assert "k[0] must be 1" in check_contention((1.2,), "k")
    assert "must be >= 1" in check_contention((1.0, 0.8), "k")


def _timeline(workers, cores, contention, jobs, wakeup_s=0.0):
    """Run (start_s, work_s) searches through a pool; return each one's finish time."""
    env = simpy.Environment()
    pool = WorkerPool(env, workers, cores, (0.0, 1e9), contention, wakeup_s)
    done: dict[int, float] = {}

    def submit(i, work):
        def got(_):
            t0 = env.now

            def finished(_):
                done[i] = env.now
                pool.release(t0, env.now)

            pool.serve(work, finished, i)

        pool.acquire(got, i)

    def arrive(i, at, work):
        yield env.timeout(at)
        submit(i, work)

    for i, (at, work) in enumerate(jobs):
        env.process(arrive(i, at, work))
    env.run()
    return [done[i] for i in range(len(jobs))]


def test_pool_rescales_remaining_work_when_the_number_running_changes():
    # two 1 s searches on one core, the second at 0.5 s: alone to 0.5 (0.5 left), then half
    # speed each: the first ends at 1.5, the second has 0.5 left and ends alone at 2.0
    assert _timeline(2, 1, (), [(0, 1.0), (0.5, 1.0)]) == pytest.approx([1.5, 2.0])
    # two cores, contention 1.5 with two at once: the first runs alone to 0.5, then both at 1/1.5:
    # its 0.5 left takes 0.75 (ends 1.25); the second drained 0.5 and ends alone at 1.75
    assert _timeline(2, 2, (1.0, 1.5), [(0, 1.0), (0.5, 1.0)]) == pytest.approx([1.25, 1.75])
    # no sharing at all: plain timeouts
    assert _timeline(2, 2, (), [(0, 1.0), (0.5, 1.0)]) == pytest.approx([1.0, 1.5])
    # a third search queues for a worker (2 workers): it starts when the first leaves at 1.5,
    # runs beside the second (0.5 left at half speed: to 2.5) then alone (1.0 - 0.5 = 0.5: to 3.0)
    assert _timeline(2, 1, (), [(0, 1.0), (0.5, 1.0), (0.6, 1.0)]) == pytest.approx([1.5, 2.5, 3.0])


def test_the_first_search_after_idle_pays_the_wakeup():
    # one worker: A finds the pool idle (1 + 0.1), B queued behind it is handed over (no wake-up),
    # C comes after an idle spell (again + 0.1)
    assert _timeline(1, 1, (), [(0, 1.0), (0.5, 1.0), (5.0, 1.0)], 0.1) == pytest.approx([1.1, 2.1, 6.1])
    # two workers: B starts while A runs, so the pool was not idle
    assert _timeline(2, 2, (), [(0, 1.0), (0.5, 1.0)], 0.1) == pytest.approx([1.1, 1.5])
    # the wake-up grows with the idle time: [(0.5 s, 0), (2 s, 0.3 s)]: A after a long idle pays 0.3
    # (ends 1.3); B at 2.0 finds the pool idle for 0.7 s: 0.3 x 0.2 / 1.5 = 0.04 (ends 3.04)
    pts = [(0.5, 0.0), (2.0, 0.3)]
    assert _timeline(1, 1, (), [(0, 1.0), (2.0, 1.0)], pts) == pytest.approx([1.3, 3.04])
    assert wakeup_after(pts, 0.1) == 0.0 and wakeup_after(pts, 5.0) == 0.3 and wakeup_after(0.2, 9.0) == 0.2
    # below the first point, linear from no wake-up at no idle time: 0.4 ms x 0.5 / 1 = 0.2 ms
    assert wakeup_after([(0.001, 0.0004), (0.03, 0.0012)], 0.0005) == pytest.approx(0.0002)
    assert wakeup_after([(0.001, 0.0004), (0.03, 0.0012)], 0.0155) == pytest.approx(0.0008)
    # with sharing: A alone with its wake-up (1.1 of work), B joins at 0.5 on the one core
    # A: 0.5 done alone, 0.6 left at half speed -> 1.2 more (1.7); B: 0.6 done by then, 0.4 alone -> 2.1
    assert _timeline(2, 1, (), [(0, 1.0), (0.5, 1.0)], 0.1) == pytest.approx([1.7, 2.1])


def _ps_scenario(service: dict, rho: float, seed: int) -> dict:
    return {
        "name": "ps",
        "run": {"duration_s": 400, "warmup_s": 20, "replications": 6, "seed": seed, "confidence": 0.99},
        "workload": {"mode": "open", "rate_per_s": rho / 0.010},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        # many workers on one core: a processor-sharing server (M/G/1-PS)
        "retrieval": {"service_ms": service, "workers": 200, "cpu_cores": 1},
    }


@pytest.mark.parametrize("service", [{"dist": "constant", "value": 10}, {"dist": "exponential", "mean": 10}])
def test_many_workers_on_one_core_is_processor_sharing(service):
    """M/G/1-PS: mean response E[S] / (1 - rho) whatever the service distribution (10 ms at
    rho 0.6: 25 ms).  The old start-time approximation gave a constant service 10 ms x the
    number busy at its start, which is not this."""
    res = sim.simulate(_ps_scenario(service, 0.6, seed=3), jobs=1)
    m = res.points[0].summary["metrics"]["retrieval_ms"]
    lo, hi = m["ci"]["mean"]
    assert lo <= 25.0 <= hi, (m["mean"], lo, hi)
    assert m["mean"] == pytest.approx(25.0, rel=0.06)


def test_contention_from_the_shipped_calibration():
    from sim.engine.pipeline import retrieval_service_distribution  # deferred: the engine, for this check only

    cal = load_calibration()
    knobs = dict(docs=50_000, dim=768, top_k=5, ef_search=50, nprobe=None)
    c = cal.contention("hnsw", **knobs)
    one = cal.profile("hnsw", workers=1, **knobs).mean_ms
    two = cal.profile("hnsw", workers=2, **knobs).mean_ms
    assert c == pytest.approx((1.0, max(1.0, two / one)))
    # a scenario on the calibration: the 1-thread record, slowed by the file's contention
    scn = {
        "workload": {"mode": "open", "rate_per_s": 1},
        "llm": {"enabled": False},
        "retrieval": {"index": "hnsw", "ef_search": 50, "dim": 768, "workers": 4},
    }
    dist, info = retrieval_service_distribution(load_scenario(scn))
    assert info["contention"] == pytest.approx(c)
    assert "threads=1" in info["description"] and "contention" in info["description"]
    alone = cal.profile("hnsw", workers=1, **knobs)
    assert dist.mean * 1e3 == pytest.approx(D.Quantile(alone.probs, alone.values_ms).mean, rel=1e-9)
    # the scenario's own list wins over the file's
    scn["retrieval"]["contention"] = [1, 2]
    assert retrieval_service_distribution(load_scenario(scn))[1]["contention"] == (1.0, 2.0)


def test_bad_contention_is_one_line_exit_2(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("extends: " + str(SMALL) + "\nretrieval: {contention: [1.5, 2]}\n")
    r = invoke("run", str(f))
    assert r.exit_code == 2 and "contention[0] must be 1" in r.stderr and r.stderr.strip().count("\n") == 0


def test_estimate_counts_contention_in_retrievals_capacity():
    from sim.analysis.estimate import estimate  # deferred: only this test needs it

    base: dict = {"llm": {"enabled": False}, "cache": {"enabled": False}}
    base["workload"] = {"mode": "open", "rate_per_s": 10}
    base["retrieval"] = {"service_ms": {"dist": "constant", "value": 10}, "workers": 2}
    plain = estimate(load_scenario(base))
    base["retrieval"]["contention"] = [1, 1.25]
    slowed = estimate(load_scenario(base))
    # 2 workers, each search 1.25x slower with both busy: 2 / (10 ms x 1.25) = 160 searches/s
    assert plain["saturation"]["rate_per_s"] == pytest.approx(200.0)
    assert slowed["saturation"]["rate_per_s"] == pytest.approx(160.0)
    assert slowed["demand_ms"]["retrieval"] == pytest.approx(12.5)


@pytest.mark.parametrize(
    "value, msg",
    [
        ("[[10, 0.5], [5, 0.2]]", "idle_ms > 0 rising"),
        ("[[0, 0.5]]", "retrieval.wakeup_ms: expected a number of ms >= 0"),
        ("-1", "retrieval.wakeup_ms"),
    ],
)
def test_bad_wakeup_is_one_line_exit_2(tmp_path, value, msg):
    f = tmp_path / "s.yaml"
    f.write_text("extends: " + str(SMALL) + "\nretrieval: {wakeup_ms: " + value + "}\n")
    r = invoke("run", str(f))
    assert r.exit_code == 2 and msg in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def _timeline_handback(jobs, handback_s):
    """Finish times of ``jobs`` [(arrival, work-alone)] on 2 workers sharing 1 core, with a
    constant hand-back delay."""
    env = simpy.Environment()
    pool = WorkerPool(env, 2, 1, (0.0, 1e9), (), 0.0, lambda: handback_s)
    ends: dict[int, float] = {}

    def finished(i):
        ends[i] = env.now
        pool.release(0.0, env.now)

    def start(i):
        pool.serve(jobs[i][1], finished, i)

    for i, (t, _w) in enumerate(jobs):
        later(env, t, lambda i: pool.acquire(start, i), i)
    env.run()
    return [ends[i] for i in range(len(jobs))]


def test_an_answer_waits_for_the_core_a_running_search_holds():
    """Hand-computed, 2 workers on 1 core, hand-back 0.5 s: A (1 s of work) and B (2 s) from
    t = 0 share the core: A's work is done at 2.0, but B still holds the core, so A's answer
    leaves at 2.5; B runs alone from 2.0 (1 s left): done at 3.0 with nobody beside it, no
    wait.  Without the hand-back A leaves at 2.0; alone, nothing ever waits."""
    assert _timeline_handback([(0.0, 1.0), (0.0, 2.0)], 0.5) == pytest.approx([2.5, 3.0])
    assert _timeline_handback([(0.0, 1.0), (0.0, 2.0)], 0.0) == pytest.approx([2.0, 3.0])
    assert _timeline_handback([(0.0, 1.0), (5.0, 1.0)], 0.5) == pytest.approx([1.0, 6.0])


def test_bad_handback_is_one_line_exit_2(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("extends: " + str(SMALL) + "\nretrieval: {handback_ms: {dist: exponential, mean: -2}}\n")
    r = invoke("run", str(f))
    assert r.exit_code == 2 and "retrieval.handback_ms" in r.stderr and r.stderr.strip().count("\n") == 0, r.output
