"""One replication split into cells that run side by side (``run.partitions``).

Picture a large shop deployed as ``N`` identical cells: each cell has its own
result cache, its own retrieval (and routing) workers and its own GPU
replicas behind its own router, and every shopper is served by one cell.
Nothing passes between cells, so each cell is a replication of its own,
and the shop's replication is their union: every cell runs in its own
process (:func:`run_cell`) and the results add up exactly
(:func:`merge_cells`: the digests' counters, the stage counters, the
records).

Cell ``c`` of ``N`` holds:

* **closed** workloads: the shoppers whose id is ``c`` modulo ``N`` (each
  with the random streams it has in the whole shop, so shopper 17 thinks and
  asks the same in cell 1 of 2 as in one process); with a load profile, the
  shoppers present are those of the whole shop that belong to the cell;
* **open** Poisson arrivals: a Poisson stream at ``1 / N`` of the rate (the
  profile's level too), drawn from the cell's own streams: N independent
  Poisson streams at rate ``λ / N`` are one Poisson stream at rate ``λ``
  whose arrivals go to a cell chosen uniformly;
* ``1 / N`` of ``llm.replicas``, ``retrieval.workers`` (``cpu_cores``),
  ``routing.workers`` (``cpu_cores``) and ``cache.capacity``, so these must
  be multiples of ``N``.

What is exact: the merged replication *is* the cell deployment's, whatever
``N``.  Against the same shop run as one fleet it is a model change: with a
``random`` or ``round_robin`` router each replica already sees an even
share of the requests, but one shared cache and one shared worker pool pool
their capacity, which cells do not.  A router that reads the whole fleet's
state at every decision (``least_outstanding``) or an autoscaler has no cell
form: such scenarios run in one process and ``run.partitions > 1`` is
refused.  So are trace replays and gamma arrivals (a gamma renewal stream
does not split into independent streams of the same law).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.engine.digest import Digest
from sim.engine.pipeline import Replication
from sim.engine.records import Bins
from sim.errors import ConfigError
from sim.spec.schema import Scenario

#: Routers that decide without reading the other replicas' state.
CELL_ROUTERS = ("random", "round_robin")
#: Counters that are per replica, not totals: every cell has the same.
_SAME_IN_EVERY_CELL = frozenset({"gpu_kv_blocks"})
#: Sampled series of one value per cell summed; per-replica series (samples x replicas) side by side.
_PER_REPLICA_SERIES = frozenset({"llm_waiting", "llm_running", "kv_tokens"})
_SAME_SERIES = frozenset({"t_s", "kv_capacity_tokens", "load_level"})


def _divided(scn: Scenario) -> list[tuple[str, int]]:
    """The ``(dotted key, value)`` of every part of the fleet a cell gets ``1 / N`` of."""
    out: list[tuple[str, int]] = []
    if scn.llm.enabled:
        out.append(("llm.replicas", scn.llm.replicas))
    if scn.retrieval.enabled:
        out.append(("retrieval.workers", scn.retrieval.workers))
        if scn.retrieval.cpu_cores is not None:
            out.append(("retrieval.cpu_cores", scn.retrieval.cpu_cores))
    if scn.routing.enabled:
        out.append(("routing.workers", scn.routing.workers))
        if scn.routing.cpu_cores is not None:
            out.append(("routing.cpu_cores", scn.routing.cpu_cores))
    if scn.cache.enabled:
        out.append(("cache.capacity", scn.cache.capacity))
    return out


def partition_problem(scn: Scenario) -> str | None:
    """Why ``scn`` cannot run as ``run.partitions`` cells (one line naming the key), or None."""
    n = scn.run.partitions
    if n == 1:
        return None
    head = f"run.partitions: {n} cells need"
    if scn.llm.enabled and scn.llm.autoscale is not None:
        return f"{head} a fixed fleet; llm.autoscale resizes the whole fleet at once: use run.partitions: 1"
    if scn.llm.enabled and scn.llm.router not in CELL_ROUTERS:
        return (
            f"{head} a router without global state ({' or '.join(CELL_ROUTERS)}); llm.router "
            f"{scn.llm.router} reads every replica at each decision: use run.partitions: 1"
        )
    w = scn.workload
    if w.mode == "trace":
        return f"{head} shoppers or a Poisson stream to split; workload.mode trace replays one stream: use 1"
    if w.mode == "open" and w.arrival != "poisson":
        return f"{head} Poisson arrivals to split; workload.arrival {w.arrival} does not split: use 1"
    for key, value in _divided(scn):
        if value % n:
            return f"{head} an equal share of the fleet; {key} ({value}) is not a multiple of {n}"
    return None


def check_partitions(scenarios: Sequence[Scenario]) -> None:
    """Refuse (:class:`~sim.errors.ConfigError`, one line) the first scenario that cannot run
    as its ``run.partitions`` cells."""
    for scn in scenarios:
        problem = partition_problem(scn)
        if problem is not None:
            raise ConfigError(problem)


def cell_scenario(scn: Scenario) -> Scenario:
    """``scn`` with one cell's share of the fleet (the workload is split by :class:`Model`)."""
    n = scn.run.partitions
    if n == 1:
        return scn
    parts: dict[str, dict[str, int]] = {}
    for key, value in _divided(scn):
        section, field = key.split(".")
        parts.setdefault(section, {})[field] = value // n
    return scn.model_copy(update={s: getattr(scn, s).model_copy(update=u) for s, u in parts.items()})


