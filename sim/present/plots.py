"""Pictures of a sweep, and the one-file HTML report (matplotlib Agg, seaborn).

Four figures, each a plain function returning a matplotlib ``Figure`` so a
notebook can show it and :func:`write_report` can save it:

* :func:`latency_cdf`: the e2e latency CDF of every point (after warm-up);
* :func:`p95_vs_key`: P95 e2e with its confidence band against a swept key,
  one line per combination of the other keys, the SLA as a horizontal line,
  the knee of each curve marked;
* :func:`tail_breakdown`: where the slowest 5 % of requests (e2e at or above
  the point's P95) spend their time: cache, retrieval queue and service, LLM
  queue, prefill, decode;
* :func:`timeseries`: retrieval queue, LLM waiting and running batch, KV
  occupancy per replica over one replication (sampled every duration/200 s);
* :func:`p95_over_time`: for a load that changes over time, P95 e2e per
  window with its interval across replications, one line per point, the
  SLA as a horizontal line and the load level on a second axis.

``capsim report DIR`` reads a folder written by ``capsim sweep --out`` (or
``capsim run --out``), saves the PNGs under ``DIR/report/`` and writes
``DIR/report.html`` with the images base64-embedded: it opens with no server.
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.errors import CapsimError
from sim.files import atomic_write_bytes, atomic_write_text
from sim.run.store import load_sweep

COMPONENTS = (
    ("cache_ms", "cache lookup"),
    ("retrieval_wait_ms", "retrieval queue"),
    ("retrieval_service_ms", "retrieval search"),
    ("llm_wait_ms", "LLM queue"),
    ("prefill_ms", "prefill"),
    ("decode_ms", "decode"),
)


def _setup():

    import matplotlib  # deferred: matplotlib is slow to import

    if "ipykernel" not in sys.modules:  # files only; a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib is slow to import
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def short(key: str) -> str:
    return key.split(".")[-1]


def point_label(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{short(k)}={v}" for k, v in params.items()) or "scenario"


def _cut_for(point: Mapping[str, Any]) -> Any:
    """Warm-up cut of a point summary: a float, or {replication: cut} when it differs."""
    w = point.get("warmup")
    if isinstance(w, Mapping) and w.get("cut_s_by_replication"):
        cuts = w["cut_s_by_replication"]
        return cuts[0] if len(set(cuts)) == 1 else dict(enumerate(cuts))
    cut = point.get("warmup_s", 0.0)
    if isinstance(cut, list):
        return cut[0] if len(set(cut)) == 1 else dict(enumerate(cut))
    return float(cut or 0.0)


def windowed(records: pd.DataFrame, points: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Requests that arrived after each point's warm-up cut (``records`` has a ``point`` column)."""
    if records.empty:
        return records
    keep = np.zeros(len(records), dtype=bool)
    pt = records["point"].to_numpy()
    arr = records["arrival_s"].to_numpy()
    rep = records["replication"].to_numpy() if "replication" in records else np.zeros(len(records), int)
    for i, p in enumerate(points):
        cut = _cut_for(p)
        mine = pt == i
        if isinstance(cut, dict):
            c = np.array([cut.get(int(r), 0.0) for r in rep[mine]])
            keep[mine] = arr[mine] >= c
        else:
            keep[mine] = arr[mine] >= cut
    return records[keep]


def sla_threshold(points: Sequence[Mapping[str, Any]], metric: str = "e2e_ms", stat: str = "p95") -> float | None:
    for p in points:
        for v in p.get("sla", []):
            if v["metric"] == metric and v["stat"] == stat:
                return float(v["threshold"])
    return None


