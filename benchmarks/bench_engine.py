"""How fast is the engine?  The figures issue 15 sets targets for.

In this one process, interleaved rounds so a load spike hits every contender
alike, reported as ratios (portable across machines):

* an M/M/c queue (c=10, rho=0.9) through ``sim.simulate`` (cache and LLM off,
  retrieval as the c-server station), against the same queue as a bare SimPy
  ``Resource`` loop (no records: the floor any SimPy model pays) and as Ciw;
* the flagship at 1,000 users for 600 simulated seconds, event loop only;
* the retrieval stage of scenarios/verify_retrieval.yaml at 11 users for 600
  simulated seconds, its two threads and event loop scheduled on one core
  (``retrieval.scheduler``, sim/engine/sched.py) against the same as shared
  work (sim/engine/pool.py): what the scheduled pool costs per request.

As whole processes (``python -m sim ...``, what a user waits for): the
flagship run, the peer workload of scenarios/peer_5000.yaml, a sweep of 8
points on 2 workers against 1 (the median of 3 interleaved pairs of runs, each
pair one ratio), and the flagship's peak memory with --out.

    .venv/bin/python benchmarks/bench_engine.py [--repeat 5] [--sweep-only] [--pools-only]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import simpy
from result_file import figure, user_env, write

import sim
from sim.engine.pipeline import run_replication

ROOT = Path(__file__).resolve().parents[1]
# Ciw, the peer simulator, is installed by `make bench` into its own folder (see the Makefile).
sys.path.append(str(ROOT / ".bench-deps"))


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


def finished(rep) -> int:
    """Requests a replication finished (its digest's count: no records are kept)."""
    return int(rep.digest.count("finished").sum())


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def ciw_mmc(c: int, lam: float, mu: float, until: float, seed: int) -> int:
    import ciw  # the peer simulator; a dev dependency

    ciw.seed(seed)
    net = ciw.create_network(
        arrival_distributions=[ciw.dists.Exponential(rate=lam)],
        service_distributions=[ciw.dists.Exponential(rate=mu)],
        number_of_servers=[c],
    )
    q = ciw.Simulation(net)
    q.simulate_until_max_time(until)
    return len(q.get_all_records())


def process_s(args: list[str]) -> float:
    """Wall seconds of a whole `capsim ...` process."""
    return process_times(args)[0]


def process_times(args: list[str]) -> tuple[float, float]:
    """Wall seconds of a whole `capsim ...` process, and the CPU seconds it and its worker
    processes used (what it costs when a busy machine inflates the wall time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "sim", *args],
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


# The process reports its own peak resident set: VmHWM of its address space (ru_maxrss
# would carry over, through fork and exec, the resident size of this large parent).
_PEAK = (
    "import sys\n"
    "from sim.cli import main\n"
    "sys.argv = ['capsim', *sys.argv[1:]]\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print(hwm, file=sys.stderr)\n"
)


def peak_mb(args: list[str]) -> float:
    """Peak resident MB of one whole `capsim ...` process."""
    r = subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    return int(r.stderr.strip().splitlines()[-1]) / 1024.0


def sweep_speedup(pairs: int = 3) -> float:
    """Wall time of `capsim sweep` of 8 points on 1 worker over the same on 2: the median of
    ``pairs`` ratios, each of a 1-worker run and the 2-worker run right after it."""
    # Points heavy enough (each ~1 s) that the simulation, not start-up, is what parallelises.
    grid = [
        "sweep",
        "tests/data/rag_small.yaml",
        "--grid",
        "workload.users=40,60,80,100,120,140,160,180",
        "--replications",
        "1",
        "--set",
        "run.duration_s=900",
    ]
    ratios = []
    for i in range(pairs):
        with tempfile.TemporaryDirectory() as td:
            one = process_s([*grid, "--jobs", "1", "--out", str(Path(td) / f"s1-{i}")])
            two = process_s([*grid, "--jobs", "2", "--out", str(Path(td) / f"s2-{i}")])
        ratios.append(one / two)
    return statistics.median(ratios)


def retrieval_pools() -> tuple[sim.Scenario, sim.Scenario]:
    """verify_retrieval at 11 users, 600 s: shared work, and the threads scheduled (the loop's
    CPU and off-core time of a make verify run's probes, this machine's slice and tick)."""
    over = {"workload.users": 11, "run.duration_s": 600, "run.warmup_s": 10, "run.replications": 1}
    over["retrieval.service_ms"] = {"dist": "lognormal", "mean": 5.6, "cv": 0.2}
    shared = sim.load_scenario(ROOT / "scenarios/verify_retrieval.yaml", over)
    sched = {"loop_cpu_ms": 0.78, "off_core_ms": 0.22, "slice_ms": 1.5, "tick_ms": 4.0}
    return shared, sim.load_scenario(ROOT / "scenarios/verify_retrieval.yaml", {**over, "retrieval.scheduler": sched})


def pools_ratio(repeat: int) -> tuple[float, float]:
    """Requests per second of the scheduled pool over the shared one (median of interleaved
    rounds), and the scheduled pool's requests per second."""
    shared, sched = retrieval_pools()
    ratios, rates = [], []
    for i in range(repeat):
        res, t_shared = timed(lambda i=i: run_replication(shared, i))
        n_shared = finished(res)
        res, t_sched = timed(lambda i=i: run_replication(sched, i))
        n_sched = finished(res)
        rates.append(n_sched / t_sched)
        ratios.append((n_sched / t_sched) / (n_shared / t_shared))
    return statistics.median(ratios), statistics.median(rates)


def _pools_line(ratio: float, rate: float) -> str:
    return (
        f"  retrieval 11 users, scheduled threads / shared work, req/s : {ratio:6.2f}x   "
        f"({rate:,.0f} requests/s simulated)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sweep-only", action="store_true", help="only the sweep speed-up (3 pairs of runs)")
    ap.add_argument("--pools-only", action="store_true", help="only the scheduled pool against the shared one")
    ap.add_argument("--json", type=Path, help="also write the figures to this result file")
    args = ap.parse_args()
    if args.sweep_only:
        x = sweep_speedup()
        print(f"  sweep of 8 points, 2 local workers / 1 worker speed-up    : {x:6.2f}x   (target >= 1.8)")
        return
    if args.pools_only:
        print(_pools_line(*pools_ratio(args.repeat)))
        return
    flagship = sim.load_scenario(
        ROOT / "scenarios/order_support.yaml",
        {
            "workload.users": 1000,
            "retrieval.index": "hnsw",
            "run.duration_s": 600,
            "run.warmup_s": 60,
            "sweep": {},
            "expect": [],
        },
    )
    c, lam, mu, until = 10, 9.0, 1.0, 20_000.0
    mmc = {
        "name": "mmc",
        "run": {"duration_s": until, "warmup_s": 0, "replications": 1, "drain_s": 0},
        "workload": {"mode": "open", "rate_per_s": lam},
        "cache": {"enabled": False},
        "llm": {"enabled": False},
        "retrieval": {"workers": c, "service_ms": {"dist": "exponential", "mean": 1000 / mu}},
    }
    rounds: dict[str, list[float]] = {k: [] for k in ("capsim", "bare", "ciw", "flag_loop")}
    for i in range(args.repeat):  # interleaved, so a load spike hits every contender alike
        res, t = timed(lambda i=i: sim.simulate(mmc, seed=i + 1))
        rounds["capsim"].append(finished(res.points[0].replications[0]) / t)
        n, t = timed(lambda i=i: bare_simpy_mmc(c, lam, mu, until, i))
        rounds["bare"].append(n / t)
        n, t = timed(lambda i=i: ciw_mmc(c, lam, mu, until, i))
        rounds["ciw"].append(n / t)
        _, t = timed(lambda i=i: run_replication(flagship, i))
        rounds["flag_loop"].append(t)
    ratio_bare = statistics.median(a / b for a, b in zip(rounds["capsim"], rounds["bare"]))
    ratio_ciw = statistics.median(a / b for a, b in zip(rounds["capsim"], rounds["ciw"]))
    flag = [
        "run",
        "scenarios/order_support.yaml",
        "--jobs",
        "1",
        "--replications",
        "1",
        "--set",
        "workload.users=1000",
        "--set",
        "retrieval.index=hnsw",
        "--set",
        "sweep={}",
        "--set",
        "expect=[]",
        "--set",
        "run.duration_s=600",
        "--set",
        "run.warmup_s=60",
    ]
    whole_times = [process_times(flag) for _ in range(3)]
    whole = [w for w, _ in whole_times]
    peer = [process_s(["run", "scenarios/peer_5000.yaml", "--jobs", "1"]) for _ in range(3)]
    with tempfile.TemporaryDirectory() as td:
        peak = peak_mb([*flag, "--out", str(Path(td) / "out")])
    speedup = sweep_speedup()
    pools = pools_ratio(args.repeat)
    print(f"engine speed, median of {args.repeat} interleaved rounds (whole processes: median of 3)")
    print(f"  M/M/10 rho 0.9 via sim.simulate / bare SimPy Resource loop : {ratio_bare:6.2f}x   (target >= 1.0)")
    print(f"  M/M/10 rho 0.9 via sim.simulate / Ciw {_ciw_version():<19s}: {ratio_ciw:6.2f}x   (target >= 2)")
    print(
        f"  flagship 1,000 users x 600 s, event loop, 1 replication  : {statistics.median(rounds['flag_loop']):6.2f} s "
        f"(target <= 2 s)"
    )
    whole_s = statistics.median(whole)
    whole_cpu = statistics.median(c for _, c in whole_times)
    print(
        f"  flagship, whole `capsim run` process                      : {whole_s:6.2f} s (target <= 3 s; "
        f"CPU {whole_cpu:.2f} s)"
    )
    print(
        f"  peer workload (scenarios/peer_5000.yaml), whole process   : {statistics.median(peer):6.2f} s "
        f"(target <= 2 s)"
    )
    print(f"  sweep of 8 points, 2 local workers / 1 worker speed-up    : {speedup:6.2f}x   (target >= 1.8)")
    print(f"  peak memory, flagship with --out                          : {peak:6.0f} MB  (target <= 400 MB)")
    print(_pools_line(*pools))
    if args.json:
        flag_loop = statistics.median(rounds["flag_loop"])
        peer_s = statistics.median(peer)
        write(
            args.json,
            "engine",
            f"median of {args.repeat} interleaved rounds in one process; whole processes: median of 3",
            [
                figure("M/M/10 rho 0.9 via sim.simulate / bare SimPy Resource loop", ratio_bare, "x", ">= 1.0"),
                figure(f"M/M/10 rho 0.9 via sim.simulate / Ciw {_ciw_version()}", ratio_ciw, "x", ">= 2"),
                figure("flagship 1,000 users x 600 s, event loop, 1 replication", flag_loop, "s", "<= 2 s"),
                figure(
                    "flagship, whole `capsim run` process",
                    whole_s,
                    "s",
                    "<= 3 s",
                    cpu_s=round(whole_cpu, 3),
                ),
                figure("peer workload (scenarios/peer_5000.yaml), whole process", peer_s, "s", "<= 2 s"),
                figure("sweep of 8 points, 2 local workers / 1 worker speed-up", speedup, "x", ">= 1.8"),
                figure("peak memory, flagship with --out", peak, "MB", "<= 400 MB"),
                figure("retrieval 11 users, scheduled threads / shared work", pools[0], "x", ""),
            ],
        )


def _ciw_version() -> str:
    import ciw  # the peer simulator; a dev dependency

    return str(ciw.__version__)


if __name__ == "__main__":
    main()
