"""Replications, executors and the public ``simulate`` entry point.

One replication is a pure function of (resolved scenario, replication index):
its random streams come from ``SeedSequence(seed, spawn_key=(r, purpose))``.
So the executor (this process, a local process pool, or a Dask cluster) only
decides *where* replications run, never what they produce; results come back
in task order whatever finishes first.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from .config import Scenario
from .pipeline import Replication, run_replication
from .scenario import Point, expand
from .summary import summarize_point

Task = tuple[Scenario, int]


def _run_task(task: Task) -> Replication:
    scn, rep = task
    return run_replication(scn, rep)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class LocalExecutor:
    """Runs tasks in this process (jobs=1) or a fork-based process pool."""

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs or default_jobs()

    def map(self, tasks: Sequence[Task], on_done: Callable[[], None] | None = None) -> list[Replication]:
        if self.jobs <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(_run_task(t))
                if on_done:
                    on_done()
            return out
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)), mp_context=get_context("fork")) as ex:
            futures = [ex.submit(_run_task, t) for t in tasks]
            out = []
            for f in futures:
                out.append(f.result())
                if on_done:
                    on_done()
            return out


@dataclass
class PointResult:
    params: dict[str, Any]
    scenario: Scenario
    replications: list[Replication]
    summary: dict

    @property
    def records(self) -> pd.DataFrame:
        frames = [pd.DataFrame(r.records) for r in self.replications]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for k, v in self.params.items():
            df[k] = v
        return df


@dataclass
class Result:
    """What :func:`simulate` returns: one :class:`PointResult` per sweep point."""

    name: str
    points: list[PointResult]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def records(self) -> pd.DataFrame:
        """Every request of every point and replication (swept keys as columns)."""
        frames = []
        for i, p in enumerate(self.points):
            df = p.records
            df.insert(0, "point", i)
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def summary(self) -> dict:
        """The document ``capsim run --json`` prints."""
        return {"scenario": self.name, **self.extras, "points": [p.summary for p in self.points]}

    @property
    def verdicts(self) -> list[str]:
        return [s["verdict"] for p in self.points for s in p.summary["sla"]]

    @property
    def exit_code(self) -> int:
        """0 all SLAs pass (or none set), 1 any fails, 3 inconclusive and none failing."""
        v = self.verdicts
        if "fail" in v:
            return 1
        if "inconclusive" in v:
            return 3
        return 0

    def point(self, **params: Any) -> PointResult:
        for p in self.points:
            if all(p.params.get(k) == v for k, v in params.items()):
                return p
        raise KeyError(params)


def _needs_more(summary: dict, scn: Scenario) -> bool:
    target = scn.run.target_precision
    if target is None or not summary["stability"]["stable"]:
        return False  # more replications cannot make an unstable point's percentiles converge
    for s in summary["sla"]:
        lo, hi = s["ci"]
        v = s["value"]
        if v is None or lo is None or hi is None or (hi - lo) / 2 > target * abs(v):
            return True
    return False


def run_points(points: Sequence[Point], replications: int | None = None, jobs: int | None = None,
               executor: Any = None, progress: Callable[[int, int], None] | None = None) -> list[PointResult]:
    """Run every point's replications, adding more where ``run.target_precision`` asks."""
    ex = executor or LocalExecutor(jobs)
    counts = [replications or p.scenario.run.replications for p in points]
    reps: list[list[Replication]] = [[] for _ in points]
    total = sum(counts)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    pending = list(range(len(points)))
    results: list[PointResult | None] = [None] * len(points)
    while pending:
        tasks: list[Task] = []
        owners: list[int] = []
        for i in pending:
            have = len(reps[i])
            for r in range(have, counts[i]):
                tasks.append((points[i].scenario, r))
                owners.append(i)
        for i, rep in zip(owners, ex.map(tasks, tick)):
            reps[i].append(rep)
        nxt = []
        for i in pending:
            p = points[i]
            summ = summarize_point(p.scenario, reps[i], p.params)
            results[i] = PointResult(p.params, p.scenario, reps[i], summ)
            cap = p.scenario.run.max_replications
            if _needs_more(summ, p.scenario) and counts[i] < cap:
                counts[i] = min(cap, max(counts[i] + 2, math.ceil(counts[i] * 1.5)))
                total += counts[i] - len(reps[i])
                nxt.append(i)
        pending = nxt
    return [r for r in results if r is not None]


def simulate(scenario: str | Path | Mapping | Scenario, overrides: Mapping[str, Any] | None = None, *,
             replications: int | None = None, seed: int | None = None, jobs: int | None = 1,
             grid: Mapping[str, list] | None = None, executor: Any = None,
             progress: Callable[[int, int], None] | None = None) -> Result:
    """Run a scenario (every sweep point) and return records and summaries.

    ``overrides`` are dotted keys (``{"llm.replicas": 2}``); ``seed`` and
    ``replications`` override ``run.seed`` and ``run.replications``.
    """
    ov = dict(overrides or {})
    if seed is not None:
        ov["run.seed"] = seed
    if replications is not None:
        ov["run.replications"] = replications
    points = expand(scenario, ov, grid)
    name = points[0].scenario.name
    results = run_points(points, None, jobs, executor, progress)
    return Result(name, results)
