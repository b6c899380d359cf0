"""An autoscaled fleet against static ones: does it hold the SLA, and what does it save?

:func:`compare` runs a scenario whose ``llm.autoscale`` is set, and beside it the same
scenario with static fleets of ``llm.replicas`` = each count from ``min_replicas`` to
``max_replicas`` (or the counts given), the autoscaler removed.  Every run uses the
scenario's seed, so replication ``r`` of every fleet sees the same shoppers, questions
and answer lengths (common random numbers): a difference is the fleet's.

For each fleet it reports the SLA verdict, the windows of the windowed SLA
(``timeline.sla``) that fail, the worst window's P95, GPU-hours over the measurement
window (a static fleet's ``replicas x tensor_parallel x hours``, an autoscaled one's from
its history, :mod:`sim.analysis.autoscale`) and the cost per hour and per 1,000 answers;
and names the cheapest static fleet whose every SLA passes, the one the autoscaler has
to beat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.errors import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, ConfigError
from sim.run.loop import run_sweep
from sim.spec.scenario import Point, apply_overrides, load_raw, run_overrides
from sim.spec.schema import Scenario
from sim.spec.schema import validate_scenario as _validate


@dataclass
class Fleet:
    """One fleet's outcome: ``label`` ("autoscaled" or "static N")."""

    label: str
    replicas: int | None  # static count; None for the autoscaled fleet
    verdict: str
    p95_ms: float | None
    p95_ci: list[float | None]
    windows_failed: list[float]
    worst_window_p95_ms: float | None
    gpu_hours: float
    cost_per_hour: float | None
    cost_per_1000_answers: float | None
    throughput_per_s: float
    timeline: list[dict[str, Any]] = field(default_factory=list)
    autoscale: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Comparison:
    """What :func:`compare` found."""

    scenario: str
    window_s: float | None
    sla_window_s: float | None
    autoscaled: Fleet
    static: list[Fleet]
    price_date: str | None
    sla_p95_ms: float | None = None  # the e2e P95 threshold (windowed, else whole-run)

    @property
    def cheapest_static(self) -> Fleet | None:
        """The cheapest static fleet whose every SLA passes (None when none does)."""
        ok = [f for f in self.static if f.verdict == "pass" and f.cost_per_hour is not None]
        return min(ok, key=lambda f: (f.cost_per_hour, f.replicas)) if ok else None

    @property
    def saving_per_hour(self) -> float | None:
        """What the autoscaler saves per hour against the cheapest passing static fleet
        (negative: it costs more)."""
        s, a = self.cheapest_static, self.autoscaled
        if s is None or s.cost_per_hour is None or a.cost_per_hour is None:
            return None
        return s.cost_per_hour - a.cost_per_hour

    @property
    def exit_code(self) -> int:
        """The autoscaled fleet's verdict: 0 pass, 1 fail, 3 inconclusive."""
        v = self.autoscaled.verdict
        return EXIT_PASS if v == "pass" else EXIT_FAIL if v == "fail" else EXIT_INCONCLUSIVE

    def to_dict(self) -> dict[str, Any]:
        c = self.cheapest_static
        return {
            "scenario": self.scenario,
            "window_s": self.window_s,
            "sla_window_s": self.sla_window_s,
            "price_date": self.price_date,
            "sla_p95_ms": self.sla_p95_ms,
            "autoscaled": self.autoscaled.to_dict(),
            "static": [f.to_dict() for f in self.static],
            "cheapest_static": c.label if c else None,
            "saving_per_hour": self.saving_per_hour,
        }


