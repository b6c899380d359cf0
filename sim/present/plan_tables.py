"""What ``capsim plan`` prints: the winner, the Pareto front, the runner-ups and the knob table."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from sim.run.plan import Candidate, PlanResult

#: Runner-up rows printed (every one is in plan.json).
RUNNER_UP_ROWS = 12


def _money(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"${x:,.{digits}f}"


def _p95(c: Candidate) -> str:
    o = c.best
    if o is None or o.p95_ms is None:
        return "-"
    if not math.isfinite(o.p95_ms):
        return "∞ (no steady state)"
    hw = o.half_width_ms
    return f"{o.p95_ms:,.0f}" + ("" if hw is None else f" ± {hw:,.0f}")


def _delta(x: float | None, unit: str, digits: int = 0) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "+∞ " + unit
    return f"{x:+,.{digits}f} {unit}"


def winner_lines(res: PlanResult) -> list[str]:
    w = res.winner
    n = res.counts
    lines = [
        f"{n['configurations']:,} configurations: {n['pruned']:,} pruned analytically, "
        f"{n['skipped']:,} skipped (a better-resourced one of their group fails), {n['screened']:,} screened "
        f"({res.screen_replications} replications), {n['confirmed']:,} confirmed ({res.replications} replications); "
        f"{res.simulations:,} simulations in {res.wall_s:,.0f} s"
    ]
    if w is None or w.confirm is None:
        lines.append("no configuration in the plan passes every SLA")
        return lines
    c: dict[str, Any] = dict(w.confirm.cost or {})
    lines += [
        f"cheapest passing: {w.label}",
        f"  cost {_money(c.get('per_hour'))}/hour, {_money(c.get('per_1000_answers'), 4)} per 1,000 answers, "
        f"{_money(c.get('per_million_output_tokens'))} per million output tokens"
        + (f" (catalog prices read on {c['price_date']})" if c.get("price_date") else " (the scenario's prices)"),
        f"  e2e P95 {_p95(w)} ms (95 % interval, {w.confirm.replications} replications), "
        f"{w.confirm.throughput_per_s:,.1f} answers/s",
    ]
    return lines


def front_table(res: PlanResult) -> Table:
    t = Table(title="Pareto front: no other simulated configuration is both cheaper and faster")
    for col in ("configuration", "$/hour", "e2e P95 ms", "SLA", "replications"):
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for c in res.front:
        o = c.best
        assert o is not None
        mark = "winner" if c is res.winner else o.verdict
        t.add_row(c.label, _money(c.cost_per_hour), _p95(c), mark, str(o.replications))
    return t


def runner_up_table(res: PlanResult) -> Table:
    """One row per reason and price: the first configuration it applies to and how many more."""
    rows: list[tuple[Candidate, str, int]] = []
    for c, why in res.runner_ups:
        if rows and rows[-1][1] == why and rows[-1][0].cost_per_hour == c.cost_per_hour:
            rows[-1] = (rows[-1][0], why, rows[-1][2] + 1)
        else:
            rows.append((c, why, 0))
    shown = rows[:RUNNER_UP_ROWS]
    more = sum(1 + n for _, _, n in rows[RUNNER_UP_ROWS:])
    t = Table(
        title=f"within {res.band:.0%} of the winner's cost, and why each loses",
        caption=f"{more:,} more in plan.json" if more > 0 else None,
    )
    t.add_column("configuration")
    t.add_column("$/hour", justify="right")
    t.add_column("why it loses")
    for c, why, n in shown:
        t.add_row(c.label + (f" (+{n} alike)" if n else ""), _money(c.cost_per_hour), why)
    return t


def knob_table(res: PlanResult) -> Table:
    t = Table(
        title="which knob matters: each planned key one value each way from the winner",
        caption=f"ΔP95 on the screen's {res.screen_replications} replications, the same random numbers as the winner",
    )
    for col in ("key", "value", "ΔP95", "Δcost", "verdict"):
        t.add_column(col, justify="left" if col in ("key", "verdict") else "right")
    for k in res.knobs:
        verdict = k.note or (k.candidate.screen.verdict if k.candidate.screen else "-")
        t.add_row(
            k.key,
            f"{'↓' if k.direction == 'down' else '↑'} {k.value}",
            _delta(k.delta_p95_ms, "ms"),
            _delta(k.delta_cost_per_hour, "$/h", 2),
            verdict,
        )
    return t


def print_plan(res: PlanResult, con: Console, files: list[Any] | None = None) -> None:
    for line in winner_lines(res):
        con.print(line, markup=False, highlight=False, soft_wrap=True)
    if res.front:
        con.print(front_table(res))
    if res.runner_ups:
        con.print(runner_up_table(res))
    if res.knobs:
        con.print(knob_table(res))
    for f in files or []:
        con.print(f"wrote {f}", markup=False, highlight=False)
