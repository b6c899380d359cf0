"""How fast the capsim command starts: `capsim --help`, `capsim run --help`, and the first
line of a short `capsim run`, each a fresh process, median of several runs.

Each case is timed to its first line on stdout and to its exit, with the CPU time it used
(itself and its worker processes); a bare `python -c print()` in the same loop is the floor.
On a shared, busy machine the wall times include waiting for a core; the CPU column does not.

    python benchmarks/bench_startup.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from result_file import figure, user_env, write

ROOT = Path(__file__).resolve().parents[1]
SHORT = """
name: startup
run: {duration_s: 5, warmup_s: 1, replications: 1, seed: 1}
workload: {mode: open, rate_per_s: 2}
cache: {enabled: false}
retrieval: {enabled: false}
llm: {gpu: h100-sxm, prompt_tokens: 200, output_tokens: 20}
"""


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(seconds to the first line on stdout, seconds to exit, CPU seconds of the process and
    its children) of one fresh process.  The CPU time does not count waiting for a core, so on
    a busy machine it says what the command costs when wall times are inflated."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=user_env())
    assert p.stdout is not None
    p.stdout.readline()
    first = time.perf_counter() - t0
    p.stdout.read()
    _, _, usage = os.wait4(p.pid, 0)
    p.returncode = 0  # reaped above
    return first, time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the figures to this result file")
    args = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as td:
        scn = Path(td) / "short.yaml"
        scn.write_text(SHORT)
        cases = {
            "python -c pass (reference)": [py, "-c", "print()"],
            "capsim --help": [py, "-m", "sim", "--help"],
            "capsim run --help": [py, "-m", "sim", "run", "--help"],
            "capsim run (first line, 5 s scenario)": [py, "-m", "sim", "run", str(scn)],
        }
        times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in cases}
        for _ in range(args.repeat):  # interleaved rounds: load spikes hit every case alike
            for k, cmd in cases.items():
                times[k].append(timed(cmd))
    load = os.getloadavg()[0]
    print(
        f"CLI start-up, median of {args.repeat} interleaved rounds on {os.cpu_count()} cores, load average {load:.1f}"
        " (targets: --help <= 0.3 s to exit, capsim run's first line <= 1 s)"
    )
    print(f"  {'':40s} {'first line':>10s} {'exit':>8s} {'CPU':>8s}")
    figures = []
    for k, ts in times.items():
        first, end, cpu = (statistics.median(t[i] for t in ts) for i in range(3))
        print(f"  {k:40s} {first:9.3f}s {end:7.3f}s {cpu:7.3f}s")
        target = {"capsim --help": "exit <= 0.3 s", "capsim run (first line, 5 s scenario)": "first line <= 1 s"}
        figures.append(figure(k, end, "s", target.get(k, ""), first_line_s=round(first, 4), cpu_s=round(cpu, 4)))
    if args.json:
        write(args.json, "startup", f"median of {args.repeat} interleaved rounds of fresh processes", figures)


if __name__ == "__main__":
    main()