def _fleet(label: str, replicas: int | None, scn: Scenario, summary: Any) -> Fleet:
    e2e = summary.metrics.get("e2e_ms")
    p95 = e2e.values.get("p95") if e2e else None
    tl = summary.timeline or {}
    windowed = tl.get("sla", [])
    failed = sorted({float(t) for v in windowed for t in v.get("windows_failed", [])})
    e2e_windowed = [v for v in windowed if v["metric"] == "e2e_ms"]
    worst = max((v["value"] for v in e2e_windowed if v["value"] is not None), default=None)
    if any(v["value"] is None and v["verdict"] == "fail" for v in e2e_windowed):
        worst = math.inf
    cost = summary.cost or {}
    lo = float(summary.warmup_s) if isinstance(summary.warmup_s, (int, float)) else 0.0
    hi = float(scn.run.duration_s)
    auto = summary.gpu.get("autoscale")
    if auto is not None:
        gpu_hours = float(auto["gpu_hours"])
    else:
        gpu_hours = scn.llm.replicas * scn.llm.tensor_parallel * (hi - lo) / 3600.0 if scn.llm.enabled else 0.0
    rows = [
        {"start_s": w["start_s"], "end_s": w["end_s"], "p95_ms": (w.get("e2e_ms") or {}).get("p95")}
        for w in tl.get("windows", [])
    ]
    return Fleet(
        label=label,
        replicas=replicas,
        verdict=summary.verdict,
        p95_ms=p95,
        p95_ci=list(e2e.ci.get("p95", [None, None])) if e2e else [None, None],
        windows_failed=failed,
        worst_window_p95_ms=worst,
        gpu_hours=gpu_hours,
        cost_per_hour=cost.get("per_hour"),
        cost_per_1000_answers=cost.get("per_1000_answers"),
        throughput_per_s=summary.throughput_per_s,
        timeline=rows,
        autoscale=auto,
    )


def compare(
    source: str | Path | Mapping | Scenario,
    overrides: Mapping[str, Any] | None = None,
    *,
    static: Sequence[int] | None = None,
    replications: int | None = None,
    seed: int | None = None,
    executor: Any = None,
    jobs: int | None = None,
) -> Comparison:
    """Run the scenario's autoscaled fleet and static fleets of ``static`` replicas (default:
    ``min_replicas`` to ``max_replicas``); see the module docstring."""
    ov = run_overrides(overrides, seed, replications)
    raw = apply_overrides(load_raw(source.model_dump(mode="json") if isinstance(source, Scenario) else source), ov)
    for k in ("sweep", "expect", "plan"):
        raw.pop(k, None)
    if raw.get("cost") is None:
        raw["cost"] = {}  # every price from the catalog
    base = _validate(raw)
    a = base.llm.autoscale
    if a is None or not base.llm.enabled:
        raise ConfigError("llm.autoscale: the scenario has no autoscaler; add an llm.autoscale section")
    if not base.sla and not base.timeline.sla:
        raise ConfigError("autoscale needs an SLA to judge the fleets: add timeline.sla (or sla)")
    counts = list(static) if static is not None else list(range(a.min_replicas, a.max_replicas + 1))
    if not counts or any(not isinstance(n, int) or isinstance(n, bool) or n < 1 for n in counts):
        raise ConfigError(f"--static: replica counts must be whole numbers >= 1, got {counts}")
    points = [Point({"fleet": "autoscaled"}, base)]
    for n in counts:
        d = base.model_dump(mode="json")
        d["llm"]["autoscale"] = None
        d["llm"]["replicas"] = n
        points.append(Point({"fleet": f"static {n}"}, _validate(d)))
    res = run_sweep(points, None, executor=executor, jobs=jobs, name=base.name)
    fleets = [
        _fleet(p.params["fleet"], None if i == 0 else counts[i - 1], points[i].scenario, sp.summary)
        for i, (p, sp) in enumerate(zip(points, res.points))
    ]
    cost = res.points[0].summary.cost
    tl = base.timeline
    return Comparison(
        scenario=base.name,
        window_s=tl.window_s if base.timeline_on else None,
        sla_window_s=(tl.sla_window_s or tl.window_s) if tl.sla else None,
        autoscaled=fleets[0],
        static=fleets[1:],
        price_date=cost.get("price_date") if cost else None,
        sla_p95_ms=(tl.sla.get("e2e_ms") or {}).get("p95") or (base.sla.get("e2e_ms") or {}).get("p95"),
    )


__all__ = ["Comparison", "Fleet", "compare"]
