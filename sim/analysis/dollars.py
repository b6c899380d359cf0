"""What a configuration costs, at the throughput the simulation found.

The optional ``cost:`` section prices the hardware by the hour::

    cost:
      gpu_per_hour: 2.50          # USD per GPU-hour
      cpu_worker_per_hour: 0.05   # USD per retrieval worker-hour

The fleet is ``llm.replicas x llm.tensor_parallel`` GPUs (``tensor_parallel``
counts as 1 where the schema has no such key) and ``retrieval.workers``
workers; a disabled stage costs nothing.  From the measured throughput ``X``
(answers per second) and output-token rate ``T`` (tokens per second)::

    per_hour                  = gpu_per_hour * GPUs + cpu_worker_per_hour * workers
    per_1000_answers          = per_hour / (3600 * X) * 1000
    per_million_output_tokens = per_hour / (3600 * T) * 1e6

so points of a sweep that meet the SLA can be ranked by what an answer costs.
"""

from __future__ import annotations

import pandas as pd

from sim.errors import CapsimError
from sim.spec.schema import Scenario


def gpus(scn: Scenario) -> int:
    """GPUs the LLM stage holds: replicas x tensor_parallel (0 when disabled)."""
    if not scn.llm.enabled:
        return 0
    return int(scn.llm.replicas) * int(getattr(scn.llm, "tensor_parallel", 1) or 1)


def cpu_workers(scn: Scenario) -> int:
    return int(scn.retrieval.workers) if scn.retrieval.enabled else 0


def per_hour(scn: Scenario) -> float | None:
    """USD per hour of the whole fleet, or None without a ``cost:`` section."""
    c = scn.cost
    if c is None:
        return None
    return c.gpu_per_hour * gpus(scn) + c.cpu_worker_per_hour * cpu_workers(scn)


def cost_figures(scn: Scenario, throughput_per_s: float, output_tokens_per_s: float) -> dict | None:
    """``{per_hour, per_1000_answers, per_million_output_tokens}`` in USD (None without prices)."""
    ph = per_hour(scn)
    if ph is None:
        return None

    def unit(rate_per_s: float, per: float) -> float | None:
        return ph / (3600.0 * rate_per_s) * per if rate_per_s > 0 else None

    return {
        "per_hour": ph,
        "per_1000_answers": unit(throughput_per_s, 1e3),
        "per_million_output_tokens": unit(output_tokens_per_s, 1e6),
    }


def point_cost(scn: Scenario, answers_per_s: float, output_tokens_per_s: float) -> dict | None:
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
