"""``autoscale.png``: P95 per window of the autoscaled fleet and of the cheapest static fleet
that passes, the SLA threshold, and the autoscaled fleet's replicas (paid, ready) beneath."""

from __future__ import annotations

import io
import math
from pathlib import Path

from sim.files import atomic_write_bytes
from sim.run.autoscale import Comparison


def figure(c: Comparison):
    import matplotlib  # deferred: matplotlib takes a second to load and only this figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred, as above

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, height_ratios=[2, 1])
    s = c.cheapest_static
    for f, style in ((c.autoscaled, "-"), (s, "--")):
        if f is None:
            continue
        xs = [(w["start_s"] + w["end_s"]) / 2 for w in f.timeline]
        ys = [w["p95_ms"] if w["p95_ms"] is not None and math.isfinite(w["p95_ms"]) else math.nan for w in f.timeline]
        top.plot(xs, ys, style, marker="o", ms=3, label=f"{f.label} P95")
    if c.sla_p95_ms is not None:
        top.axhline(c.sla_p95_ms, color="grey", ls=":", label=f"SLA {c.sla_p95_ms:,.0f} ms")
    top.set_yscale("log")
    top.set_ylabel("e2e P95 per window (ms)")
    top.legend(fontsize=8)
    wins = (c.autoscaled.autoscale or {}).get("windows", [])
    for key, style in (("paid", "-"), ("ready", "--")):
        xs, ys = [], []
        for w in wins:
            xs += [w["start_s"], w["end_s"]]
            ys += [w[key], w[key]]
        bottom.plot(xs, ys, style, label=f"replicas {key} (mean over the window)")
    bottom.set_ylabel("replicas")
    bottom.set_xlabel("simulated time (s)")
    bottom.legend(fontsize=8)
    top.set_title(f"{c.scenario}: autoscaled" + (f" against {s.label}" if s else ""), fontsize=10)
    fig.tight_layout()
    return fig


def write_autoscale_figure(c: Comparison, out: Path) -> list[Path]:
    """Write ``out/autoscale.png``; returns the paths written."""
    import matplotlib.pyplot as plt  # deferred: as in figure()

    fig = figure(c)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = out / "autoscale.png"
    atomic_write_bytes(path, buf.getvalue())
    return [path]
