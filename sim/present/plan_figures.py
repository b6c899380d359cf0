"""The pictures of ``capsim plan``: the Pareto front and the knob tornado (matplotlib Agg).

* :func:`pareto` plots every simulated candidate's P95 end-to-end time against its
  cost per hour (screen results, or the confirmation where there is one, with its
  interval), the Pareto front as a step line, the winner marked and the P95 SLA as a
  horizontal line;
* :func:`tornado` draws, for each planned key, the change in P95 when it moves one
  value down and one up from the winner (bars sorted by the larger change, on a
  symmetric log axis), each bar labelled with the change in cost per hour.

:func:`write_plan_figures` saves both as PNGs in a folder (``pareto.png``,
``tornado.png``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sim.files import atomic_write_bytes
from sim.present.figures import png_bytes, pyplot
from sim.run.plan import PlanResult


def pareto(res: PlanResult) -> Any:
    """P95 against cost per hour for every simulated candidate; the front, the winner, the SLA."""
    plt, _ = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    pts = [c for c in res.candidates if c.best and c.best.p95_ms is not None and math.isfinite(c.best.p95_ms)]
    passed = [c for c in pts if c.best.verdict == "pass"]  # type: ignore[union-attr]
    other = [c for c in pts if c.best.verdict != "pass"]  # type: ignore[union-attr]
    for group, colour, label in ((passed, "tab:green", "passes"), (other, "tab:red", "fails or undecided")):
        if group:
            ax.scatter(
                [c.cost_per_hour for c in group],
                [c.best.p95_ms for c in group],  # type: ignore[union-attr]
                s=22,
                color=colour,
                alpha=0.7,
                label=label,
            )
    if res.front:
        ax.step(
            [c.cost_per_hour for c in res.front],
            [c.best.p95_ms for c in res.front],  # type: ignore[union-attr]
            where="post",
            color="tab:blue",
            lw=1.5,
            label="Pareto front",
        )
    w = res.winner
    if w is not None and w.confirm is not None and w.confirm.p95_ms is not None:
        lo, hi = w.confirm.ci
        err = None if lo is None or hi is None else [[w.confirm.p95_ms - lo], [hi - w.confirm.p95_ms]]
        ax.errorbar(
            [w.cost_per_hour],
            [w.confirm.p95_ms],
            yerr=err,
            fmt="*",
            ms=14,
            color="gold",
            mec="black",
            label=f"winner (${w.cost_per_hour:,.2f}/h)",
        )
    p95 = (res.sla.get("e2e_ms") or {}).get("p95")
    if p95 is not None:
        ax.axhline(p95, color="black", ls="--", lw=1, label=f"SLA e2e p95 {p95:,.0f} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cost, USD per hour")
    ax.set_ylabel("e2e P95, ms")
    ax.set_title("cost against P95 of every simulated configuration")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tornado(res: PlanResult) -> Any:
    """Change in P95 from the winner, each planned key one value down and up."""
    plt, _ = pyplot()
    keys = list(dict.fromkeys(k.key for k in res.knobs))

    def reach(key: str) -> float:
        vals = [abs(k.delta_p95_ms) for k in res.knobs if k.key == key and k.delta_p95_ms is not None]
        return max([v for v in vals if math.isfinite(v)] or [math.inf if vals else 0.0])

    keys.sort(key=reach)
    fig, ax = plt.subplots(figsize=(10, 0.6 * max(len(keys), 1) + 1.8))
    finite = [abs(k.delta_p95_ms) for k in res.knobs if k.delta_p95_ms is not None and math.isfinite(k.delta_p95_ms)]
    cap = max(finite or [1.0]) * 1.15
    for y, key in enumerate(keys):
        for k in (k for k in res.knobs if k.key == key):
            d = k.delta_p95_ms
            colour = "tab:orange" if k.direction == "down" else "tab:blue"
            cost = "" if k.delta_cost_per_hour is None else f"  {k.delta_cost_per_hour:+,.2f} $/h"
            if d is None:
                ax.text(0, y, f"  {k.value}: {'does not fit' if k.candidate.scenario is None else 'n/a'}", va="center")
                continue
            shown = max(min(d, cap), -cap)
            ax.barh(y, shown, color=colour, alpha=0.8, height=0.6)
            text = f"{k.value}: {'+∞' if math.isinf(d) else f'{d:+,.0f}'} ms{cost}"
            ax.text(shown, y, f" {text} ", va="center", ha="left" if shown >= 0 else "right", fontsize=8)
    ax.axvline(0, color="black", lw=1)
    ax.set_yticks(range(len(keys)), keys)
    ax.set_xscale("symlog", linthresh=10.0)  # a +9 s change and a -5 ms one on one axis
    ax.set_xlim(-cap * 300, cap * 300)  # room for each bar's label beyond its end
    ax.set_xlabel("change in e2e P95 from the winner, ms (symmetric log)\norange: one value down, blue: one value up")
    ax.set_title("which knob matters: each planned key one step each way")
    fig.tight_layout()
    return fig


def write_plan_figures(res: PlanResult, folder: str | Path) -> list[Path]:
    """Save ``pareto.png`` (and ``tornado.png`` when there are knobs) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "pareto.png"]
    atomic_write_bytes(out[0], png_bytes(pareto(res)))
    if res.knobs:
        out.append(folder / "tornado.png")
        atomic_write_bytes(out[1], png_bytes(tornado(res)))
    return out
