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
    holds them).  Summaries never need them.
    """
    if not points:
        raise ConfigError("the sweep has no points")
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
    store = PointStore(out) if out is not None else None
    ids = [point_id(p.scenario) for p in points]
    first: dict[str, int] = {}
    for i, pid in enumerate(ids):
        first.setdefault(pid, i)
    summaries: dict[str, PointSummary] = {}
    computed: dict[str, list[Replication]] = {}
    if store is not None:
        for pid in first:
            s = store.load_summary(pid)
            if s is not None:
                summaries[pid] = s
    todo = [i for pid, i in first.items() if pid not in summaries]
    counts = {i: points[i].scenario.run.replications for i in todo}
    reps: dict[int, list[Replication]] = {i: [] for i in todo}
    total = sum(counts.values())
    done = 0

    def sweep_point(i: int) -> SweepPoint:
        from sim.run.results import SweepPoint  # deferred: loaded while the workers run

        p, pid = points[i], ids[i]
        return SweepPoint(
            dict(p.params),
            p.scenario,
            computed.get(pid, []) if store is None else [],
            summaries[pid].with_params(p.params),  # the same scenario may be reached under other swept keys
            id=pid,
            computed=pid in computed and first[pid] == i,
            folder=store.folder(pid) if store is not None else None,
        )

    # The folder-level records and time series grow point by point (in point order) while
    # the workers compute, rather than all at the end.
    files = SweepFiles(out, [p.params for p in points]) if out is not None else None
    if out is not None:
        SweepFiles.clear_stale(out)  # the folder is locked: nobody else is streaming into it

    def stream() -> None:
        while files is not None and files.added < len(points) and ids[files.added] in summaries:
            files.add(files.added, sweep_point(files.added))

    def finish(i: int, summ: PointSummary) -> None:
        pid = ids[i]
        summaries[pid] = summ
        computed[pid] = reps[i]
        if store is not None:
            store.save(pid, points[i].scenario, summ, reps[i])
            computed[pid] = reps[i] = []  # on disk now: the folder-level files read it back from there
        stream()

    pending = todo
    try:
        stream()
        while pending:
            tasks: list[Task] = []
            owners: list[int] = []
            for i in pending:
                for r in range(len(reps[i]), counts[i]):
                    tasks.append((with_records(points[i].scenario, keep), r))
                    owners.append(i)
            if getattr(ex, "jobs", 1) > 1 and len(tasks) > 1:
                # Longest first (LPT): the heaviest replications start at once and the light
                # ones fill in behind them, instead of one heavy point running alone at the end.
                cost = {i: estimate_run([points[i]]).cpu_s / max(1, counts[i]) for i in set(owners)}
                order = sorted(range(len(tasks)), key=lambda j: -cost[owners[j]])
                tasks, owners = [tasks[j] for j in order], [owners[j] for j in order]
            need = {i: counts[i] - len(reps[i]) for i in pending}
            nxt: list[int] = []
            for j, rep in iter_completed(ex, tasks):
                i = owners[j]
                reps[i].append(rep)
                done += 1
                if progress:
                    progress(done, total)
                need[i] -= 1
                if need[i]:
                    continue
                reps[i].sort(key=lambda r: r.replication)
                from sim.analysis.autoscale import with_autoscale  # deferred, as summarize_point
                from sim.analysis.summary import summarize_point  # deferred: loaded while the workers run

                p = points[i]
                summ = with_autoscale(summarize_point(p.scenario, reps[i], p.params), p.scenario, reps[i])
                summ = normalize(nothing_finished_fails(summ, p.scenario))
                cap = p.scenario.run.max_replications
                if needs_more(summ, p.scenario) and counts[i] < cap:
                    counts[i] = min(cap, max(counts[i] + 2, math.ceil(counts[i] * 1.5)))
                    total += counts[i] - len(reps[i])
                    nxt.append(i)
                else:
                    finish(i, summ)
            pending = nxt
        from sim.run.results import SweepResult  # deferred (loaded by now unless nothing ran)

        res = SweepResult(
            name or points[0].scenario.name,
            [sweep_point(i) for i in range(len(points))],
            out=Path(out) if out is not None else None,
        )
        if files is not None:
            assert out is not None
            write_sweep(res, out, files)
    except KeyboardInterrupt:
        raise SweepInterrupted(
            _stopped_message("interrupted", len(summaries), len(first), out), EXIT_INTERRUPTED
        ) from None
    except cf.process.BrokenProcessPool:
        raise SweepInterrupted(
            _stopped_message("a worker process died", len(summaries), len(first), out), EXIT_WORKER_DIED
        ) from None
    finally:
        if files is not None:
            files.discard()  # a sweep that stopped keeps its saved points, not half its records
    return res


def _stopped_message(why: str, have: int, total: int, out: Any) -> str:
    if out is None:
        return f"{why}: {have} of {total} points finished (give --out DIR to keep them across runs)"
    return f"{why}: {have} of {total} points are saved in {out}; run the same command again to compute the rest"
