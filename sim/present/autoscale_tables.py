"""What ``capsim autoscale`` prints: each fleet's verdict, failing windows, GPU-hours and cost,
and the autoscaled fleet against the cheapest static fleet that passes, window by window."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from sim.run.autoscale import Comparison, Fleet


def _money(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"${x:,.{digits}f}"


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return "∞ (never all answered)" if not math.isfinite(x) else f"{x:,.0f}"


def _windows(f: Fleet, width: float | None) -> str:
    if not f.windows_failed:
        return "none"
    w = width or 0.0
    return ", ".join(f"{t:,.0f}-{t + w:,.0f} s" for t in f.windows_failed)


def fleet_rows(c: Comparison) -> list[list[str]]:
    """One row per fleet: fleet, verdict, SLA windows failed, worst window P95, GPU-hours,
    mean replicas paid, $/hour, $/1,000 answers."""
    rows = []
    for f in [c.autoscaled, *c.static]:
        a = f.autoscale
        replicas = f"{a['replicas_paid']:.2f}" if a else str(f.replicas)
        rows.append(
            [
                f.label,
                f.verdict.upper() if f.verdict == "fail" else f.verdict,
                _windows(f, c.sla_window_s),
                _ms(f.worst_window_p95_ms),
                f"{f.gpu_hours:.3f}",
                replicas,
                _money(f.cost_per_hour),
                _money(f.cost_per_1000_answers, 4),
            ]
        )
    return rows


FLEET_HEADER = [
    "fleet",
    "verdict",
    "SLA windows failed",
    "worst window P95 (ms)",
    "GPU-hours",
    "replicas paid (mean)",
    "$/hour",
    "$/1,000 answers",
]


def window_rows(c: Comparison) -> list[list[str]]:
    """Per timeline window: the autoscaled fleet's P95 and replicas (paid, ready) beside the
    cheapest passing static fleet's P95."""
    s = c.cheapest_static
    a = c.autoscaled
    reps = {w["start_s"]: w for w in (a.autoscale or {}).get("windows", [])}
    other = {w["start_s"]: w["p95_ms"] for w in (s.timeline if s else [])}
    out = []
    for w in a.timeline:
        r = reps.get(w["start_s"], {})
        out.append(
            [
                f"{w['start_s']:,.0f}-{w['end_s']:,.0f}",
                _ms(w["p95_ms"]),
                f"{r['paid']:.2f}" if r else "-",
                f"{r['ready']:.2f}" if r else "-",
                _ms(other.get(w["start_s"])) if s else "-",
            ]
        )
    return out


def window_header(c: Comparison) -> list[str]:
    s = c.cheapest_static
    return ["window (s)", "autoscaled P95 (ms)", "paid", "ready", f"{s.label} P95 (ms)" if s else "static P95"]


def summary_lines(c: Comparison) -> list[str]:
    a, s = c.autoscaled, c.cheapest_static
    auto = a.autoscale or {}
    lines = [
        f"autoscaled: {a.verdict}, {auto.get('replicas_paid', 0):.2f} replicas paid on average, "
        f"{a.gpu_hours:.3f} GPU-hours, {_money(a.cost_per_hour)}/hour; "
        f"cold start {auto.get('cold_start_s', 0):,.1f} s, {auto.get('scale_ups', 0):.1f} scale-ups per replication"
    ]
    if s is None:
        lines.append("no static fleet tried passes every SLA")
    else:
        saving = c.saving_per_hour
        verb = "saves" if saving is not None and saving > 0 else "costs"
        lines.append(
            f"cheapest static fleet that passes: {s.label}, {s.gpu_hours:.3f} GPU-hours, "
            f"{_money(s.cost_per_hour)}/hour; the autoscaler {verb} {_money(abs(saving or 0.0))}/hour"
            + ("" if a.verdict == "pass" else f", but its own verdict is {a.verdict}")
        )
    if c.price_date:
        lines.append(f"catalog prices read on {c.price_date}")
    return lines


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title)
    for i, h in enumerate(header):
        t.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def print_comparison(c: Comparison, con: Console, files: list[Any]) -> None:
    con.print(_table(f"{c.scenario}: autoscaled against static fleets", FLEET_HEADER, fleet_rows(c)))
    con.print(_table("per window", window_header(c), window_rows(c)))
    for line in summary_lines(c):
        con.print(line, markup=False, highlight=False)
    for f in files:
        con.print(f"wrote {f}", markup=False, highlight=False)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (for the documentation page generated from a comparison)."""
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
