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

from sim.analysis.stats import combine_verdicts
from sim.errors import CapsimError
from sim.files import atomic_write_bytes, atomic_write_text
from sim.present.tables import timeline_line
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


# --------------------------------------------------------------------------- figures


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
    plt, sns = _setup()
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
    plt, sns = _setup()
    fig, ax = plt.subplots(figsize=(9.5, 4.8))
    hue = [h for h in (hue if hue is not None else [c for c in _swept(table) if c != key])]
    groups = list(table.groupby([table[h].astype(str) for h in hue], sort=False)) if hue else [((), table)]
    colors = sns.color_palette("tab10", n_colors=max(1, len(groups)))
    ys: list[float] = []
    unstable_drawn = False
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    for j, (c, (name, g)) in enumerate(zip(colors, groups)):
        name = name if isinstance(name, tuple) else (name,)
        label = ", ".join(f"{short(h)}={v}" for h, v in zip(hue, name)) or None
        g = g.sort_values(key)
        x = g[key].to_numpy(dtype=float)
        y = g[f"e2e_{stat}_ms"].to_numpy(dtype=float)
        lo = g[f"e2e_{stat}_ci_low_ms"].to_numpy(dtype=float)
        hi = g[f"e2e_{stat}_ci_high_ms"].to_numpy(dtype=float)
        ys += list(y[np.isfinite(y)])
        ax.plot(
            x,
            y,
            marker=MARKERS[j % len(MARKERS)],
            ls=LINESTYLES[j % len(LINESTYLES)],
            color=c,
            label=label,
            ms=7,
            mfc="white" if j % 2 else c,
            mew=1.5,
        )
        stable = g["stable"].astype(bool).to_numpy() if "stable" in g else np.ones(len(g), bool)
        # no band where there is no steady state (its interval means nothing), none below 0 ms
        band = np.where(stable, 1.0, np.nan)
        ax.fill_between(x, np.clip(lo, 0, None) * band, hi * band, color=c, alpha=0.15, lw=0)
        if (~stable).any():
            pending.append((x[~stable], y[~stable]))
        # the knee of the stable part only: an unstable point's percentile grows with the run length
        k = knee_index(x[stable], y[stable], ((hi - lo) / 2)[stable])
        if k is not None:
            k = int(np.flatnonzero(stable)[k])
            ax.scatter([x[k]], [y[k]], s=220, facecolors="none", edgecolors=c, linewidths=2, zorder=6)
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
    if sla is not None:
        ys.append(sla)
    pos = [v for v in ys if v > 0]
    if pos and max(pos) / min(pos) > 30:
        ax.set_yscale("log")
    for xu, yu in pending:
        # a censored percentile (more requests unfinished than it allows) has no value: draw its × on the top edge
        finite = np.isfinite(yu)
        kw = {"marker": "x", "s": 110, "color": "black", "linewidths": 2.2, "zorder": 7, "clip_on": False}
        censored = any((~np.isfinite(v)).any() for _, v in pending)
        label = None if unstable_drawn else "no steady state" + (" (top edge: censored, ∞)" if censored else "")
        if finite.any():
            ax.scatter(xu[finite], yu[finite], label=label, **kw)
            unstable_drawn = True
            label = None
        if (~finite).any():
            ax.scatter(xu[~finite], np.ones((~finite).sum()), transform=ax.get_xaxis_transform(), label=label, **kw)
            unstable_drawn = True
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
    plt, sns = _setup()
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
    plt, sns = _setup()
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


def timeline_sla(points: Sequence[Mapping[str, Any]]) -> float | None:
    """The e2e P95 threshold of a windowed SLA (or of the plain SLA)."""
    for p in points:
        for v in p.get("sla", []):
            if v["metric"] == "e2e_ms" and v["stat"] == "p95" and v.get("window_s") is not None:
                return float(v["threshold"])
    return sla_threshold(points)


# --------------------------------------------------------------------------- report


def point_verdict(point: Mapping[str, Any]) -> str | None:
    """``fail`` if any SLA fails, ``inconclusive`` if any is and none fails, ``pass``, or None (no SLA)."""
    verdict = combine_verdicts([v["verdict"] for v in point.get("sla", [])])
    return None if verdict == "none" else verdict


def _stable(point: Mapping[str, Any]) -> bool:
    return bool((point.get("stability") or {}).get("stable", True))


