"""How fast is the engine?  Simulated requests per wall-clock second.

Three figures, measured in this one process so they can be compared as
ratios on any machine:

1. the flagship scenario at 1,000 users, 10 simulated minutes, one replication;
2. an M/M/c queue (c=10, rho=0.9) run through capsim (cache and LLM off,
   retrieval as the c-server station);
3. the same M/M/c queue as a bare SimPy loop (simpy.Resource, no records):
   the floor any SimPy model pays.

The ratio (2)/(3) is capsim's overhead per request over bare SimPy; (1) is
what users feel.  Target: (1) under 10 s of wall time per replication.

    .venv/bin/python benchmarks/bench_engine.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import simpy

import sim
from sim.engine.pipeline import run_replication

ROOT = Path(__file__).resolve().parents[1]


def bare_simpy_mmc(c: int, lam: float, mu: float, until: float, seed: int) -> int:
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=c)
    rng = np.random.default_rng(seed)
    gaps = iter(rng.exponential(1 / lam, int(lam * until * 1.2) + 100).tolist())
    services = iter(rng.exponential(1 / mu, int(lam * until * 1.2) + 100).tolist())
    done = [0]

    def customer():
        with server.request() as req:
            yield req
            yield env.timeout(next(services))
        done[0] += 1

    def source():
        while True:
            yield env.timeout(next(gaps))
            env.process(customer())

    env.process(source())
    env.run(until=until)
    return done[0]


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    flagship = sim.load_scenario(
        ROOT / "scenarios/order_support.yaml",
        {"workload.users": 1000, "retrieval.index": "hnsw", "run.duration_s": 600, "run.warmup_s": 60, "sweep": {}},
    )
    c, lam, mu, until = 10, 9.0, 1.0, 20_000.0
    mmc = sim.load_scenario(
        {
            "name": "mmc",
            "run": {"duration_s": until, "warmup_s": 0, "replications": 1, "drain_s": 0},
            "workload": {"mode": "open", "rate_per_s": lam},
            "cache": {"enabled": False},
            "llm": {"enabled": False},
            "retrieval": {"workers": c, "service_ms": {"dist": "exponential", "mean": 1000 / mu}},
        }
    )
    rows = []
    for i in range(args.repeat):
        rep, t_flag = timed(lambda i=i: run_replication(flagship, i))
        n_flag = len(rep.records["e2e_ms"])
        rep, t_mmc = timed(lambda i=i: run_replication(mmc, i))
        n_mmc = len(rep.records["e2e_ms"])
        n_bare, t_bare = timed(lambda i=i: bare_simpy_mmc(c, lam, mu, until, i))
        rows.append((n_flag / t_flag, t_flag, n_mmc / t_mmc, n_bare / t_bare))
    best = max(rows, key=lambda r: r[0])
    flag_rps, flag_s, mmc_rps, bare_rps = (float(np.median([r[k] for r in rows])) for k in range(4))
    print(
        f"flagship, 1,000 users, 600 simulated s : {flag_rps:10,.0f} requests/s  "
        f"({flag_s:.2f} s wall per replication; target < 10 s)"
    )
    print(f"M/M/10 at rho=0.9 through capsim       : {mmc_rps:10,.0f} requests/s")
    print(f"M/M/10 at rho=0.9 as bare SimPy        : {bare_rps:10,.0f} requests/s")
    print(f"capsim / bare SimPy                    : {mmc_rps / bare_rps:10.2f}x  (median of {args.repeat})")
    del best


if __name__ == "__main__":
    main()
