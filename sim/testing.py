"""Helpers for users' own SLA tests (pytest or plain ``assert``).

A capacity claim becomes a test that fails when a change breaks it::

    from sim.testing import assert_sla

    def test_checkout_bot_meets_its_sla():
        assert_sla("scenarios/order_support.yaml", {"workload.users": 50},
                   e2e_ms_p95=800, ttft_ms_p99=1500)

Thresholds are ``<metric>_<stat>=<ms>`` (``e2e_ms_p95=800``); without any,
the scenario's own ``sla:`` section is used.  The scenario runs (every sweep
point, or the ones ``grid`` keeps) and :func:`assert_sla` raises
:class:`AssertionError` naming every threshold that is not met, with the
value, its confidence interval and the point::

    AssertionError: SLA not met:
      e2e_ms p95 = 912 ms, 95% CI [880, 944] > 800 ms: FAIL (workload.users=1000)
      ttft_ms p99 = 1,480 ms, 95% CI [1,420, 1,540] straddles 1,500 ms: INCONCLUSIVE ...

An inconclusive verdict (the interval straddles the threshold) fails the
assertion too, since the claim is not shown, unless ``allow_inconclusive``;
short smoke runs use that to check that nothing *fails*.

Sweeping scenarios often include points meant to fail (1,000 users on one
GPU, to show where it breaks).  Such a scenario says which points should pass
with an ``expect:`` list; :func:`expected_points` reads it::

    sweep:
      workload.users: [50, 1000]
    expect:
      - params: {workload.users: 50}      # every index must meet the SLA at 50 users
        verdict: pass
      - params: {workload.users: 1000}   # ... and some SLA must fail at 1,000
        verdict: fail

``verdict: pass`` means every SLA passes at every matching point, ``fail``
that some SLA fails at each of them; points no entry names are not asserted.
A scenario without ``expect:`` is expected to pass at every point.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.run.results import Result
from sim.run.sweep import simulate
from sim.spec.metrics import SLA_METRICS, STATS
from sim.spec.scenario import load_scenario
from sim.spec.schema import Scenario

__all__ = ["assert_sla", "expected_points", "parse_thresholds", "sla_failures"]


def parse_thresholds(thresholds: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """``{"e2e_ms_p95": 800}`` -> ``{"e2e_ms": {"p95": 800}}`` (an ``sla:`` section)."""
    sla: dict[str, dict[str, float]] = {}
    for name, thr in thresholds.items():
        metric, _, stat = name.rpartition("_")
        if metric not in SLA_METRICS or stat not in STATS:
            raise ConfigError(
                f"threshold {name!r}: expected <metric>_<stat> with metric one of {', '.join(SLA_METRICS)} "
                f"and stat one of {', '.join(STATS)} (e.g. e2e_ms_p95=800)"
            )
        sla.setdefault(metric, {})[stat] = float(thr)
    return sla


def _where(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "the scenario"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:,.4g}" if abs(x) < 10 else f"{x:,.0f}"


def sla_failures(result: Result, allow_inconclusive: bool = False) -> list[str]:
    """One line per SLA verdict that is not ``pass`` (``fail``, or ``inconclusive`` unless allowed)."""
    lines = []
    for p in result.points:
        conf = p.scenario.run.confidence
        for v in p.summary.sla:
            if v.verdict == "pass" or (v.verdict == "inconclusive" and allow_inconclusive):
                continue
            lo, hi = v.ci
            interval = f"{conf:.0%} CI [{_ms(lo)}, {_ms(hi)}]" if lo is not None and hi is not None else "no interval"
            rel = (
                "straddles"
                if v.verdict == "inconclusive"
                else ">"
                if v.value is not None and v.value > v.threshold
                else "vs"
            )
            hint = f"; {v.hint}" if v.hint else ""
            lines.append(
                f"{v.metric} {v.stat} = {_ms(v.value)} ms, {interval} {rel} "
                f"{_ms(v.threshold)} ms: {v.verdict.upper()} ({_where(p.params)}{hint})"
            )
    return lines


def assert_sla(
    scenario: str | Path | Mapping | Scenario,
    overrides: Mapping[str, Any] | None = None,
    *,
    replications: int | None = None,
    jobs: int | None = 1,
    seed: int | None = None,
    grid: Mapping[str, list] | None = None,
    allow_inconclusive: bool = False,
    **thresholds: float,
) -> Result:
    """Run ``scenario`` and assert every SLA passes; return the :class:`Result`.

    ``thresholds`` (``e2e_ms_p95=800``) replace the scenario's ``sla:``
    section; ``overrides`` are dotted keys as for ``--set``; ``grid``
    replaces swept values (``{"workload.users": [50]}`` runs only those
    points).  Raises :class:`AssertionError` listing each threshold not met.
    """
    ov = dict(overrides or {})
    if thresholds:
        ov["sla"] = parse_thresholds(thresholds)
    result = simulate(scenario, ov, replications=replications, seed=seed, jobs=jobs, grid=grid)
    if not any(p.summary.sla for p in result.points):
        raise ConfigError(
            "assert_sla: no SLA to check: give thresholds such as e2e_ms_p95=800 or an sla: section in the scenario"
        )
    lines = sla_failures(result, allow_inconclusive)
    if lines:
        raise AssertionError("SLA not met:\n  " + "\n  ".join(lines))
    return result


def expected_points(scenario: str | Path | Mapping | Scenario) -> list[tuple[dict[str, list], str]]:
    """The scenario's ``expect:`` entries as ``(grid, verdict)`` pairs.

    ``grid`` maps each named swept key to a one-value list, ready for
    ``simulate(..., grid=grid)`` / ``assert_sla(..., grid=grid)``.  Without
    ``expect:`` the whole scenario is expected to pass: ``[({}, "pass")]``.
    """
    scn = load_scenario(scenario)
    if not scn.expect:
        return [({}, "pass")]
    return [({k: [v] for k, v in e.params.items()}, e.verdict) for e in scn.expect]
