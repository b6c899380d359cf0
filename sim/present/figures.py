"""Pictures of a sweep (matplotlib Agg, seaborn).

Each figure is a plain function returning a matplotlib ``Figure``, so a notebook
can show it and :func:`sim.present.report.write_report` can save it:

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

The records a figure reads are cut at each point's warm-up by :func:`windowed`.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sim.present.labels import short

COMPONENTS = (
    ("cache_ms", "cache lookup"),
    ("retrieval_wait_ms", "retrieval queue"),
    ("retrieval_service_ms", "retrieval search"),
    ("llm_wait_ms", "LLM queue"),
    ("prefill_ms", "prefill"),
    ("decode_ms", "decode"),
)


def pyplot():
    """matplotlib's pyplot and seaborn, themed (Agg outside a notebook)."""
    import matplotlib  # deferred: matplotlib is slow to import

    if "ipykernel" not in sys.modules:  # files only; a notebook keeps its inline backend
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib is slow to import
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (110 dpi); the figure is closed."""
    import matplotlib.pyplot as plt  # deferred: matplotlib is slow to import

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def warmup_cut(point: Mapping[str, Any]) -> Any:
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
        cut = warmup_cut(p)
        mine = pt == i
        if isinstance(cut, dict):
            c = np.array([cut.get(int(r), 0.0) for r in rep[mine]])
            keep[mine] = arr[mine] >= c
        else:
            keep[mine] = arr[mine] >= cut
    return records[keep]


def sla_threshold(points: Sequence[Mapping[str, Any]], metric: str = "e2e_ms", stat: str = "p95") -> float | None:
    """The threshold of the first SLA on ``metric``'s ``stat`` (any window), or None."""
    for p in points:
        for v in p.get("sla", []):
            if v["metric"] == metric and v["stat"] == stat:
                return float(v["threshold"])
    return None


def timeline_sla(points: Sequence[Mapping[str, Any]]) -> float | None:
    """The e2e P95 threshold of a windowed SLA (or of the plain SLA)."""
    for p in points:
        for v in p.get("sla", []):
            if v["metric"] == "e2e_ms" and v["stat"] == "p95" and v.get("window_s") is not None:
                return float(v["threshold"])
    return sla_threshold(points)


def swept_keys(table: pd.DataFrame) -> list[str]:
    """Swept-key columns of a summary table (dotted names)."""
    return [c for c in table.columns if "." in c]


def knee_index(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    half_width: Sequence[float] | np.ndarray | None = None,
) -> int | None:
    """The knee of an increasing curve, or None where the curve does not really bend.

    Candidate: Kneedle, the point farthest below the chord from the first to the last
    point, both axes scaled to [0, 1] (at least 0.05 below it).  It is kept only if the
    curve bends there: the slope after it is at least twice the slope before it, and,
    where ``half_width`` (the half-widths of y's confidence intervals) is given, the
    second difference ``slope_after - slope_before`` exceeds its own half-width, the
    root sum of squares of the terms ``hw[i+1]/dx2``, ``hw[i]*(1/dx1 + 1/dx2)`` and
    ``hw[i-1]/dx1`` (the intervals propagated as independent).  A straight line, or one
    whose bend is within the noise, has no knee.  None with fewer than 4 points: any
    convex curve through 3 points "bends" at its middle one, which locates nothing."""
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    hw = np.zeros_like(ya) if half_width is None else np.nan_to_num(np.asarray(half_width, dtype=float))
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, hw = xa[ok], ya[ok], hw[ok]
    if len(xa) < 4 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return None
    xn = (xa - xa.min()) / np.ptp(xa)
    yn = (ya - ya.min()) / np.ptp(ya)
    d = xn - yn
    i = int(np.argmax(d))
    if d[i] <= 0.05 or i in (0, len(xa) - 1):
        return None
    dx1, dx2 = xa[i] - xa[i - 1], xa[i + 1] - xa[i]
    if dx1 <= 0 or dx2 <= 0:
        return None
    before, after = (ya[i] - ya[i - 1]) / dx1, (ya[i + 1] - ya[i]) / dx2
    if after < 2 * max(before, 0.0) or after <= 0:
        return None
    noise = math.hypot(hw[i + 1] / dx2, hw[i] * (1 / dx1 + 1 / dx2), hw[i - 1] / dx1)
    if after - before <= noise:
        return None
    return int(np.flatnonzero(ok)[i])


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
LINESTYLES = ("-", "--", ":", "-.")
CDF_PANEL_LINES = 10  # beyond 20 points, the CDF is drawn in panels of this many lines
KV_FLAT = 0.01  # a KV panel whose peak stays under this share of capacity is a flat line: left out


