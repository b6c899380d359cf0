"""A replication leaves no reference cycles behind per request.

Cyclic garbage is freed only by the cyclic collector, whose passes then walk
every live object: a cycle per request (the LLM's done-event holding its
sequence as its value, the sequence holding the event) cost the flagship's
event loop ~30 % in a process that had run other work first (benchmarks/
bench_engine.py). With the collector off for the run and the model still
alive, a collection may find the few cycles the model is built with, never
more for a run twice as long.  A first, short run goes before both: what a fresh process
builds once (a lazy import, a cache filled on first use) may hold cycles of its own.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import sim
from sim.engine.pipeline import Model

ROOT = Path(__file__).resolve().parents[1]


def _cyclic_garbage(path: str, overrides: dict) -> tuple[int, int]:
    scn = sim.load_scenario(ROOT / path, {**overrides, "sweep": {}, "expect": []})
    gc.collect()
    gc.disable()
    try:
        model = Model(scn, 0, records=True)
        rep = model.run()
        found = gc.collect()
    finally:
        gc.enable()
    return found, len(rep.records["e2e_ms"])


@pytest.mark.parametrize(
    "path,overrides",
    [
        ("tests/data/rag_small.yaml", {}),
        ("scenarios/order_support_routing.yaml", {"workload.users": 100, "run.warmup_s": 10}),
        ("scenarios/peer_5000.yaml", {}),
    ],
)
def test_no_cycles_per_request(path: str, overrides: dict) -> None:
    _cyclic_garbage(path, {**overrides, "run.duration_s": 40})  # the process's one-time set-up
    short, n_short = _cyclic_garbage(path, {**overrides, "run.duration_s": 150})
    long, n_long = _cyclic_garbage(path, {**overrides, "run.duration_s": 300})
    assert n_long - n_short > 500  # enough more requests that a cycle each would show
    assert long == short, f"{short} objects in cycles after {n_short} requests, {long} after {n_long}"
