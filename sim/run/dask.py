"""Run replications on a Dask distributed cluster.

:class:`DaskExecutor` has the interface of :class:`sim.run.executors.LocalExecutor`
(``.map(tasks, on_done)`` returns one :class:`~sim.engine.pipeline.Replication` per
task, in task order) plus ``.as_completed(tasks)``, which yields
``(task_index, replication)`` as tasks finish so a sweep can save each point
the moment its last replication lands.

A task is ``(resolved Scenario, replication index)`` and a replication draws
every random number from streams derived from the scenario's seed and its
index, so a cluster returns exactly what local processes return.

Workers must be able to ``import sim`` (install capsim in the workers'
environment).  ``DaskExecutor("tcp://host:8786")`` joins an existing cluster
and gives up after ``CAPSIM_DASK_TIMEOUT_S`` seconds (default 10) if the
scheduler does not answer; ``DaskExecutor("local-dask")`` starts a
``LocalCluster`` of ``n_workers`` single-threaded worker processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sim.engine.pipeline import Replication
from sim.errors import CapsimError
from sim.run.executors import Task, _run_task, default_jobs

LOCAL = "local-dask"
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss", "inproc")  # distributed's comm backends


def connect_timeout_s() -> float:
    try:
        return float(os.environ.get("CAPSIM_DASK_TIMEOUT_S", "10"))
    except ValueError:
        return 10.0


class DaskExecutor:
    """Tasks on a Dask cluster: an existing scheduler's address, or ``"local-dask"``."""

    def __init__(
        self, address: str = LOCAL, n_workers: int | None = None, processes: bool = True, timeout_s: float | None = None
    ):
        try:
            import distributed  # deferred: dask only with --scheduler
        except ImportError:  # pragma: no cover - a declared dependency
            raise CapsimError("--scheduler needs the 'distributed' package: pip install 'dask[distributed]'") from None
        self.address = address
        self.cluster = None
        timeout_s = connect_timeout_s() if timeout_s is None else timeout_s
        if address == LOCAL:
            self.cluster = distributed.LocalCluster(
                n_workers=n_workers or default_jobs(),
                threads_per_worker=1,
                processes=processes,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = distributed.Client(self.cluster, set_as_default=False)
        else:
            scheme = address.split("://", 1)[0].lower() if "://" in address else "tcp"
            if scheme not in SCHEMES:
                raise CapsimError(
                    f"--scheduler {address!r}: {scheme}:// is not a Dask protocol; use one of "
                    f"{', '.join(s + '://' for s in SCHEMES)} (e.g. tcp://host:8786) or {LOCAL!r}"
                )
            if "://" not in address and ":" not in address:
                raise CapsimError(
                    f"--scheduler {address!r}: expected a scheduler address such as "
                    f"tcp://host:8786, or {LOCAL!r} to start a local cluster"
                )
            try:
                self.client = distributed.Client(address, timeout=f"{timeout_s}s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as e:
                why = " ".join(str(e).split()) or type(e).__name__
                if len(why) > 160:
                    why = why[:157] + "..."
                raise CapsimError(
                    f"--scheduler {address}: cannot reach the Dask scheduler within {timeout_s:g} s ({why})"
                ) from None

    @property
    def jobs(self) -> int:
        """Worker threads in the cluster (how many tasks run at once)."""
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # pragma: no cover - cluster gone
            return 1

    def _submit(self, tasks: Sequence[Task]) -> list:
        return [self.client.submit(_run_task, t, pure=False) for t in tasks]

    def as_completed(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Replication]]:
        """Yield ``(index, replication)`` in the order tasks finish."""
        from distributed import as_completed  # deferred: dask only with --scheduler

        futures = self._submit(tasks)
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for fut in as_completed(futures, loop=self.client.loop):
                yield index[fut.key], fut.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def map(self, tasks: Sequence[Task], on_done: Callable[[], None] | None = None) -> list[Replication]:
        out: list[Any] = [None] * len(tasks)
        for i, rep in self.as_completed(tasks):
            out[i] = rep
            if on_done:
                on_done()
        return out

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
