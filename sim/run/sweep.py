"""Sweeps that survive crashes, and capacity search.

**A sweep** is every combination of a grid (the scenario's ``sweep:``
section plus ``--grid`` keys) times its replications.  Each point is keyed by
a hash of its resolved scenario (:func:`point_id`: canonical JSON of
``scenario.model_dump(mode="json")``, so seed and replications are part of
it) and, the moment its last replication lands, written under ``out``::

    out/points/<id>/scenario.yaml        the resolved scenario
    out/points/<id>/records.parquet      one row per request, every replication
    out/points/<id>/timeseries.parquet   sampled queues, batch, KV use
    out/points/<id>/summary.json         the point's summary
    out/points/<id>/hashes.json          written last: sha256 of each file; the point is complete

Running the same command again (after a crash, Ctrl-C or a killed worker)
reuses every complete point and computes only the missing ones.  At the end
the folder gets files any pandas user can read::

    out/summary.json      the document `capsim run --json` prints
    out/summary.csv       one row per point: swept keys, e2e p50/p95/p99 with
    out/summary.parquet   interval, throughput, utilisation, cost, verdicts
    out/records.parquet   every request of every point, swept keys as columns
    out/timeseries.parquet
    out/capsim.json       written last: command, points, sha256 of each file (see sim.run.folder)

A point whose files no longer match its hashes is computed again; the folder is
locked while a command writes it (:mod:`sim.run.folder`).

**Capacity** (:func:`capacity`) finds, by bracketing and bisection on the
statistical SLA verdict, the largest value of a load key (``workload.users``)
or the smallest value of a resource key (``llm.replicas``) at which every SLA
passes.  An inconclusive verdict counts as not passing (and is reported).
Every value tried uses the same seed (common random numbers), which keeps
the verdict monotone in the key far more often than independent draws would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.run.loop import run_sweep
from sim.spec.keys import check_key
from sim.spec.scenario import expand, run_overrides
from sim.spec.schema import Scenario

if TYPE_CHECKING:  # pandas: loaded while the workers run (see sim.run.loop)
    from sim.run.results import Result, SweepResult


def sweep(
    source: str | Path | Mapping | Scenario,
    overrides: Mapping[str, Any] | None = None,
    grid: Mapping[str, list] | None = None,
    *,
    out: str | Path | None = None,
    replications: int | None = None,
    seed: int | None = None,
    jobs: int | None = None,
    executor: Any = None,
    progress: Callable[[int, int], None] | None = None,
    keep_records: bool | None = None,
) -> SweepResult:
    """Expand ``source``'s ``sweep:`` plus ``grid`` and run it (see :func:`run_sweep`, which
    says when the per-request records are kept).

    ``sim.run.sweep.sweep("s.yaml", grid={"workload.users": [50, 100]}, out="runs/a")``
    """
    ov = run_overrides(overrides, seed, replications)
    for k in grid or {}:
        check_key(k)
    points = expand(source, ov, dict(grid) if grid else None)
    return run_sweep(points, out, executor=executor, jobs=jobs, progress=progress, keep_records=keep_records)


def simulate(
    scenario: str | Path | Mapping | Scenario,
    overrides: Mapping[str, Any] | None = None,
    *,
    replications: int | None = None,
    seed: int | None = None,
    jobs: int | None = 1,
    grid: Mapping[str, list] | None = None,
    executor: Any = None,
    progress: Callable[[int, int], None] | None = None,
    keep_records: bool = False,
) -> Result:
    """Run a scenario (every sweep point) and return summaries (and records, when kept).

    ``overrides`` are dotted keys (``{"llm.replicas": 2}``); ``seed`` and
    ``replications`` override ``run.seed`` and ``run.replications``.  Per-request
    records (``Result.records``) are kept when ``run.records`` is true, or where it is
    unset when ``keep_records`` is; the summaries come from streaming histograms
    either way.
    """
    ov = run_overrides(overrides, seed, replications)

    return run_sweep(
        expand(scenario, ov, grid), executor=executor, jobs=jobs, progress=progress, keep_records=keep_records
    )
