"""What a configuration costs, at the throughput the simulation found.

The optional ``cost:`` section prices the hardware by the hour; a price it
leaves out comes from the price catalog (:mod:`sim.spec.prices`: on-demand
prices read from public price pages, each with its date)::

    cost: {}                        # every price from the catalog
    cost:
      gpu_per_hour: 2.50            # USD per GPU-hour (your contract's)
      cpu_core_per_hour: 0.04       # USD per vCPU-hour
      cpu_worker_per_hour: 0.05     # or: USD per retrieval worker-hour, whatever its cores

The fleet is ``llm.replicas x llm.tensor_parallel`` GPUs (a disaggregated deployment: each
pool's ``replicas x tensor_parallel`` GPUs at its own GPU's price) and
``retrieval.workers`` workers on ``retrieval.cpu_cores`` cores (one per
worker when unset); a disabled stage costs nothing.  From the measured
throughput ``X`` (answers per second) and output-token rate ``T`` (tokens per
second)::

    cpu_per_hour              = cpu_worker_per_hour * workers   (when given)
                              = cpu_core_per_hour * cores        (otherwise)
    per_hour                  = gpu_per_hour * GPUs + cpu_per_hour
    per_1000_answers          = per_hour / (3600 * X) * 1000
    per_million_output_tokens = per_hour / (3600 * T) * 1e6

so points of a sweep that meet the SLA can be ranked by what an answer costs.
``price_date`` is the oldest read date of the catalog prices used (None when
the scenario gives every price).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from sim.errors import CapsimError
from sim.spec.prices import cpu_core_price, gpu_price
from sim.spec.schema import Scenario

if TYPE_CHECKING:
    import pandas as pd  # a run that prints its table never needs pandas: imported where a frame is made


def gpus(scn: Scenario) -> int:
    """GPUs the LLM stage holds: replicas x tensor_parallel, summed over the pools of a
    disaggregated deployment (0 when disabled)."""
    return sum(n for _, n in gpu_fleet(scn))


def gpu_fleet(scn: Scenario) -> list[tuple[str | None, int]]:
    """``(GPU name, count)`` of each pool of GPUs: one for a plain fleet, prefill then decode for a
    disaggregated one (empty when the LLM stage is disabled)."""
    llm = scn.llm
    if not llm.enabled:
        return []
    if getattr(llm, "disaggregated", None) is not None:
        return [(p.gpu.name, p.replicas * p.tensor_parallel) for p in (llm.pool("prefill"), llm.pool("decode"))]
    return [(llm.gpu.name, int(llm.replicas) * int(getattr(llm, "tensor_parallel", 1) or 1))]


def cpu_workers(scn: Scenario) -> int:
    return int(scn.retrieval.workers) if scn.retrieval.enabled else 0


def cpu_cores(scn: Scenario) -> int:
    """Cores the retrieval workers run on: ``retrieval.cpu_cores``, else one per worker (0 when disabled)."""
    if not scn.retrieval.enabled:
        return 0
    return int(scn.retrieval.cpu_cores or scn.retrieval.workers)


class Prices(TypedDict):
    """USD per hour a fleet is charged at: per GPU, for the whole retrieval stage's CPUs, and
    the date the catalog's prices were read (None when the ``cost:`` section gave them all)."""

    gpu_per_hour: float
    cpu_per_hour: float
    price_date: str | None


class _FleetHours(TypedDict, total=False):
    gpu_hours: float  # an autoscaled fleet's GPU-hours paid for (sim.analysis.autoscale)


class CostFigures(_FleetHours):
    """A point's ``cost`` entry, USD: per hour, per 1,000 answers and per million output
    tokens (None at no throughput), and the catalog's ``price_date``; an autoscaled fleet's
    also its ``gpu_hours``."""

    per_hour: float
    per_1000_answers: float | None
    per_million_output_tokens: float | None
    price_date: str | None


def prices(scn: Scenario) -> Prices | None:
    """The prices a scenario's fleet is charged at, or None without a ``cost:`` section:
    ``{gpu_per_hour, cpu_per_hour, price_date}`` (``cpu_per_hour`` for the whole retrieval
    stage), each from the ``cost:`` section or, where it gives none, from the catalog."""
    c = scn.cost
    if c is None:
        return None
    dates: list[str] = []
    gpu = c.gpu_per_hour
    fleet = gpu_fleet(scn)
    if gpu is None and gpus(scn):
        usd = 0.0
        for name, n in fleet:
            entry = gpu_price(name)
            if entry is None:  # the schema refuses this; a hand-built Scenario may not have been checked
                raise CapsimError(f"cost.gpu_per_hour: no catalog price for GPU {name!r}")
            usd += entry.usd_per_hour * n
            dates.append(entry.read_on)
        gpu = usd / gpus(scn)  # the fleet's mean price per GPU (one GPU type: its price)
    if c.cpu_worker_per_hour is not None:
        cpu = c.cpu_worker_per_hour * cpu_workers(scn)
    else:
        core = c.cpu_core_per_hour
        if core is None and cpu_cores(scn):
            entry = cpu_core_price()
            core = entry.usd_per_hour
            dates.append(entry.read_on)
        cpu = (core or 0.0) * cpu_cores(scn)
    return {"gpu_per_hour": gpu or 0.0, "cpu_per_hour": cpu, "price_date": min(dates) if dates else None}


def per_hour(scn: Scenario, gpus_held: float | None = None) -> float | None:
    """USD per hour of the whole fleet, or None without a ``cost:`` section.  ``gpus_held``
    replaces the static count :func:`gpus` (an autoscaled fleet's mean GPUs paid for)."""
    p = prices(scn)
    if p is None:
        return None
    return p["gpu_per_hour"] * (gpus(scn) if gpus_held is None else gpus_held) + p["cpu_per_hour"]


def cost_figures(
    scn: Scenario, throughput_per_s: float, output_tokens_per_s: float, gpus_held: float | None = None
) -> CostFigures | None:
    """``{per_hour, per_1000_answers, per_million_output_tokens}`` in USD and the ``price_date`` of the
    catalog prices used (None without a ``cost:`` section); ``gpus_held`` as in :func:`per_hour`."""
    p = prices(scn)
    ph = per_hour(scn, gpus_held)
    if p is None or ph is None:
        return None

    def unit(rate_per_s: float, per: float) -> float | None:
        return ph / (3600.0 * rate_per_s) * per if rate_per_s > 0 else None

    return {
        "per_hour": ph,
        "per_1000_answers": unit(throughput_per_s, 1e3),
        "per_million_output_tokens": unit(output_tokens_per_s, 1e6),
        "price_date": p["price_date"],
    }


def point_cost(scn: Scenario, answers_per_s: float, output_tokens_per_s: float) -> CostFigures | None:
    """Cost figures of one point at the answers and output tokens per second it delivered."""
    if scn.cost is None:
        return None
    return cost_figures(scn, answers_per_s, output_tokens_per_s)


def rank_by_cost(table: pd.DataFrame) -> pd.DataFrame:
    """Points that pass every SLA first, cheapest answer first; then the rest, cheapest first."""
    if "cost_per_1000_answers" not in table or table["cost_per_1000_answers"].isna().all():
        raise CapsimError(
            "--rank cost: no cost figures; add a cost: section "
            "(e.g. --set cost.gpu_per_hour=2.5 --set cost.cpu_worker_per_hour=0.05)"
        )
    order = table.assign(_fails=table["verdict"] != "pass")
    return order.sort_values(["_fails", "cost_per_1000_answers"], kind="stable", na_position="last").drop(
        columns="_fails"
    )


# --------------------------------------------------------------------------- running
