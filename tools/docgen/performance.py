"""The performance page, rendered from ``benchmarks/results/*.json`` (``make bench`` writes them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
TITLES = {
    "startup": "CLI start-up (`benchmarks/bench_startup.py`)",
    "engine": "Engine (`benchmarks/bench_engine.py`)",
    "scale": "Shop size (`benchmarks/bench_scale.py`)",
    "scale_memory": "Memory by shop size and run length (`benchmarks/bench_scale.py --memory`)",
    "plan": "Deployment planning (`benchmarks/bench_plan.py`)",
}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((RESULTS / f"{name}.json").read_text()))


def value(fig: dict[str, Any]) -> str:
    v, unit = fig["value"], fig["unit"]
    if unit == "x":
        return f"{v:.2f}x"
    if unit == "MB":
        return f"{v:,.0f} MB"
    if unit == "configurations":
        return f"{v:,.0f}"
    return f"{v:.2f} {unit}" if v >= 0.1 else f"{v:.3f} {unit}"


def summary_rows() -> list[tuple[str, str, str]]:
    """(figure, value, target) for every figure with a target: the README's performance summary."""
    return [(f["name"], value(f), f["target"]) for name in TITLES for f in load(name)["figures"] if f["target"]]


def render() -> str:
    lines = [
        "# Performance",
        "",
        "How fast capsim starts and simulates, generated from the result files `make bench` writes "
        "(`benchmarks/results/*.json`). Engine figures are ratios where a reference runs in the same process "
        "(portable across machines); whole-process times depend on the machine named under each table. "
        "Ciw, the peer queueing simulator, is installed into `.bench-deps` by the target.",
    ]
    for name, title in TITLES.items():
        doc = load(name)
        lines += ["", f"## {title}", "", "| figure | value | target |", "|---|---|---|"]
        for f in doc["figures"]:
            extra = ""
            if "first_line_s" in f:
                extra = f" (first line {f['first_line_s']:.3f} s, CPU {f['cpu_s']:.3f} s)"
            elif "requests_per_cpu_s" in f:
                extra = (
                    f" ({f['requests']:,} requests, {f['requests_per_cpu_s']:,} requests and "
                    f"{f['events_per_cpu_s']:,} events per CPU second; summary {f['summary_cpu_s']:.2f} s CPU; "
                    f"whole process {f['wall_s']:.1f} s wall, peak {f['peak_mb']:,.0f} MB)"
                )
            elif "cpu_s" in f:
                extra = f" (CPU {f['cpu_s']:.1f} s)"
            note = f" ({f['note']})" if f.get("note") else ""
            lines.append(f"| {f['name']} | {value(f)}{extra}{note} | {f['target'] or '-'} |")
        src = f" Source: {doc['source']}." if doc.get("source") else ""
        lines += [
            "",
            f"*{doc['date']}, {doc['machine']}, load average {doc['load_average_before']} before it started; "
            f"{doc['method']}.{src}*",
        ]
    lines += ["", EXPLAIN]
    return "\n".join(lines) + "\n"


EXPLAIN = """\
## What makes it fast

* A request is not a SimPy process but a chain of callbacks, one event per wait; closed users
  and open arrivals are timeout callbacks, and a wait is a bare timer on SimPy's queue
  (`sim/engine/clock.py`), in the same order of events a `Timeout` would give.
* An LLM replica wakes the event loop once per admission, completion or KV-block shortage,
  never once per token: between two such events a batch does not change and every context
  grows by one token a step, so *k* decode steps have a closed form.
* The least-outstanding router keeps the replicas' loads in a tournament tree that each
  replica updates when a request joins or leaves it: a pick reads the root instead of
  scanning every replica.
* No reference cycles per request (`tests/test_engine_cycles.py` holds a replication's cyclic
  garbage at zero), and records become columns in one conversion to float64.
* A parallel sweep forks its workers before the parent imports pandas and scipy, hands out
  replications heaviest first (by the run-bounds estimate of `sim/run/bounds.py`), and appends
  the folder's Parquet files point by point as points finish.
* The scheduled one-core retrieval pool (`retrieval.scheduler`) does three pieces of CPU work
  and two trips over the wire per search where the shared pool takes one timer, hence its
  lower rate in the last engine row.

Memory grows with closed-loop users, not with requests. A finished request is counted into its
replication's digest (`sim/engine/digest.py`: log-bucket histograms per metric and time cell,
4-byte counters, 231 buckets a decade of latency) and dropped, 4,096 at a time; only where the
per-request records are kept (`run.records`, or a folder's `records.parquet`) is it packed into
a float64 block (8 bytes a field, 144 bytes a request) that becomes column arrays at the end. A
closed-loop user holds four random streams and their sampler blocks (typed arrays, 8 bytes a
value). About 155 MB of the flagship's peak is the interpreter and its libraries.
"""
