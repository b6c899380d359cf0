"""The pair check: two searches sent a set time apart, measured alone
(:func:`sim.verify.probes.probe_pairs`) and as capsim's retrieval pool models them from the same
probes a load's prediction uses.  A check of the pool in isolation, not a calibration."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import simpy

from sim.engine.pool import WorkerPool
from sim.engine.sched import SchedulerPool, scheduler_pool
from sim.spec.schema import SchedulerSpec
from sim.spec.target import Target
from sim.verify.probes import (
    PAIR_PAUSE_S,
    probe_pairs,
)
from sim.verify.retrieval_probe import RetrievalProbe, scheduler_for


def pair_check(target: Target, k: int, probe: RetrievalProbe, probe_s: float, progress) -> dict[str, Any]:
    """The pair probe, measured and as the pool models it, for verify.json."""
    assert target.retrieval is not None
    n = max(4, round(40 * min(probe_s, 1.0)))
    rows = probe_pairs(target, k, n=n)
    cores = len(target.retrieval.cores) or None
    sched = scheduler_for(target, RetrievalProbe.phases(probe, None))
    for row in rows:
        first, second = pair_model(probe, target.retrieval.workers, cores, row["apart_ms"], PAIR_PAUSE_S, sched)
        row.update(model_first_ms=first, model_second_ms=second)
    if progress:
        progress(f"retrieval pairs measured alone ({n} per offset); the table's preamble shows them")
    return {"pause_ms": PAIR_PAUSE_S * 1e3, "pairs_each": n, "rows": rows}


def pair_text(row: dict[str, float]) -> str:
    """One offset of the pair probe: measured (modelled) first / second, ms."""
    return (
        f"{row['apart_ms']:.1f} ms apart {row['first_ms']:.2f}/{row['second_ms']:.2f} "
        f"(model {row['model_first_ms']:.2f}/{row['model_second_ms']:.2f})"
    )


def pair_model(
    probe: RetrievalProbe,
    workers: int,
    cpu_cores: int | None,
    apart_ms: float,
    pause_s: float,
    scheduler: dict[str, float] | None = None,
    n: int = 400,
    seed: int = 0,
) -> tuple[float, float]:
    """What capsim's retrieval pool (:class:`sim.engine.pool.WorkerPool`, calibrated from
    ``probe`` as a load's prediction is) says a pair of :func:`~sim.verify.probes.probe_pairs`
    takes: medians of the first's and the second's latency, ms, over ``n`` pairs, each
    after ``pause_s`` idle (so the first pays the wake-up) with searches drawn from the
    one-at-a-time probe and hand-backs from its samples; with ``scheduler``
    (:func:`~sim.verify.retrieval_probe.scheduler_for`'s) the threads on one core instead
    (:class:`sim.engine.sched.SchedulerPool`, no hand-back).

    Hand-computed: searches of 4 ms, two workers on one core, no wake-up or hand-back,
    sent 1 ms apart: the first runs alone for 1 ms, then the two share the core, the first's
    3 ms left take 6 and it ends at 7; the second, 3 ms done by then, ends at 8: 7 and 7."""
    rng = np.random.default_rng(seed)
    env = simpy.Environment()
    back = list(probe.handback_ms)
    wake = [(x / 1e3, y / 1e3) for x, y in probe.wakeup_ms]
    pool: WorkerPool | SchedulerPool
    if scheduler is None:
        pool = WorkerPool(
            env,
            workers,
            cpu_cores,
            (0.0, math.inf),
            probe.contention,
            wake,
            (lambda: float(rng.choice(back)) / 1e3) if back else None,
        )
    else:
        pool = scheduler_pool(env, workers, (0.0, math.inf), SchedulerSpec(**scheduler), rng, probe.contention, wake)
    alone = np.asarray(probe.alone_ms, dtype=float)
    lat: list[list[float]] = [[], []]

    def one(i: int):
        yield env.timeout(i * apart_ms / 1e3)
        t0 = env.now
        got = env.event()

        def done(_arg: Any) -> None:
            got.succeed()

        pool.acquire(lambda _a: pool.serve(float(rng.choice(alone)) / 1e3, done, None), None)
        yield got
        pool.release(t0, env.now)
        lat[i].append((env.now - t0) * 1e3)

    def pairs():
        for _ in range(n):
            yield env.timeout(pause_s)
            yield env.all_of([env.process(one(0)), env.process(one(1))])

    env.process(pairs())
    env.run()
    return float(np.median(lat[0])), float(np.median(lat[1]))
