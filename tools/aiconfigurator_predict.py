"""aiconfigurator's own TTFT/TPOT predictions for the rows of silicon_sample.csv capsim represents.

Run ONCE, in a throwaway virtual environment that has the pinned package (never in capsim's):

    python3 -m venv /tmp/aic-venv && /tmp/aic-venv/bin/pip install aiconfigurator==0.12.0
    /tmp/aic-venv/bin/python tools/aiconfigurator_predict.py sim/data/silicon/silicon_sample.csv \
        sim/data/silicon/aiconfigurator_predictions.csv

For each aggregated row on an H100 SXM or H200 SXM of Llama-3.1-8B, Llama-3.1-70B or Qwen3-32B
(with ``--moe-sample``: a fixed-seed sample of up to 4 aggregated rows per mixture-of-experts model,
system and backend, with the row's expert layout and expert quantisation) it calls
``aiconfigurator.cli.api.cli_estimate`` (the programmatic form of ``aiconfigurator cli estimate``)
with the row's model, system, backend, isl, osl, concurrency as batch size, TP and GEMM precision,
database mode SILICON (its measured per-operation tables), and records its TTFT and TPOT, or the
error it raised.  The perf-database version is the row's backend version where the package has
tables for it, else the package's default for that backend (the column says which was used).
"""

from __future__ import annotations

import csv
import logging
import re
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from aiconfigurator.cli.api import cli_estimate  # noqa: E402

#: The package's bundled config for each measured model name (no download from Hugging Face).
MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Meta-Llama-3.1-8B",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "meta-llama/Meta-Llama-3.1-8B",
    "meta-llama/Llama-3.1-70B": "meta-llama/Meta-Llama-3.1-70B",
    "Qwen/Qwen3-32B": "Qwen/Qwen3-32B",
}


def concurrency(row: dict) -> int:
    m = re.search(r"silicon_concurrency=(\d+)", row["silicon_data_source"])
    return int(m.group(1)) if m else int(float(row["batch_size"]))


def round_robin(rows: list[dict]) -> list[dict]:
    """Rows interleaved over (backend, system, model) strata, so a partial run covers every stratum."""
    strata: dict[tuple, list[dict]] = {}
    for r in rows:
        strata.setdefault((r["backend"], r["system"], r["model_path"]), []).append(r)
    queues = [strata[k] for k in sorted(strata)]
    out = []
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


#: Mixture-of-experts models (``--moe-sample``), with the package's bundled config of each.
MOE_MODELS = {
    "deepseek-ai/DeepSeek-R1": "deepseek-ai/DeepSeek-R1",
    "deepseek-ai/DeepSeek-V3": "deepseek-ai/DeepSeek-V3",
    "nvidia/DeepSeek-R1-NVFP4": "deepseek-ai/DeepSeek-R1",
    "nvidia/DeepSeek-V3.1-NVFP4": "deepseek-ai/DeepSeek-V3",
    "openai/gpt-oss-120b": "openai/gpt-oss-120b",
    "Qwen/Qwen3-235B-A22B-FP8": "Qwen/Qwen3-235B-A22B",
    "moonshotai/Kimi-K2.5": "moonshotai/Kimi-K2.5",
    "MiniMaxAI/MiniMax-M2.5": "MiniMaxAI/MiniMax-M2.5",
}
#: Rows per (model, system, backend) stratum of the MoE sample: each call takes seconds.
MOE_PER_STRATUM = 4


def moe_sample(rows: list[dict]) -> list[dict]:
    """Up to :data:`MOE_PER_STRATUM` aggregated MoE rows of one replica of at most 8 GPUs without
    attention data parallelism per (model, system, backend), drawn with a fixed seed."""
    import random

    keep = [
        r
        for r in rows
        if r["mode"] == "agg"
        and r["model_path"] in MOE_MODELS
        and 1 <= int(float(r["tp_size"] or 0)) <= 8
        and int(float(r["attention_dp_size"] or 1)) == 1
    ]
    random.Random(0).shuffle(keep)
    strata: dict[tuple, list[dict]] = {}
    for r in keep:
        got = strata.setdefault((r["model_path"], r["system"], r["backend"]), [])
        if len(got) < MOE_PER_STRATUM:
            got.append(r)
    return [r for k in sorted(strata) for r in strata[k]]


