"""The one-file HTML report of a sweep folder.

``capsim report DIR`` reads a folder written by ``capsim sweep --out`` (or
``capsim run --out``), saves the figures of :mod:`sim.present.figures` as PNGs
under ``DIR/report/`` and writes ``DIR/report.html``: the answer in words
(:mod:`sim.present.headline`), the notes, a table with the verdict first and the
figures base64-embedded, so it opens with no server.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from sim.errors import CapsimError
from sim.files import atomic_write_bytes, atomic_write_text
from sim.present.figures import (
    COMPONENTS,
    latency_cdf,
    p95_over_time,
    p95_vs_key,
    png_bytes,
    sla_threshold,
    swept_keys,
    tail_breakdown,
    timeline_sla,
    timeseries,
    warmup_cut,
    windowed,
)
from sim.present.headline import headline, is_stable, point_verdict, report_notes, stability_text
from sim.present.labels import point_label, short, value_text
from sim.run.store import load_sweep

Point = Mapping[str, Any]
#: (file name without .png, caption, PNG bytes)
Figure = tuple[str, str, bytes]
#: (file name without .png, caption, the function that draws it)
Drawing = tuple[str, str, Callable[[], Any]]

CSS = """\
body { font-family: system-ui, sans-serif; margin: 1em auto; max-width: 1340px; padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin: 0.2em 0; } .meta { color: #555; margin: 0.2em 0 0.8em; font-size: 0.9em; }
.answer { background: #f4f7fb; border-left: 5px solid #2b5fa8; padding: 0.5em 1em; margin: 0.5em 0; }
.answer ul { margin: 0.2em 0; padding-left: 1.2em; } .answer li { font-size: 1.1em; margin: 0.15em 0; }
.answer li:first-child { font-weight: bold; }
.notes { font-size: 0.85em; color: #444; margin: 0.4em 0 0.8em; padding-left: 1.2em; }
.notes li.note-unstable b, .notes li.note-fail b { color: #b3261e; } .notes li.note-inconclusive b { color: #a66b00; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f3f3f3; position: sticky; top: 0; }
td.verdict, td.stab { text-align: left; max-width: 26em; } td small { color: #555; font-weight: normal; }
td.verdict { font-weight: bold; white-space: nowrap; }
td.pass { color: #187a2f; } td.fail { color: #b3261e; } td.inconclusive { color: #a66b00; }
td.bad { color: #b3261e; } td.ok { color: #187a2f; }
.figs { display: grid; grid-template-columns: repeat(auto-fit, minmax(620px, 1fr)); gap: 1em; }
figure { margin: 1em 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
"""


def _ms(v: Any, steady: bool = True) -> str:
    """A latency cell: ``1,265``, ``1,265↑`` without a steady state, ``∞`` when censored, ``-`` when absent."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "∞" if not steady else "-"
    return f"{v:,.0f}" + ("" if steady else "↑")


def _money(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"${v:,.3f}" if abs(v) < 10 else f"${v:,.0f}"


def _sla_text(v: Mapping[str, Any]) -> str:
    got = "∞" if v.get("value") is None else f"{v['value']:,.0f}"
    every = f" every {v['window_s']:g} s" if v.get("window_s") is not None else ""
    return f"{_sla_name(v)} {got} (SLA ≤ {v['threshold']:,.0f}{every})"


def _sla_name(v: Mapping[str, Any]) -> str:
    return f"{v['metric'].removesuffix('_ms')} {v['stat']}"


def summary_rows(points: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The report's table: header and rows of ``(css class, text)`` cells, verdict first.

    Latency in ms; the P95 cell carries ± the half-width of its interval; an unstable
    point's percentiles carry ↑ (they grow with the run length)."""
    keys = list(points[0].get("params", {})) if points else []
    head = [
        "verdict",
        "stability",
        *[short(k) for k in keys],
        "e2e P95 (ms)",
        "P50",
        "P99",
        "answers/s",
        "$ / 1000 answers",
    ]
    rows = []
    for p in points:
        steady = is_stable(p)
        e2e = (p.get("metrics") or {}).get("e2e_ms") or {}
        verdict = point_verdict(p)
        p95 = _ms(e2e.get("p95"), steady)
        lo, hi = ((e2e.get("ci") or {}).get("p95") or [None, None])[:2]
        if steady and lo is not None and hi is not None and e2e.get("p95") is not None:
            p95 += f" ± {(hi - lo) / 2:,.0f}"
        why = "; ".join(_sla_text(v) for v in p.get("sla", []))
        rows.append(
            [
                (f"verdict {verdict or 'none'}", (verdict or "no SLA") + (f"\n{why}" if why else "")),
                ("stab " + ("ok" if steady else "bad"), stability_text(p)),
                *[("key", value_text(p["params"].get(k))) for k in keys],
                ("num", p95),
                ("num", _ms(e2e.get("p50"), steady)),
                ("num", _ms(e2e.get("p99"), steady)),
                ("num", "-" if p.get("throughput_per_s") is None else f"{p['throughput_per_s']:,.1f}"),
                ("num", _money((p.get("cost") or {}).get("per_1000_answers"))),
            ]
        )
    if all((p.get("cost") or {}).get("per_1000_answers") is None for p in points):
        head, rows = head[:-1], [r[:-1] for r in rows]  # no cost section in the scenario: no column of dashes
    return head, rows


def _timeseries_point(points: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """The point the time series shows, and why: the most loaded stable point (highest
    throughput, then highest P95), where queues and batches are busiest while still
    steady; without a stable point, the worst one."""

    def p95(p: Mapping[str, Any]) -> float:
        v = ((p.get("metrics") or {}).get("e2e_ms") or {}).get("p95")
        return math.inf if v is None else float(v)

    stable = [i for i, p in enumerate(points) if is_stable(p)]
    if stable:
        i = max(stable, key=lambda j: (float(points[j].get("throughput_per_s") or 0.0), p95(points[j])))
        return i, "the most loaded point that still reaches a steady state (highest answers/s)"
    i = max(range(len(points)), key=lambda j: p95(points[j]))
    return i, "the worst point (no point reaches a steady state: its queues grow through the run)"


def write_report(folder: str | Path, key: str | None = None, point: int | None = None) -> list[Path]:
    """PNGs under ``folder/report/`` and a self-contained ``folder/report.html``.

    ``key``: the swept key of the P95 figure's x axis (default: the first numeric one);
    ``point``: the point whose time series is drawn (default: :func:`_timeseries_point`)."""
    folder = Path(folder)
    data = load_sweep(folder)
    points = data["summary"].get("points", [])
    if not points:
        raise CapsimError(f"{folder}/summary.json has no points")
    key = _x_key(data["table"], key)
    if point is not None and not 0 <= point < len(points):
        raise CapsimError(f"--point {point}: expected 0..{len(points) - 1}")
    figures = _figures(folder / "report", data, points, key, point)
    atomic_write_text(folder / "report.html", _page(folder, data["summary"], points, key, figures))
    return [folder / "report" / f"{n}.png" for n, _, _ in figures] + [folder / "report.html"]


def _x_key(table: pd.DataFrame, key: str | None) -> str | None:
    """``key`` checked against the swept keys, or the first numeric swept key (None without one)."""
    swept = swept_keys(table)
    numeric = [k for k in swept if pd.api.types.is_numeric_dtype(table[k]) and table[k].nunique() > 1]
    if key is not None and key not in swept:
        raise CapsimError(f"--key {key}: not a swept key of this folder (swept: {', '.join(swept) or 'none'})")
    if key is not None and key not in numeric:
        raise CapsimError(f"--key {key}: not numeric with two or more values")
    return key or (numeric[0] if numeric else None)


def _figures(
    out_dir: Path, data: Mapping[str, Any], points: Sequence[Point], key: str | None, point: int | None
) -> list[Figure]:
    """Draw every figure the folder has data for, save each PNG as it is drawn; a load that
    changes over time is answered by P95 per window, so that figure comes first."""
    labels = [point_label(p.get("params", {})) for p in points]
    sla95 = sla_threshold(points)
    drawn: list[Drawing] = []
    if data["records"].is_file():
        drawn += _record_figures(data["records"], points, labels, sla95)
    if key is not None:
        caption = (
            f"P95 end-to-end latency against {key}, with its confidence band; "
            "dashed: the SLA; circled: the knee; ×: no steady state."
        )
        drawn.append((f"p95_vs_{short(key)}", caption, lambda: p95_vs_key(data["table"], key, sla=sla95)))
    if any(p.get("timeline") for p in points):
        caption = (
            "P95 end-to-end latency per window of arrival time, with its interval across replications; "
            "dashed: the SLA; grey: the load level."
        )
        drawn.append(("p95_over_time", caption, lambda: p95_over_time(points, labels, sla=timeline_sla(points))))
    if data["timeseries"].is_file():
        drawn += _timeseries_figure(pd.read_parquet(data["timeseries"]), points, labels, point)
    figures = []
    for name, caption, draw in drawn:
        png = png_bytes(draw())
        atomic_write_bytes(out_dir / f"{name}.png", png)
        figures.append((name, caption, png))
    figures.sort(key=lambda f: f[0] != "p95_over_time")
    return figures


def _record_figures(path: Path, points: Sequence[Point], labels: Sequence[str], sla95: float | None) -> list[Drawing]:
    """The latency CDF and the tail breakdown, from the records after each point's warm-up."""
    import pyarrow.parquet as pq  # deferred: pyarrow only to read a schema

    have = set(pq.read_schema(path).names)
    cols = ["point", "arrival_s", "replication", "e2e_ms"] + [c for c, _ in COMPONENTS if c in have]
    df = windowed(pd.read_parquet(path, columns=[c for c in cols if c in have]), points)
    unstable = [not is_stable(p) for p in points]
    tail_caption = "Where the requests at or above each point's P95 spend their time" + (
        "; hatched and marked: no steady state (the axis is scaled to the stable points)." if any(unstable) else "."
    )
    return [
        (
            "latency_cdf",
            "Latency CDF of every point, after the warm-up cut; dotted: the 95 % line.",
            lambda: latency_cdf(df, labels, sla=sla95),
        ),
        ("tail_breakdown", tail_caption, lambda: tail_breakdown(df, labels, unstable=unstable)),
    ]


def _timeseries_figure(
    ts: pd.DataFrame, points: Sequence[Point], labels: Sequence[str], point: int | None
) -> list[Drawing]:
    """Queues, batch and KV over replication 0 of one point (none when nothing was sampled)."""
    if not len(ts):
        return []
    why = "chosen with --point"
    if point is None:
        point, why = _timeseries_point(points)
    d = ts[ts["point"] == point]
    cut = warmup_cut(points[point])
    warm = cut if isinstance(cut, float) else cut.get(0, 0.0)
    caption = (
        f"Queues, GPU batch and KV occupancy over replication 0 of point {point} "
        f"({labels[point]}): {why}; sampled every duration/200 s."
    )
    title = f"State over time at {labels[point]} (replication 0)"
    return [("timeseries", caption, lambda: timeseries(d, 0, warm, title=title))]


def _cell(css: str, text: str) -> str:
    """A table cell: the text's first line, the rest small under it."""
    first, _, rest = text.partition("\n")
    extra = f"<br><small>{html.escape(rest)}</small>" if rest else ""
    return f"<td class='{css}'>{html.escape(first)}{extra}</td>"


def _table(points: Sequence[Point]) -> str:
    head, rows = summary_rows(points)
    thead = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(_cell(c, t) for c, t in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>"


def _meta(folder: Path, points: Sequence[Point]) -> str:
    """The line under the title: points, SLAs, replications, units, the folder."""
    slas = sorted(
        {
            f"{_sla_name(v)} ≤ {v['threshold']:,.0f} ms"
            + (f" every {v['window_s']:g} s" if v.get("window_s") is not None else "")
            for p in points
            for v in p.get("sla", [])
        }
    )
    reps = sorted({r for p in points if (r := p.get("replications")) is not None})
    sla = f"; SLA {html.escape(', '.join(slas))}" if slas else "; no SLA"
    per_point = "/".join(str(r) for r in reps) or "?"
    return (
        f"{len(points)} point(s){sla};\n"
        f"{per_point} replication(s) per point; latency in ms, ± the half-width of the\n"
        f"confidence interval over replications; ↑ no steady state. Folder: {html.escape(str(folder))}"
    )


def _page(
    folder: Path, summary: Mapping[str, Any], points: Sequence[Point], key: str | None, figures: Sequence[Figure]
) -> str:
    """The whole report.html."""
    answer = "".join(f"<li>{html.escape(x)}</li>" for x in headline(points, key))
    notes = "".join(
        f"<li class='note-{html.escape(k.replace(' ', '-'))}'><b>{html.escape(k)}</b>: {html.escape(t)}</li>"
        for k, t in report_notes(points)
    )
    imgs = "".join(
        f"<figure><img alt='{html.escape(n)}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>"
        for n, c, b in figures
    )
    name = html.escape(str(summary.get("scenario", folder.name)))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>capsim report: {name}</title>
<style>
{CSS}</style></head><body>
<h1>capsim report: {name}</h1>
<p class="meta">{_meta(folder, points)}</p>
<div class="answer"><ul>{answer}</ul></div>
<ul class="notes">{notes}</ul>
{_table(points)}
<div class="figs">{imgs}</div>
</body></html>
"""