def knee_index(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> int | None:
    """Kneedle: the point of an increasing curve farthest below the chord from its first
    to its last point, both axes scaled to [0, 1].  None with fewer than 3 points or a
    curve that does not bend upward."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if len(xa) < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return None
    xn = (xa - xa.min()) / np.ptp(xa)
    yn = (ya - ya.min()) / np.ptp(ya)
    d = xn - yn
    i = int(np.argmax(d))
    if d[i] <= 0.05 or i in (0, len(xa) - 1):
        return None
    return int(np.flatnonzero(ok)[i])


# --------------------------------------------------------------------------- figures


def latency_cdf(
    records: pd.DataFrame,
    labels: Sequence[str],
    metric: str = "e2e_ms",
    sla: float | None = None,
    title: str | None = None,
):
    """ECDF of ``metric`` per point (``records`` windowed, with a ``point`` column)."""
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    df = records[["point", metric]].copy()
    df["point"] = df["point"].map(dict(enumerate(labels)))
    order = [lab for lab in labels if lab in set(df["point"])]
    if len(order) > 12:
        sns.ecdfplot(data=df, x=metric, hue="point", hue_order=order, ax=ax, palette="viridis", legend=False)
        sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, len(order) - 1))
        fig.colorbar(sm, ax=ax, label="point (in sweep order)")
    else:
        sns.ecdfplot(data=df, x=metric, hue="point", hue_order=order, ax=ax, palette="viridis")
        if ax.get_legend() is not None:
            ax.get_legend().set_title(None)
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9)
    if len(df) and df[metric].min() > 0 and df[metric].max() / max(df[metric].min(), 1e-9) > 50:
        ax.set_xscale("log")
    if sla is not None:
        ax.axvline(sla, color="crimson", ls="--", lw=1.2)
        ax.text(sla, 0.02, f" SLA {sla:g} ms", color="crimson", va="bottom")
    ax.axhline(0.95, color="grey", ls=":", lw=1)
    ax.set_xlabel(f"{metric.removesuffix('_ms')} latency (ms)")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_title(title or "Latency CDF per point (after warm-up)")
    fig.tight_layout()
    return fig


def p95_vs_key(
    table: pd.DataFrame,
    key: str,
    hue: Sequence[str] | None = None,
    sla: float | None = None,
    stat: str = "p95",
    capacity: Mapping[str, float] | float | None = None,
    title: str | None = None,
):
    """P95 e2e (and its interval) against ``key``, one line per value of the ``hue`` keys.

    ``table`` is :func:`sim.sweep.summary_table` output.  ``capacity`` draws a vertical
    line (one value, or one per hue label).
    """
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(8, 4.8))
    hue = [h for h in (hue if hue is not None else [c for c in _swept(table) if c != key])]
    groups = list(table.groupby([table[h].astype(str) for h in hue], sort=False)) if hue else [((), table)]
    colors = sns.color_palette("tab10", n_colors=max(1, len(groups)))
    ys = []
    for c, (name, g) in zip(colors, groups):
        name = name if isinstance(name, tuple) else (name,)
        label = ", ".join(f"{short(h)}={v}" for h, v in zip(hue, name)) or None
        g = g.sort_values(key)
        x = g[key].to_numpy(dtype=float)
        y = g[f"e2e_{stat}_ms"].to_numpy(dtype=float)
        lo = g[f"e2e_{stat}_ci_low_ms"].to_numpy(dtype=float)
        hi = g[f"e2e_{stat}_ci_high_ms"].to_numpy(dtype=float)
        ys += list(y[np.isfinite(y)])
        ax.plot(x, y, marker="o", color=c, label=label)
        ax.fill_between(x, lo, hi, color=c, alpha=0.2, lw=0)
        if "stable" in g:
            bad = ~g["stable"].astype(bool).to_numpy()
            if bad.any():
                ax.scatter(
                    x[bad],
                    y[bad],
                    marker="x",
                    s=80,
                    color="black",
                    zorder=5,
                    label="no steady state" if c == colors[0] else None,
                )
        k = knee_index(x, y)
        if k is not None:
            ax.scatter([x[k]], [y[k]], s=180, facecolors="none", edgecolors=c, linewidths=2, zorder=6)
            ax.annotate(
                f"knee {short(key)}={x[k]:g}",
                (x[k], y[k]),
                textcoords="offset points",
                xytext=(-10, 12),
                ha="right",
                color=c,
                fontsize=9,
            )
        cap = capacity.get(label or "") if isinstance(capacity, Mapping) else None
        if cap is not None:
            ax.axvline(cap, color=c, ls="-.", lw=1.2)
            ax.text(cap, ax.get_ylim()[1], f" capacity {cap:g}", color=c, va="top", rotation=90, fontsize=9)
    if isinstance(capacity, (int, float)):
        ax.axvline(capacity, color="black", ls="-.", lw=1.2)
        ax.text(
            capacity,
            0.98,
            f" capacity {capacity:g}",
            transform=ax.get_xaxis_transform(),
            va="top",
            rotation=90,
            fontsize=9,
        )
    if sla is not None:
        ax.axhline(sla, color="crimson", ls="--", lw=1.2)
        ax.text(0.01, sla, f"SLA {stat} {sla:g} ms", color="crimson", va="bottom", transform=ax.get_yaxis_transform())
        ys.append(sla)
    pos = [v for v in ys if v > 0]
    if pos and max(pos) / min(pos) > 30:
        ax.set_yscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(f"e2e {stat.upper()} (ms), band: confidence interval")
    ax.set_title(title or f"e2e {stat.upper()} against {short(key)}")
    if hue or ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def tail_breakdown(records: pd.DataFrame, labels: Sequence[str], quantile: float = 0.95, title: str | None = None):
    """Mean time per stage of the requests at or above each point's e2e quantile (stacked bars)."""
    plt, sns = _setup()
    cols = [c for c, _ in COMPONENTS if c in records]
    rows = []
    for i, lab in enumerate(labels):
        g = records[records["point"] == i]
        if g.empty:
            continue
        thr = float(np.quantile(g["e2e_ms"].to_numpy(), quantile))
        tail = g[g["e2e_ms"] >= thr]
        means = {c: float(tail[c].mean()) for c in cols}
        row: dict[str, object] = {"label": lab, **means, "n": len(tail)}
        row["other"] = max(0.0, float(tail["e2e_ms"].mean()) - sum(means[c] for c in cols))
        rows.append(row)
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8.5, max(3.0, 0.45 * len(df) + 1.6)))
    names = dict(COMPONENTS)
    parts = cols + (["other"] if len(df) and df["other"].max() > 0.01 * df[cols].sum(axis=1).max() else [])
    colors = sns.color_palette("Set2", n_colors=len(parts))
    left = np.zeros(len(df))
    for c, color in zip(parts, colors):
        v = df[c].to_numpy() if len(df) else np.array([])
        ax.barh(df["label"] if len(df) else [], v, left=left, color=color, label=names.get(c, c))
        left += v
    ax.invert_yaxis()
    ax.set_xlabel(f"mean time (ms) of the requests with e2e ≥ the point's P{quantile * 100:g}")
    ax.set_title(title or f"Where the slowest {100 - quantile * 100:g} % of requests spend their time")
    ax.legend(ncol=min(4, len(parts)), fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    fig.tight_layout()
    return fig


def timeseries(ts: pd.DataFrame, replication: int = 0, warmup_s: float | None = None, title: str | None = None):
    """Queue lengths, running batch and KV occupancy over one replication."""
    plt, sns = _setup()
    d = ts[ts["replication"] == replication]
    llm = d[d["replica"] >= 0]
    first = d.drop_duplicates("t_s").sort_values("t_s")
    n_rows = 3 if len(llm) else 1
    fig, axes = plt.subplots(n_rows, 1, figsize=(9, 2.4 * n_rows + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    ax = axes[0]
    ax.plot(first["t_s"], first["retrieval_queue"], label="retrieval queue", color="tab:blue")
    ax.plot(first["t_s"], first["retrieval_busy"], label="retrieval workers busy", color="tab:cyan", lw=1)
    ax.set_ylabel("requests")
    ax.legend(fontsize=8, loc="upper left")
    if len(llm):
        pal = sns.color_palette("tab10")
        for r, g in llm.groupby("replica"):
            assert isinstance(r, (int, np.integer))  # the replica column is int64
            c = pal[int(r) % 10]
            axes[1].plot(g["t_s"], g["llm_waiting"], color=c, ls="--", lw=1, label=f"replica {r} waiting")
            axes[1].plot(g["t_s"], g["llm_running"], color=c, label=f"replica {r} running batch")
            cap = g["kv_capacity_tokens"].to_numpy()
            axes[2].plot(g["t_s"], 100 * g["kv_tokens"] / np.where(cap > 0, cap, np.nan), color=c, label=f"replica {r}")
        axes[1].set_ylabel("sequences")
        axes[1].legend(fontsize=8, loc="upper left", ncol=2)
        axes[2].set_ylabel("KV in use (%)")
        axes[2].set_ylim(0, 100)
        axes[2].legend(fontsize=8, loc="upper left", ncol=4)
    for a in axes:
        if warmup_s:
            a.axvspan(0, warmup_s, color="grey", alpha=0.12, lw=0)
    axes[-1].set_xlabel("simulated time (s); grey: warm-up")
    axes[0].set_title(title or f"State over replication {replication}")
    fig.tight_layout()
    return fig


def p95_over_time(points: Sequence[Mapping[str, Any]], labels: Sequence[str], sla: float | None = None, title=None):
    """P95 e2e per window (``summary["timeline"]``) with its band across replications."""
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    pal = sns.color_palette("tab10")
    level_drawn = False
    top = 0.0
    for i, (p, lab) in enumerate(zip(points, labels)):
        tl = p.get("timeline")
        if not tl:
            continue
        ws = tl["windows"]
        mid = np.array([(w["start_s"] + w["end_s"]) / 2 for w in ws])
        v = np.array([np.nan if w["e2e_ms"]["p95"] is None else w["e2e_ms"]["p95"] for w in ws], dtype=float)
        lo = np.array([np.nan if w["e2e_ms"]["ci"]["p95"][0] is None else w["e2e_ms"]["ci"]["p95"][0] for w in ws])
        hi = np.array([np.nan if w["e2e_ms"]["ci"]["p95"][1] is None else w["e2e_ms"]["ci"]["p95"][1] for w in ws])
        c = pal[i % 10]
        ax.plot(mid, v, marker="o", ms=3, color=c, label=lab)
        ax.fill_between(mid, lo.astype(float), hi.astype(float), color=c, alpha=0.2, lw=0)
        if np.isfinite(v).any():
            top = max(top, float(np.nanmax(v)))
        if not level_drawn and any(w.get("load_level") is not None for w in ws):
            ax2 = ax.twinx()
            lv = np.array([np.nan if w.get("load_level") is None else w["load_level"] for w in ws], dtype=float)
            ax2.fill_between(mid, 0, lv, color="grey", alpha=0.12, lw=0, step="mid")
            ax2.set_ylabel("load level (shoppers or requests/s)", color="grey")
            ax2.grid(False)
            level_drawn = True
    if sla is not None:
        ax.axhline(sla, color="tab:red", ls="--", lw=1.2, label=f"SLA {sla:g} ms")
    ax.set_xlabel("simulated time (s), window midpoints")
    ax.set_ylabel("P95 end-to-end (ms)")
    ax.set_ylim(0, max(top, sla or 0) * 1.1 or 1)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "P95 over time (band: interval across replications; grey: load)")
    fig.tight_layout()
    return fig


def timeline_sla(points: Sequence[Mapping[str, Any]]) -> float | None:
    """The e2e P95 threshold of a windowed SLA (or of the plain SLA)."""
    for p in points:
        for v in p.get("sla", []):
            if v["metric"] == "e2e_ms" and v["stat"] == "p95" and v.get("window_s") is not None:
                return float(v["threshold"])
    return sla_threshold(points)


# --------------------------------------------------------------------------- report


def _swept(table: pd.DataFrame) -> list[str]:
    """Swept-key columns of a summary table (dotted names)."""
    return [c for c in table.columns if "." in c]


def _png(fig) -> bytes:

    import matplotlib.pyplot as plt  # deferred: matplotlib is slow to import

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _fmt_cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.3g}"
    return html.escape(str(v))


def write_report(folder: str | Path, key: str | None = None, point: int | None = None) -> list[Path]:
    """PNGs under ``folder/report/`` and a self-contained ``folder/report.html``."""

    folder = Path(folder)
    data = load_sweep(folder)
    summary, table = data["summary"], data["table"]
    points = summary.get("points", [])
    if not points:
        raise CapsimError(f"{folder}/summary.json has no points")
    labels = [point_label(p.get("params", {})) for p in points]
    swept = _swept(table)
    numeric = [k for k in swept if pd.api.types.is_numeric_dtype(table[k]) and table[k].nunique() > 1]
    if key is not None and key not in swept:
        raise CapsimError(f"--key {key}: not a swept key of this folder (swept: {', '.join(swept) or 'none'})")
    if key is not None and key not in numeric:
        raise CapsimError(f"--key {key}: not numeric with two or more values")
    key = key or (numeric[0] if numeric else None)
    sla95 = sla_threshold(points)
    figures: list[tuple[str, str, bytes]] = []
    out_dir = folder / "report"

    def add(name: str, caption: str, fig) -> None:
        png = _png(fig)
        atomic_write_bytes(out_dir / f"{name}.png", png)
        figures.append((name, caption, png))

    recs = data["records"]
    if recs.is_file():
        import pyarrow.parquet as pq  # deferred: pyarrow only to read a schema

        have = set(pq.read_schema(recs).names)
        cols = ["point", "arrival_s", "replication", "e2e_ms"] + [c for c, _ in COMPONENTS if c in have]
        df = windowed(pd.read_parquet(recs, columns=[c for c in cols if c in have]), points)
        add(
            "latency_cdf",
            "Latency CDF of every point, after the warm-up cut; dotted: the 95 % line.",
            latency_cdf(df, labels, sla=sla95),
        )
        add(
            "tail_breakdown",
            "Where the requests at or above each point's P95 spend their time.",
            tail_breakdown(df, labels),
        )
    if key is not None:
        add(
            f"p95_vs_{short(key)}",
            f"P95 end-to-end latency against {key}, with its confidence band; "
            "dashed: the SLA; circled: the knee; ×: no steady state.",
            p95_vs_key(table, key, sla=sla95),
        )
    if any(p.get("timeline") for p in points):
        add(
            "p95_over_time",
            "P95 end-to-end latency per window of arrival time, with its interval across replications; "
            "dashed: the SLA; grey: the load level.",
            p95_over_time(points, labels, sla=timeline_sla(points)),
        )
    ts_path = data["timeseries"]
    if ts_path.is_file():
        ts = pd.read_parquet(ts_path)
        if len(ts):
            if point is None:
                p95 = table["e2e_p95_ms"].fillna(-1)
                point = int(table.loc[p95.idxmax(), "point"]) if len(p95) else 0
            if not 0 <= point < len(points):
                raise CapsimError(f"--point {point}: expected 0..{len(points) - 1}")
            d = ts[ts["point"] == point]
            cut = _cut_for(points[point])
            warm = cut if isinstance(cut, float) else cut.get(0, 0.0)
            add(
                "timeseries",
                f"Queues, GPU batch and KV occupancy over replication 0 of point {point} "
                f"({labels[point]}), sampled every duration/200 s.",
                timeseries(d, 0, warm, title=f"State over time at {labels[point]} (replication 0)"),
            )
    show = [
        c
        for c in [
            "point",
            *swept,
            "e2e_p50_ms",
            "e2e_p95_ms",
            "e2e_p95_ci_low_ms",
            "e2e_p95_ci_high_ms",
            "e2e_p99_ms",
            "throughput_per_s",
            "cost_per_1000_answers",
            "stable",
            "verdict",
        ]
        if c in table
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in show)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='{html.escape(str(r['verdict']))}'>{_fmt_cell(r[c])}</td>"
            if c == "verdict"
            else f"<td>{_fmt_cell(r[c])}</td>"
            for c in show
        )
        + "</tr>"
        for _, r in table.iterrows()
    )
    imgs = "".join(
        f"<figure><img alt='{html.escape(n)}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>"
        for n, c, b in figures
    )
    name = html.escape(str(summary.get("scenario", folder.name)))
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>capsim report: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }} th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td.pass {{ color: #187a2f; }} td.fail {{ color: #b3261e; font-weight: bold; }}
td.inconclusive {{ color: #a66b00; }} figure {{ margin: 2em 0; }} img {{ max-width: 100%; }}
figcaption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>capsim report: {name}</h1>
<p>{len(points)} point(s); latency in ms; intervals are confidence intervals over replications.
Folder: {html.escape(str(folder))}</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{imgs}
</body></html>
"""
    atomic_write_text(folder / "report.html", doc)
    return [out_dir / f"{n}.png" for n, _, _ in figures] + [folder / "report.html"]
