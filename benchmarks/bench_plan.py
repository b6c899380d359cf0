"""How fast `capsim plan` answers: the shipped plan (scenarios/order_support_plan.yaml, 1,620
configurations for 1,000 shoppers) on the local cores, with how many configurations the
analytic layer pruned, how many were skipped, screened and confirmed, and the wall and CPU time.
Afterwards (not timed) it simulates the pruned configurations nearest the line, to count any
the bound discarded that would not have failed.

    python benchmarks/bench_plan.py [--jobs 2] [--json benchmarks/results/plan.json]

The wall time includes waiting for a core on a shared machine; the CPU time (this process and
its workers) does not.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time
from pathlib import Path

from result_file import figure, write

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "order_support_plan.yaml"


def cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--audit", type=int, default=4, help="pruned configurations to simulate afterwards (untimed)")
    ap.add_argument("--json", type=Path, help="also write the figures to this result file")
    args = ap.parse_args()

    from sim.run.plan import audit_pruned, plan
    from sim.spec.scenario import load_scenario

    space = math.prod(len(v) for v in load_scenario(SCENARIO).plan.values())
    c0, t0 = cpu_s(), time.perf_counter()
    res = plan(SCENARIO, jobs=args.jobs)
    wall, cpu = time.perf_counter() - t0, cpu_s() - c0
    n = res.counts
    w = res.winner
    assert w is not None and w.confirm is not None, "the shipped plan has a winner"
    lo, hi = w.confirm.ci
    answer = (
        f"{w.label}: ${w.cost_per_hour:,.2f}/h, e2e P95 {w.confirm.p95_ms:,.0f} ms [{lo:,.0f}, {hi:,.0f}]"
        if lo is not None and hi is not None and w.confirm.p95_ms is not None
        else w.label
    )
    print(f"{space:,} configurations -> {answer}")
    print(
        f"pruned {n['pruned']:,}, skipped {n['skipped']:,}, screened {n['screened']:,}, confirmed {n['confirmed']:,}; "
        f"{res.simulations} simulations; {wall:.1f} s wall, {cpu:.1f} s CPU on {args.jobs} processes"
    )
    # Did the bound discard a configuration that passes?  Simulate the pruned ones nearest the line.
    audited = audit_pruned(res, args.audit, res.screen_replications, args.jobs)
    passing = [c for c in audited if c.screen is not None and c.screen.verdict != "fail"]
    nearest = audited[0].bound_ms if audited else None
    print(f"audit: {len(audited)} pruned configurations nearest the line simulated, {len(passing)} do not fail")
    figures = [
        figure(
            f"capsim plan, shipped plan of {space:,} configurations, {args.jobs} processes",
            wall,
            "s",
            "< 120 s on 2 cores",
            cpu_s=round(cpu, 2),
            note=(
                f"{n['pruned']:,} pruned, {n['skipped']:,} skipped, {n['screened']:,} screened, "
                f"{n['confirmed']:,} confirmed; {res.simulations} simulations"
            ),
        ),
        figure("configurations pruned analytically", n["pruned"], "configurations"),
        figure("configurations skipped (a better-resourced one of the group fails)", n["skipped"], "configurations"),
        figure("configurations screened (2 replications)", n["screened"], "configurations"),
        figure(f"configurations confirmed ({res.replications} replications)", n["confirmed"], "configurations"),
        figure(
            f"pruned configurations nearest the line that do not fail when simulated (of {len(audited)})",
            len(passing),
            "configurations",
            "0",
            note=f"smallest bound {nearest:,.0f} ms" if nearest is not None else "",
        ),
    ]
    if args.json:
        write(
            args.json,
            "plan",
            f"one `sim.run.plan.plan` of {SCENARIO.relative_to(ROOT)} in this process with {args.jobs} worker "
            f"processes (os.cpu_count() {os.cpu_count()}); answer: {answer}",
            figures,
        )


if __name__ == "__main__":
    main()
