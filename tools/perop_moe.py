"""Per-operation step-cost curves for capsim's mixture-of-experts models, from aiconfigurator.

A MoE step runs more kinds of kernels than a dense one (router GEMM, dispatch, the grouped expert
GEMMs whose active experts grow with the tokens in the step, shared experts, MLA attention for
DeepSeek and Kimi), and aiconfigurator (NVIDIA, Apache-2.0) composes them per model from its
per-operation database.  This tool asks the pinned package for that composition, one operation at
a time, on a grid of step shapes, and writes the result in the same curve form as the dense
entries of ``sim/data/silicon/perop/<gpu>.json`` (read by :mod:`sim.physics.perop`):

* ``layer``: per layer (the step's sum over all layers divided by the model's layers), every
  operation but attention and the LM head, at each token count of ``m``: the decode kernels
  (``generation_*``) up to :data:`DECODE_MAX` tokens, the prefill kernels (``context_*``) from
  :data:`CONTEXT_MIN`, linear between;
* ``lm_head``: the vocabulary projection at each ``m``;
* ``gen`` / ``gen_fp8_kv``: one layer's decode attention block (MLA's whole block, projections
  included, or GQA's attention kernel) as ``max(floor, a + b * kv_tokens + c * batch)`` ms with a
  BF16 / an FP8 KV cache;
* ``ctx``: one layer's prefill attention as ``a + b * pairs + d * tokens`` ms.

The layouts extracted are those of the measured serving rows capsim replays (model, GPU, engine,
quantisation, tensor parallelism, experts split (``ep1``) or spread whole (``ep<tp>``)), keyed
``<model>|tp<tp>|<dtype>|ep<ep>``.  Run it in the throwaway venv ``make perop-data`` builds::

    python -m tools.perop_moe --out sim/data/silicon/perop
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from tools.perop import M_KNOTS, SYSTEMS, catalog_models

#: silicon_sample.csv model -> (capsim catalog model, aiconfigurator model config).
MODELS = {
    "deepseek-ai/DeepSeek-R1": ("deepseek-r1", "deepseek-ai/DeepSeek-R1"),
    "deepseek-ai/DeepSeek-V3": ("deepseek-v3", "deepseek-ai/DeepSeek-V3"),
    "nvidia/DeepSeek-R1-NVFP4": ("deepseek-r1", "deepseek-ai/DeepSeek-R1"),
    "nvidia/DeepSeek-V3.1-NVFP4": ("deepseek-v3", "deepseek-ai/DeepSeek-V3"),
    "openai/gpt-oss-120b": ("gpt-oss-120b", "openai/gpt-oss-120b"),
    "Qwen/Qwen3-235B-A22B-FP8": ("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B"),
    "moonshotai/Kimi-K2.5": ("kimi-k2.5", "moonshotai/Kimi-K2.5"),
    "MiniMaxAI/MiniMax-M2.5": ("minimax-m2.5", "MiniMaxAI/MiniMax-M2.5"),
}


def quant(model_path: str, system: str, engine: str, gq: str, mq: str) -> list[tuple[str, str]]:
    """The (GEMM, MoE) quantisations to read a row's kernels at, best first: the file's own (what
    the engine was launched with, as aiconfigurator reads the row), except for gpt-oss.

    gpt-oss ships its routed experts in MXFP4 and the rest in BF16 ("quant_method": "mxfp4" in
    https://huggingface.co/openai/gpt-oss-120b/blob/main/config.json): TensorRT-LLM on Blackwell runs
    them with MXFP8 activations (``w4a8_mxfp4_mxfp8``), elsewhere as weight-only ``w4a16_mxfp4``."""
    out: list[tuple[str, str]] = []
    if model_path == "openai/gpt-oss-120b":
        if engine == "trtllm" and system in FP4_SYSTEMS:
            out.append(("bfloat16", "w4a8_mxfp4_mxfp8"))
        out.append(("bfloat16", "w4a16_mxfp4"))
    out.append((gq, mq))
    return list(dict.fromkeys(out))


#: Blackwell systems (FP4 tensor cores): NVFP4 rows compute in FP4 there, weight-only elsewhere.
FP4_SYSTEMS = {"b200_sxm", "gb200", "b300_sxm", "gb300"}
#: Expert load the MoE kernels are read at: aiconfigurator's default (a power law over experts),
#: else, where the database did not time that layout under it, tokens spread evenly.
DISTRIBUTIONS = ("power_law", "balanced")
DECODE_MAX = 512
CONTEXT_MIN = 1024
GEN_BATCH = (1, 4, 16, 64, 256)
GEN_CTX = (256, 1024, 4096, 16384)
CTX_TOKENS = (128, 512, 1024, 2048, 4096, 8192, 16384)


def dtype_key(precision: str, system: str) -> str:
    """capsim's per-operation dtype key (:func:`sim.physics.perop.dtype_key`) of a row's precision."""
    if precision == "fp4":
        return "fp4" if system in FP4_SYSTEMS else "bf16-weight-only-fp4"
    return precision if precision in ("fp8", "bf16") else ""


def layouts(csv_path: Path) -> dict[tuple[str, str, str, str, int, int], tuple[str, list[tuple[str, str]]]]:
    """(capsim model, system, engine, dtype key, tp, ep) -> (aiconfigurator model, the (GEMM, MoE)
    quantisations to try, :func:`quant`) of the most common quantisation of the measured
    aggregated rows with that layout."""
    seen: dict[tuple[str, str, str, str, int, int], Counter[tuple[str, str, str, str]]] = {}
    with csv_path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["mode"] != "agg" or r["model_path"] not in MODELS or r["system"] not in SYSTEMS.values():
                continue
            tp = int(float(r["tp_size"] or 0))
            moe_tp, ep = max(int(float(r["moe_tp_size"] or 0)), 1), max(int(float(r["moe_ep_size"] or 0)), 1)
            adp = int(float(r["attention_dp_size"] or 1))
            if adp > 1 or not 1 <= tp <= 8:
                continue
            if ep == 1 and moe_tp in (1, tp):
                lay = 1
            elif moe_tp == 1 and ep == tp:
                lay = tp
            else:
                continue
            gq = r["gemm_quant_mode"] or "bfloat16"
            precision = r["precision"] or ("fp8" if gq.startswith("fp8") else "fp4" if gq.startswith("nvfp4") else gq)
            key = dtype_key(precision, r["system"])
            if not key:
                continue
            name, aic = MODELS[r["model_path"]]
            k = (name, r["system"], r["backend"], key, tp, lay)
            seen.setdefault(k, Counter())[(aic, r["model_path"], gq, r["moe_quant_mode"] or gq)] += 1
    out = {}
    for k, c in seen.items():
        aic, path, gq, mq = c.most_common(1)[0][0]
        out[k] = (aic, quant(path, k[1], k[2], gq, mq))
    return out


class Probe:
    """One layout's model and database in aiconfigurator, asked for per-operation step times."""

    def __init__(
        self, aic_model: str, system: str, engine: str, gq: str, mq: str, tp: int, ep: int, kv: str, dist: str
    ):
        from aiconfigurator.cli import api
        from aiconfigurator.sdk.models import get_model
        from aiconfigurator.sdk.perf_database import get_database_view, get_latest_database_version

        self.version = get_latest_database_version(system=system, backend=engine)
        db = get_database_view(
            system, engine, self.version, allow_missing_data=False, database_mode="SILICON", transfer_policy=None
        )
        moe_tp, moe_ep = (1, tp) if ep == tp and tp > 1 else (tp, 1)
        mc = api._build_model_config(tp, 1, 1, moe_tp, moe_ep, gq, kv, None, mq, None)
        mc.workload_distribution = dist
        api.resolve_context_fmha_by_data(mc, aic_model, db, engine, is_context_role=True)
        api.resolve_nvfp4_for_system(mc, system, aic_model, backend_name=engine)
        self.model, self.db = get_model(aic_model, mc, engine), db

    def decode(self, batch: int, ctx: int) -> dict[str, float]:
        from aiconfigurator_core.sdk import rust_engine_step as rs

        per = rs.estimate_decode_step_breakdown_with_rust(self.model, self.db, gen_tokens=batch, isl=ctx, osl=2)[2]
        return {k: float(v) for k, v in per.items()}

    def prefill(self, batch: int, tokens: int) -> dict[str, float]:
        from aiconfigurator.sdk.config import RuntimeConfig
        from aiconfigurator_core.sdk import rust_engine_step as rs

        rc = RuntimeConfig(isl=tokens, osl=2, batch_size=batch, prefix=0)
        per = rs.estimate_static_latency_breakdown_with_rust(self.model, self.db, rc, "static_ctx", 32, 1.0)[0]
        return {k: float(v) for k, v in per.items()}


def is_attention(op: str) -> bool:
    return ("attention" in op and "allreduce" not in op) or "mla" in op


def split(per: dict[str, float]) -> tuple[float, float, float]:
    """(attention, LM head, everything else) of one step's per-operation times, ms."""
    attn = sum(v for k, v in per.items() if is_attention(k))
    head = sum(v for k, v in per.items() if k.endswith("logits_gemm"))
    return attn, head, sum(per.values()) - attn - head


def gen_law(points: list[tuple[int, int, float]]) -> list[float]:
    """[floor, a, b, c] of ``max(floor, a + b * kv_tokens + c * batch)`` over (batch, context, ms)."""
    b = np.array([p[0] for p in points], float)
    tokens = b * np.array([p[1] for p in points], float)
    y = np.array([p[2] for p in points], float)
    floor = float(np.min(y))
    x = np.column_stack([np.ones(len(y)), tokens, b])
    coef = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)[0]  # relative error
    coef = np.maximum(coef, [-np.inf, 0.0, 0.0])
    return [round(floor, 6), *(float(f"{c:.6g}") for c in coef)]


