"""Replications, executors and the public ``simulate`` entry point.

One replication is a pure function of (resolved scenario, replication index):
its random streams come from ``SeedSequence(seed, spawn_key=(r, purpose))``.
So the executor (this process, a local process pool, or a Dask cluster) only
decides *where* replications run, never what they produce; results come back
in task order whatever finishes first.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import as_completed
from contextlib import suppress

from sim.engine.pipeline import Replication, run_replication
from sim.spec.schema import Scenario

#: (scenario, replication), or (scenario, replication, cell) for one cell of a partitioned run.
Task = tuple[Scenario, int] | tuple[Scenario, int, int]


def _run_task(task: Task) -> Replication:
    scn, rep, *cell = task
    return run_replication(scn, rep, part=cell[0]) if cell else run_replication(scn, rep)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: this worker gets SIGKILL when the process that started it dies.

    Linux's ``prctl(PR_SET_PDEATHSIG)``; elsewhere a no-op.  If the parent died
    between the fork and this call, the worker exits at once.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


class LocalExecutor:
    """Runs tasks in this process (jobs=1) or a fork-based process pool.

    ``prefetch``: work for this process while the pool runs the tasks (loading the
    libraries the summaries need).  With it, even a single task goes to a forked worker
    when there is more than one core, so that loading runs beside the replication
    instead of after it."""

    def __init__(self, jobs: int | None = None, prefetch: Callable[[], object] | None = None):
        self.jobs = jobs or default_jobs()
        self.prefetch = prefetch

    def as_completed(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Replication]]:
        """``(task index, replication)`` as tasks finish.  Stopping early (Ctrl-C, an
        error) cancels what has not started and kills the workers still running."""
        if self.jobs <= 1 or not tasks or (len(tasks) == 1 and self.prefetch is None):
            for i, t in enumerate(tasks):
                yield i, _run_task(t)
            return
        # deferred: a run in this process (--jobs 1, a short run) never loads multiprocessing
        from concurrent.futures.process import ProcessPoolExecutor
        from multiprocessing import get_context

        pool = ProcessPoolExecutor(
            max_workers=min(self.jobs, len(tasks)),
            mp_context=get_context("fork"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        clean = False
        try:
            futures = {pool.submit(_run_task, t): i for i, t in enumerate(tasks)}
            if self.prefetch is not None:
                self.prefetch()
            for f in as_completed(futures):
                yield futures[f], f.result()
            clean = True
        finally:
            if not clean:
                # Stopping early: end the replications still running too.  Cancelling only
                # drops what has not started, and the interpreter joins the pool's thread at
                # exit, so a Ctrl-C sent to capsim alone (kill -INT, a CI timeout) left it
                # waiting for hours of running replications after saying it stopped.
                for proc in list((getattr(pool, "_processes", None) or {}).values()):
                    with suppress(OSError):
                        proc.kill()
            pool.shutdown(wait=True, cancel_futures=not clean)

    def map(self, tasks: Sequence[Task], on_done: Callable[[], None] | None = None) -> list[Replication]:
        """Every task's replication, in task order."""
        out: list[Replication | None] = [None] * len(tasks)
        for i, rep in self.as_completed(tasks):
            out[i] = rep
            if on_done:
                on_done()
        return out  # type: ignore[return-value]
