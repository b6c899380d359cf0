"""Public API for notebooks and scripts: sweeps and capacity search.

``sim.sweep.sweep("s.yaml", grid={"workload.users": [50, 100]}, out="runs/a")``
and ``sim.sweep.capacity("s.yaml", "llm.replicas")``.  The implementation
lives in :mod:`sim.run` (the loop, the point store, capacity search); this
module only gathers the names users import.
"""

from __future__ import annotations

from sim.analysis.dollars import rank_by_cost
from sim.analysis.table import overall_verdict, summary_table
from sim.run.capacity import CapacityResult, Tried, capacity, default_direction
from sim.run.loop import SweepInterrupted, iter_completed, run_sweep
from sim.run.results import SweepPoint, SweepResult
from sim.run.store import PointStore, load_sweep, point_id, write_sweep
from sim.run.sweep import sweep
from sim.spec.keys import check_key, parse_grid

__all__ = [
    "CapacityResult",
    "PointStore",
    "SweepInterrupted",
    "SweepPoint",
    "SweepResult",
    "Tried",
    "capacity",
    "check_key",
    "default_direction",
    "iter_completed",
    "load_sweep",
    "overall_verdict",
    "parse_grid",
    "point_id",
    "rank_by_cost",
    "run_sweep",
    "summary_table",
    "sweep",
    "write_sweep",
]
