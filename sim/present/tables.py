"""Everything the program writes: tables, JSON, Parquet.

Only this module (and the calibration writer) touches the disk.  Files are
written to a temporary name in the target folder and renamed into place, so
an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table

from sim.analysis.summary import PointSummary
from sim.analysis.table import table_columns
from sim.run.results import Result


def _fmt(m: dict | None, stat: str, steady: bool = True) -> str:
    """``412 ± 18`` (value ± half-width); ``412↑`` where no steady state exists;
    ``∞`` where more requests than the percentile allows never finished (censored)."""
    if m is None:
        return "-"
    if m.get(stat) is None:
        return ("∞" + ("" if steady else "↑")) if m.get("n") else "-"
    v = m[stat]
    if not steady:
        return f"{v:,.0f}↑"
    lo, hi = m["ci"][stat]
    if lo is None or hi is None:
        return f"{v:,.0f}"
    return f"{v:,.0f} ± {(hi - lo) / 2:,.0f}"


def _fmt_small(m: dict | None, stat: str, steady: bool = True) -> str:
    """:func:`_fmt` with three significant digits under 10 ms (a routing call can take 0.2 ms)."""
    if m is None or m.get(stat) is None or m[stat] >= 10:
        return _fmt(m, stat, steady)
    v = m[stat]
    lo, hi = m["ci"][stat]
    if not steady:
        return f"{v:.3g}↑"
    if lo is None or hi is None:
        return f"{v:.3g}"
    # three significant digits for the value, and the half-width to the same decimals
    # (0.2975 ± 0.0089 -> "0.298 ± 0.009", not "0.3 ± 0.0089")
    dec = max(0, 2 - math.floor(math.log10(abs(v)))) if v else 3
    return f"{v:.{dec}f} ± {(hi - lo) / 2:.{dec}f}"


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}" if abs(x) < 10 else f"{x:,.0f}"


def analytic_table(result: Result) -> Table | None:
    """Simulated vs formula, for points whose scenario is exactly analysable."""
    rows = [(p, p.summary["analytic"]) for p in result.points if p.summary.get("analytic", {}).get("compare")]
    if not rows:
        return None
    conf = result.points[0].scenario.run.confidence
    keys = list(result.points[0].params)
    t = Table(title=f"analytic cross-check (exact for these scenarios; ± half-width of the {conf:.0%} interval)")
    for k in keys:
        t.add_column(k.split(".")[-1], justify="right")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("model", "left"),
        ("quantity", "left"),
        ("simulated", "right"),
        ("analytic", "right"),
        ("diff", "right"),
        ("in CI", "center"),
    )
    for col, just in columns:
        t.add_column(col, justify=just)
    for p, a in rows:
        for c in a["compare"]:
            lo, hi = c["ci"]
            sim_txt = _num(c["simulated"]) + ("" if lo is None or hi is None else f" ± {_num((hi - lo) / 2)}")
            inside = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[c["within_ci"]]
            diff = "-" if c["rel_error"] is None else f"{c['rel_error']:+.1%}"
            t.add_row(
                *[str(p.params[k]) for k in keys], a["model"], c["quantity"], sim_txt, _num(c["analytic"]), diff, inside
            )
    return t


def run_table(result: Result) -> Table:
    pts = result.points
    keys = list(pts[0].params) if pts else []
    t = Table(
        title=f"{result.name}: latency in ms (value ± half-width of the {pts[0].scenario.run.confidence:.0%} interval)"
        if pts
        else result.name
    )
    for k in keys:
        t.add_column(k.split(".")[-1], justify="right")
    recall = any((p.summary.get("retrieval") or {}).get("recall_at_k") is not None for p in pts)
    routing = any("routing" in p.summary["utilization"] for p in pts)
    columns = table_columns([p.summary.to_dict() for p in pts])
    for col in (
        *(f"{m.removesuffix('_ms')} {st}" for m, st in columns),
        "answers/s",
        *(["routing util"] if routing else []),
        "cache hit",
        *(["recall@k"] if recall else []),
        "retrieval util",
        "gpu load",
        "gpu in use",
        "mean batch",
        "SLA",
    ):
        t.add_column(col, justify="right")
    for p in pts:
        s = p.summary
        steady = s["stability"]["stable"]
        verdicts = []
        for v in s["sla"]:
            mark = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "inconclusive": "[yellow]?[/]"}[v["verdict"]]
            # The statistic judged is shown with its value, whether or not the table has its column
            # (for a windowed SLA, the worst window's).
            if v.get("window_s") is not None:
                every = f" every {v['window_s']:g}s"
                got = "-" if v.get("value") is None else f"{v['value']:,.0f}"
            else:
                every = ""
                got = _fmt(s["metrics"].get(v["metric"]), v["stat"], steady)
            verdicts.append(f"{v['metric'].removesuffix('_ms')} {v['stat']}{every} {got} ≤ {v['threshold']:g}: {mark}")
        if not s["stability"]["stable"]:
            verdicts.append("[red]unstable[/]")
        u = s["utilization"]
        t.add_row(
            *[str(p.params[k]) for k in keys],
            *(_fmt_small(s["metrics"].get(m), st, steady) for m, st in columns),
            f"{s['throughput_per_s']:.1f}",
            *(["-" if "routing" not in u else f"{u['routing']:.0%}"] if routing else []),
            "-" if s["cache_hit_rate"] is None else f"{s['cache_hit_rate']:.0%}",
            *([_recall(s.get("retrieval"))] if recall else []),
            "-" if "retrieval" not in u else f"{u['retrieval']:.0%}",
            "-" if (s.get("gpu") or {}).get("load") is None else f"{s['gpu']['load']:.0%}",
            "-" if "gpu" not in u else f"{u['gpu']:.0%}",
            "-" if not (s.get("gpu") or {}).get("mean_batch") else f"{s['gpu']['mean_batch']:.1f}",
            "\n".join(verdicts) or "-",
        )
    return t


def timeline_line(tl: dict) -> str:
    """Worst window's P95 (and when), and how long P95 stayed over the SLA after the spike."""
    ws = [w for w in tl["windows"] if w["requests"] > 0]
    parts = []
    worst = max(ws, key=lambda w: math.inf if w["e2e_ms"]["p95"] is None else w["e2e_ms"]["p95"], default=None)
    if worst is not None:
        v = worst["e2e_ms"]["p95"]
        parts.append(
            f"worst {tl['window_s']:g} s window P95 {'∞' if v is None else f'{v:,.0f}'} ms "
            f"at {worst['start_s']:g}-{worst['end_s']:g} s"
        )
    rec = tl.get("recovery")
    if rec:
        if rec["time_over_s"] == 0:
            parts.append(f"P95 under {rec['threshold']:g} ms in every window")
        elif not rec["recovered"]:
            parts.append(f"P95 over {rec['threshold']:g} ms for {rec['time_over_s']:g} s and not back under by the end")
        else:
            tail = "" if rec.get("tail_s") is None else f"; back under {rec['tail_s']:g} s after the load fell"
            parts.append(f"P95 over {rec['threshold']:g} ms for {rec['time_over_s']:g} s{tail}")
    return "; ".join(parts)


