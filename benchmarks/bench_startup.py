"""How fast the capsim command starts: `capsim --help`, `capsim run --help`, and the first
line of a short `capsim run`, each a fresh process, median of several runs.

Ratios against a bare `python -c pass` in the same loop cancel most machine noise:
what capsim adds on top of starting Python is what it controls.

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

ROOT = Path(__file__).resolve().parents[1]
SHORT = """
name: startup
run: {duration_s: 5, warmup_s: 1, replications: 1, seed: 1}
workload: {mode: open, rate_per_s: 2}
cache: {enabled: false}
retrieval: {enabled: false}
llm: {gpu: h100-sxm, prompt_tokens: 200, output_tokens: 20}
"""


def first_line_s(cmd: list[str]) -> float:
    """Seconds until the process prints its first line (then it is left to finish)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=os.environ.copy())
    assert p.stdout is not None
    p.stdout.readline()
    dt = time.perf_counter() - t0
    p.wait()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
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
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.repeat):  # interleaved rounds: load spikes hit every case alike
            for k, cmd in cases.items():
                times[k].append(first_line_s(cmd))
    ref = statistics.median(times["python -c pass (reference)"])
    print(f"CLI start-up, median of {args.repeat} interleaved rounds (targets: --help <= 0.3 s, first line <= 1 s)")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"  {k:40s} {med:6.3f} s   (python start-up + {med - ref:5.3f} s)")


if __name__ == "__main__":
    main()
