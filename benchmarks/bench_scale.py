"""How the cost of a simulated request changes with the size of the shop.

The flagship (`scenarios/order_support.yaml` with `retrieval.index=hnsw`) at 1,000 and
10,000 shoppers (and, with ``--long``, 100,000), one replication of 600 simulated seconds,
with GPU replicas and retrieval workers scaled with the shoppers (one replica per 1,280
shoppers, four search workers per replica: 1/4, 8/32, 78/312).  Each point runs in a fresh
process: the replication, then its point summary, as ``capsim run`` does.  Reported per
point: events (every event SimPy scheduled), requests finished, events and requests per
CPU second of the replication, the summary's CPU time, wall time of the whole point and the
process's peak resident memory.

Wall times include waiting for a core on a busy machine; the CPU figures do not, and the
per-request cost is the figure to compare across sizes (flat is the goal).

``--memory`` measures instead the peak resident memory of each point twice, each time in a
fresh process: with the per-request records kept (``run.records: true``, what a folder's
records.parquet needs) and with the streaming summaries alone (the default), beside the
resident memory once the scenario and model are built (the imports' share of the peak).
Its points are 1,000 shoppers for 600 and for 6,000 simulated seconds (ten times the
requests at one shop size) and 10,000 shoppers for 600 s (``--long`` adds 100,000).

    python benchmarks/bench_scale.py [--long] [--json benchmarks/results/scale.json]
    python benchmarks/bench_scale.py --memory [--json benchmarks/results/scale_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from result_file import figure, write

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "scenarios" / "order_support.yaml"
USERS_PER_REPLICA = 1280
WORKERS_PER_REPLICA = 4
DURATION_S = 600


def overrides(users: int, duration_s: float = DURATION_S) -> dict[str, object]:
    replicas = max(1, round(users / USERS_PER_REPLICA))
    return {
        "workload.users": users,
        "llm.replicas": replicas,
        "retrieval.workers": WORKERS_PER_REPLICA * replicas,
        "retrieval.index": "hnsw",
        "run.duration_s": duration_s,
        "run.replications": 1,
    }


def one_point(users: int, records: bool = False, duration_s: float = DURATION_S) -> dict[str, float]:
    """Run one point in this process; what it cost (``records``: keep every request's record)."""
    sys.path.insert(0, str(ROOT))
    t0 = time.perf_counter()
    from sim.analysis.summary import summarize_point
    from sim.engine.pipeline import Model
    from sim.spec.scenario import load_scenario

    scn = load_scenario(SCENARIO, overrides(users, duration_s))
    c0 = time.process_time()
    model = Model(scn, 0, records=records)
    built_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rep = model.run()
    engine_cpu = time.process_time() - c0
    events = next(model.env._eid)  # ids count from 0: the next id is the number scheduled
    c1 = time.process_time()
    summarize_point(scn, [rep])
    summary_cpu = time.process_time() - c1
    requests = len(model.recorder)
    return {
        "records": records,
        "duration_s": duration_s,
        "built_mb": built_mb,
        "users": users,
        "replicas": scn.llm.replicas,
        "workers": scn.retrieval.workers,
        "events": events,
        "requests": requests,
        "engine_cpu_s": engine_cpu,
        "summary_cpu_s": summary_cpu,
        "wall_s": time.perf_counter() - t0,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", action="store_true", help="add the 100,000-shopper point (minutes)")
    ap.add_argument("--users", type=str, help="comma-separated shoppers per point instead of 1000,10000[,100000]")
    ap.add_argument("--json", type=Path, help="also write the figures to this result file")
    ap.add_argument("--memory", action="store_true", help="peak memory with and without per-request records")
    ap.add_argument("--point", type=int, help=argparse.SUPPRESS)  # the child process: one point
    ap.add_argument("--records", action="store_true", help=argparse.SUPPRESS)  # the child keeps records
    ap.add_argument("--duration", type=float, default=DURATION_S, help=argparse.SUPPRESS)  # the child's run.duration_s
    args = ap.parse_args()
    if args.point is not None:
        print(json.dumps(one_point(args.point, args.records, args.duration)))
        return
    if args.memory:
        memory(args)
        return
    sizes = [int(u) for u in args.users.split(",")] if args.users else [1000, 10_000] + ([100_000] if args.long else [])
    load = os.getloadavg()[0]
    rows = []
    for users in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--point", str(users)], cwd=ROOT, check=True, capture_output=True, text=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(
        f"flagship (hnsw), one replication of {DURATION_S} simulated s, replicas and workers scaled with the "
        f"shoppers; {os.cpu_count()} cores, load average {load:.1f}"
    )
    head = ("shoppers", "repl/wk", "requests", "events", "ev/CPU s", "req/CPU s", "us/req", "summary", "wall", "peak")
    print("  ".join(f"{h:>10s}" for h in head))
    figures = []
    for r in rows:
        ev_s, req_s = r["events"] / r["engine_cpu_s"], r["requests"] / r["engine_cpu_s"]
        print(
            f"{r['users']:>10,d}  {r['replicas']:>4d}/{r['workers']:<5d}  {r['requests']:>10,d}  {r['events']:>10,d}  "
            f"{ev_s:>10,.0f}  {req_s:>10,.0f}  {1e6 / req_s:>10.1f}  {r['summary_cpu_s']:>9.2f}s  "
            f"{r['wall_s']:>9.1f}s  {r['peak_mb']:>8,.0f}MB"
        )
        figures.append(
            figure(
                f"{r['users']:,} shoppers ({r['replicas']} replicas, {r['workers']} workers): CPU per request",
                1e6 / req_s,
                "us",
                "",
                requests=r["requests"],
                events=r["events"],
                events_per_cpu_s=round(ev_s),
                requests_per_cpu_s=round(req_s),
                engine_cpu_s=round(r["engine_cpu_s"], 3),
                summary_cpu_s=round(r["summary_cpu_s"], 3),
                wall_s=round(r["wall_s"], 3),
                peak_mb=round(r["peak_mb"], 1),
            )
        )
    if args.json:
        write(
            args.json,
            "scale",
            f"one fresh process per point: one replication of {DURATION_S} simulated s and its point summary; "
            "CPU seconds of the replication per request; wall and peak resident memory of the whole process; "
            f"load average {load:.1f} when it started (a shared machine: wall and CPU times are inflated)",
            figures,
        )


def child(users: int, records: bool, duration_s: float) -> dict:
    cmd = [sys.executable, __file__, "--point", str(users), "--duration", str(duration_s)]
    out = subprocess.run(cmd + (["--records"] if records else []), cwd=ROOT, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


#: (shoppers, simulated seconds): ten times the requests at one shop size, then ten times the shoppers.
MEMORY_POINTS = ((1000, DURATION_S), (1000, 10 * DURATION_S), (10_000, DURATION_S))


def memory(args: argparse.Namespace) -> None:
    """Peak resident memory per point, records kept and streaming, each in a fresh process."""
    points = [(int(u), DURATION_S) for u in args.users.split(",")] if args.users else list(MEMORY_POINTS)
    if args.long and not args.users:
        points.append((100_000, DURATION_S))
    load = os.getloadavg()[0]
    cmd = "python benchmarks/bench_scale.py --memory" + (f" --users {args.users}" if args.users else "")
    print(f"{cmd}: peak resident memory of one replication of the flagship and its summary")
    head = ("shoppers", "sim. s", "requests", "built", "records kept", "streaming", "kept-built", "stream-built")
    print("  ".join(f"{h:>12s}" for h in head))
    figures = []
    for users, duration in points:
        kept, streamed = child(users, True, duration), child(users, False, duration)
        print(
            f"{users:>12,d}  {duration:>12,.0f}  {streamed['requests']:>12,d}  {streamed['built_mb']:>10,.0f}MB  "
            f"{kept['peak_mb']:>10,.0f}MB  {streamed['peak_mb']:>10,.0f}MB  "
            f"{kept['peak_mb'] - kept['built_mb']:>10,.0f}MB  {streamed['peak_mb'] - streamed['built_mb']:>10,.0f}MB"
        )
        for r, how in ((kept, "per-request records kept"), (streamed, "streaming summaries only")):
            figures.append(
                figure(
                    f"{users:,} shoppers x {duration:,.0f} s ({r['requests']:,} requests), {how}: peak memory",
                    r["peak_mb"],
                    "MB",
                    "",
                    requests=r["requests"],
                    built_mb=round(r["built_mb"], 1),
                    growth_mb=round(r["peak_mb"] - r["built_mb"], 1),
                    wall_s=round(r["wall_s"], 3),
                    engine_cpu_s=round(r["engine_cpu_s"], 3),
                    summary_cpu_s=round(r["summary_cpu_s"], 3),
                )
            )
    if args.json:
        write(
            args.json,
            "scale_memory",
            f"`{cmd}`: one fresh process per point and mode, one replication of the flagship (hnsw) with replicas "
            "and workers scaled with the shoppers, then its point summary; peak resident memory (ru_maxrss) of the "
            "whole process; built_mb: resident memory once the scenario and model are built (imports included); "
            "growth_mb: peak minus built (the run, its summary and the per-shopper state); "
            f"load average {load:.1f} when it started",
            figures,
        )


if __name__ == "__main__":
    main()