def ctx_law(points: list[tuple[int, int, float]]) -> list[float]:
    """[a, b, d] of ``a + b * pairs + d * tokens`` over (batch, prompt tokens, ms)."""
    b = np.array([p[0] for p in points], float)
    n = np.array([p[1] for p in points], float)
    y = np.array([p[2] for p in points], float)
    x = np.column_stack([np.ones(len(y)), b * n * (n + 1) / 2, b * n])
    coef = np.linalg.lstsq(x / y[:, None], np.ones(len(y)), rcond=None)[0]
    return [float(f"{max(c, 0.0):.6g}") for c in coef]


def entry(probe: Probe, fp8_probe: Probe | None, layers: int) -> dict[str, Any]:
    ms = [m for m in M_KNOTS]
    dec = {m: split(probe.decode(m, 128)) for m in ms if m <= DECODE_MAX}
    pre = {m: split(probe.prefill(1, m)) for m in ms if m >= CONTEXT_MIN}
    layer, head = [], []
    for m in ms:
        if m in dec:
            rest, lm = dec[m][2], dec[m][1]
        elif m in pre:
            rest, lm = pre[m][2], dec[DECODE_MAX][1] * m / DECODE_MAX
        else:  # between the decode and the prefill grids
            w = (m - DECODE_MAX) / (CONTEXT_MIN - DECODE_MAX)
            rest = (1 - w) * dec[DECODE_MAX][2] + w * pre[CONTEXT_MIN][2]
            lm = dec[DECODE_MAX][1] * m / DECODE_MAX
        layer.append(float(f"{rest / layers:.6g}"))
        head.append(float(f"{lm:.6g}"))
    out: dict[str, Any] = {"m": ms, "layer": layer, "lm_head": head}
    out["gen"] = gen_law([(b, s, split(probe.decode(b, s))[0] / layers) for b in GEN_BATCH for s in GEN_CTX])
    if fp8_probe is not None:
        out["gen_fp8_kv"] = gen_law(
            [(b, s, split(fp8_probe.decode(b, s))[0] / layers) for b in GEN_BATCH for s in GEN_CTX]
        )
    pts = [(1, n, split(probe.prefill(1, n))[0] / layers) for n in CTX_TOKENS]
    pts += [(4, n, split(probe.prefill(4, n))[0] / layers) for n in (512, 2048)]
    out["ctx"] = ctx_law(pts)
    return out


