"""Point summaries flattened into one row per point, and the verdict over a point's SLAs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sim.analysis.stats import combine_verdicts
from sim.spec.metrics import METRIC_STAGE, TABLE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd  # deferred: imported where a frame is made


def param_value(v: Any) -> Any:
    return v if isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)


def param_columns(params: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """A dtype per swept key, the same for every point (so Parquet schemas agree)."""
    keys: list[str] = []
    for p in params:
        keys += [k for k in p if k not in keys]
    out = {}
    for k in keys:
        vals = [param_value(p.get(k)) for p in params]
        if all(isinstance(v, bool) for v in vals):
            out[k] = "bool"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
            out[k] = "int64"
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = "float64"
        else:
            out[k] = "str"
    return out


def with_params(df: pd.DataFrame, params: Mapping[str, Any], dtypes: Mapping[str, str]) -> pd.DataFrame:
    import pandas as pd  # deferred: ~0.3 s a run printing its table does without

    df = df.copy()
    for k, dt in dtypes.items():
        v = param_value(params.get(k))
        df[k] = pd.Series([str(v) if dt == "str" else v] * len(df), dtype=object if dt == "str" else dt)
    return df


def overall_verdict(summary: Mapping[str, Any]) -> str:
    """``pass`` / ``fail`` / ``inconclusive`` over every SLA of a point summary document."""
    return combine_verdicts([s["verdict"] for s in summary.get("sla", [])])


def table_columns(points: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The ``(metric, statistic)`` columns a results table shows (:data:`sim.spec.metrics.TABLE_COLUMNS`):
    those of a metric every request has, or one some point measured (a stage that is off
    everywhere gets no column)."""
    measured = {m for p in points for m in (p.get("metrics") or {})}
    return [(m, st) for m, st in TABLE_COLUMNS if METRIC_STAGE.get(m) is None or m in measured]


def summary_table(points: Sequence[Mapping[str, Any]], ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Flatten point summaries (``summary["points"]``) into one row per point."""
    import pandas as pd  # deferred: ~0.3 s a run printing its table does without

    dtypes = param_columns([p.get("params", {}) for p in points])
    routing = any("routing" in p.get("utilization", {}) for p in points)
    columns = table_columns(points)
    rows = []
    for i, s in enumerate(points):
        row: dict[str, Any] = {"point": i}
        if ids is not None:
            row["id"] = ids[i]
        for k in dtypes:
            row[k] = param_value(s.get("params", {}).get(k))
        row["e2e_mean_ms"] = (s.get("metrics", {}).get("e2e_ms") or {}).get("mean")
        for metric, st in columns:  # the metric registry's table columns, each with its interval
            m = s.get("metrics", {}).get(metric) or {}
            name = f"{metric.removesuffix('_ms')}_{st}"
            row[f"{name}_ms"] = m.get(st)
            lo, hi = m.get("ci", {}).get(st) or [None, None]
            row[f"{name}_ci_low_ms"], row[f"{name}_ci_high_ms"] = lo, hi
        row["throughput_per_s"] = s.get("throughput_per_s")
        row["cache_hit_rate"] = s.get("cache_hit_rate")
        u = s.get("utilization", {})
        row["retrieval_utilization"] = u.get("retrieval")
        # The GPU's headroom (answers/s over the replicas' capacity at a full batch), and beside it,
        # named for what it is, the share of time a replica has any request in flight: continuous
        # batching keeps that near 1 long before capacity runs out, so it must not read "utilisation".
        row["gpu_load"] = (s.get("gpu") or {}).get("load")
        row["gpu_in_use"] = u.get("gpu")
        if routing:  # only when a point routes, so tables without the stage keep their columns
            row["routing_utilization"] = u.get("routing")
        cost = s.get("cost") or {}
        row["cost_per_hour"] = cost.get("per_hour")
        row["cost_per_1000_answers"] = cost.get("per_1000_answers")
        row["cost_per_million_output_tokens"] = cost.get("per_million_output_tokens")
        row["replications"] = s.get("replications")
        row["stable"] = s.get("stability", {}).get("stable")
        row["verdict"] = overall_verdict(s)
        for v in s.get("sla", []):
            row[f"sla_{v['metric']}_{v['stat']}"] = v["verdict"]
        rows.append(row)
    df = pd.DataFrame(rows)
    for k, dt in dtypes.items():
        if dt != "str" and k in df:
            df[k] = df[k].astype(dt)  # type: ignore[call-overload]  # dt is "bool", "int64" or "float64"
    for col in df.columns:  # a figure missing at every point (no interval) is still a float column
        if col.endswith(("_ms", "_per_s")) and df[col].dtype == object:
            df[col] = pd.to_numeric(df[col])
    return df
