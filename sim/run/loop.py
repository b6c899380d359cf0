"""The one replication loop: ``capsim run``, ``capsim sweep`` and :func:`sim.simulate`
all go through :func:`run_sweep`.

Importing this module loads neither pandas nor scipy: the local pool forks its workers
(which need only the engine) before the parent loads the summaries and frames, so that
loading runs beside the first replications rather than before them.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.engine.partition import cell_scenario, check_partitions, merge_cells
from sim.engine.pipeline import Replication
from sim.errors import EXIT_INTERRUPTED, EXIT_WORKER_DIED, ConfigError, RunStopped
from sim.run.bounds import estimate_run
from sim.run.executors import LocalExecutor, Task
from sim.run.folder import locked, prepare_out
from sim.run.store import PointStore, SweepFiles, normalize, point_id, write_sweep
from sim.spec.metrics import METRIC_STAGE
from sim.spec.scenario import Point
from sim.spec.schema import Scenario

if TYPE_CHECKING:
    from sim.analysis.summary import PointSummary
    from sim.run.results import SweepPoint, SweepResult


class SweepInterrupted(RunStopped):
    """A sweep stopped before its end; what finished is saved.  ``exit_code`` for the CLI:
    :data:`~sim.errors.EXIT_WORKER_DIED` (a worker died) or 130 (Ctrl-C)."""


# --------------------------------------------------------------------------- keys and grids


def needs_more(summary: PointSummary, scn: Scenario) -> bool:
    """More replications are due: ``run.target_precision`` is set, the point is stable (more
    cannot make an unstable point's percentiles converge) and the summary's precision check
    (:func:`sim.analysis.summary.summarize_point`, the one place it is decided) is not reached."""
    if scn.run.target_precision is None or not summary.stable or summary.precision is None:
        return False
    return not summary.precision["reached"]


def nothing_finished_fails(summary: PointSummary, scn: Scenario) -> PointSummary:
    """A point where requests arrived but none finished in the window has failed every
    SLA on a stage it runs: the system served nothing at this load.  (Without this the
    missing metric reads as "inconclusive: is its stage enabled?".)"""
    if summary.completed > 0 or summary.incomplete <= 0:
        return summary
    out = []
    for v in summary.sla:
        stage = METRIC_STAGE.get(v.metric)
        runs = stage is None or bool(getattr(getattr(scn, stage, None), "enabled", True))
        if v.value is None and v.verdict == "inconclusive" and runs:
            v = dataclasses.replace(
                v,
                verdict="fail",
                hint=f"no request finished in the measurement window ({summary.incomplete:,} still in flight): "
                "the system served nothing at this load",
            )
        out.append(v)
    return dataclasses.replace(summary, sla=out)


#: Estimated CPU seconds from which a run's single replication goes to a forked worker.
PREFETCH_MIN_CPU_S = 1.0


def _load_analysis() -> None:
    """Import what summarising and returning the points needs (scipy; pandas only where a
    frame is made)."""
    import sim.analysis.summary  # deferred: loaded while a worker runs the replication
    import sim.run.results  # noqa: F401  # deferred, likewise


def iter_completed(executor: Any, tasks: Sequence[Task]) -> Iterator[tuple[int, Replication]]:
    """``(task index, replication)`` as tasks finish, whatever the executor.

    Uses ``executor.as_completed`` where it exists (:class:`~sim.run.executors.LocalExecutor`,
    :class:`~sim.run.dask.DaskExecutor`); any other object with ``.map`` gets one call
    for every task (results arrive at the end).
    """
    if hasattr(executor, "as_completed"):
        yield from executor.as_completed(tasks)
        return
    yield from enumerate(executor.map(list(tasks)))


def run_sweep(
    points: Sequence[Point],
    out: str | Path | None = None,
    *,
    executor: Any = None,
    jobs: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    name: str | None = None,
    keep_records: bool | None = None,
) -> SweepResult:
    """Run every point not already saved under ``out``; save each as it completes.

    Replications follow ``run.replications`` and ``run.target_precision``;
    ``capsim run`` and :func:`sim.simulate` run through here too, so a point's
    summary is the same from either, or from a re-run.  Per-request records are
    kept where ``run.records`` says so; where it is unset, when ``keep_records``
    is true (default: when the sweep is written to ``out``, whose records.parquet
    holds them).  Summaries never need them.  A point with ``run.partitions`` N > 1
    runs each replication as N cells, each its own task (:mod:`sim.engine.partition`).
    """
    if not points:
        raise ConfigError("the sweep has no points")
    check_partitions([p.scenario for p in points])
    keep = out is not None if keep_records is None else keep_records
    if out is None:
        return _run_sweep(points, None, executor, jobs, progress, name, keep)
    with locked(prepare_out(Path(out), "sweep") or Path(out)):
        return _run_sweep(points, out, executor, jobs, progress, name, keep)


def with_records(scn: Scenario, keep: bool) -> Scenario:
    """``scn`` with ``run.records`` set to ``keep`` where the scenario leaves it unset."""
    if scn.run.records is not None or not keep:
        return scn
    return scn.model_copy(update={"run": scn.run.model_copy(update={"records": True})})


def _run_sweep(
    points: Sequence[Point],
    out: str | Path | None,
    executor: Any,
    jobs: int | None,
    progress: Callable[[int, int], None] | None,
    name: str | None,
    keep: bool,
) -> SweepResult:
    # A run of a second or more: the summaries' libraries load in this process while a
    # forked worker runs the replications (a shorter one runs here, without forking).
    heavy = estimate_run(points).cpu_s >= PREFETCH_MIN_CPU_S
    ex = executor or LocalExecutor(jobs, prefetch=_load_analysis if heavy else None)
    sweep = _Sweep(points, out, ex, progress, keep)
    try:
        sweep.run()
        return sweep.result(name)
    except KeyboardInterrupt:
        raise SweepInterrupted(sweep.stopped("interrupted"), EXIT_INTERRUPTED) from None
    except cf.BrokenExecutor:  # the pool's BrokenProcessPool (a worker process died)
        raise SweepInterrupted(sweep.stopped("a worker process died"), EXIT_WORKER_DIED) from None
    finally:
        if sweep.files is not None:
            sweep.files.discard()  # a sweep that stopped keeps its saved points, not half its records


class _Sweep:
    """One sweep's bookkeeping: which points are saved, which replications are due, and the
    cells of partitioned replications still arriving.  A point is identified by its index
    ``i`` in ``points``; points that resolve to the same scenario share the first one's run."""

    def __init__(
        self,
        points: Sequence[Point],
        out: str | Path | None,
        ex: Any,
        progress: Callable[[int, int], None] | None,
        keep: bool,
    ):
        self.points, self.out, self.ex, self.progress, self.keep = points, out, ex, progress, keep
        self.store = PointStore(out) if out is not None else None
        self.ids = [point_id(p.scenario) for p in points]
        self.first: dict[str, int] = {}
        for i, pid in enumerate(self.ids):
            self.first.setdefault(pid, i)
        self.summaries: dict[str, PointSummary] = self._saved()
        self.computed: dict[str, list[Replication]] = {}
        todo = [i for pid, i in self.first.items() if pid not in self.summaries]
        self.pending = todo
        self.counts = {i: points[i].scenario.run.replications for i in todo}
        self.reps: dict[int, list[Replication]] = {i: [] for i in todo}
        self.total = sum(self.counts.values())
        self.done = 0
        # The folder-level records and time series grow point by point (in point order) while
        # the workers compute, rather than all at the end.
        self.files = SweepFiles(out, [p.params for p in points]) if out is not None else None
        if out is not None:
            SweepFiles.clear_stale(out)  # the folder is locked: nobody else is streaming into it

    def _saved(self) -> dict[str, PointSummary]:
        if self.store is None:
            return {}
        found = {pid: self.store.load_summary(pid) for pid in self.first}
        return {pid: s for pid, s in found.items() if s is not None}

    def sweep_point(self, i: int) -> SweepPoint:
        from sim.run.results import SweepPoint  # deferred: loaded while the workers run

        p, pid, store = self.points[i], self.ids[i], self.store
        return SweepPoint(
            dict(p.params),
            p.scenario,
            self.computed.get(pid, []) if store is None else [],
            self.summaries[pid].with_params(p.params),  # the same scenario may be reached under other swept keys
            id=pid,
            computed=pid in self.computed and self.first[pid] == i,
            folder=store.folder(pid) if store is not None else None,
        )

    def stream(self) -> None:
        files = self.files
        while files is not None and files.added < len(self.points) and self.ids[files.added] in self.summaries:
            files.add(files.added, self.sweep_point(files.added))

    def run(self) -> None:
        self.stream()
        while self.pending:
            self.pending = self._round(self.pending)

    def _tasks(self, pending: list[int]) -> tuple[list[Task], list[tuple[int, int]]]:
        """The tasks still due for ``pending`` points and, for each, its (point, replication):
        one task per replication, or per cell of a partitioned one."""
        tasks: list[Task] = []
        owners: list[tuple[int, int]] = []
        for i in pending:
            scn = with_records(self.points[i].scenario, self.keep)
            n = scn.run.partitions
            for r in range(len(self.reps[i]), self.counts[i]):
                tasks.extend([(scn, r)] if n == 1 else [(scn, r, c) for c in range(n)])
                owners.extend([(i, r)] * n)
        if getattr(self.ex, "jobs", 1) > 1 and len(tasks) > 1:
            # Longest first (LPT): the heaviest replications start at once and the light
            # ones fill in behind them, instead of one heavy point running alone at the end.
            cost = {i: self._task_cpu_s(i) for i, _ in set(owners)}
            order = sorted(range(len(tasks)), key=lambda j: -cost[owners[j][0]])
            tasks, owners = [tasks[j] for j in order], [owners[j] for j in order]
        return tasks, owners

    def _task_cpu_s(self, i: int) -> float:
        p = self.points[i]
        return estimate_run([p]).cpu_s / max(1, self.counts[i]) / p.scenario.run.partitions

    def _round(self, pending: list[int]) -> list[int]:
        """Run what ``pending`` points still need; the points that need more replications."""
        tasks, owners = self._tasks(pending)
        need = {i: self.counts[i] - len(self.reps[i]) for i in pending}
        cells: dict[tuple[int, int], dict[int, Replication]] = {}
        nxt: list[int] = []
        for j, rep in iter_completed(self.ex, tasks):
            i, r = owners[j]
            n = self.points[i].scenario.run.partitions
            if n > 1:
                got = cells.setdefault((i, r), {})
                got[tasks[j][2]] = rep  # type: ignore[misc]  # a cell's task carries its index
                if len(got) < n:
                    continue
                rep = merge_cells([got[c] for c in range(n)], cell_scenario(self.points[i].scenario).llm.replicas)
                del cells[(i, r)]
            self.reps[i].append(rep)
            self.done += 1
            if self.progress:
                self.progress(self.done, self.total)
            need[i] -= 1
            if not need[i] and self._summarize(i):
                nxt.append(i)
        return nxt

    def _summarize(self, i: int) -> bool:
        """Summarise point ``i`` once its replications are in; True when it needs more."""
        from sim.analysis.autoscale import with_autoscale  # deferred, as summarize_point
        from sim.analysis.summary import summarize_point  # deferred: loaded while the workers run

        reps = self.reps[i]
        reps.sort(key=lambda r: r.replication)
        p = self.points[i]
        summ = with_autoscale(summarize_point(p.scenario, reps, p.params), p.scenario, reps)
        summ = normalize(nothing_finished_fails(summ, p.scenario))
        cap = p.scenario.run.max_replications
        if needs_more(summ, p.scenario) and self.counts[i] < cap:
            self.counts[i] = min(cap, max(self.counts[i] + 2, math.ceil(self.counts[i] * 1.5)))
            self.total += self.counts[i] - len(reps)
            return True
        self._finish(i, summ)
        return False

    def _finish(self, i: int, summ: PointSummary) -> None:
        pid = self.ids[i]
        self.summaries[pid] = summ
        self.computed[pid] = self.reps[i]
        if self.store is not None:
            self.store.save(pid, self.points[i].scenario, summ, self.reps[i])
            self.computed[pid] = self.reps[i] = []  # on disk now: the folder-level files read it back from there
        self.stream()

    def result(self, name: str | None) -> SweepResult:
        from sim.run.results import SweepResult  # deferred (loaded by now unless nothing ran)

        res = SweepResult(
            name or self.points[0].scenario.name,
            [self.sweep_point(i) for i in range(len(self.points))],
            out=Path(self.out) if self.out is not None else None,
        )
        if self.files is not None:
            assert self.out is not None
            write_sweep(res, self.out, self.files)
        return res

    def stopped(self, why: str) -> str:
        return _stopped_message(why, len(self.summaries), len(self.first), self.out)


def _stopped_message(why: str, have: int, total: int, out: Any) -> str:
    if out is None:
        return f"{why}: {have} of {total} points finished (give --out DIR to keep them across runs)"
    return f"{why}: {have} of {total} points are saved in {out}; run the same command again to compute the rest"