def _recall(r: dict | None) -> str:
    if not r or r.get("recall_at_k") is None:
        return "-"
    return f"{r['recall_at_k']:.2f}" + ("*" if r.get("extrapolated") else "")


def print_run(result: Result, console: Console | None = None) -> None:
    """The run's table, the analytic cross-check where there is one, then the notes: those every
    point shares, then each point's (warm-up cut, stability, precision, over time, SLA hints)."""
    console = console or Console()
    console.print(run_table(result))
    at = analytic_table(result)
    if at is not None:
        console.print(at)
    for line in _run_notes(result):
        console.print(line)
    for p in result.points:
        for line in _point_notes(p.params, p.summary):
            console.print(line)


def _run_notes(result: Result) -> list[str]:
    """Unstable points, where search times came from, a fixed warm-up cut every point shares."""
    out = []
    if any(not p.summary["stability"]["stable"] for p in result.points):
        out.append(
            "↑ no steady state: these percentiles grow with the run length; they are not "
            "what the system would show if left running"
        )
    rets = [p.summary.get("retrieval") or {} for p in result.points]
    if any(r.get("recall_at_k") is not None for r in rets):
        src = next(r["source"] for r in rets if r.get("recall_at_k") is not None)
        scaled = any(r.get("extrapolated") for r in rets)
        out.append(
            f"search times and recall@k measured in {Path(src).name}"
            + ("; * scaled beyond the measured corpus sizes by the fitted law" if scaled else "")
        )
    warm = [p.summary.get("warmup") for p in result.points]
    if warm and all(w and w["method"] == "fixed" for w in warm) and warm[0]["cut_s"] > 0:
        out.append(
            f"warm-up: requests that arrived before {warm[0]['cut_s']:g} s dropped "
            f"(run.warmup_s; {warm[0]['dropped_fraction']:.0%} of the requests)"
        )
    return out


def _point_notes(params: Mapping[str, Any], s: PointSummary) -> list[str]:
    """One point's notes (rich markup): MSER-5 cut, stability, precision, over time, SLA hints."""
    where = ", ".join(f"{k}={v}" for k, v in params.items()) or "the scenario"
    out = []
    w = s.get("warmup")
    if w and w["method"] == "mser5":
        cuts = w["cut_s_by_replication"]
        spread = f" (per replication {min(cuts):.1f}-{max(cuts):.1f} s)" if len(cuts) > 1 else ""
        out.append(
            f"warm-up at {where}: MSER-5 cut {w['cut_s']:.1f} s{spread}, "
            f"{w['dropped_fraction']:.0%} of the requests dropped"
        )
    if not s["stability"]["stable"]:
        out.append(f"[red]unstable[/] at {where}: {s['stability']['note']}")
    elif s["stability"].get("note"):
        out.append(f"[yellow]note[/] at {where}: {s['stability']['note']}")
    prec = s.get("precision")
    if prec and prec.get("note"):
        out.append(f"[yellow]precision[/] at {where}: {prec['note']}")
    if s.get("timeline"):
        out.append(f"over time at {where}: {timeline_line(s['timeline'])}")
    for v in s["sla"]:
        if v.get("window_s") is not None and v.get("hint") and v["verdict"] == "fail":
            out.append(f"[red]FAIL[/] {v['metric']} {v['stat']} at {where}: {v['hint']}")
        if v.get("hint") and v["verdict"] == "inconclusive":
            out.append(f"[yellow]inconclusive[/] {v['metric']} {v['stat']} at {where}: {v['hint']}")
    return out