def _value(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def headline(points: Sequence[Mapping[str, Any]], key: str | None) -> list[str]:
    """The answer in sentences, from the verdicts per swept key.

    With a load key (``key``, numeric): one sentence for its largest value and one for the
    largest value at which something passes ("At users=1,000: no point passes; at
    users=50: pass with index=hnsw and index=linear_numpy, index=linear_python fails"),
    then, per combination of the other swept keys, the largest ``key`` that passes.
    Without one: which points pass, fail or are inconclusive."""
    if not points:
        return []
    if all(point_verdict(p) is None for p in points):
        bad = [point_label(p.get("params", {})) for p in points if not _stable(p)]
        return ["No SLA is set, so there are no verdicts."] + (
            [f"No steady state at {_join(bad)}: the system cannot keep up there."] if bad else []
        )

    def word(p: Mapping[str, Any]) -> str:
        v = point_verdict(p) or "no SLA"
        return v + ("" if _stable(p) else " (unstable)")

    if key is None or not all(key in p.get("params", {}) for p in points):
        groups: dict[str, list[str]] = {}
        for p in points:
            groups.setdefault(word(p), []).append(point_label(p.get("params", {})))
        return [f"{w}: {_join(labs)}" for w, labs in groups.items()]

    def others(p: Mapping[str, Any]) -> str:
        return point_label({k: v for k, v in p["params"].items() if k != key}) if len(p["params"]) > 1 else ""

    values = sorted({p["params"][key] for p in points})
    name = short(key)
    lines: list[str] = []

    def brief(p: Mapping[str, Any]) -> str:
        rest = [v for k, v in p["params"].items() if k != key]
        return rest[0] if len(rest) == 1 and isinstance(rest[0], str) else others(p)

    def verb(w: str, n: int) -> str:
        if w.startswith("fail"):
            return ("fail" if n > 1 else "fails") + (" (no steady state)" if "unstable" in w else "")
        return ("are " if n > 1 else "is ") + w

    def at(v: Any) -> str:
        here = [p for p in points if p["params"][key] == v]
        passing = [brief(p) for p in here if point_verdict(p) == "pass" and _stable(p)]
        rest = [p for p in here if not (point_verdict(p) == "pass" and _stable(p))]
        head = f"At {name}={_value(v)}: "
        if len(here) == 1:
            return head + ("pass" if passing else verb(word(here[0]), 1).removeprefix("is "))
        by: dict[str, list[str]] = {}
        for p in rest:
            by.setdefault(word(p), []).append(brief(p))
        tail = "; ".join(f"{_join(labs)} {verb(w, len(labs))}" for w, labs in by.items())
        if not passing:
            return head + "no configuration passes: " + tail
        return head + "pass with " + _join(passing) + (f"; {tail}" if tail else "")

    top = values[-1]
    if any(len(p["params"]) > 1 for p in points):  # with one key, the line per combination below says it all
        lines.append(at(top))
    ok = [v for v in values if any(p["params"][key] == v and point_verdict(p) == "pass" and _stable(p) for p in points)]
    if lines and ok and ok[-1] != top:
        lines.append(at(ok[-1]))
    combos: dict[str, list[Mapping[str, Any]]] = {}
    for p in points:
        combos.setdefault(others(p), []).append(p)
    for combo, ps in combos.items():
        ps = sorted(ps, key=lambda p: p["params"][key])
        good = [p["params"][key] for p in ps if point_verdict(p) == "pass" and _stable(p)]
        bad_v = [p["params"][key] for p in ps if not (point_verdict(p) == "pass" and _stable(p))]
        who = f"{combo}: " if combo else ""
        if good and bad_v and min(good) > max(bad_v):
            # more of the key helps (replicas, workers): the answer is the fewest that passes
            text = f"{who}passes from {name}={_value(good[0])} up"
        elif good:
            text = f"{who}passes up to {name}={_value(good[-1])}"
        else:
            text = f"{who}passes at none of the swept {name} values"
        by: dict[str, list[str]] = {}
        for p in ps:
            if not (point_verdict(p) == "pass" and _stable(p)):
                w = word(p)
                w = "no steady state" if "unstable" in w else "fails" if w == "fail" else w
                by.setdefault(w, []).append(_value(p["params"][key]))
        if by:
            text += " (" + "; ".join(f"{w} at {name}={', '.join(vs)}" for w, vs in by.items()) + ")"
        lines.append(text[0].upper() + text[1:] if not combo else text)
    return lines


def report_notes(points: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The terminal's notes (``sim.present.tables.print_run``) as ``(kind, text)`` pairs:
    unstable points, warm-up, where search times and recall came from, precision and
    inconclusive or failing-window hints, the over-time summary."""
    out: list[tuple[str, str]] = []
    if any(not _stable(p) for p in points):
        out.append(
            (
                "unstable",
                "no steady state at some points: their percentiles grow with the run length; they are not "
                "what the system would show if left running",
            )
        )
    rets = [p.get("retrieval") or {} for p in points]
    if any(r.get("recall_at_k") is not None for r in rets):
        src = next(r["source"] for r in rets if r.get("recall_at_k") is not None)
        out.append(
            (
                "source",
                f"search times and recall@k measured in {Path(src).name}"
                + (
                    "; some scaled beyond the measured corpus sizes by the fitted law"
                    if any(r.get("extrapolated") for r in rets)
                    else ""
                ),
            )
        )
    elif rets and all(r.get("source") for r in rets) and len({r["source"] for r in rets}) == 1:
        out.append(("source", f"search times from {rets[0]['source']}"))
    dates = sorted({str(d) for p in points if (d := (p.get("cost") or {}).get("price_date"))})
    if dates:
        out.append(
            (
                "prices",
                f"costs at the price catalog's on-demand prices read on {', '.join(dates)} "
                "(sim/spec/catalog/prices.yaml); a cost: section sets your own",
            )
        )
    warm = [p.get("warmup") for p in points]
    if warm and all(w and w["method"] == "fixed" and w["cut_s"] > 0 for w in warm):
        w0 = warm[0]
        assert w0 is not None  # all() above
        out.append(
            (
                "warm-up",
                f"requests that arrived before {w0['cut_s']:g} s dropped (run.warmup_s; "
                f"{w0['dropped_fraction']:.0%} of the requests)",
            )
        )
    for p in points:
        where = point_label(p.get("params", {})) if p.get("params") else "the scenario"
        w = p.get("warmup")
        if w and w["method"] == "mser5":
            out.append(
                (
                    "warm-up",
                    f"at {where}: MSER-5 cut {w['cut_s']:.1f} s, {w['dropped_fraction']:.0%} of the requests dropped",
                )
            )
        st = p.get("stability") or {}
        if not st.get("stable", True):
            out.append(("unstable", f"at {where}: {st.get('note') or 'no steady state'}"))
        elif st.get("note"):
            out.append(("note", f"at {where}: {st['note']}"))
        prec = p.get("precision")
        if prec and prec.get("note"):
            out.append(("precision", f"at {where}: {prec['note']}"))
        tl = p.get("timeline")
        if tl:
            out.append(("over time", f"at {where}: {timeline_line(tl)}"))
        for v in p.get("sla", []):
            if v.get("hint") and (
                v["verdict"] == "inconclusive" or (v["verdict"] == "fail" and v.get("window_s") is not None)
            ):
                out.append((v["verdict"], f"{v['metric']} {v['stat']} at {where}: {v['hint']}"))
    return out


def stability_text(point: Mapping[str, Any]) -> str:
    """``stable``, or ``unstable (why)``: the overloaded stage, or a latency still rising."""
    st = point.get("stability") or {}
    if st.get("stable", True):
        return "stable"
    if st.get("kind") == "not_steady":
        return "unstable (latency still rising)"
    why = (st.get("note") or "").split(": queues grow")[0]
    return f"unstable ({why})" if why else "unstable"


def _swept(table: pd.DataFrame) -> list[str]:
    """Swept-key columns of a summary table (dotted names)."""
    return [c for c in table.columns if "." in c]


def _png(fig) -> bytes:

    import matplotlib.pyplot as plt  # deferred: matplotlib is slow to import

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


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
        steady = _stable(p)
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
                *[("key", _value(p["params"].get(k))) for k in keys],
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

    stable = [i for i, p in enumerate(points) if _stable(p)]
    if stable:
        i = max(stable, key=lambda j: (float(points[j].get("throughput_per_s") or 0.0), p95(points[j])))
        return i, "the most loaded point that still reaches a steady state (highest answers/s)"
    i = max(range(len(points)), key=lambda j: p95(points[j]))
    return i, "the worst point (no point reaches a steady state: its queues grow through the run)"


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
            "Where the requests at or above each point's P95 spend their time"
            + (
                "; hatched and marked: no steady state (the axis is scaled to the stable points)."
                if any(not _stable(p) for p in points)
                else "."
            ),
            tail_breakdown(df, labels, unstable=[not _stable(p) for p in points]),
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
            why = "chosen with --point"
            if point is None:
                point, why = _timeseries_point(points)
            if not 0 <= point < len(points):
                raise CapsimError(f"--point {point}: expected 0..{len(points) - 1}")
            d = ts[ts["point"] == point]
            cut = _cut_for(points[point])
            warm = cut if isinstance(cut, float) else cut.get(0, 0.0)
            add(
                "timeseries",
                f"Queues, GPU batch and KV occupancy over replication 0 of point {point} "
                f"({labels[point]}): {why}; sampled every duration/200 s.",
                timeseries(d, 0, warm, title=f"State over time at {labels[point]} (replication 0)"),
            )
    # a load that changes over time is answered by P95 per window: that figure first
    figures.sort(key=lambda f: f[0] != "p95_over_time")
    head, rows = summary_rows(points)
    thead = "".join(f"<th>{html.escape(c)}</th>" for c in head)

    def cell(css: str, text: str) -> str:
        first, _, rest = text.partition("\n")
        extra = f"<br><small>{html.escape(rest)}</small>" if rest else ""
        return f"<td class='{css}'>{html.escape(first)}{extra}</td>"

    body = "".join("<tr>" + "".join(cell(c, t) for c, t in r) + "</tr>" for r in rows)
    lines = headline(points, key)
    answer = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
    notes = report_notes(points)
    notes_html = "".join(
        f"<li class='note-{html.escape(k.replace(' ', '-'))}'><b>{html.escape(k)}</b>: {html.escape(t)}</li>"
        for k, t in notes
    )
    slas = sorted(
        {
            f"{_sla_name(v)} ≤ {v['threshold']:,.0f} ms"
            + (f" every {v['window_s']:g} s" if v.get("window_s") is not None else "")
            for p in points
            for v in p.get("sla", [])
        }
    )
    imgs = "".join(
        f"<figure><img alt='{html.escape(n)}' src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
        f"<figcaption>{html.escape(c)}</figcaption></figure>"
        for n, c, b in figures
    )
    name = html.escape(str(summary.get("scenario", folder.name)))
    reps = sorted({p.get("replications") for p in points if p.get("replications") is not None})
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>capsim report: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1em auto; max-width: 1340px; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.4em; margin: 0.2em 0; }} .meta {{ color: #555; margin: 0.2em 0 0.8em; font-size: 0.9em; }}
.answer {{ background: #f4f7fb; border-left: 5px solid #2b5fa8; padding: 0.5em 1em; margin: 0.5em 0; }}
.answer ul {{ margin: 0.2em 0; padding-left: 1.2em; }} .answer li {{ font-size: 1.1em; margin: 0.15em 0; }}
.answer li:first-child {{ font-weight: bold; }}
.notes {{ font-size: 0.85em; color: #444; margin: 0.4em 0 0.8em; padding-left: 1.2em; }}
.notes li.note-unstable b, .notes li.note-fail b {{ color: #b3261e; }} .notes li.note-inconclusive b {{ color: #a66b00; }}
table {{ border-collapse: collapse; font-size: 0.85em; width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }}
th {{ background: #f3f3f3; position: sticky; top: 0; }}
td.verdict, td.stab {{ text-align: left; max-width: 26em; }} td small {{ color: #555; font-weight: normal; }}
td.verdict {{ font-weight: bold; white-space: nowrap; }}
td.pass {{ color: #187a2f; }} td.fail {{ color: #b3261e; }} td.inconclusive {{ color: #a66b00; }}
td.bad {{ color: #b3261e; }} td.ok {{ color: #187a2f; }}
.figs {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(620px, 1fr)); gap: 1em; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }} figcaption {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>capsim report: {name}</h1>
<p class="meta">{len(points)} point(s){f"; SLA {html.escape(', '.join(slas))}" if slas else "; no SLA"};
{"/".join(str(r) for r in reps) or "?"} replication(s) per point; latency in ms, ± the half-width of the
confidence interval over replications; ↑ no steady state. Folder: {html.escape(str(folder))}</p>
<div class="answer"><ul>{answer}</ul></div>
<ul class="notes">{notes_html}</ul>
<table><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>
<div class="figs">{imgs}</div>
</body></html>
"""
    atomic_write_text(folder / "report.html", doc)
    return [out_dir / f"{n}.png" for n, _, _ in figures] + [folder / "report.html"]