def main(src: str, dst: str, skip: set[str] = frozenset(), moe: bool = False) -> None:
    with open(src, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, r in enumerate(_todo(rows, skip, moe)):
        t0 = time.perf_counter()
        res = predict(r, moe)
        out.append(res)
        print(
            i,
            r["id"],
            res["aic_ttft_ms"],
            res["aic_tpot_ms"],
            res["aic_perf_db_version"],
            res["aic_error"][:80],
            f"{time.perf_counter() - t0:.1f}s",
            flush=True,
        )
    with open(dst, "w", newline="") as fh:
        fh.write(
            "# aiconfigurator 0.12.0 cli_estimate (database_mode SILICON) per row of silicon_sample.csv;"
            " written by tools/aiconfigurator_predict.py\n"
        )
        w = csv.DictWriter(fh, fieldnames=list(out[0]))
        w.writeheader()
        w.writerows(out)


def _todo(rows: list[dict], skip: set[str], moe: bool) -> list[dict]:
    """The rows to predict: the MoE sample, or the dense H100/H200 aggregated rows, round robin."""
    if moe:
        return [r for r in moe_sample(rows) if r["id"] not in skip]
    return round_robin(
        [
            r
            for r in rows
            if r["mode"] == "agg"
            and r["system"] in ("h100_sxm", "h200_sxm")
            and r["model_path"] in MODELS
            and r["id"] not in skip
        ]
    )


def predict(r: dict, moe: bool) -> dict:
    """aiconfigurator's TTFT and TPOT for one row (its backend version first, then the package's
    default database), or the error it refused the row with."""
    quant = r["gemm_quant_mode"] or "bfloat16"
    kw = dict(
        backend_name=r["backend"],
        isl=int(r["isl"]),
        osl=int(r["osl"]),
        batch_size=concurrency(r),
        tp_size=int(float(r["tp_size"])),
        gemm_quant_mode=quant,
        database_mode="SILICON",
    )
    if moe:  # the row's expert layout and expert quantisation
        kw.update(
            moe_tp_size=max(int(float(r["moe_tp_size"] or 1)), 1),
            moe_ep_size=max(int(float(r["moe_ep_size"] or 1)), 1),
            moe_quant_mode=r["moe_quant_mode"] or None,
        )
    res: dict = {"id": r["id"], "aic_ttft_ms": "", "aic_tpot_ms": "", "aic_perf_db_version": "", "aic_error": ""}
    for version in ([r["backend_version"]] if r["backend_version"] else []) + [None]:
        try:
            e = cli_estimate({**MODELS, **MOE_MODELS}[r["model_path"]], r["system"], backend_version=version, **kw)
        except Exception as ex:  # the package's own refusal, recorded per row
            res["aic_error"] = f"{type(ex).__name__}: {str(ex).splitlines()[0][:200]}"
            continue
        res.update(
            aic_ttft_ms=f"{e.ttft:.4f}",
            aic_tpot_ms=f"{e.tpot:.4f}",
            aic_perf_db_version=e.backend_version or "",
            aic_error="",
        )
        break
    return res


def from_logs(logs: list[str], dst: str) -> None:
    """The CSV from the progress lines of interrupted runs (``i id ttft tpot [version] [error] time``)."""
    out: dict[str, dict] = {}
    pat = re.compile(r"^\d+ (\S+) ([\d.]+) ([\d.]+) (?:(\S+) )?\s*[\d.]+s$")
    err = re.compile(r"^\d+ (\S+)\s+(\w+Error: .*?) [\d.]+s$")
    for log in logs:
        with open(log) as f:
            lines = f.read().splitlines()
        for line in lines:
            line = line.rstrip("\n")
            m = pat.match(line)
            if m:
                out[m.group(1)] = {
                    "id": m.group(1),
                    "aic_ttft_ms": m.group(2),
                    "aic_tpot_ms": m.group(3),
                    "aic_perf_db_version": m.group(4) or "",
                    "aic_error": "",
                }
                continue
            m = err.match(line)
            if m and m.group(1) not in out:
                out[m.group(1)] = {
                    "id": m.group(1),
                    "aic_ttft_ms": "",
                    "aic_tpot_ms": "",
                    "aic_perf_db_version": "",
                    "aic_error": m.group(2),
                }
    with open(dst, "w", newline="") as fh:
        fh.write(
            "# aiconfigurator 0.12.0 cli_estimate (database_mode SILICON) per row of silicon_sample.csv;"
            " written by tools/aiconfigurator_predict.py --from-log\n"
        )
        w = csv.DictWriter(fh, fieldnames=["id", "aic_ttft_ms", "aic_tpot_ms", "aic_perf_db_version", "aic_error"])
        w.writeheader()
        w.writerows(out.values())


if __name__ == "__main__":
    if sys.argv[1] == "--from-log":  # --from-log DST LOG [LOG ...]
        from_logs(sys.argv[3:], sys.argv[2])
        sys.exit()
    moe = "--moe-sample" in sys.argv  # the MoE sample instead of the dense H100/H200 rows
    args = [a for a in sys.argv[1:] if a != "--moe-sample"]
    # optional third argument: a file of ids already predicted (one per line), skipped
    skip = set(Path(args[2]).read_text().split()) if len(args) > 2 else set()
    main(args[0], args[1], skip, moe)