def _arrays(cells: Sequence[Replication], key: str) -> list[np.ndarray]:
    """Every cell's series ``key``: an array (of the samples, only the KV capacity is a number)."""
    out = []
    for c in cells:
        v = c.timeseries[key]
        assert isinstance(v, np.ndarray), f"series {key} is a number, not samples"
        out.append(v)
    return out


def merge_cells(cells: Sequence[Replication], replicas_per_cell: int) -> Replication:
    """The shop's replication from its cells' (in cell order): digests, counters and kept
    records add up; per-replica series and record replica numbers follow cell order
    (cell ``c``'s replica ``i`` is replica ``c * replicas_per_cell + i``)."""
    first = cells[0]
    digest: Digest | None = None
    if first.digest is not None:
        digest = Digest(first.digest.edges, first.digest.fine_end_s)
        for c in cells:
            assert c.digest is not None
            digest.merge(c.digest)
    counters: dict[str, float | Bins] = {}
    for k, value in first.counters.items():
        if isinstance(value, Bins):
            counters[k] = Bins.sum([c.counters[k] for c in cells])  # type: ignore[misc]
        elif k in _SAME_IN_EVERY_CELL:
            counters[k] = value
        else:
            counters[k] = sum(c.counters[k] for c in cells)  # type: ignore[misc]
    series: dict[str, np.ndarray | int] = {}
    for k, arr in first.timeseries.items():
        if k in _SAME_SERIES:
            series[k] = arr
        elif k in _PER_REPLICA_SERIES:
            series[k] = np.concatenate(_arrays(cells, k), axis=1)
        else:
            series[k] = np.sum(_arrays(cells, k), axis=0)
    kept = [c.kept for c in cells if c.kept is not None]
    records = _merge_records(kept, replicas_per_cell) if len(kept) == len(cells) else None
    return Replication(first.replication, records, first.window_s, counters, series, digest)


def _merge_records(parts: list[dict[str, np.ndarray]], replicas_per_cell: int) -> dict[str, np.ndarray]:
    cols = {}
    for name in parts[0]:
        if name == "replica":
            cols[name] = np.concatenate(
                [np.where(p[name] >= 0, p[name] + c * replicas_per_cell, p[name]) for c, p in enumerate(parts)]
            )
        else:
            cols[name] = np.concatenate([p[name] for p in parts])
    order = np.argsort(cols["arrival_s"], kind="stable")
    out = {k: v[order] for k, v in cols.items()}
    out["request"] = np.arange(len(order), dtype=np.int64)
    return out