def latency_cdf(
    records: pd.DataFrame,
    labels: Sequence[str],
    metric: str = "e2e_ms",
    sla: float | None = None,
    title: str | None = None,
):
    """ECDF of ``metric`` per point (``records`` windowed, with a ``point`` column).

    Up to 20 points each get a colour of a qualitative palette (tab10, tab20 beyond ten)
    and a line style cycling through four, so neighbours differ in both.  More points are
    drawn as panels of at most ten (as even as can be), in sweep order, sharing the x axis, each with its own
    legend: a single gradient of 20+ lines cannot be told apart, nor read off a colour bar."""
    plt, sns = pyplot()
    present = set(records["point"].unique()) if len(records) else set()
    order = [i for i in range(len(labels)) if i in present]
    panels = 1 if len(order) <= 20 else math.ceil(len(order) / CDF_PANEL_LINES)
    groups = [order[k * len(order) // panels : (k + 1) * len(order) // panels] for k in range(panels)]
    fig, axes = plt.subplots(
        len(groups), 1, figsize=(9.5, 4.8 if len(groups) == 1 else 3.4 * len(groups)), sharex=True, squeeze=False
    )
    vals = records[metric] if len(records) else pd.Series(dtype=float)
    for ax, group in zip(axes[:, 0], groups):
        colors = sns.color_palette("tab10" if len(group) <= 10 else "tab20", n_colors=max(1, len(group)))
        for j, i in enumerate(group):
            v = np.sort(records.loc[records["point"] == i, metric].to_numpy(dtype=float))
            v = v[np.isfinite(v)]
            if not len(v):
                continue
            ax.step(
                v,
                np.arange(1, len(v) + 1) / len(v),
                where="post",
                color=colors[j],
                ls=LINESTYLES[j % len(LINESTYLES)],
                lw=1.6,
                label=labels[i],
            )
        if group:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False, fontsize=9, handlelength=3)
        if len(vals) and vals.min() > 0 and vals.max() / max(vals.min(), 1e-9) > 50:
            ax.set_xscale("log")
        if sla is not None:
            ax.axvline(sla, color="crimson", ls="--", lw=1.2)
            ax.text(sla, 0.02, f" SLA {sla:g} ms", color="crimson", va="bottom")
        ax.axhline(0.95, color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("fraction of requests ≤ x")
    axes[-1, 0].set_xlabel(f"{metric.removesuffix('_ms')} latency (ms)")
    axes[0, 0].set_title(title or "Latency CDF per point (after warm-up)")
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
    plt, sns = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    hue = [h for h in (hue if hue is not None else [c for c in swept_keys(table) if c != key])]
    groups = list(table.groupby([table[h].astype(str) for h in hue], sort=False)) if hue else [((), table)]
    colors = sns.color_palette("tab10", n_colors=max(1, len(groups)))
    ys: list[float] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for j, (c, (name, g)) in enumerate(zip(colors, groups)):
        name = name if isinstance(name, tuple) else (name,)
        label = ", ".join(f"{short(h)}={v}" for h, v in zip(hue, name)) or None
        cap = capacity.get(label or "") if isinstance(capacity, Mapping) else None
        ys += _curve(ax, j, c, label, g.sort_values(key), key, stat, cap, pending)
    if sla is not None:
        ys.append(sla)
    pos = [v for v in ys if v > 0]
    if pos and max(pos) / min(pos) > 30:
        ax.set_yscale("log")
    _mark_unstable(ax, pending)
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
    ax.set_xlabel(key)
    ax.set_ylabel(f"e2e {stat.upper()} (ms), band: confidence interval")
    ax.set_title(title or f"e2e {stat.upper()} against {short(key)}")
    if hue or ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=9, handlelength=3, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def _curve(
    ax,
    j: int,
    color,
    label: str | None,
    g: pd.DataFrame,
    key: str,
    stat: str,
    capacity: float | None,
    pending: list[tuple[np.ndarray, np.ndarray]],
) -> list[float]:
    """One line of :func:`p95_vs_key` (the ``j``-th): its points, its band where steady, its knee
    and capacity line; its unstable points go to ``pending``.  Returns its finite values."""
    x = g[key].to_numpy(dtype=float)
    y = g[f"e2e_{stat}_ms"].to_numpy(dtype=float)
    lo = g[f"e2e_{stat}_ci_low_ms"].to_numpy(dtype=float)
    hi = g[f"e2e_{stat}_ci_high_ms"].to_numpy(dtype=float)
    ax.plot(
        x,
        y,
        marker=MARKERS[j % len(MARKERS)],
        ls=LINESTYLES[j % len(LINESTYLES)],
        color=color,
        label=label,
        ms=7,
        mfc="white" if j % 2 else color,
        mew=1.5,
    )
    stable = g["stable"].astype(bool).to_numpy() if "stable" in g else np.ones(len(g), bool)
    # no band where there is no steady state (its interval means nothing), none below 0 ms
    band = np.where(stable, 1.0, np.nan)
    ax.fill_between(x, np.clip(lo, 0, None) * band, hi * band, color=color, alpha=0.15, lw=0)
    if (~stable).any():
        pending.append((x[~stable], y[~stable]))
    _mark_knee(ax, x, y, (hi - lo) / 2, stable, f"knee {short(key)}", color)
    if capacity is not None:
        ax.axvline(capacity, color=color, ls="-.", lw=1.2)
        ax.text(capacity, ax.get_ylim()[1], f" capacity {capacity:g}", color=color, va="top", rotation=90, fontsize=9)
    return list(y[np.isfinite(y)])


def _mark_knee(ax, x: np.ndarray, y: np.ndarray, half_width: np.ndarray, stable: np.ndarray, text: str, color) -> None:
    """Circle and label the knee of the stable part of a curve (an unstable point's
    percentile grows with the run length, so it locates nothing)."""
    k = knee_index(x[stable], y[stable], half_width[stable])
    if k is None:
        return
    k = int(np.flatnonzero(stable)[k])
    ax.scatter([x[k]], [y[k]], s=220, facecolors="none", edgecolors=color, linewidths=2, zorder=6)
    ax.annotate(
        f"{text}={x[k]:g}",
        (x[k], y[k]),
        textcoords="offset points",
        xytext=(-10, 12),
        ha="right",
        color=color,
        fontsize=9,
    )


def _mark_unstable(ax, pending: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    """A black × on every point without a steady state, one legend entry for all of them; a
    censored percentile (more requests unfinished than it allows) has no value: its × sits
    on the top edge."""
    kw = {"marker": "x", "s": 110, "color": "black", "linewidths": 2.2, "zorder": 7, "clip_on": False}
    censored = any((~np.isfinite(v)).any() for _, v in pending)
    label: str | None = "no steady state" + (" (top edge: censored, ∞)" if censored else "")
    for xu, yu in pending:
        finite = np.isfinite(yu)
        if finite.any():
            ax.scatter(xu[finite], yu[finite], label=label, **kw)
            label = None
        if (~finite).any():
            ax.scatter(xu[~finite], np.ones((~finite).sum()), transform=ax.get_xaxis_transform(), label=label, **kw)
            label = None


def tail_breakdown(
    records: pd.DataFrame,
    labels: Sequence[str],
    quantile: float = 0.95,
    title: str | None = None,
    unstable: Sequence[bool] | None = None,
):
    """Mean time per stage of the requests at or above each point's e2e quantile (stacked bars).

    ``unstable[i]`` marks point ``i`` as having no steady state: its label says so, its
    bar is hatched, and the axis is scaled to the stable points (an unstable bar that
    runs past it is cut at the edge with its total written there), so one overloaded
    point does not flatten every other bar."""
    plt, sns = pyplot()
    cols = [c for c, _ in COMPONENTS if c in records]
    rows = []
    for i, lab in enumerate(labels):
        g = records[records["point"] == i]
        if g.empty:
            continue
        thr = float(np.quantile(g["e2e_ms"].to_numpy(), quantile))
        tail = g[g["e2e_ms"] >= thr]
        means = {c: float(tail[c].mean()) for c in cols}
        bad = bool(unstable[i]) if unstable is not None and i < len(unstable) else False
        row: dict[str, object] = {"label": lab + (" (unstable)" if bad else ""), **means, "n": len(tail), "bad": bad}
        row["other"] = max(0.0, float(tail["e2e_ms"].mean()) - sum(means[c] for c in cols))
        rows.append(row)
    df = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(10, max(3.2, 0.45 * len(df) + 2.0)))
    names = dict(COMPONENTS)
    parts = cols + (["other"] if len(df) and df["other"].max() > 0.01 * df[cols].sum(axis=1).max() else [])
    colors = sns.color_palette("Set2", n_colors=len(parts))
    bad_rows = df["bad"].to_numpy(dtype=bool) if len(df) else np.array([], bool)
    left = np.zeros(len(df))
    for c, color in zip(parts, colors):
        v = df[c].to_numpy() if len(df) else np.array([])
        bars = ax.barh(df["label"] if len(df) else [], v, left=left, color=color, label=names.get(c, c))
        for bar, bad in zip(bars, bad_rows):
            if bad:
                bar.set_hatch("//")
                bar.set_edgecolor("dimgrey")
        left += v
    ax.invert_yaxis()
    if len(df) and bad_rows.any() and (~bad_rows).any():
        lim = 1.3 * float(left[~bad_rows].max())
        if left[bad_rows].max() > lim:
            ax.set_xlim(0, lim)
            for yi, total in enumerate(left):
                if bad_rows[yi] and total > lim:
                    ax.text(
                        lim * 0.99,
                        yi,
                        f"{total:,.0f} ms →",
                        ha="right",
                        va="center",
                        fontsize=9,
                        fontweight="bold",
                        bbox={"facecolor": "white", "alpha": 0.85, "lw": 0},
                    )
    ax.set_xlabel(f"mean time (ms) of the requests with e2e ≥ the point's P{quantile * 100:g}")
    note = "\n(hatched: no steady state, cut at the edge)" if len(df) and bad_rows.any() else ""
    ax.set_title(title or f"Where the slowest {100 - quantile * 100:g} % of requests spend their time{note}")
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def timeseries(ts: pd.DataFrame, replication: int = 0, warmup_s: float | None = None, title: str | None = None):
    """Queue lengths, running batch and KV occupancy over one replication.

    The KV panel is left out when no replica ever fills ``KV_FLAT`` (1 %) of its KV cache
    (or there is no LLM stage), where it would be a flat line at zero; the title says so."""
    plt, sns = pyplot()
    d = ts[ts["replication"] == replication]
    llm = d[d["replica"] >= 0]
    first = d.drop_duplicates("t_s").sort_values("t_s")
    capacity = llm["kv_capacity_tokens"].to_numpy(dtype=float) if len(llm) else np.array([])
    share = llm["kv_tokens"].to_numpy(dtype=float) / np.where(capacity > 0, capacity, np.nan) if len(llm) else capacity
    kv_peak = float(np.nanmax(share)) if len(share) and np.isfinite(share).any() else 0.0
    kv = kv_peak >= KV_FLAT
    n_rows = 1 + bool(len(llm)) + kv
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
            if kv:
                cap = g["kv_capacity_tokens"].to_numpy()
                axes[2].plot(
                    g["t_s"], 100 * g["kv_tokens"] / np.where(cap > 0, cap, np.nan), color=c, label=f"replica {r}"
                )
        axes[1].set_ylabel("sequences")
        axes[1].legend(fontsize=8, loc="upper left", ncol=2)
    if kv:
        axes[2].set_ylabel("KV in use (%)")
        axes[2].set_ylim(0, min(100.0, max(5.0, 125 * kv_peak)))  # scaled to the peak: 5 % of 100 reads flat
        axes[2].legend(fontsize=8, loc="upper left", ncol=4)
    for a in axes:
        if warmup_s:
            a.axvspan(0, warmup_s, color="grey", alpha=0.12, lw=0)
    axes[-1].set_xlabel("simulated time (s); grey: warm-up")
    head = title or f"State over replication {replication}"
    if len(llm) and not kv:
        head += f"\n(KV cache peak {kv_peak:.1%} of capacity: panel omitted)"
    axes[0].set_title(head)
    fig.tight_layout()
    return fig


def p95_over_time(points: Sequence[Mapping[str, Any]], labels: Sequence[str], sla: float | None = None, title=None):
    """P95 e2e per window (``summary["timeline"]``) with its band across replications."""
    plt, sns = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.2))
    pal = sns.color_palette("tab10")
    level_drawn = False
    top = 0.0
    widths: set[float] = set()
    unanswered: list[tuple[np.ndarray, Any]] = []
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
        widths.add(float(tl["window_s"]))
        # a window with requests but no finite P95: its requests had not all been answered (censored: infinite)
        inf = np.array([w["e2e_ms"]["p95"] is None and w["requests"] > 0 for w in ws])
        if inf.any():
            unanswered.append((mid[inf], c))
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
    width = f"{widths.pop():g} s " if len(widths) == 1 else ""
    ax.set_xlabel(f"simulated time (s), midpoints of {width}arrival windows")
    ax.set_ylabel("P95 end-to-end (ms)")
    ymax = max(top, sla or 0) * 1.1 or 1
    ax.set_ylim(0, ymax)
    for j, (xs, c) in enumerate(unanswered):
        ax.plot(
            xs,
            np.full(len(xs), ymax),
            ls="none",
            marker="^",
            ms=7,
            color=c,
            clip_on=False,
            label="P95 infinite (requests never answered)" if j == 0 else None,
        )
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "P95 over time (band: interval across replications; grey: load)")
    fig.tight_layout()
    return fig
