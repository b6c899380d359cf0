"""``capsim calibrate llm``: the running engine's step times over batch size and context.

Runs llama.cpp's ``llama-batched-bench`` (pinned to the LLM server's cores,
with the server's thread count) **in isolation** -- before the server starts,
nothing else on those cores -- or reads a captured run, and turns every result
row into two step rows of a table (:mod:`sim.physics.steptable`)::

    prefill  batch_size = B, new_tokens = B*PP, context_tokens = B*PP, step_ms = T_PP
    decode   batch_size = B, new_tokens = B,    context_tokens = round(B * (PP + (TG + 1) / 2)),
             step_ms = T_TG / TG   (the mean of the TG steps)

``context_tokens`` is the KV tokens a step reads, all sequences together;
the decode row's is the mean over its steps (step i reads PP + i + 1 tokens
per sequence), exact for a step time linear in the context.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from sim.errors import CapsimError
from sim.physics.steptable import BenchRow, median_rows, step_rows, write_table

__all__ = ["median_rows", "parse_batched_bench", "run_batched_bench", "step_rows", "write_table"]

ROW = re.compile(
    r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|"
    r"\s*([\d.]+)\s*\|\s*([\d.]+|inf|nan)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+|inf|nan)\s*\|"
    r"\s*([\d.]+)\s*\|\s*([\d.]+|inf|nan)\s*\|\s*$"
)


def parse_batched_bench(text: str) -> list[BenchRow]:
    """Result rows ``{pp, tg, b, t_pp_s, t_tg_s}`` of llama-batched-bench's table or jsonl output."""
    rows: list[BenchRow] = []
    for line in text.splitlines():
        s = line.strip()
        m = ROW.match(s)
        if m:
            rows.append(
                BenchRow(
                    pp=int(m.group(1)),
                    tg=int(m.group(2)),
                    b=int(m.group(3)),
                    t_pp_s=float(m.group(5)),
                    t_tg_s=float(m.group(7)),
                )
            )
        elif s.startswith("{") and '"pl"' in s:
            d = json.loads(s)
            rows.append(BenchRow(pp=d["pp"], tg=d["tg"], b=d["pl"], t_pp_s=d["t_pp"], t_tg_s=d["t_tg"]))
    return rows


def run_batched_bench(
    binary: str,
    model_path: str,
    cores: list[int],
    threads: int,
    npp: list[int],
    ntg: int,
    npl: list[int],
    ctx_tokens: int,
    timeout_s: float = 900.0,
) -> str:
    """Run llama-batched-bench (pinned with taskset to ``cores``) and return its output."""
    exe = Path(binary).expanduser()
    model = Path(model_path).expanduser()
    if not exe.is_file():
        raise CapsimError(f"llm.batched_bench: {exe} does not exist; build it (make verify does)")
    if not model.is_file():
        raise CapsimError(f"llm.model_path: {model} does not exist")
    cmd = [str(exe), "-m", str(model), "-c", str(ctx_tokens), "-t", str(threads), "-tb", str(threads)]
    cmd += ["-npp", ",".join(map(str, npp)), "-ntg", str(ntg), "-npl", ",".join(map(str, npl))]
    if cores:
        if shutil.which("taskset") is None:
            raise CapsimError("taskset not found; install util-linux or leave llm.cores empty")
        cmd = ["taskset", "-c", ",".join(map(str, cores)), *cmd]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise CapsimError(f"llama-batched-bench did not finish in {timeout_s:.0f} s") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CapsimError(f"llama-batched-bench exited {res.returncode}: {tail[0]}")
    return res.stdout + "\n" + res.stderr
