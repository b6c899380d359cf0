"""Replications, executors and the public ``simulate`` entry point.

One replication is a pure function of (resolved scenario, replication index):
its random streams come from ``SeedSequence(seed, spawn_key=(r, purpose))``.
So the executor (this process, a local process pool, or a Dask cluster) only
decides *where* replications run, never what they produce; results come back
in task order whatever finishes first.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pandas as pd

from .config import Scenario
from .pipeline import Replication, run_replication
from .scenario import expand

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

    def as_completed(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Replication]]:
        """``(task index, replication)`` as tasks finish.  Stopping early (Ctrl-C, an
        error) cancels what has not started; a clean finish waits for the pool."""
        if self.jobs <= 1 or len(tasks) <= 1:
            for i, t in enumerate(tasks):
                yield i, _run_task(t)
            return
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(tasks)), mp_context=get_context("fork"))
        clean = False
        try:
            futures = {pool.submit(_run_task, t): i for i, t in enumerate(tasks)}
            for f in as_completed(futures):
                yield futures[f], f.result()
            clean = True
        finally:
            pool.shutdown(wait=clean, cancel_futures=not clean)

    def map(self, tasks: Sequence[Task], on_done: Callable[[], None] | None = None) -> list[Replication]:
        """Every task's replication, in task order."""
        out: list[Replication | None] = [None] * len(tasks)
        for i, rep in self.as_completed(tasks):
            out[i] = rep
            if on_done:
                on_done()
        return out  # type: ignore[return-value]


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
    from .sweep import run_sweep  # one replication loop for run and sweep alike

    return run_sweep(expand(scenario, ov, grid), executor=executor, jobs=jobs, progress=progress)