def extract(out: Path, csv_path: Path, only: set[str] | None = None, say: Any = print) -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    models = catalog_models(moe=True)
    system_to_gpu = {v: k for k, v in SYSTEMS.items()}
    docs: dict[str, dict[str, Any]] = {}
    skipped: Counter[str] = Counter()
    for (name, system, engine, key, tp, ep), (aic, quants) in sorted(layouts(csv_path).items()):
        if only and name not in only:
            continue
        gpu = system_to_gpu[system]
        path = out / f"{gpu}.json"
        doc = docs.get(gpu) or json.loads(path.read_text())
        docs[gpu] = doc
        eng = doc["engines"].setdefault(engine, {"versions": {}, "files": {}, "entries": {}})
        e, why, used = None, "", ("", "", "")
        for (gq, mq), dist in ((q, d) for q in quants for d in DISTRIBUTIONS):
            try:
                probe = Probe(aic, system, engine, gq, mq, tp, ep, "bfloat16", dist)
                try:
                    fp8: Probe | None = Probe(aic, system, engine, gq, mq, tp, ep, "fp8", dist)
                    fp8.decode(1, 256)  # type: ignore[union-attr]
                except Exception:  # an FP8 KV cache the database does not time
                    fp8 = None
                e = entry(probe, fp8, int(models[name]["layers"]))
                used = (gq, mq, dist)
                break
            except Exception as ex:  # the package's own refusal: recorded, not replayed
                why = why or f"{type(ex).__name__}: {str(ex).splitlines()[0][:120]}"
        if e is None:
            skipped[why] += 1
            say(f"skip {name} {gpu} {engine} {key} tp{tp} ep{ep} ({quants}): {why}")
            continue
        e["source"] = (
            f"aiconfigurator {probe.version} per-op composition ({used[0]} GEMM, {used[1]} MoE, {used[2]} expert load)"
        )
        eng["versions"]["moe"] = probe.version
        eng["entries"][f"{name}|tp{tp}|{key}|ep{ep}"] = e
        say(f"{name} {gpu} {engine} {key} tp{tp} ep{ep}: layer(1) {e['layer'][0]:.4g} ms, gen {e['gen']}")
    for gpu, doc in docs.items():
        tmp = out / f".{gpu}.json.tmp"
        tmp.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n")
        os.replace(tmp, out / f"{gpu}.json")
    for why, n in skipped.most_common():
        say(f"{n} layouts skipped: {why}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("sim/data/silicon/perop"))
    ap.add_argument("--rows", type=Path, default=Path("sim/data/silicon/silicon_sample.csv"))
    ap.add_argument("--model", action="append", help="only these catalog models (default: every one)")
    a = ap.parse_args(argv)
    extract(a.out, a.rows, set(a.model or ()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
